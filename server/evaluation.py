"""Centrally computed metrics, for simulations only: the server there may read every user's split.

In a real deployment the server sees no behaviour logs; it relies on the clients' own evaluation.
"""

from __future__ import annotations

from flwr.app import ArrayRecord, MetricRecord

from shared.adapters import from_record, shapes
from shared.data import load_party
from shared.evaluation import evaluate_split
from shared.item_cache import catalogue_vectors
from shared.model import ModelConfig, Recommender
from shared.schema import item_texts


class CentralEvaluator:
    """`evaluate_fn` for Flower's strategy: metrics of the global model on all users' valid and test items."""

    def __init__(
        self, catalogue: str, events: str, model_config: ModelConfig, work_dir: str, cache_dir: str
    ) -> None:
        cat, _, self.users, _ = load_party(catalogue, events, f"{work_dir}/quarantine")
        self.texts = item_texts(cat)
        self.model = Recommender(model_config)
        self.cache_dir = cache_dir
        self.history: dict[int, dict[str, float]] = {}

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord:
        self.model.load_trainable_state(from_record(arrays, shapes(self.model.trainable_state())))
        vectors = catalogue_vectors(self.model, self.texts, self.cache_dir)
        metrics: dict[str, float] = {}
        for split in ("valid", "test"):
            metrics.update(
                {f"{split}-{k}": v for k, v in evaluate_split(self.model, vectors, self.users, split).items()}
            )
        self.history[server_round] = metrics
        print(
            f"[round {server_round}] central valid recall@10 {metrics['valid-recall@10']:.4f} "
            f"ndcg@10 {metrics['valid-ndcg@10']:.4f} | test recall@10 {metrics['test-recall@10']:.4f}",
            flush=True,
        )
        return MetricRecord(metrics)
