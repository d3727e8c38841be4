"""Secure aggregation with Flower's SecAgg+: the server only ever learns the sum of the updates.

In Flower 1.41, SecAgg+ exists as a workflow of the legacy server API (`DefaultWorkflow` with
`SecAggPlusWorkflow`, a `LegacyContext` and a legacy strategy). The client side is its
`secaggplus_mod` (see client/mods.py). Each client masks its quantized, weighted update with
pairwise masks that cancel in the sum. The server unmasks only the aggregate, and no dropout
below the reconstruction threshold reveals one update. The price is quantization: values are
clipped to ±`CLIPPING_RANGE` and mapped onto `QUANTIZATION_RANGE` levels, so the aggregate equals
plain FedAvg to within `quantization_error()` per coordinate. Clients are weighted equally
(weight 1), as client-level DP needs anyway. With client-level DP, clipping must happen at the
clients (the server never sees one update), and Flower's legacy client-side DP wrapper adds the noise.
This module does the accounting per released round, with the same accountant and ledger as the
message-API path. One update cannot be checked here (the server never sees it), so the unmasked sum
is: an aggregate with the wrong shapes or a non-finite value is refused and the previous global model
kept. Federated evaluation is off in this mode; central evaluation (simulation) runs.
"""

from __future__ import annotations

import json
import timeit
from collections.abc import Callable
from dataclasses import dataclass, field
from logging import INFO
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.common import FitRes, Parameters, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat
from flwr.server import LegacyContext, ServerConfig
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat.app_utils import start_update_client_manager_thread
from flwr.server.strategy import DifferentialPrivacyClientSideFixedClipping, FedAvg, Strategy
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key
from flwr.server.workflow.default_workflows import (
    default_centralized_evaluation_workflow,
    default_init_params_workflow,
)
from flwr.serverapp import Grid
from flwr.supercore import log

from server.client_privacy import ClientLevelDP
from server.federation import ServerStep, TooFewShares
from server.release_book import ReleaseBook
from shared.adapters import ADAPTER_NAMES, record_from_list
from shared.config import RunConfig
from shared.ledger import TRAINING_KEY

CLIPPING_RANGE = 8.0  # adapter values are far inside this (LoRA B, user head and item bias are O(0.1-1))
QUANTIZATION_RANGE = 2**22
RECONSTRUCTION_FRACTION = 2 / 3  # of the clients, needed to unmask: tolerates a third dropping out


def quantization_error() -> float:
    """Bound on |SecAgg+ mean − plain mean| per coordinate: one quantization step."""
    return 2 * CLIPPING_RANGE / QUANTIZATION_RANGE


