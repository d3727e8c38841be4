"""Real-data quality benchmark: the privacy–utility frontier on a RecBole dataset (Amazon Scientific).

    python -m benchmarks.quality --data ../shared/datasets/amazon-scientific            # every row
    python -m benchmarks.quality --data DIR --rows popularity,zero-shot,federated      # some rows
    python -m benchmarks.quality --data DIR --quick                                    # smoke scale
    python -m benchmarks.quality --report                                              # table + plots
    python -m benchmarks.quality --data DIR --rows federated \
        --run-config "bias-learning-rate=0.01" --variant bias-lr-0.01                  # a model change
    python -m benchmarks.quality --data DIR --rows fed-dp-eps8,fed-nonprivate,fed-dp-eps1,fed-dp-eps3
                                                   # federation mode (user-level DP-FedAvg + SecAgg+)

Two DP designs are measured side by side. Partner mode (rows federated, dp-eps*, client-dp: "per-partner
DP-SGD"): each client runs local DP-SGD steps over its own users; their configuration is pinned in
PARTNER_CONFIG so that they reproduce their committed JSONs whatever the pyproject defaults become.
Federation mode (rows fed-*): one federation-wide Poisson rate, one noisy step per round whose noise the
clients share, SecAgg+ on (FEDERATION_CONFIG; 200 rounds, `--federation-rounds` to change).

Protocol (the field's, as in UniSRec/Recformer): the dataset's OWN leave-one-out split (valid = second
to last, test = last item, from its .valid/.test.inter files), ranking over ALL items, the user's
history excluded, Recall@10/@50 and NDCG@10/@50. Every row is evaluated on that split: in-process rows
directly, federated rows by the server's central evaluator reading the same RecBole folder.

Training data: every trained row (centralized, federated, local-only) trains on what a client derives
from its own events (`shared.data.user_data`: repeated items dropped, split re-derived); in Amazon
Scientific that differs from the dataset's train part for the 243 users with repeated items. No
valid/test target of the dataset's split is ever in that training part unless it already is in the
user's history (where the protocol excludes it from the ranking anyway).

Each row writes `benchmarks/results/quality/<row>.json` (`quality/quick/` with --quick); `--report`
(also run after every row) rebuilds `benchmarks/results/results.md` and the plots from those files.
A `--variant NAME` run (a model change being tried) writes `quality/variants/NAME/<row>.json` instead;
results.md lists each variant against the default row it changes: what the change bought.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import _quality_report as report
from benchmarks._quality_data import BenchData, client_partitions, partition_summary, prepare, subset
from shared.config import RunConfig
from shared.data import UserData
from shared.evaluation import evaluate_split
from shared.item_cache import cache_key, catalogue_vectors
from shared.metrics import popularity_ranking, ranking_metrics
from shared.run_record import RUN_RECORD, RunRecord

RESULTS = Path(__file__).resolve().parent / "results"
# The configuration every existing (partner-mode) row was measured with, pinned here so that those rows keep
# reproducing their committed JSONs (quality/*.json "run_config") whatever the pyproject defaults become.
# Plan-level knobs (rounds, local steps, batch size, min-clients, seed) come from the Plan.
PARTNER_CONFIG = {
    "dp-mode": "partner",
    "secure-aggregation": False,
    "fraction-train": 1.0,
    "lora-rank": 4,
    "item-id-rank": 0,
    "learning-rate": 0.001,
    "bias-learning-rate": 0.05,
    "lora-learning-rate": 0.001,
    "noise-multiplier": 1.0,
    "max-grad-norm": 1.0,
    "delta": 1e-5,
    "epsilon-cap": 0.0,
    "target-epsilon": 0.0,
    "reproducible-noise": False,
    "client-noise-multiplier": 0.0,
    "client-clipping-norm": 1.0,
    "client-clipping": "server",
    "client-epsilon-cap": 0.0,
    "num-negatives": 1,
    "hard-negatives": 1,
    "history-length": 20,
    "positions-per-user": 1,
}
# Federation mode (user-level DP-FedAvg, shared/federation.py): one noisy step a round over users Poisson-
# sampled at q = 0.1 across the whole federation, SecAgg+ on, server-side Adam. Hyperparameters chosen on the
# embedded synthetic shop's validation split (non-private and at ε = 8), never on these users (notes.md).
# 200 rounds: the shop's setting; at q = 0.1 each user is drawn about 20 times, and a round is one step
# (seconds), so 200 rounds fit the ~30-min budget per row on 2 cores (measured with --quick first).
FEDERATION_ROUNDS = 200
FEDERATION_CONFIG = {
    "dp-mode": "federation",
    "secure-aggregation": True,
    "lora-rank": 0,
    "item-id-rank": 16,
    "learning-rate": 0.003,  # server Adam, head; the groups below are the shop run's (pyproject) defaults
    "bias-learning-rate": 0.05,
    "item-id-learning-rate": 0.01,
    "num-server-rounds": FEDERATION_ROUNDS,
    "federation-sample-rate": 0.1,
    "max-grad-norm": 1.0,
    "delta": 1e-5,
    "epsilon-cap": 0.0,  # σ calibrated on the target alone
    "reproducible-noise": False,
    "history-length": 20,
    "positions-per-user": 1,
    "model-average-decay": 0.0,  # these rows published the last step (the knob came later)
}
FEDERATED_ROWS = {
    "federated": {**PARTNER_CONFIG, "private": False},
    "dp-eps8": {**PARTNER_CONFIG, "private": True, "target-epsilon": 8.0},
    "dp-eps3": {**PARTNER_CONFIG, "private": True, "target-epsilon": 3.0},
    "dp-eps1": {**PARTNER_CONFIG, "private": True, "target-epsilon": 1.0},
    # Client-level DP (Flower's fixed-clipping wrapper on adapter updates), user-level DP-SGD off. The
    # grouping is the same 10 Dirichlet clients. C = 5: a client's update measured in a quick run had an
    # L2 norm of about 9 after 3 local steps, nearly all of it item bias, so C = 5 clips but keeps signal.
    "client-dp": {
        **PARTNER_CONFIG,
        "private": False,
        "client-noise-multiplier": 1.0,
        "client-clipping-norm": 5.0,
    },
    "fed-nonprivate": {**FEDERATION_CONFIG, "private": False},
    "fed-dp-eps8": {**FEDERATION_CONFIG, "private": True, "target-epsilon": 8.0},
    "fed-dp-eps3": {**FEDERATION_CONFIG, "private": True, "target-epsilon": 3.0},
    "fed-dp-eps1": {**FEDERATION_CONFIG, "private": True, "target-epsilon": 1.0},
}
FEDERATION_ROWS = tuple(r for r, c in FEDERATED_ROWS.items() if c.get("dp-mode") == "federation")
IN_PROCESS_ROWS = ("popularity", "zero-shot", "centralized", "local-only")
ROWS = (
    "popularity",
    "zero-shot",
    "centralized",
    "federated",
    "dp-eps8",
    "dp-eps3",
    "dp-eps1",
    "local-only",
    "client-dp",
    "fed-nonprivate",
    "fed-dp-eps8",
    "fed-dp-eps3",
    "fed-dp-eps1",
)


@dataclass(frozen=True)
class Plan:
    """The scale of a benchmark run: the same rows at every scale, only sizes change."""

    users: int | None  # None: every user of the dataset; else a seeded subsample
    clients: int
    alpha: float  # Dirichlet concentration over each user's dominant category (smaller = more skewed)
    rounds: int
    local_steps: int  # per client per round; centralized gets clients * local_steps per round
    batch_size: int
    seed: int = 0
    run_config: dict[str, Any] = field(default_factory=dict)  # further run-config knobs for every row
    federation_rounds: int = FEDERATION_ROUNDS  # federation-mode rows: one noisy step per round


FULL = Plan(users=None, clients=10, alpha=0.5, rounds=4, local_steps=10, batch_size=64)
QUICK = Plan(users=1500, clients=4, alpha=0.5, rounds=1, local_steps=3, batch_size=32, federation_rounds=30)


def results_dir(results: Path, quick: bool) -> Path:
    return results / "quality" / ("quick" if quick else "")


def run_config(
    plan: Plan, extra: dict[str, Any] | None = None, pinned: dict[str, Any] | None = None
) -> RunConfig:
    """A row's run config: the plan's scale, then the row's pinned knobs (`PARTNER_CONFIG` or a row of
    `FEDERATED_ROWS`), then the plan's --run-config changes (a variant), then `extra` (paths, must-haves)."""
    base = {
        "num-server-rounds": plan.rounds,
        "local-steps": plan.local_steps,
        "batch-size": plan.batch_size,
        "seed": plan.seed,
        "min-clients": plan.clients,
    }
    return RunConfig.from_flower({**base, **(pinned or {}), **plan.run_config, **(extra or {})})


