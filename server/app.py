"""Flower ServerApp: the coordinator.

Runs FedAvg over the clients' adapters for the configured rounds, then publishes the global item
index. Writes what happened to the run folder: `rounds.jsonl` (one line per round) and
`server.json` (final privacy report per client and the artifact path).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flwr.app import Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from server.evaluation import CentralEvaluator
from server.publish import publish
from server.strategy import AdapterFedAvg
from shared.adapters import from_record, shapes, to_record
from shared.config import RunConfig
from shared.model import Recommender
from shared.privacy import PRIVACY_UNIT
from shared.schema import load_catalogue


def privacy_summary(cfg: RunConfig, reports: dict[int, list[dict]]) -> dict[str, Any]:
    """Each client's ε composed over every round it trained in (its latest cumulative report)."""
    latest: dict[str, dict] = {}
    for server_round in sorted(reports):
        for report in reports[server_round]:
            latest[str(report["client"])] = {**report, "round": server_round}
    clients = dict(sorted(latest.items()))
    return {
        "private": cfg.private,
        "unit": PRIVACY_UNIT,
        "accountant": "prv (rdp alongside)",
        "delta": cfg.delta,
        "max_grad_norm": cfg.max_grad_norm if cfg.private else None,
        "epsilon_cap": cfg.epsilon_cap or None,
        "epsilon": {c: r["epsilon-prv"] for c, r in clients.items() if r["private"]},
        "epsilon_rdp": {c: r["epsilon-rdp"] for c, r in clients.items() if r["private"]},
        "noise_multipliers": {c: r["noise-multiplier"] for c, r in clients.items() if r["private"]},
        "history": {c: r["history"] for c, r in clients.items() if r["private"]},
    }


def run_federation(grid: Grid, cfg: RunConfig) -> dict[str, Any]:
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    catalogue = load_catalogue(cfg.catalogue)
    model = Recommender(cfg.model_config(len(catalogue)))
    expected = shapes(model.trainable_state())
    strategy = AdapterFedAvg(
        expected,
        fraction_train=cfg.fraction_train,
        fraction_evaluate=1.0,
        min_train_nodes=1,
        min_evaluate_nodes=1,
        min_available_nodes=cfg.min_clients,
    )
    evaluator = None
    if cfg.central_eval:
        evaluator = CentralEvaluator(
            cfg.catalogue, cfg.central_eval, model.config, str(run_dir / "server"), str(run_dir / "cache")
        )
    result = strategy.start(
        grid=grid,
        initial_arrays=to_record(model.trainable_state()),
        num_rounds=cfg.num_server_rounds,
        evaluate_fn=evaluator,
    )

    privacy = privacy_summary(cfg, strategy.privacy_reports)
    model.load_trainable_state(from_record(result.arrays, expected))
    artifact = publish(
        model,
        catalogue,
        run_dir / "index",
        cfg.num_server_rounds,
        info={"privacy": {k: v for k, v in privacy.items() if k != "history"}, "config": cfg.to_flower()},
        cache_dir=run_dir / "cache",
    )
    print(f"published global item index: {artifact}", flush=True)

    rounds = []
    for server_round in range(0 if evaluator else 1, cfg.num_server_rounds + 1):
        rounds.append(
            {
                "round": server_round,
                "train": _plain(result.train_metrics_clientapp.get(server_round)),
                "federated_eval": _plain(result.evaluate_metrics_clientapp.get(server_round)),
                "central_eval": _plain(result.evaluate_metrics_serverapp.get(server_round)),
                "epsilon": {
                    str(r["client"]): r["epsilon-prv"] for r in strategy.privacy_reports.get(server_round, [])
                },
                "refused": strategy.refused.get(server_round, []),
                "skipped": strategy.skipped.get(server_round, []),
            }
        )
    with open(run_dir / "rounds.jsonl", "w") as f:
        for line in rounds:
            f.write(json.dumps(line) + "\n")
    report = {"artifact": str(artifact), "privacy": privacy, "rounds": rounds}
    (run_dir / "server.json").write_text(json.dumps(report, indent=2))
    return report


def _plain(record: MetricRecord | None) -> dict[str, float] | None:
    return None if record is None else {k: float(v) for k, v in record.items()}


def make_app(overrides: dict[str, Any] | None = None) -> ServerApp:
    """The ServerApp; `overrides` (dashed run-config keys) win over the run config (`fedrec simulate`)."""
    fixed = dict(overrides or {})
    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        run_federation(grid, RunConfig.from_flower({**context.run_config, **fixed}))

    return server_app


app = make_app()