@dataclass
class SecureRecorder(Strategy):
    """Wraps the legacy strategy: keeps privacy reports, accounts client-level DP, stops at its cap."""

    strategy: Strategy
    book: ReleaseBook
    client_dp: ClientLevelDP | None = None
    shapes: list[tuple[int, ...]] | None = None  # the adapters' shapes, in the order of the unnamed list
    federation: ServerStep | None = None  # federation mode: the mean becomes one server step
    names: list[str] | None = None  # the adapters' names, in the order of the unnamed list
    current: list[np.ndarray] | None = None  # the global model this round was configured with
    refused: dict[int, list[str]] = field(default_factory=dict)
    skipped: dict[int, list[str]] = field(default_factory=dict)
    stopped: dict[int, str] = field(default_factory=dict)
    train_metrics: dict[int, dict[str, float]] = field(default_factory=dict)

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return self.strategy.initialize_parameters(client_manager)

    def configure_fit(self, server_round: int, parameters: Parameters, client_manager: ClientManager):
        if self.client_dp and self.client_dp.would_exceed():
            self.stopped[server_round] = (
                f"client-level privacy budget: the next release would pass ε cap {self.client_dp.cap:g}"
            )
            return []
        self.current = parameters_to_ndarrays(parameters)
        return self.strategy.configure_fit(server_round, parameters, client_manager)

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Any]]:
        self.skipped[server_round] = [str(f) for f in failures]
        for proxy, res in results:
            report = {
                k.removeprefix("privacy:"): v for k, v in res.metrics.items() if k.startswith("privacy:")
            }
            try:  # under SecAgg+ one masked update cannot be dropped from the sum: record the failure
                self.book.record(server_round, report, int(getattr(proxy, "node_id", -1)))
            except ValueError as err:
                self.refused.setdefault(server_round, []).append(f"privacy report: {err}")
        parameters, metrics = self.strategy.aggregate_fit(server_round, results, failures)
        if parameters is not None and self.client_dp:
            self.client_dp.compose(server_round)  # the server saw this release, even if it is refused below
        problem = None if parameters is None else self.check_aggregate(parameters)
        if problem:
            reason = f"aggregate refused, previous global kept: {problem}"
            self.refused.setdefault(server_round, []).append(reason)
            parameters = None  # Flower's fit workflow then keeps the previous global model
        if parameters is not None and self.federation is not None:
            parameters = self.federation_step(server_round, parameters, len(results))
        self.train_metrics[server_round] = {k: float(v) for k, v in metrics.items()}
        return parameters, metrics

    def federation_step(self, server_round: int, parameters: Parameters, n: int) -> Parameters | None:
        """Federation mode: the unmasked mean of n replies becomes one server step (server/federation.py)."""
        assert self.federation is not None and self.names is not None and self.current is not None
        mean = dict(zip(self.names, parameters_to_ndarrays(parameters), strict=True))
        try:
            new = self.federation.step(
                server_round, dict(zip(self.names, self.current, strict=True)), mean, n
            )
        except TooFewShares as err:
            self.skipped.setdefault(server_round, []).append(str(err))
            return None
        return ndarrays_to_parameters([new[k] for k in self.names])

    def check_aggregate(self, parameters: Parameters) -> str | None:
        """What is wrong with the unmasked aggregate (shapes, non-finite values), or None if nothing."""
        arrays = parameters_to_ndarrays(parameters)
        if self.shapes is not None and [a.shape for a in arrays] != self.shapes:
            return f"shapes {[a.shape for a in arrays][:3]}... != the adapters' {self.shapes[:3]}..."
        bad = [i for i, a in enumerate(arrays) if not np.isfinite(a).all()]
        return f"non-finite values (NaN or inf) in tensor(s) {bad[:3]}" if bad else None

    def configure_evaluate(self, server_round: int, parameters: Parameters, client_manager: ClientManager):
        return self.strategy.configure_evaluate(server_round, parameters, client_manager)

    def aggregate_evaluate(self, server_round: int, results, failures):
        return self.strategy.aggregate_evaluate(server_round, results, failures)

    def evaluate(self, server_round: int, parameters: Parameters):
        return self.strategy.evaluate(server_round, parameters)


