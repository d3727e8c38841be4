"""Ranking metrics on hand-made cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shared.metrics import evaluate, popularity_ranking, ranking_metrics, top_k


def test_recall_ndcg_coverage_by_hand():
    ranked = np.array([[3, 1, 2] + list(range(10, 57)), [5, 6, 7] + list(range(10, 57))])
    out = ranking_metrics(ranked, np.array([1, 9]), n_items=60)
    assert out["recall@10"] == 0.5 and out["recall@50"] == 0.5
    assert out["ndcg@10"] == pytest.approx(0.5 * 1 / math.log2(3))
    assert out["coverage@10"] == pytest.approx(len({3, 1, 2, 5, 6, 7, *range(10, 17)}) / 60)


def test_history_items_are_never_ranked():
    items = np.eye(60, dtype=np.float32)
    users = items[[0, 1]] + 0.5 * items[[2, 3]]
    ranked = top_k(users, items, [[0], [1, 3]], k=50)
    assert 0 not in ranked[0] and 1 not in ranked[1] and 3 not in ranked[1]
    assert ranked[0, 0] == 2 and ranked[1, 0] != 1
    scores = evaluate(users, items, [[0], [1]], [2, 3])
    assert scores["recall@10"] == 1.0 and scores["ndcg@10"] == 1.0


def test_popularity_baseline_excludes_history_and_orders_by_count():
    train = [[0, 1], [1, 2], [1, 2], [3]] + [[i] for i in range(4, 60)]
    ranked = popularity_ranking(train, [[1], [2]], n_items=60)
    assert list(ranked[0, :2]) == [2, 0] and 1 not in ranked[0]
    assert ranked[1, 0] == 1 and 2 not in ranked[1]
