"""Centrally computed metrics, for simulations only: the server there may read every user's split.

In a real deployment the server sees no behaviour logs; it relies on the clients' own evaluation. So
this lives with the simulation driver, which hands it to the ServerApp through Flower's `evaluate_fn`
seam (`evaluator_factory`, `server.app.make_app`); the ServerApp never imports it.

`central-eval` names either an events file (the split is re-derived from it, as clients do) or a
RecBole atomic dataset folder (e.g. Amazon Scientific): then the metrics use the dataset's OWN
leave-one-out split, as published benchmarks do, and never a re-derived one.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from flwr.app import ArrayRecord, MetricRecord

from shared.adapters import from_record, shapes
from shared.data import UserData, load_party
from shared.evaluation import evaluate_split
from shared.item_cache import catalogue_vectors
from shared.model import ModelConfig, Recommender
from shared.schema import item_texts, load_catalogue
from simulations.recbole import load_atomic

EVAL_LOG = "central-eval.jsonl"
MAX_EVALUATIONS = 20
CLEAR_LINE = "\x1b[K"  # erase to the end of the line (the progress line's leftovers)


def central_users(catalogue: str | Path, source: str | Path, quarantine_dir: str | Path) -> UserData:
    """All users' splits: the dataset's own split for a RecBole folder, else re-derived from events."""
    if Path(source).is_dir():
        dataset = load_atomic(source)
        ids = load_catalogue(catalogue)["item_id"].tolist()
        if ids != dataset.catalogue["item_id"].tolist():
            raise ValueError(
                f"central-eval {source}: its items are not the catalogue's ({catalogue}) in the same order; "
                "the item indices of the split would not match the model's"
            )
        return dataset.users
    return load_party(catalogue, source, quarantine_dir)[2]


class CentralEvaluator:
    """`evaluate_fn` for Flower's strategy: metrics of the global model on all users' valid and test items.

    Each call is also appended, with its wall-clock time, to `<work_dir>/central-eval.jsonl`, so that
    per-round times can be measured from the run folder.
    """

    def __init__(
        self,
        catalogue: str,
        events: str,
        model_config: ModelConfig,
        work_dir: str,
        cache_dir: str,
        rounds: int = 0,
        progress: bool = False,
    ) -> None:
        self.users = central_users(catalogue, events, f"{work_dir}/quarantine")
        self.texts = item_texts(load_catalogue(catalogue))
        self.model = Recommender(model_config)
        self.cache_dir = cache_dir
        self.log = Path(work_dir) / EVAL_LOG
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.history: dict[int, dict[str, float]] = {}
        # round 0, the last round and about MAX_EVALUATIONS between: a federation-mode round lasts seconds
        self.rounds = rounds
        self.every = max(1, -(-rounds // MAX_EVALUATIONS)) if rounds else 1
        # the rounds between two evaluations: one line rewritten in place (an interactive console only)
        self.progress = progress
        self.started = time.time()

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if server_round % self.every and server_round != self.rounds:
            self._show_progress(server_round)
            return None
        started = time.time()
        self.model.load_trainable_state(from_record(arrays, shapes(self.model.trainable_state())))
        vectors = catalogue_vectors(self.model, self.texts, self.cache_dir)
        metrics: dict[str, float] = {}
        for split in ("valid", "test"):
            metrics.update(
                {f"{split}-{k}": v for k, v in evaluate_split(self.model, vectors, self.users, split).items()}
            )
        self.history[server_round] = metrics
        with open(self.log, "a") as f:
            line = {"round": server_round, "started": started, "finished": time.time(), **metrics}
            f.write(json.dumps(line) + "\n")
        # validation only: test is reported once, at the end (the results table)
        erase = "\r" + CLEAR_LINE if self.progress else ""  # the progress line, if one is showing
        of = f"/{self.rounds}" if self.rounds else ""
        note = "  (before training)" if server_round == 0 else ""
        recall, ndcg = metrics["valid-recall@10"], metrics["valid-ndcg@10"]
        print(
            f"{erase}round {server_round:{len(str(self.rounds))}d}{of}"
            f"  valid Recall@10 {recall:.4f}  NDCG@10 {ndcg:.4f}{note}",
            flush=True,
        )
        if server_round == 0:
            self.started = time.time()  # the pace shown between evaluations counts training rounds only
        return MetricRecord(metrics)

    def _show_progress(self, server_round: int) -> None:
        """`round 37/200 · 2.1 s/round · ~6 min left`, rewritten in place; the next evaluation replaces it."""
        if not self.progress:
            return
        pace = (time.time() - self.started) / max(server_round, 1)
        left = (self.rounds - server_round) * pace
        eta = f"~{left / 60:.0f} min left" if left >= 90 else f"~{left:.0f} s left"
        sys.stdout.write(f"\r{CLEAR_LINE}round {server_round}/{self.rounds} · {pace:.1f} s/round · {eta}")
        sys.stdout.flush()


def evaluator_factory(source: str, progress: bool = False):
    """What `server.app.make_app` takes: builds the evaluator once the server knows its config and model.

    `progress`: show the rounds between two evaluations on one line rewritten in place (a terminal only).
    """

    def make(cfg, model_config: ModelConfig) -> CentralEvaluator:
        run_dir = Path(cfg.run_dir)
        return CentralEvaluator(
            cfg.catalogue,
            source,
            model_config,
            str(run_dir / "server"),
            str(run_dir / "cache"),
            cfg.num_server_rounds,
            progress,
        )

    return make