def _mean_train_metrics(results: list[tuple[int, dict[str, Any]]]) -> dict[str, float]:
    """Weighted mean of the clients' numeric training metrics (privacy fields are reported apart)."""
    total = sum(n for n, _ in results) or 1
    keys = {k for _, m in results for k, v in m.items() if not k.startswith("privacy:") and _numeric(v)}
    return {k: sum(n * float(m.get(k, 0.0)) for n, m in results) / total for k in sorted(keys)}


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class ResumableWorkflow(DefaultWorkflow):
    """Flower's DefaultWorkflow from round `first_round` (not always 1), calling `round_done(round)`
    once each round's fit and evaluations are over: where a resumable server checkpoints."""

    def __init__(self, first_round: int, round_done: Callable[[int], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.first_round = first_round
        self.round_done = round_done

    def __call__(self, grid: Grid, context: Context) -> None:
        assert isinstance(context, LegacyContext)
        thread, f_stop, c_done = start_update_client_manager_thread(grid, context.client_manager)
        c_done.wait()
        try:
            default_init_params_workflow(grid, context)
            cfg = ConfigRecord()
            cfg[Key.START_TIME] = timeit.default_timer()
            context.state.config_records[MAIN_CONFIGS_RECORD] = cfg
            for current_round in range(self.first_round, context.config.num_rounds + 1):
                log(INFO, "[ROUND %s]", current_round)
                cfg[Key.CURRENT_ROUND] = current_round
                self.fit_workflow(grid, context)
                default_centralized_evaluation_workflow(grid, context)
                self.evaluate_workflow(grid, context)
                self.round_done(current_round)
        finally:
            f_stop.set()
            thread.join()


def secure_workflow(first_round: int, round_done: Callable[[int], None]) -> ResumableWorkflow:
    """Flower's default workflow from `first_round`, its fit stage SecAgg+ with this module's settings
    (the training's rounds, and round 0's trending release, server/trending.py)."""
    return ResumableWorkflow(
        first_round,
        round_done,
        fit_workflow=SecAggPlusWorkflow(
            num_shares=1.0,  # every client shares its mask seeds with all others
            reconstruction_threshold=RECONSTRUCTION_FRACTION,
            max_weight=1.0,
            clipping_range=CLIPPING_RANGE,
            quantization_range=QUANTIZATION_RANGE,
        ),
    )


def run_secure(
    grid: Grid,
    context: Context,
    cfg: RunConfig,
    initial: ArrayRecord,
    evaluate_fn,
    client_dp: ClientLevelDP | None,
    book: ReleaseBook,
    federation: ServerStep | None = None,
    *,
    first_round: int = 1,
    training: str = "",
    on_round: Callable[[int, dict[str, np.ndarray], SecureRecorder], None] | None = None,
    central: dict[int, MetricRecord] | None = None,
) -> tuple[ArrayRecord, SecureRecorder, dict[int, MetricRecord]]:
    """Run the federation under SecAgg+ from `first_round` (a resumed training, server/checkpoint.py)
    to the plan; returns the final adapters, the recorder and central metrics. `on_round` gets each
    completed round's global adapters; `training` goes to the clients in every round's config."""
    names = list(initial.keys())
    n = cfg.min_clients
    central = {} if central is None else central

    def evaluate(server_round: int, ndarrays, _config):
        if evaluate_fn is None:
            return None
        metrics = evaluate_fn(server_round, record_from_list(ndarrays, names))
        if metrics is None:  # a round the evaluator skips
            return None
        central[server_round] = metrics
        return 0.0, dict(metrics)

    strategy: Strategy = FedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=n,
        min_evaluate_clients=0,
        min_available_clients=n,
        evaluate_fn=evaluate,
        on_fit_config_fn=lambda server_round: {
            "server-round": server_round,
            ADAPTER_NAMES: json.dumps(names),
            **({TRAINING_KEY: training} if training else {}),
        },
        initial_parameters=ndarrays_to_parameters([initial[k].numpy() for k in names]),
        fit_metrics_aggregation_fn=_mean_train_metrics,
    )
    if client_dp:
        strategy = DifferentialPrivacyClientSideFixedClipping(
            strategy, client_dp.sigma, client_dp.clipping_norm, n
        )
    shapes = [tuple(initial[k].shape) for k in names]
    recorder = SecureRecorder(strategy, book, client_dp, shapes, federation=federation, names=names)
    legacy = LegacyContext(
        context=context,
        config=ServerConfig(num_rounds=cfg.num_server_rounds, round_timeout=cfg.round_timeout),
        strategy=recorder,
    )

    def round_done(server_round: int) -> None:
        if on_round is not None:
            params = compat.arrayrecord_to_parameters(
                legacy.state.array_records[MAIN_PARAMS_RECORD], keep_input=True
            )
            on_round(server_round, dict(zip(names, parameters_to_ndarrays(params), strict=True)), recorder)

    secure_workflow(first_round, round_done)(grid, legacy)
    for server_round in range(first_round, cfg.num_server_rounds + 1):
        if server_round not in recorder.train_metrics and server_round not in recorder.stopped:
            recorder.skipped.setdefault(server_round, []).append(
                "SecAgg+ halted: too few clients sent a masked update (a client refusing to train, e.g."
                " at its privacy cap, is a dropout here; the reason is in its log); no aggregate this round"
            )
    final = parameters_to_ndarrays(
        compat.arrayrecord_to_parameters(legacy.state.array_records[MAIN_PARAMS_RECORD], keep_input=True)
    )
    return record_from_list(final, names), recorder, central
