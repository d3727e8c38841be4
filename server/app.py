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
from logging import INFO
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg, FedTrimmedAvg, Krum, Strategy
from flwr.supercore import log

from server.checkpoint import CHECKPOINT_NAME, Checkpoint, CheckpointError, file_sha256
from server.client_privacy import ClientLevelDP
from server.federation import FederationStep, ServerStep
from server.publish import publish
from server.release_book import ReleaseBook
from server.secure_aggregation import run_secure
from server.strategy import AdapterGuard
from server.trending import release_trending
from shared.adapters import WEIGHT, from_record, shapes, to_record
from shared.config import RunConfig
from shared.embedded import server_config
from shared.ledger import LEDGER_NAME, TRAINING_KEY, Ledger, of_training
from shared.model import ModelConfig, Recommender
from shared.privacy import NOISE_REPRODUCIBLE, NOT_PRIVATE_LABEL, PRIVACY_UNIT
from shared.report import PrivacyReport
from shared.run_record import RUN_RECORD, ClientLevelSummary, PrivacySummary, RoundRecord, RunRecord
from shared.schema import load_catalogue
from shared.signing import ensure_key_pair
from shared.trending import TRENDING_ROUND


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
            + (", composed over round 0's trending release too" if federation.trending_released else "")
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


Evaluator = Callable[[int, ArrayRecord], MetricRecord | None]  # Flower's `evaluate_fn`: round, global model
EvaluatorFactory = Callable[[RunConfig, ModelConfig], Evaluator]