def row_pins(row: str, plan: Plan) -> dict[str, Any]:
    """What a federated row pins over the pyproject defaults (federation rows: the plan's round count)."""
    pins = dict(FEDERATED_ROWS[row])
    if row in FEDERATION_ROWS:
        pins["num-server-rounds"] = plan.federation_rounds
    return pins


def federated_config(plan: Plan, row: str, declared: list[int], paths: dict[str, str]) -> RunConfig:
    """A federated row's run config; federation rows declare the federation's population: the sum of the
    partners' declared (public) populations, which scales every client's share alike."""
    extra = dict(paths)
    pins = row_pins(row, plan)
    if pins.get("dp-mode") == "federation":
        extra["federation-population"] = sum(declared)
    return run_config(plan, extra, pinned=pins)


# ---------------------------------------------------------------------------------------------- rows
def run_popularity(bench: BenchData, plan: Plan) -> dict:
    """Items ranked by how many users' training parts hold them (the dataset's train parts)."""
    users = bench.dataset.users
    out = {}
    for split in ("valid", "test"):
        histories, targets = users.split(split)
        ranked = popularity_ranking(users.train, histories, bench.n_items)
        out[split] = _plain(ranking_metrics(ranked, np.asarray(targets), bench.n_items))
    return out


def run_zero_shot(bench: BenchData, plan: Plan, cache: Path) -> dict:
    """The untrained towers: MiniLM mean-pooled item vectors, recency-pooled history, zero head and bias."""
    from shared.model import Recommender

    model = Recommender(run_config(plan, pinned=PARTNER_CONFIG).model_config(bench.n_items))
    vectors = catalogue_vectors(model, bench.texts, cache)
    return {split: evaluate_split(model, vectors, bench.dataset.users, split) for split in ("valid", "test")}


