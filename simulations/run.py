"""`fedrec simulate`: data -> partitions -> Flower simulation -> published index -> summary.

Drives both sides on one machine with Flower's simulation engine (Ray backend): each simulated
client is a SuperNode running the real ClientApp on its own partition of the users; the real
ServerApp aggregates, evaluates and publishes. Only this driver sees all the data, to write the
partitions and compute centrally the metrics and baselines a real deployment could not.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from shared.artifact import load_artifact
from shared.config import RunConfig
from shared.data import user_data
from shared.durable import write_json
from shared.embedded import write_node_config
from shared.metrics import list_ranking, popularity_ranking, ranking_metrics
from shared.privacy import NOT_PRIVATE_LABEL
from shared.run_record import RUN_RECORD, RunRecord
from shared.schema import load_catalogue, load_events
from shared.signing import run_public_key
from simulations.partition import partition_users, split_by_column, write_partitions
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


# Warnings known to be harmless in the driver process (the ClientApp's own are filtered in client/mods.py).
HARMLESS_WARNINGS = (
    # ray.init: a notice about a future default; our actors ask for no GPU and must keep seeing none
    (FutureWarning, r"Tip: In future versions of Ray, Ray will no longer override accelerator"),
    # Opacus' RDP accountant, met while σ is calibrated (shared/privacy.py silences it when ε is reported):
    # its bound at the largest order is only looser, and the ε reported is the PRV accountant's
    (UserWarning, r"Optimal order is the largest alpha"),
)
HARMLESS_WARNING_MODULES = (  # deprecation notes of libraries, about their own future versions
    (FutureWarning, r"(transformers|sentence_transformers|huggingface_hub)(\.|$)"),
    (DeprecationWarning, r"(transformers|sentence_transformers|huggingface_hub|ray|flwr)(\.|$)"),
)
# Flower's WARNINGs about choices made on purpose: `run_simulation` (the driver hands the ServerApp its
# evaluator and reads every user's data, which `flwr run` cannot), and no federated evaluation in a
# private run (per-client metrics would be an un-noised release; evaluation is central)
FLOWER_NOTICES = (
    "DEPRECATED FEATURE: The `run_simulation` function is deprecated",
    "fraction_evaluate is set to 0.0. Federated evaluation will be skipped.",
)


# What a ClientApp raises to refuse a SecAgg+ round (client/mods.py: SecAgg+ has no error reply)
SECAGG_REFUSAL = "not taking part in this SecAgg+ round: "


class _QuietFlower(logging.Filter):
    """Flower's log, quiet: no notices about choices made on purpose, and a client's SecAgg+ refusal
    (e.g. at its privacy cap) as one line with its reason, not twice with a remote traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if text.lstrip().startswith(FLOWER_NOTICES):
            return False
        if SECAGG_REFUSAL in text:  # the exception, then the same again in the driver's traceback
            if text.startswith("Traceback"):
                return False
            reason = text.rsplit(SECAGG_REFUSAL, 1)[1].splitlines()[0]
            record.msg, record.args = f"a client is {SECAGG_REFUSAL}{reason}", None
        return True


