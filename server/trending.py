"""Round 0 of a federation-mode training, the server's side: the trending release (shared/trending.py).

Every client is sent one train message asking for `release = "trending"` with one zero array, and replies
its share (client/trending.py) with its privacy report. Without SecAgg+ the replies go through Flower's
FedAvg inside `AdapterGuard` (only the `trending` array, float32, finite; each report receipted before use);
with SecAgg+ they go through one round of Flower's SecAgg+ workflow, so the server learns only the sum.
Fewer than t = min-clients shares: no list (its noise would fall short of what the ledgers account),
recorded as skipped. Otherwise the sum times N is the noisy vote total; its top items are the list
(post-processing), and the server's ledger records the release as round 0 (`ServerStep.record_trending`).
"""

from __future__ import annotations

import json
from logging import INFO

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat
from flwr.server import LegacyContext, ServerConfig
from flwr.server.strategy import FedAvg as LegacyFedAvg
from flwr.server.workflow.constant import MAIN_PARAMS_RECORD
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.supercore import log

from server.federation import ServerStep
from server.release_book import ReleaseBook
from server.secure_aggregation import SecureRecorder, secure_workflow
from server.strategy import AdapterGuard
from shared.adapters import ADAPTER_NAMES, WEIGHT
from shared.config import RunConfig
from shared.ledger import TRAINING_KEY
from shared.privacy import NOISE_SECRET
from shared.trending import RELEASE_KEY, TRENDING_ARRAY, TRENDING_RELEASE, TRENDING_ROUND, Trending


def release_trending(
    grid: Grid,
    context: Context,
    cfg: RunConfig,
    item_ids: list[str],
    book: ReleaseBook,
    step: ServerStep,
    training: str,
) -> tuple[Trending | None, list[str]]:
    """Run round 0; (the published list, or None, and the reasons of clients or shares left out)."""
    log(INFO, "[ROUND %s] trending release", TRENDING_ROUND)
    config = {TRAINING_KEY: training, RELEASE_KEY: TRENDING_RELEASE}
    zeros = np.zeros(len(item_ids), dtype=np.float32)
    if cfg.secure_aggregation:
        mean, reasons = _secure(grid, context, cfg, zeros, book, config)
    else:
        mean, reasons = _plain(grid, cfg, zeros, book, config)
    reports = book.reports.get(TRENDING_ROUND, [])
    if mean is None or len(reports) < cfg.min_clients:
        reasons.append(
            f"trending release: {len(reports)} share(s) < min-clients {cfg.min_clients}: their sum carries"
            " less noise than accounted; no trending list published"
        )
        return None, reasons
    totals = mean.astype(np.float64) * len(reports) * step.noise.population
    step.record_trending()
    private = cfg.private and all(r.private and r.noise == NOISE_SECRET for r in reports)
    trending = Trending.from_totals(
        totals,
        item_ids,
        cfg.trending_items,
        noise_multiplier=step.noise.trending_view_sigma(step.noise.offered) if cfg.private else 0.0,
        items_per_user=cfg.trending_items_per_user,
        private=private,
        training=training,
    )
    return trending, reasons


def _plain(grid: Grid, cfg: RunConfig, zeros: np.ndarray, book: ReleaseBook, config: dict):
    """Message API: Flower's FedAvg (equal weights) inside the guard that checks and receipts each reply."""
    fedavg = FedAvg(
        fraction_train=1.0,
        fraction_evaluate=0.0,
        min_train_nodes=cfg.min_clients,
        min_available_nodes=cfg.min_clients,
        weighted_by_key=WEIGHT,
    )
    guard = AdapterGuard(fedavg, {TRENDING_ARRAY: zeros.shape}, book, None, cfg.max_update_norm)
    arrays = ArrayRecord({TRENDING_ARRAY: Array(zeros)})
    messages = guard.configure_train(TRENDING_ROUND, arrays, ConfigRecord(config), grid)
    replies = grid.send_and_receive(messages=messages, timeout=cfg.round_timeout)
    mean, _ = guard.aggregate_train(TRENDING_ROUND, replies)
    reasons = guard.skipped.get(TRENDING_ROUND, []) + guard.refused.get(TRENDING_ROUND, [])
    return (None if mean is None else mean[TRENDING_ARRAY].numpy()), reasons


def _secure(grid: Grid, context: Context, cfg: RunConfig, zeros: np.ndarray, book: ReleaseBook, config: dict):
    """SecAgg+: one round of Flower's workflow over the one array; the server unmasks only the sum."""
    strategy = LegacyFedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=cfg.min_clients,
        min_evaluate_clients=0,
        min_available_clients=cfg.min_clients,
        on_fit_config_fn=lambda server_round: {
            "server-round": server_round,
            ADAPTER_NAMES: json.dumps([TRENDING_ARRAY]),
            **config,
        },
        initial_parameters=ndarrays_to_parameters([zeros]),
    )
    recorder = SecureRecorder(strategy, book, shapes=[zeros.shape], names=[TRENDING_ARRAY])
    legacy = LegacyContext(
        context=context,
        config=ServerConfig(num_rounds=TRENDING_ROUND, round_timeout=cfg.round_timeout),
        strategy=recorder,
    )
    secure_workflow(TRENDING_ROUND, lambda _round: None)(grid, legacy)
    reasons = recorder.skipped.get(TRENDING_ROUND, []) + recorder.refused.get(TRENDING_ROUND, [])
    if TRENDING_ROUND not in recorder.train_metrics:
        return None, reasons + ["trending release: SecAgg+ halted: too few clients sent a masked share"]
    if recorder.refused.get(TRENDING_ROUND):  # a share without its accounting is in the sum: not used
        return None, reasons
    params = compat.arrayrecord_to_parameters(legacy.state.array_records[MAIN_PARAMS_RECORD], keep_input=True)
    return parameters_to_ndarrays(params)[0], reasons