def run_centralized(bench: BenchData, plan: Plan, cache: Path) -> dict:
    """One party holding every user, non-private, the federated step budget (clients x steps a round)."""
    from client.randomness import secret
    from client.train import train_round
    from shared.model import Recommender

    cfg = run_config(plan, {"private": False}, pinned=PARTNER_CONFIG)
    model = Recommender(cfg.model_config(bench.n_items))
    tokens = model.tokenize(bench.texts)
    vectors = catalogue_vectors(model, bench.texts, cache)
    settings = replace(_settings(cfg), local_steps=plan.clients * plan.local_steps)
    curve = [_curve_point(0, model, vectors, bench.dataset.users)]
    for server_round in range(1, plan.rounds + 1):
        histories = bench.train_view.train
        train_round(
            model, histories, vectors, tokens, settings, population=len(histories), randomness=secret()
        )
        vectors = catalogue_vectors(model, bench.texts, cache)
        curve.append(_curve_point(server_round, model, vectors, bench.dataset.users))
        print(
            f"centralized round {server_round}: valid recall@10 {curve[-1]['valid-recall@10']:.4f}",
            flush=True,
        )
    out = {split: evaluate_split(model, vectors, bench.dataset.users, split) for split in ("valid", "test")}
    return {**out, "curve": curve, "run_config": cfg.to_flower() | {"local-steps": settings.local_steps}}


def run_local_only(bench: BenchData, plan: Plan, parts: list[list[str]], work: Path, cache: Path) -> dict:
    """Each client alone, non-private, on its own users, evaluated on its own users; mean over clients.

    A client alone has nobody to synchronise with, so it trains its whole budget (rounds x local
    steps) in one local round; its catalogue vectors are those of the untrained model during training
    (federated rows refresh them every round). This saves one catalogue encoding per client and round.
    """
    from client.randomness import secret
    from client.train import train_round
    from shared.model import Recommender

    cfg = run_config(plan, {"private": False}, pinned=PARTNER_CONFIG)
    settings = replace(_settings(cfg), local_steps=plan.rounds * plan.local_steps)
    per_client = []
    for index, users in enumerate(parts):
        model = Recommender(cfg.model_config(bench.n_items))
        tokens = model.tokenize(bench.texts)
        vectors = catalogue_vectors(model, bench.texts, cache)
        train = subset(bench.train_view, users).train
        train_round(model, train, vectors, tokens, settings, population=len(train), randomness=secret())
        vectors = model.encode_texts(bench.texts)  # one client's model: not worth caching
        own = subset(bench.dataset.users, users)
        scores = {split: evaluate_split(model, vectors, own, split) for split in ("valid", "test")}
        per_client.append({"client": f"client-{index}", "users": len(own.users), **scores})
        print(f"local-only client {index}: test recall@10 {scores['test']['recall@10']:.4f}", flush=True)
    out: dict[str, Any] = {
        "per_client": per_client,
        "same_users": _same_users_reference(bench, plan, parts, work, cache),
    }
    weights = np.array([c["users"] for c in per_client], dtype=float)
    for split in ("valid", "test"):
        keys = per_client[0][split].keys()
        out[split] = {k: float(np.mean([c[split][k] for c in per_client])) for k in keys}
        out[f"{split}_user_weighted"] = {
            k: float(np.average([c[split][k] for c in per_client], weights=weights)) for k in keys
        }
    out["run_config"] = cfg.to_flower() | {"local-steps": settings.local_steps, "num-server-rounds": 1}
    return out


