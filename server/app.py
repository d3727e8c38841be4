"""Flower ServerApp: the coordinator.

Runs FedAvg over the clients' adapters for the configured rounds, then publishes the global item
index. Options, from the run config: client-level DP (Flower's DP wrapper around FedAvg,
server/client_privacy.py) and secure aggregation (Flower's SecAgg+ workflow,
server/secure_aggregation.py). Writes what happened to one file of the run folder, `run.json`: the typed
run record of `shared/run_record.py` (the artifact, the privacy summary with each client's ε, one entry
per round), which is the only thing the rest of fedrec reads about a finished run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from server.client_privacy import ClientLevelDP
from server.federation import FederationStep, ServerStep
from server.publish import publish
from server.release_book import ReleaseBook
from server.secure_aggregation import run_secure
from server.strategy import AdapterGuard
from shared.adapters import WEIGHT, from_record, shapes, to_record
from shared.config import RunConfig
from shared.embedded import server_config
from shared.model import ModelConfig, Recommender
from shared.privacy import NOISE_REPRODUCIBLE, NOT_PRIVATE_LABEL, PRIVACY_UNIT
from shared.run_record import RUN_RECORD, ClientLevelSummary, PrivacySummary, RoundRecord, RunRecord
from shared.schema import load_catalogue
from shared.signing import ensure_key_pair


def privacy_summary(
    cfg: RunConfig, book: ReleaseBook, client_dp: ClientLevelDP | None, federation: ServerStep | None = None
) -> PrivacySummary:
    """Which guarantees hold, and each client's ε composed over every round it trained in (its reports)."""
    clients = book.latest()
    private = {c: r for c, r in clients.items() if r.private}
    reproducible = sorted(c for c, r in private.items() if r.noise == NOISE_REPRODUCIBLE)
    guarantees = []
    if private and not reproducible and federation:
        views = federation.summary().epsilon
        guarantees.append(
            f"user-level DP across the federation (DP-FedAvg, noise shared by >= {cfg.min_clients} clients,"
            " Opacus PRV accountant): "
            + "; ".join(
                f"ε = {eps:.3f} against a server with the {view!r} view" for view, eps in views.items()
            )
        )
    elif private and not reproducible:
        guarantees.append("user-level DP inside each partner (DP-SGD, Opacus PRV accountant)")
    if client_dp:
        guarantees.append(
            "client-level DP across clients (Flower fixed-clipping wrapper, Flower RDP accountant)"
        )
    if reproducible:
        guarantees.insert(0, f"{NOT_PRIVATE_LABEL} ({', '.join(reproducible)})")
    return PrivacySummary(
        private=cfg.private and not reproducible,
        noise="reproducible" if reproducible else ("secret" if cfg.private else "none"),
        guarantees=guarantees or ["NONE: non-private run"],
        secure_aggregation=cfg.secure_aggregation,
        unit=PRIVACY_UNIT,
        accountant="prv (rdp alongside)",
        delta=cfg.delta,
        max_grad_norm=cfg.max_grad_norm if cfg.private else None,
        target_epsilon={c: r.target_epsilon or None for c, r in private.items()},
        epsilon_cap={c: r.epsilon_cap or None for c, r in private.items()},
        epsilon={c: r.epsilon_prv for c, r in private.items()},
        epsilon_rdp={c: r.epsilon_rdp for c, r in private.items()},
        noise_multipliers={c: r.noise_multiplier for c, r in private.items()},
        sample_rates={c: r.sample_rate for c, r in private.items()},
        non_private_clients=sorted(c for c, r in clients.items() if not r.private),
        client_level=ClientLevelSummary(**client_dp.summary()) if client_dp else None,
        federation=federation.summary() if federation else None,
    )


def print_budgets(privacy: PrivacySummary) -> None:
    """The end of every run: each partner's ε against its target and cap."""
    for client, eps in privacy.epsilon.items():
        target, cap = privacy.target_epsilon[client], privacy.epsilon_cap[client]
        print(
            f"{client}: ε = {eps:.3f} at δ = {privacy.delta:g} (target {target or '-'}, cap {cap or '-'})",
            flush=True,
        )
    for client in privacy.non_private_clients:
        print(f"{client}: NOT PRIVATE (no DP noise)", flush=True)


EvaluatorFactory = Callable[[RunConfig, ModelConfig], Callable[[int, ArrayRecord], MetricRecord | None]]


