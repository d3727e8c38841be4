"""Ranking metrics with the field's protocol: full ranking over all items, history items excluded."""

from __future__ import annotations

import numpy as np

KS = (10, 50)
NO_ITEM = -1  # fills ranked lists longer than what a small catalogue can offer; never a hit


def top_k(user_vectors: np.ndarray, item_vectors: np.ndarray, exclude: list[list[int]], k: int) -> np.ndarray:
    """Exact top-k item indices per user by dot product, never returning an excluded item: [U, k]."""
    out = np.full((len(user_vectors), k), NO_ITEM, dtype=np.int64)
    width = min(k, len(item_vectors))  # a catalogue smaller than k: the tail stays NO_ITEM
    for start in range(0, len(user_vectors), 1024):
        scores = user_vectors[start : start + 1024] @ item_vectors.T
        for row, seen in enumerate(exclude[start : start + 1024]):
            scores[row, seen] = -np.inf
        part = np.argpartition(-scores, width - 1, axis=1)[:, :width]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
        out[start : start + len(scores), :width] = np.take_along_axis(part, order, axis=1)
    return out


def ranking_metrics(ranked: np.ndarray, targets: np.ndarray, n_items: int, ks: tuple[int, ...] = KS) -> dict:
    """Recall@k, NDCG@k (one relevant item per user) and catalogue coverage@10 of ranked lists [U, K]."""
    targets = np.asarray(targets)
    hits = ranked == targets[:, None]
    rank = np.where(hits.any(axis=1), hits.argmax(axis=1), np.iinfo(np.int64).max)
    out: dict[str, float] = {"users": float(len(targets))}
    for k in ks:
        hit = rank < k
        out[f"recall@{k}"] = float(hit.mean()) if len(targets) else 0.0
        gains = np.where(hit, 1.0 / np.log2(np.minimum(rank, k) + 2.0), 0.0)
        out[f"ndcg@{k}"] = float(gains.mean()) if len(targets) else 0.0
    shown = np.unique(ranked[:, :10])
    out["coverage@10"] = float(np.sum(shown != NO_ITEM) / n_items) if len(targets) else 0.0
    return out


def evaluate(user_vectors: np.ndarray, item_vectors: np.ndarray, histories: list[list[int]], targets) -> dict:
    """Full-ranking metrics of a two-tower model for users with known histories and held-out targets."""
    ranked = top_k(user_vectors, item_vectors, histories, max(KS))
    return ranking_metrics(ranked, np.asarray(targets), len(item_vectors))


def popularity_ranking(
    train_histories: list[list[int]], histories: list[list[int]], n_items: int
) -> np.ndarray:
    """The popularity baseline: items ranked by how many training histories hold them, history excluded."""
    counts = np.zeros(n_items, dtype=np.float64)
    for history in train_histories:
        np.add.at(counts, history, 1.0)
    counts += np.linspace(0, 1e-6, n_items)[::-1]  # deterministic tie-break: catalogue order
    return list_ranking(np.argsort(-counts, kind="stable"), histories)


def list_ranking(order: np.ndarray | list[int], histories: list[list[int]]) -> np.ndarray:
    """One fixed list (item rows, best first) for every user, their history excluded (e.g. the trending
    list a new shopper sees); NO_ITEM where the list runs out."""
    ranked = np.full((len(histories), max(KS)), NO_ITEM, dtype=np.int64)
    for row, seen in enumerate(histories):
        seen_set = set(seen)
        top = [i for i in order[: max(KS) + len(seen_set)] if i not in seen_set][: max(KS)]
        ranked[row, : len(top)] = top
    return ranked