@contextlib.contextmanager
def console(verbose: bool = False) -> Iterator[None]:
    """What `fedrec simulate` prints while it runs; everything is restored on exit.

    Quiet (the default): Flower's logger at WARNING (its errors, refused updates and the ClientApps'
    tracebacks still show; a client's SecAgg+ refusal in one line), no model-loading progress bars.
    `verbose`: Flower's own INFO log. Either way each Flower line is printed once (Opacus' import-time
    `logging.basicConfig` gives the root logger a second handler that Flower's lines also reached), and
    known harmless warnings are filtered. Ray's logger and the ClientApps' output: `simulate(quiet=...)`,
    `run_flower_simulation`.
    """
    from flwr.supercore.logger import FLOWER_LOGGER as flwr  # imported first: the import sets its level
    from transformers.utils import logging as hf_logging

    saved = (flwr.level, flwr.propagate, hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled())
    quiet = _QuietFlower()
    flwr.propagate = False
    if not verbose:
        flwr.setLevel(logging.WARNING)
        flwr.addFilter(quiet)
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            for category, message in HARMLESS_WARNINGS:
                warnings.filterwarnings("ignore", message=message, category=category)
            for category, module in HARMLESS_WARNING_MODULES:
                warnings.filterwarnings("ignore", category=category, module=module)
            yield
    finally:
        flwr.removeFilter(quiet)
        flwr.setLevel(saved[0])
        flwr.propagate = saved[1]
        hf_logging.set_verbosity(saved[2])
        if saved[3]:
            hf_logging.enable_progress_bar()


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
    partition_by: str | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Run a whole federated simulation and return (and write) its summary.

    `partition_by`: natural partitions, one client per value of that column of the logs (`num_clients`,
    `partition` and its options are then not used). `quiet`: the simulated clients' output stays in
    Ray's worker logs (their refusals reach the run record, printed at the end); see `console`.
    """
    started = time.time()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.update(QUIET_FLOWER)

    catalogue_path, events_path = prepare_data(out, catalogue, events, shop_seed)
    cat = load_catalogue(catalogue_path)
    log, report = load_events(events_path, cat, out / "quarantine")
    print(f"data: {len(cat)} items; {_describe_events(report.to_dict())}", flush=True)
    item_index = {item: i for i, item in enumerate(cat["item_id"])}
    users = user_data(log, item_index)
    if users.too_short:
        print(
            f"data: {len(users.too_short)} users have fewer than 3 interactions and are not evaluated",
            flush=True,
        )

    natural = None
    if partition_by:  # each partner's raw rows, validated on its own node
        natural = split_by_column(events_path, partition_by, out / "partitions")
        num_clients, partition = len(natural[0]), f"by {partition_by}"
        print(f"partitions ({partition}): {dict(enumerate(natural[0]))}", flush=True)
        if natural[2]:
            print(f"partitions: {natural[2]} rows have no {partition_by!r} value and are in none", flush=True)
    cfg = RunConfig.from_flower(
        {
            "min-clients": num_clients,  # every simulated client takes part in every round
            **(overrides or {}),
            "run-dir": str(out),
            "catalogue": str(catalogue_path),
            "central-eval": str(events_path),
        }
    )
    if natural:
        parts = natural[1]
    else:
        parts = partition_users(log, cat, num_clients, partition, alpha, seed=cfg.seed, sizes=sizes)
        write_partitions(log, parts, out / "partitions")
    declared = write_node_configs(out / "partitions", parts, cfg)
    if cfg.federation_dp and not cfg.federation_population:  # the federation's declared total (public)
        cfg = replace(cfg, federation_population=sum(declared))
    print(f"partitions ({partition}): users per client {[len(p) for p in parts]}", flush=True)
    print(f"declared populations (public, fix each partner's sampling rate): {declared}", flush=True)

    histories, targets = users.split("test")
    popularity = ranking_metrics(popularity_ranking(users.train, histories, len(cat)), targets, len(cat))

    print(f"training: {_describe_training(cfg, num_clients)}", flush=True)
    run_flower_simulation(cfg, num_clients, quiet=quiet)

    record = RunRecord.load(out / RUN_RECORD)
    print_problems(record)
    privacy = record.privacy
    central = {r.round: r.central_eval for r in record.rounds}
    published = load_artifact(record.artifact_path(out), public_key=run_public_key(record.artifact_path(out)))
    trending = None
    if published.trending is not None:  # what a new shopper sees, scored on every test user's next item
        rows = {item_id: row for row, item_id in enumerate(cat["item_id"].astype(str))}
        order = np.array([rows[i] for i in published.trending.item_ids], dtype=np.int64)
        trending = ranking_metrics(list_ranking(order, histories), targets, len(cat))
    final, zero_shot = central[cfg.num_server_rounds], central[0]
    summary = {
        "private": cfg.private,
        "label": _label(cfg),
        "guarantees": privacy.guarantees,
        "secure_aggregation": cfg.secure_aggregation,
        "client_level": asdict(privacy.client_level) if privacy.client_level else None,
        "federation": asdict(privacy.federation) if privacy.federation else None,
        "recall@10": final["test-recall@10"],
        "ndcg@10": final["test-ndcg@10"],
        "recall@50": final["test-recall@50"],
        "ndcg@50": final["test-ndcg@50"],
        "coverage@10": final["test-coverage@10"],
        "baselines": {
            "popularity": _pick(popularity),
            **({"trending": _pick(trending)} if trending else {}),  # the DP list a new shopper sees
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
            "declared": declared,  # each partner's public population bound
            "partition_values": natural[0] if natural else None,
        },
        "config": cfg.to_flower() | {"num-clients": num_clients},
        "wall_time_s": round(time.time() - started, 1),
        "peak_rss_mb_driver": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    write_json(out / "summary.json", summary)  # the per-round lines are in run.json
    return summary


def write_node_configs(partitions_dir: Path, parts: list[list[str]], cfg: RunConfig) -> list[int]:
    """Each simulated partner's own node config; returns the declared population bounds."""
    return [
        write_node_config(partitions_dir / f"client-{i}", len(users), cfg) for i, users in enumerate(parts)
    ]