def run_federation(
    grid: Grid, cfg: RunConfig, context: Context, evaluator_factory: EvaluatorFactory | None = None
) -> RunRecord:
    """Run the federation, publish the index and write the run record (`RUN_DIR/run.json`).

    After every completed round the server checkpoints the training (server/checkpoint.py); a server
    started again on the same run folder, as a new Flower run, resumes it at the next round.
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
    if cfg.central_eval and evaluator_factory is None:
        raise ValueError(
            "run-config 'central-eval' is read by the simulation driver (`fedrec simulate`), which hands"
            " the ServerApp its evaluator; a ServerApp started by `flwr run` has none: leave it empty"
        )
    run = str(context.run_id)
    catalogue_sha = file_sha256(cfg.catalogue)
    resumed = _resume_point(run_dir, cfg, signing_key, expected, catalogue_sha)
    training = resumed.training if resumed else run
    done = resumed.round if resumed else 0
    if resumed:
        print(f"resuming training {training} after round {done} of {cfg.num_server_rounds}", flush=True)
        model.load_trainable_state(from_record(_arrays(resumed.arrays), expected))
    initial = to_record(model.trainable_state())
    evaluator = evaluator_factory(cfg, model.config) if evaluator_factory else None
    client_dp = None
    if cfg.client_level_dp:
        client_dp = ClientLevelDP(cfg, cfg.min_clients, run_dir / "server", run=training, attempt=run)

    federation = None
    if cfg.federation_dp:  # one noisy step a round, taken here (server/federation.py)
        current = {k: v.numpy() for k, v in initial.items()}
        federation = ServerStep(cfg, current, run_dir / "server", run=training, attempt=run)
        if resumed and resumed.optimizer:
            released = _released(federation.ledger, training) if cfg.private else None
            federation.restore(resumed.optimizer, released)
        federation.trending_released = bool(resumed and resumed.trending)
        if evaluator:  # evaluate what a publication would carry: the average of the steps' models
            evaluator = _evaluating_published(evaluator, federation)
    releases = ReleaseBook(run_dir / "server")
    history: dict[int, dict[str, Any]] = dict(resumed.history) if resumed else {}
    if resumed:
        releases.reports = {
            r: [PrivacyReport.from_record(x, f"checkpoint round {r}") for x in reports]
            for r, reports in resumed.reports.items()
        }
    trending = resumed.trending if resumed else None

    def checkpoint(server_round: int, arrays: dict[str, np.ndarray], finished: bool = False) -> None:
        Checkpoint(
            training=training,
            run=run,
            round=server_round,
            config=cfg.without_paths(),
            catalogue_sha256=catalogue_sha,
            arrays=arrays,
            optimizer=federation.state() if federation else None,
            reports={r: [x.to_record() for x in xs] for r, xs in releases.reports.items()},
            history=history,
            finished=finished,
            trending=trending,
        ).save(run_dir / "server" / CHECKPOINT_NAME, signing_key)

    if federation and cfg.trending and done == 0 and trending is None:  # round 0 (server/trending.py)
        trending, reasons = release_trending(
            grid, context, cfg, list(catalogue["item_id"]), releases, federation, training
        )
        history[0] = {"train": None, "federated_eval": None, "central_eval": None, "refused": []}
        history[0] |= {"skipped": reasons, "stopped": None}
        checkpoint(0, {k: v.numpy() for k, v in initial.items()})

    if cfg.secure_aggregation:

        def secure_round(server_round: int, arrays: dict[str, np.ndarray], recorder) -> None:
            history[server_round] = _history(
                recorder.train_metrics.get(server_round),
                None,
                central.get(server_round),
                recorder,
                server_round,
            )
            checkpoint(server_round, arrays)

        central: dict[int, MetricRecord] = {}
        final, book, _ = run_secure(
            grid, context, cfg, initial, evaluator, client_dp, releases, federation,
            first_round=done + 1, training=training, on_round=secure_round, central=central,
        )  # fmt: skip
        if 0 in central and done == 0:
            history[0] = _merged(history.get(0), _history(None, None, central[0], book, 0))
    else:
        fedavg = aggregation_strategy(cfg, bool(client_dp or federation))
        aggregator = client_dp.wrap(fedavg) if client_dp else fedavg
        step = FederationStep(aggregator, federation) if federation else None
        book = AdapterGuard(
            step or aggregator,
            expected,
            releases,
            client_dp,
            cfg.max_update_norm,
        )

        def message_round(server_round: int, arrays: ArrayRecord, train, federated, central) -> None:
            for reason in (step.skipped if step else {}).get(server_round, []):
                book.skipped.setdefault(server_round, []).append(reason)
            history[server_round] = _merged(
                history.get(server_round) if server_round == 0 else None,
                _history(_plain(train), _plain(federated), _plain(central), book, server_round),
            )
            if server_round:
                checkpoint(server_round, {k: v.numpy() for k, v in arrays.items()})

        final = train_rounds(
            book,
            grid,
            initial,
            range(done + 1, cfg.num_server_rounds + 1),
            ConfigRecord({TRAINING_KEY: training}),
            cfg.round_timeout,
            evaluator if done == 0 else None,
            evaluator,
            message_round,
        )

    privacy = privacy_summary(cfg, releases, client_dp, federation)
    published = _arrays(federation.published()) if federation else final  # the average of the steps
    model.load_trainable_state(from_record(published, expected))
    artifact = publish(
        model,
        catalogue,
        run_dir / "index",
        cfg.num_server_rounds,
        info={"privacy": asdict(privacy), "config": cfg.without_paths()},  # no server paths published
        cache_dir=run_dir / "cache",
        signing_key=signing_key,
        trending=trending,
    )
    print(f"published global item index: {artifact}", flush=True)

    rounds = [
        RoundRecord(
            round=server_round,
            train=history.get(server_round, {}).get("train"),
            federated_eval=history.get(server_round, {}).get("federated_eval"),
            central_eval=history.get(server_round, {}).get("central_eval"),
            epsilon={r.client: r.epsilon_prv for r in releases.reports.get(server_round, []) if r.private},
            client_level_epsilon=_client_level_epsilon(client_dp, server_round),
            refused=history.get(server_round, {}).get("refused", []),
            skipped=history.get(server_round, {}).get("skipped", []),
            stopped=history.get(server_round, {}).get("stopped"),
        )
        for server_round in range(0 if evaluator or 0 in history else 1, cfg.num_server_rounds + 1)
    ]
    record = RunRecord(
        artifact=artifact.relative_to(run_dir).as_posix(),
        catalogue=str(cfg.catalogue),
        privacy=privacy,
        rounds=rounds,
    )
    record.save(run_dir / RUN_RECORD)
    checkpoint(cfg.num_server_rounds, {k: v.numpy() for k, v in final.items()}, finished=True)
    print_budgets(privacy)
    return record


def train_rounds(
    strategy: Strategy,
    grid: Grid,
    arrays: ArrayRecord,
    rounds: range,
    train_config: ConfigRecord,
    timeout: float,
    evaluate_first: Callable[[int, ArrayRecord], MetricRecord | None] | None,
    evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None,
    round_done: Callable[[int, ArrayRecord, Any, Any, Any], None],
) -> ArrayRecord:
    """Flower's `Strategy.start` loop over the given (absolute) rounds, so that a resumed training goes
    on at its next round; `round_done` gets each completed round (train, federated and central metrics)
    before the next one starts: where the checkpoint is written. `evaluate_first`: round 0's evaluator."""
    if evaluate_first:
        round_done(0, arrays, None, None, evaluate_first(0, arrays))
    for server_round in rounds:
        log(INFO, "[ROUND %s/%s]", server_round, rounds.stop - 1)
        replies = grid.send_and_receive(
            messages=strategy.configure_train(server_round, arrays, train_config, grid), timeout=timeout
        )
        new, train = strategy.aggregate_train(server_round, replies)
        arrays = new if new is not None else arrays
        replies = grid.send_and_receive(
            messages=strategy.configure_evaluate(server_round, arrays, ConfigRecord(), grid), timeout=timeout
        )
        federated = strategy.aggregate_evaluate(server_round, replies)
        central = evaluate_fn(server_round, arrays) if evaluate_fn else None
        round_done(server_round, arrays, train, federated, central)
    return arrays