def _same_users_reference(
    bench: BenchData, plan: Plan, parts: list[list[str]], work: Path, cache: Path
) -> dict:
    """Zero-shot and (if run) the federated global model on each client's own users, averaged the same way.

    Local-only is scored on each client's users only; these are the fair points of comparison.
    """
    from safetensors.torch import load_file

    from shared.model import Recommender

    partner = run_config(plan, pinned=PARTNER_CONFIG)
    models = {"zero-shot": Recommender(partner.model_config(bench.n_items))}
    index = work / "runs" / "federated" / "index"
    if (index / "LATEST").exists():
        global_model = Recommender(partner.model_config(bench.n_items))
        adapter = index / (index / "LATEST").read_text().strip() / "adapter.safetensors"
        global_model.load_trainable_state(load_file(str(adapter)))
        models["federated"] = global_model
    out = {}
    for name, model in models.items():
        folder = work / "runs" / "federated" / "cache" if name == "federated" else cache
        vectors = catalogue_vectors(model, bench.texts, folder)
        scores = [
            evaluate_split(model, vectors, subset(bench.dataset.users, users), "test") for users in parts
        ]
        out[name] = {k: float(np.mean([c[k] for c in scores])) for k in scores[0]}
    return out


def run_federated(
    bench: BenchData, plan: Plan, row: str, parts: list[list[str]], work: Path, cache: Path
) -> dict:
    """The real Flower simulation engine: the ServerApp and ClientApps of fedrec, one SuperNode per client."""
    from shared.model import Recommender
    from simulations.partition import write_partitions
    from simulations.run import QUIET_FLOWER, run_flower_simulation, write_node_configs

    run_dir = (work / "runs" / row).resolve()
    if run_dir.exists():
        shutil.rmtree(run_dir)
    write_partitions(bench.dataset.events, parts, run_dir / "partitions")
    paths = {
        "run-dir": str(run_dir),
        "catalogue": str(bench.catalogue_csv.resolve()),
        "central-eval": str(bench.folder),  # a RecBole folder: the dataset's own split
    }
    # Each partner's node config with its declared (public) population: without it a client refuses.
    declared = write_node_configs(run_dir / "partitions", parts, run_config(plan, pinned=row_pins(row, plan)))
    cfg = federated_config(plan, row, declared, paths)
    # The zero-shot catalogue vectors are the same in every run: seed the run's cache with them (encoded
    # here once per model config, before Ray starts, if no earlier row left them).
    model = Recommender(cfg.model_config(bench.n_items))
    catalogue_vectors(model, bench.texts, cache)
    zero_shot = cache / f"items-{cache_key(model, bench.texts)}.npy"
    (run_dir / "cache").mkdir(parents=True, exist_ok=True)
    shutil.copy(zero_shot, run_dir / "cache" / zero_shot.name)
    del model
    os.environ.update(QUIET_FLOWER)
    # A Ray temp dir of our own, so that rows (and other Ray users of the machine) never share one.
    os.environ.setdefault("RAY_TMPDIR", f"/tmp/ray-quality-{os.getpid()}")
    run_flower_simulation(cfg, plan.clients)

    record = RunRecord.load(run_dir / RUN_RECORD)
    central = {r.round: r.central_eval for r in record.rounds if r.central_eval}
    final = central[max(central)]  # the last round run (never a round selected on test)
    curve = [
        {"round": r, **{k: v for k, v in central[r].items() if k.endswith("@10")}} for r in sorted(central)
    ]
    privacy = asdict(record.privacy)
    timings = [
        json.loads(line) for line in (run_dir / "server" / "central-eval.jsonl").read_text().splitlines()
    ]
    timings = sorted(timings, key=lambda t: t["round"])
    # The evaluator runs every k rounds (about 20 times a run): each entry is the mean round time between two
    # evaluations, evaluation included.
    round_times = [
        round((b["finished"] - a["finished"]) / (b["round"] - a["round"]), 2)
        for a, b in zip(timings, timings[1:], strict=False)
    ]
    skipped = {r.round: r.skipped for r in record.rounds if r.skipped}
    refused = {r.round: r.refused for r in record.rounds if r.refused}
    if refused or skipped:
        print(f"{row}: refused {refused}; skipped {skipped}", flush=True)
    return {
        "valid": {k.removeprefix("valid-"): v for k, v in final.items() if k.startswith("valid-")},
        "test": {k.removeprefix("test-"): v for k, v in final.items() if k.startswith("test-")},
        "curve": curve,
        "round_times_s": round_times,
        "epsilon": record.privacy.epsilon or None,
        "epsilon_rdp": record.privacy.epsilon_rdp or None,
        "noise_multipliers": record.privacy.noise_multipliers or None,
        "client_level": privacy["client_level"],
        "privacy": privacy,
        "federation": privacy.get("federation"),
        "declared_populations": declared,
        "refused_rounds": {str(k): v for k, v in refused.items()},
        "skipped_rounds": {str(k): v for k, v in skipped.items()},
        "federated_eval_final": record.rounds[-1].federated_eval,
        "run_dir": str(run_dir),
        "run_config": cfg.without_paths(),
    }


