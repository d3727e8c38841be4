"""Centrally computed metrics, for simulations only: the server there may read every user's split.

In a real deployment the server sees no behaviour logs; it relies on the clients' own evaluation.

`central-eval` names either an events file (the split is re-derived from it, as clients do) or a
RecBole atomic dataset folder (e.g. Amazon Scientific): then the metrics use the dataset's OWN
leave-one-out split, as published benchmarks do, and never a re-derived one.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from flwr.app import ArrayRecord, MetricRecord

from shared.adapters import from_record, shapes
from shared.data import UserData, load_party
from shared.evaluation import evaluate_split
from shared.item_cache import catalogue_vectors
from shared.model import ModelConfig, Recommender
from shared.recbole import load_atomic
from shared.schema import item_texts, load_catalogue

EVAL_LOG = "central-eval.jsonl"


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
        self, catalogue: str, events: str, model_config: ModelConfig, work_dir: str, cache_dir: str
    ) -> None:
        self.users = central_users(catalogue, events, f"{work_dir}/quarantine")
        self.texts = item_texts(load_catalogue(catalogue))
        self.model = Recommender(model_config)
        self.cache_dir = cache_dir
        self.log = Path(work_dir) / EVAL_LOG
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.history: dict[int, dict[str, float]] = {}

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord:
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
        print(
            f"[round {server_round}] central valid recall@10 {metrics['valid-recall@10']:.4f} "
            f"ndcg@10 {metrics['valid-ndcg@10']:.4f} | test recall@10 {metrics['test-recall@10']:.4f}",
            flush=True,
        )
        return MetricRecord(metrics)
