"""Robust aggregation for federations that fear poisoning: Flower's trimmed mean and Krum from the run
config, refused wherever it would void a guarantee (SecAgg+ hides the updates; noise calibrated on a mean)."""

from __future__ import annotations

import numpy as np
import pytest
from test_strategy import _reply  # tests/ is on sys.path under pytest

from server.app import aggregation_strategy
from shared.config import RunConfig

pytestmark = pytest.mark.usefixtures("task_identity")  # tests/conftest.py

PARTNER = {"dp-mode": "partner", "secure-aggregation": False}
HONEST = [np.full((2, 2), v, dtype=np.float32) for v in (0.9, 1.0, 1.1, 1.0)]
POISON = np.full((2, 2), 1e4, dtype=np.float32)  # one client pushes the model far away


def _aggregate(robust: str) -> np.ndarray:
    strategy = aggregation_strategy(RunConfig.from_flower({**PARTNER, "robust-aggregation": robust}), False)
    replies = [_reply({"user_head.1.weight": a}, f"c{i}") for i, a in enumerate([*HONEST, POISON])]
    arrays, _ = strategy.aggregate_train(1, replies)
    return arrays["user_head.1.weight"].numpy()


def test_plain_fedavg_is_pulled_by_one_poisoned_update_and_robust_rules_are_not():
    assert _aggregate("none").min() > 1000  # the mean follows the poisoner
    trimmed, krum = _aggregate("trimmed-mean"), _aggregate("krum")
    assert np.all(np.abs(trimmed - 1.0) < 0.1)  # 0.2 of 5 cut at each end: the poisoner is cut
    assert np.all(np.abs(krum - 1.0) < 0.11)  # Krum selects an honest update


@pytest.mark.parametrize(
    "other",
    [{"secure-aggregation": True}, {"dp-mode": "federation"}, {"client-noise-multiplier": 1.0}],
    ids=["secagg", "federation-mode", "client-level-dp"],
)
def test_robust_aggregation_is_refused_where_it_would_void_a_guarantee(other):
    with pytest.raises(ValueError, match="robust-aggregation"):
        RunConfig.from_flower({**PARTNER, "robust-aggregation": "krum", **other})
    with pytest.raises(ValueError, match="one of none, trimmed-mean, krum"):
        RunConfig.from_flower({**PARTNER, "robust-aggregation": "median"})
