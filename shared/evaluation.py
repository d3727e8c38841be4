"""Evaluate a two-tower model on a set of users, the same way on clients and on the server."""

from __future__ import annotations

import numpy as np

from shared.data import UserData
from shared.metrics import evaluate
from shared.model import Recommender


def evaluate_split(
    model: Recommender, item_vectors: np.ndarray, users: UserData, split: str
) -> dict[str, float]:
    """Recall/NDCG@10/@50 and coverage@10 of `users` on 'valid' or 'test', full ranking, history excluded.

    `item_vectors` are item-tower (text) vectors; the model maps them into its retrieval space.
    """
    histories, targets = users.split(split)
    space = model.item_space(item_vectors)
    users = model.user_rows(model.user_vectors(space, histories))
    scores = evaluate(users, model.item_rows(space), histories, targets)
    return {k: v for k, v in scores.items() if k != "users"}
