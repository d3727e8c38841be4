"""`fedrec simulate`: data -> partitions -> Flower simulation -> published index -> summary.

Drives both sides on one machine with Flower's simulation engine (Ray backend): each simulated
client is a SuperNode running the real ClientApp on its own partition of the users; the real
ServerApp aggregates, evaluates and publishes. Only this driver sees all the data, to write the
partitions and compute centrally the metrics and baselines a real deployment could not.
"""

from __future__ import annotations

import json
import os
import resource
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from threadpoolctl import threadpool_limits

from shared.config import RunConfig
from shared.data import user_data
from shared.durable import write_json
from shared.metrics import popularity_ranking, ranking_metrics
from shared.privacy import NOT_PRIVATE_LABEL
from shared.run_record import RUN_RECORD, RunRecord
from shared.schema import load_catalogue, load_events
from simulations.partition import partition_users, write_partitions
from simulations.shop import ShopConfig, write_shop

QUIET_FLOWER = {
    # Never let Flower install dependencies at run time (it would pull CUDA torch), nor phone home.
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "UV_OFFLINE": "1",
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "0",
    "TOKENIZERS_PARALLELISM": "false",
}


def prepare_data(out: Path, catalogue: str | None, events: str | None, shop_seed: int) -> tuple[Path, Path]:
    """The given catalogue + events, or the embedded default shop generated into `out/data`."""
    if catalogue and events:
        return Path(catalogue).resolve(), Path(events).resolve()
    if catalogue or events:
        raise ValueError("give both --catalogue and --events, or neither (to use the embedded default shop)")
    return write_shop(out / "data", ShopConfig(seed=shop_seed))