# ---------------------------------------------------------------------------------------------- driver
def run_row(
    row: str, bench: BenchData, plan: Plan, work: Path, out_dir: Path, quick: bool, command: str
) -> dict:
    """Run one row and write its JSON into `out_dir`; returns what was written."""
    cache = work / "cache"
    parts = client_partitions(bench, plan.clients, plan.alpha, plan.seed)
    started = time.time()
    if row == "popularity":
        result = run_popularity(bench, plan)
    elif row == "zero-shot":
        result = run_zero_shot(bench, plan, cache)
    elif row == "centralized":
        result = run_centralized(bench, plan, cache)
    elif row == "local-only":
        result = run_local_only(bench, plan, parts, work, cache)
    elif row in FEDERATED_ROWS:
        result = run_federated(bench, plan, row, parts, work, cache)
    else:
        raise ValueError(f"unknown row {row!r}; rows: {', '.join(ROWS)}")
    result = {
        "row": row,
        "label": report.LABELS[row],
        "quick": quick,
        "command": command,
        "plan": asdict(plan),
        **result,
        "wall_time_s": round(time.time() - started, 1),
        "data": {
            "folder": str(bench.folder),
            "users": len(bench.dataset.users.users),
            "items": bench.n_items,
            "partition": f"dirichlet over derived dominant category, alpha={plan.alpha}, seed={plan.seed}",
            **partition_summary(bench, parts),
            "data_notes": bench.dataset.report["data_notes"],
        },
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],  # the 2 cores are shared
    }
    out = out_dir / f"{row}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(
        f"{row}: test recall@10 {result['test']['recall@10']:.4f} ndcg@10 {result['test']['ndcg@10']:.4f} "
        f"({result['wall_time_s']:.0f} s) -> {out}",
        flush=True,
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data", help="RecBole atomic dataset folder (e.g. ../shared/datasets/amazon-scientific)"
    )
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, from: {', '.join(ROWS)}")
    parser.add_argument("--quick", action="store_true", help=f"smoke scale: {QUICK}")
    parser.add_argument("--report", action="store_true", help="only rebuild results.md and the plots")
    parser.add_argument(
        "--work", default="runs/quality", help="scratch folder (run folders, caches, subsets)"
    )
    parser.add_argument("--results", default=str(RESULTS), help="where results.md, plots and row JSONs go")
    parser.add_argument("--no-new-row-after", help="HH:MM (UTC): start no further row after this time")
    parser.add_argument("--users", type=int, help="override the plan: subsample this many users")
    parser.add_argument("--clients", type=int)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--federation-rounds", type=int, help="rounds of the federation-mode rows")
    parser.add_argument("--local-steps", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--run-config", default="", help='extra run-config knobs, e.g. "lora-rank=8"')
    parser.add_argument(
        "--variant",
        help="name of a model change being tried (with --run-config or plan overrides): its rows go to "
        "quality/variants/NAME/ and results.md compares them with the default rows",
    )
    args = parser.parse_args(argv)
    results = Path(args.results)
    if args.report:
        report.write_report(results)
        return 0
    if not args.data:
        parser.error("--data is required (or --report)")
    plan = QUICK if args.quick else FULL
    knobs = ("users", "clients", "rounds", "local_steps", "batch_size", "federation_rounds")
    overrides = {k: getattr(args, k) for k in knobs}
    plan = replace(plan, **{k: v for k, v in overrides.items() if v is not None})
    if args.run_config:
        plan = replace(plan, run_config=dict(kv.split("=", 1) for kv in args.run_config.split()))
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; rows: {', '.join(ROWS)}")
    work = Path(args.work) / ("quick" if args.quick else "full")
    out_dir = results_dir(results, args.quick)
    if args.variant:
        work, out_dir = work / "variants" / args.variant, out_dir / "variants" / args.variant
    federated = [r for r in rows if r in FEDERATED_ROWS]
    if len(federated) > 1 or (federated and len(rows) > 1):
        # One Flower simulation (Ray) per process: every federated row runs in a child process.
        for row in rows:
            if args.no_new_row_after and time.strftime("%H:%M", time.gmtime()) >= args.no_new_row_after:
                print(f"row {row} not started: past {args.no_new_row_after} UTC", flush=True)
                continue
            child = [
                sys.executable,
                "-m",
                "benchmarks.quality",
                *_without_rows(argv or sys.argv[1:]),
                "--rows",
                row,
            ]
            code = _run_child(child, work / "runs" / row if row in FEDERATED_ROWS else None)
            if code != 0:
                print(f"row {row} failed (exit {code}); carrying on", flush=True)
        report.write_report(results)
        return 0
    bench = prepare(args.data, work, plan.users, plan.seed)
    print(f"data: {bench.folder}: {bench.dataset.report['users']} users, {bench.n_items} items", flush=True)
    command = _command(args, rows)
    for row in rows:
        run_row(row, bench, plan, work, out_dir, args.quick, command)
        report.write_report(results)
    return 0


STARTUP_LIMIT_S = 240  # a Flower simulation whose round-0 evaluation has not happened by then is stuck


def _run_child(command: list[str], run_dir: Path | None, attempts: int = 3) -> int:
    """Run one row in a child process; retry a federated row whose simulation never starts.

    Ray's raylet can fail to come up when other Ray clusters start on the machine at the same moment;
    the simulation then waits forever. Such a child (no central evaluation written within
    STARTUP_LIMIT_S) is killed with its whole process group and started again.
    """
    log = run_dir / "server" / "central-eval.jsonl" if run_dir else None
    for attempt in range(1, attempts + 1):
        started = time.time()
        child = subprocess.Popen(command, start_new_session=True)
        while (code := child.poll()) is None:
            time.sleep(10)
            if log is not None and time.time() - started > STARTUP_LIMIT_S and not log.exists():
                break
        else:
            return code  # finished (a child killed by anything else, e.g. out of memory, is not retried)
        print(f"{run_dir.name}: no round-0 evaluation after {STARTUP_LIMIT_S} s; killing it", flush=True)
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        print(f"{run_dir.name}: attempt {attempt} stuck at start-up", flush=True)
    return -signal.SIGKILL


def _settings(cfg: RunConfig):
    from client.train import TrainSettings

    return TrainSettings.from_run_config(replace(cfg, private=False), noise_multiplier=0.0)


def _curve_point(server_round: int, model, vectors: np.ndarray, users: UserData) -> dict:
    point: dict[str, float] = {"round": server_round}
    for split in ("valid", "test"):
        scores = evaluate_split(model, vectors, users, split)
        point.update({f"{split}-{k}": v for k, v in scores.items() if k.endswith("@10")})
    return point


def _plain(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if k != "users"}


def _without_rows(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--rows":
            skip = True
        elif not arg.startswith("--rows="):
            out.append(arg)
    return out


def _command(args: argparse.Namespace, rows: list[str]) -> str:
    parts = ["python -m benchmarks.quality", f"--data {args.data}", f"--rows {','.join(rows)}"]
    parts += ["--quick"] if args.quick else []
    for name in ("users", "clients", "rounds", "local_steps", "batch_size", "federation_rounds"):
        if getattr(args, name) is not None:
            parts.append(f"--{name.replace('_', '-')} {getattr(args, name)}")
    if args.run_config:
        parts.append(f'--run-config "{args.run_config}"')
    if args.variant:
        parts.append(f"--variant {args.variant}")
    return " ".join(parts)


if __name__ == "__main__":
    raise SystemExit(main())