def _history(train, federated, central, book, server_round: int) -> dict[str, Any]:
    """What the run record keeps of a round, as the checkpoint holds it (`HISTORY_KEYS`)."""
    return {
        "train": train,
        "federated_eval": federated,
        "central_eval": _plain(central) if isinstance(central, MetricRecord) else central,
        "refused": list(book.refused.get(server_round, [])),
        "skipped": list(book.skipped.get(server_round, [])),
        "stopped": book.stopped.get(server_round),
    }


def _merged(earlier: dict[str, Any] | None, entry: dict[str, Any]) -> dict[str, Any]:
    """A round's record with the reasons an earlier record of it gave kept (round 0: the trending release,
    then the central evaluation of the model before training)."""
    if earlier is None:
        return entry
    return entry | {key: earlier[key] + entry[key] for key in ("refused", "skipped")}


def _evaluating_published(evaluate: Evaluator, federation: ServerStep) -> Evaluator:
    """The central evaluator, given the model the server would publish instead of the last step's."""

    def published(server_round: int, _last_step: ArrayRecord) -> MetricRecord | None:
        return evaluate(server_round, _arrays(federation.published()))

    return published


def _arrays(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(v) for k, v in arrays.items()})


def _released(ledger: Ledger, training: str, upto: int | None = None) -> int:
    """The server step's training releases of this training in the server's ledger (rounds 1..`upto`;
    round 0, the trending release, is no server step)."""
    return sum(
        1
        for r in ledger.releases()
        if of_training(r.run, training) and r.round > TRENDING_ROUND and (upto is None or r.round <= upto)
    )


def _resume_point(
    run_dir: Path, cfg: RunConfig, key, expected: dict[str, tuple[int, ...]], catalogue_sha: str
) -> Checkpoint | None:
    """The checkpoint to resume from (verified against this server), None for a new training; refused
    (before any round, so before any privacy budget is spent): a finished training, a checkpoint of
    another config, catalogue or model, and a run folder whose publication slot is already taken."""
    path = run_dir / "server" / CHECKPOINT_NAME
    slot = run_dir / "index" / f"v{cfg.num_server_rounds:04d}"
    resumed = None
    if path.exists():
        resumed = Checkpoint.load(path, key)
        if resumed.finished:
            raise CheckpointError(
                f"{path}: field 'finished': training {resumed.training} finished all its"
                f" {resumed.round} rounds and published its index; not training it again (a new training"
                " needs a new run-dir)"
            )
        released = None
        if cfg.federation_dp and cfg.private:
            released = _released(Ledger(run_dir / "server" / LEDGER_NAME), resumed.training, resumed.round)
        resumed.check_matches(path, cfg.without_paths(), catalogue_sha, expected, released)
    elif (run_dir / RUN_RECORD).exists():
        raise CheckpointError(
            f"{run_dir / RUN_RECORD}: this run folder holds a finished run and no checkpoint to resume from;"
            " not starting a training over it from round 1 (use a new run-dir)"
        )
    if slot.exists():
        raise CheckpointError(
            f"{slot}: the publication slot of round {cfg.num_server_rounds} is already taken (a published"
            " round is never overwritten); refused before training, so that no privacy budget is spent on"
            " a model that could not be published: use a new run-dir"
        )
    return resumed


def aggregation_strategy(cfg: RunConfig, noised_aggregate: bool) -> FedAvg:
    """Flower's FedAvg, or with `robust-aggregation` its trimmed mean or Krum (RunConfig allows those only
    where the server sees each update and no noise is calibrated on the mean)."""
    common = {
        "fraction_train": cfg.fraction_train,
        # a private run's clients release no per-client metrics: evaluation is central (simulation)
        "fraction_evaluate": 0.0 if cfg.private else 1.0,
        "min_train_nodes": cfg.min_clients if noised_aggregate else 1,
        "min_evaluate_nodes": 0 if cfg.private else 1,
        "min_available_nodes": cfg.min_clients,
        "weighted_by_key": WEIGHT,  # equal, public weights: FedAvg by counts would need a DP count
    }
    if cfg.robust_aggregation == "trimmed-mean":
        return FedTrimmedAvg(beta=cfg.trim_fraction, **common)
    if cfg.robust_aggregation == "krum":
        return Krum(num_malicious_nodes=cfg.malicious_clients, **common)
    return FedAvg(**common)


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