def simulate(
    out: str | Path,
    num_clients: int = 2,
    partition: str = "iid",
    alpha: float = 0.5,
    sizes: list[int] | None = None,
    catalogue: str | None = None,
    events: str | None = None,
    shop_seed: int = 0,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run a whole federated simulation and return (and write) its summary."""
    started = time.time()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.update(QUIET_FLOWER)

    catalogue_path, events_path = prepare_data(out, catalogue, events, shop_seed)
    cat = load_catalogue(catalogue_path)
    log, report = load_events(events_path, cat, out / "quarantine")
    print(f"data: {len(cat)} items; events {report.to_dict()}", flush=True)
    item_index = {item: i for i, item in enumerate(cat["item_id"])}
    users = user_data(log, item_index)
    if users.too_short:
        print(
            f"data: {len(users.too_short)} users have fewer than 3 interactions and are not evaluated",
            flush=True,
        )

    cfg = RunConfig.from_flower(
        {
            "min-clients": num_clients,  # every simulated client takes part in every round
            **(overrides or {}),
            "run-dir": str(out),
            "catalogue": str(catalogue_path),
            "central-eval": str(events_path),
        }
    )
    parts = partition_users(log, cat, num_clients, partition, alpha, seed=cfg.seed, sizes=sizes)
    write_partitions(log, parts, out / "partitions")
    declared = write_node_configs(out / "partitions", parts, cfg)
    print(f"partitions ({partition}): users per client {[len(p) for p in parts]}", flush=True)
    print(f"declared populations (public, fix each partner's sampling rate): {declared}", flush=True)

    histories, targets = users.split("test")
    popularity = ranking_metrics(popularity_ranking(users.train, histories, len(cat)), targets, len(cat))

    run_flower_simulation(cfg, num_clients)

    record = RunRecord.load(out / RUN_RECORD)
    privacy = record.privacy
    central = {r.round: r.central_eval for r in record.rounds}
    final, zero_shot = central[cfg.num_server_rounds], central[0]
    summary = {
        "private": cfg.private,
        "label": _label(cfg),
        "guarantees": privacy.guarantees,
        "secure_aggregation": cfg.secure_aggregation,
        "client_level": asdict(privacy.client_level) if privacy.client_level else None,
        "recall@10": final["test-recall@10"],
        "ndcg@10": final["test-ndcg@10"],
        "recall@50": final["test-recall@50"],
        "ndcg@50": final["test-ndcg@50"],
        "coverage@10": final["test-coverage@10"],
        "baselines": {
            "popularity": _pick(popularity),
            "zero_shot": {k.removeprefix("test-"): v for k, v in zero_shot.items() if k.startswith("test-")},
        },
        "noise": privacy.noise,
        "target_epsilon": privacy.target_epsilon,
        "epsilon_cap": privacy.epsilon_cap,
        "epsilon": privacy.epsilon if cfg.private else None,
        "epsilon_rdp": privacy.epsilon_rdp if cfg.private else None,
        "delta": cfg.delta,
        "privacy_unit": "user",
        "accountant": "prv",
        "artifact": str(record.artifact_path(out)),
        "data": {
            "catalogue": str(catalogue_path),
            "events": report.to_dict(),
            "users": len(users.users),
            "users_too_short": len(users.too_short),
            "partition": partition,
            "alpha": alpha,
            "users_per_client": [len(p) for p in parts],
        },
        "config": cfg.to_flower() | {"num-clients": num_clients},
        "wall_time_s": round(time.time() - started, 1),
        "peak_rss_mb_driver": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    write_json(out / "summary.json", summary)  # the per-round lines are in run.json
    return summary


POPULATION_STEP = 50  # simulated partners declare their user count rounded up to this (a public bound)


def declared_population(users: int) -> int:
    """The public bound a simulated partner declares: its user count rounded up to POPULATION_STEP."""
    return max(POPULATION_STEP, -(-users // POPULATION_STEP) * POPULATION_STEP)


def write_node_configs(partitions_dir: Path, parts: list[list[str]], cfg: RunConfig) -> list[int]:
    """Each simulated partner's own node config (what a SuperNode's --node-config would hold)."""
    from client.app import NODE_CONFIG_FILE

    declared = []
    for index, users in enumerate(parts):
        population = declared_population(len(users))
        node = {"population": population, "require-private": cfg.private and not cfg.reproducible_noise}
        (partitions_dir / f"client-{index}" / NODE_CONFIG_FILE).write_text(json.dumps(node) + "\n")
        declared.append(population)
    return declared


def fork_safe_blas() -> threadpool_limits:
    """Single-threaded numpy BLAS while the simulation runs: Ray's start-up must not deadlock.

    Flower starts the ServerApp thread (round-0 evaluation: numpy matmuls) while the main thread
    starts Ray, which forks its daemons. numpy's OpenBLAS shuts its worker threads down at every fork
    (pthread_atfork); a fork during a multi-threaded BLAS call leaves that call, and with it the
    evaluation and often the fork itself, waiting forever. One BLAS thread never hands work to
    workers. Torch (the encoder) keeps its own threads.
    """
    return threadpool_limits(limits=1, user_api="blas")


def run_flower_simulation(cfg: RunConfig, num_clients: int) -> None:
    """The real Flower simulation engine (Ray), one virtual SuperNode per client, one CPU each."""
    from flwr.simulation import run_simulation

    from client.app import make_app as make_client_app
    from server.app import make_app as make_server_app

    config = cfg.to_flower()
    record = Path(cfg.run_dir) / RUN_RECORD
    record.unlink(missing_ok=True)  # a record left by an earlier run must not pass for this run's result
    with fork_safe_blas():
        run_simulation(
            server_app=make_server_app(config),
            client_app=make_client_app(config),
            num_supernodes=num_clients,
            backend_config={
                "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                "init_args": {
                    "num_cpus": max(1, min(num_clients, os.cpu_count() or 1)),
                    "include_dashboard": False,
                },
            },
        )
    if not record.exists():
        raise RuntimeError(f"the Flower simulation ended without a result; see the log above ({cfg.run_dir})")


def _label(cfg: RunConfig) -> str:
    parts = [p for p, on in (("user-level DP", cfg.private), ("client-level DP", cfg.client_level_dp)) if on]
    label = " + ".join(parts) or "NON-PRIVATE"
    label += " + SecAgg+" if cfg.secure_aggregation else ""
    return f"{NOT_PRIVATE_LABEL.upper()} ({label})" if cfg.reproducible_noise else label


def _pick(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if k != "users"}