def fork_safe_blas() -> threadpool_limits:
    """Single-threaded numpy BLAS while the simulation runs: Ray's start-up must not deadlock.

    Flower starts the ServerApp thread (round-0 evaluation: numpy matmuls) while the main thread
    starts Ray, which forks its daemons. numpy's OpenBLAS shuts its worker threads down at every fork
    (pthread_atfork); a fork during a multi-threaded BLAS call leaves that call, and with it the
    evaluation and often the fork itself, waiting forever. One BLAS thread never hands work to
    workers. Torch (the encoder) keeps its own threads.
    """
    return threadpool_limits(limits=1, user_api="blas")


def run_flower_simulation(cfg: RunConfig, num_clients: int, quiet: bool = False) -> None:
    """The real Flower simulation engine (Ray), one virtual SuperNode per client, one CPU each.

    `quiet`: Ray's logger at WARNING, and Ray's workers (the ClientApps) do not forward their output
    to this console; it stays in Ray's worker logs (`session_latest/logs` under $RAY_TMPDIR, by default
    /tmp/ray). A ClientApp's exception still reaches Flower's log here, with its traceback; a refusal
    reaches the run record (`print_problems`).
    On a terminal, the rounds between two central evaluations show on one line rewritten in place.
    """
    from flwr.simulation import run_simulation

    from client.app import make_app as make_client_app
    from server.app import make_app as make_server_app
    from simulations.evaluation import evaluator_factory

    config = cfg.to_flower()
    record = Path(cfg.run_dir) / RUN_RECORD
    record.unlink(missing_ok=True)  # a record left by an earlier run must not pass for this run's result
    with fork_safe_blas():
        run_simulation(
            server_app=make_server_app(
                config,
                evaluator_factory(cfg.central_eval, progress=quiet and sys.stdout.isatty())
                if cfg.central_eval
                else None,
            ),
            client_app=make_client_app(config),
            num_supernodes=num_clients,
            backend_config={
                "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                "init_args": {
                    "num_cpus": max(1, min(num_clients, os.cpu_count() or 1)),
                    "include_dashboard": False,
                    "logging_level": "WARNING" if quiet else "INFO",  # Ray's own logger, in this process
                    "log_to_driver": not quiet,
                },
            },
        )
    if not record.exists():
        where = "the log above" + ("; rerun with --verbose for the clients' logs" if quiet else "")
        raise RuntimeError(f"the Flower simulation ended without a result; see {where} ({cfg.run_dir})")


def print_problems(record: RunRecord, limit: int = 400) -> None:
    """What did not go to plan, from the run record, on stderr: rounds stopped, clients that did not
    train (their refusals: budget cap, terms, data) and updates refused; one line per distinct reason."""
    seen: dict[str, list[int]] = {}
    for r in record.rounds:
        lines = [f"stopped: {r.stopped}"] if r.stopped else []
        lines += [f"not trained by a client: {why}" for why in r.skipped]
        lines += [f"refused: {why}" for why in r.refused]
        for line in lines:
            first = (line.strip().splitlines() or [""])[0]
            seen.setdefault(first[:limit] + ("…" if len(first) > limit else ""), []).append(r.round)
    for line, rounds in seen.items():
        print(f"round{'s' if len(rounds) > 1 else ''} {_spans(rounds)}: {line}", file=sys.stderr, flush=True)


def _spans(rounds: list[int]) -> str:
    """[1, 2, 3, 5] -> '1-3, 5'."""
    spans: list[list[int]] = []
    for n in sorted(set(rounds)):
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def _describe_events(report: dict[str, Any]) -> str:
    """One line for an events file's load report: counts, and the reasons of any quarantined row."""
    line = f"{report['read']} events read, {report['kept']} kept, {report['quarantined']} quarantined"
    reasons = ", ".join(f"{k} {v}" for k, v in report["reasons"].items() if v)
    if reasons:
        line += f" ({reasons}; rows in {report['quarantine_file']})"
    return line


def _describe_training(cfg: RunConfig, num_clients: int) -> str:
    from simulations.evaluation import MAX_EVALUATIONS

    mode = "federation-mode DP" if cfg.federation_dp else _label(cfg)
    every = max(1, -(-cfg.num_server_rounds // MAX_EVALUATIONS))  # as the evaluator does
    evaluations = "every round" if every == 1 else f"every {every} rounds"
    return (
        f"{cfg.num_server_rounds} rounds, {num_clients} clients, {mode}"
        + (" under SecAgg+" if cfg.secure_aggregation and cfg.federation_dp else "")
        + (f"; central validation {evaluations}" if cfg.central_eval else "")
    )


def _label(cfg: RunConfig) -> str:
    parts = [p for p, on in (("user-level DP", cfg.private), ("client-level DP", cfg.client_level_dp)) if on]
    label = " + ".join(parts) or "NON-PRIVATE"
    label += " + SecAgg+" if cfg.secure_aggregation else ""
    return f"{NOT_PRIVATE_LABEL.upper()} ({label})" if cfg.reproducible_noise else label


def _pick(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if k != "users"}