def run_federation(
    grid: Grid, cfg: RunConfig, context: Context, evaluator_factory: EvaluatorFactory | None = None
) -> RunRecord:
    """Run the federation, publish the index and write the run record (`RUN_DIR/run.json`).

    `evaluator_factory` is how a simulation driver hands its central evaluator in (Flower's
    `evaluate_fn` seam, simulations/evaluation.py): a real server sees no behaviour logs.
    """
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # the publisher key (RUN_DIR/server/publisher.key, made once, publisher.pub beside it: what devices
    # pin), loaded before training so that an unusable key fails before any privacy budget is spent
    signing_key = ensure_key_pair(run_dir / "server")
    catalogue = load_catalogue(cfg.catalogue)
    model = Recommender(cfg.model_config(len(catalogue)))
    expected = shapes(model.trainable_state())
    initial = to_record(model.trainable_state())
    if cfg.central_eval and evaluator_factory is None:
        raise ValueError(
            "run-config 'central-eval' is read by the simulation driver (`fedrec simulate`), which hands"
            " the ServerApp its evaluator; a ServerApp started by `flwr run` has none: leave it empty"
        )
    evaluator = evaluator_factory(cfg, model.config) if evaluator_factory else None
    client_dp = None
    if cfg.client_level_dp:
        client_dp = ClientLevelDP(cfg, cfg.min_clients, run_dir / "server", run=str(context.run_id))

    federation = None
    if cfg.federation_dp:  # one noisy step a round, taken here (server/federation.py)
        current = {k: v.numpy() for k, v in initial.items()}
        federation = ServerStep(cfg, current, run_dir / "server", run=str(context.run_id))
    releases = ReleaseBook(run_dir / "server")
    if cfg.secure_aggregation:
        final, book, central = run_secure(
            grid, context, cfg, initial, evaluator, client_dp, releases, federation
        )
        train_metrics, federated = book.train_metrics, {}
    else:
        fedavg = FedAvg(
            fraction_train=cfg.fraction_train,
            # a private run's clients release no per-client metrics: evaluation is central (simulation)
            fraction_evaluate=0.0 if cfg.private else 1.0,
            min_train_nodes=cfg.min_clients if client_dp or federation else 1,
            min_evaluate_nodes=0 if cfg.private else 1,
            min_available_nodes=cfg.min_clients,
            weighted_by_key=WEIGHT,  # equal, public weights: FedAvg by counts would need a DP count
        )
        aggregator = client_dp.wrap(fedavg) if client_dp else fedavg
        step = FederationStep(aggregator, federation) if federation else None
        book = AdapterGuard(
            step or aggregator,
            expected,
            releases,
            client_dp,
            cfg.max_update_norm,
        )
        result = book.start(
            grid=grid,
            initial_arrays=initial,
            num_rounds=cfg.num_server_rounds,
            timeout=cfg.round_timeout,
            evaluate_fn=evaluator,
        )
        final = result.arrays if len(result.arrays) else initial
        train_metrics = {r: _plain(m) for r, m in result.train_metrics_clientapp.items()}
        for server_round, reasons in (step.skipped if step else {}).items():
            book.skipped.setdefault(server_round, []).extend(reasons)
        federated, central = result.evaluate_metrics_clientapp, result.evaluate_metrics_serverapp

    privacy = privacy_summary(cfg, releases, client_dp, federation)
    model.load_trainable_state(from_record(final, expected))
    artifact = publish(
        model,
        catalogue,
        run_dir / "index",
        cfg.num_server_rounds,
        info={"privacy": asdict(privacy), "config": cfg.without_paths()},  # no server paths published
        cache_dir=run_dir / "cache",
        signing_key=signing_key,
    )
    print(f"published global item index: {artifact}", flush=True)

    rounds = [
        RoundRecord(
            round=server_round,
            train=train_metrics.get(server_round),
            federated_eval=_plain(federated.get(server_round)),
            central_eval=_plain(central.get(server_round)),
            epsilon={r.client: r.epsilon_prv for r in releases.reports.get(server_round, []) if r.private},
            client_level_epsilon=_client_level_epsilon(client_dp, server_round),
            refused=book.refused.get(server_round, []),
            skipped=book.skipped.get(server_round, []),
            stopped=book.stopped.get(server_round),
        )
        for server_round in range(0 if evaluator else 1, cfg.num_server_rounds + 1)
    ]
    record = RunRecord(
        artifact=artifact.relative_to(run_dir).as_posix(),
        catalogue=str(cfg.catalogue),
        privacy=privacy,
        rounds=rounds,
    )
    record.save(run_dir / RUN_RECORD)
    print_budgets(privacy)
    return record


def _client_level_epsilon(client_dp: ClientLevelDP | None, server_round: int) -> float | None:
    """Client-level ε after this round, from the server's ledger (None without client-level DP)."""
    if client_dp is None:
        return None
    done = [r for r in client_dp.ledger.releases() if r.round <= server_round]
    return done[-1].epsilon_rdp if done else 0.0


def _plain(record: MetricRecord | None) -> dict[str, float] | None:
    return None if record is None else {k: float(v) for k, v in record.items()}


def make_app(
    overrides: dict[str, Any] | None = None, evaluator_factory: EvaluatorFactory | None = None
) -> ServerApp:
    """The ServerApp; `overrides` (dashed run-config keys) win over the run config, and
    `evaluator_factory` gives central evaluation (both from `fedrec simulate`)."""
    fixed = dict(overrides or {})
    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        cfg = RunConfig.from_flower({**context.run_config, **fixed})
        # no catalogue named: the embedded shop
        run_federation(grid, server_config(cfg), context, evaluator_factory)

    return server_app


app = make_app()
