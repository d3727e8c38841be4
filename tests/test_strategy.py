"""FedAvg arithmetic over adapters through the guard, and refusal of updates that carry anything else."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg
from flwr.supercore.task_identity import TaskIdentity

from server.strategy import AdapterGuard


@pytest.fixture(autouse=True)
def task_identity():
    """Messages are made inside a Flower task; outside one, give the process a task identity."""
    saved = (TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id)
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 1
    yield
    TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id = saved


EXPECTED = {"user_head.1.weight": (2, 2), "x.lora_B.default.weight": (3,)}


def _reply(values: dict[str, np.ndarray], users: int, client: str) -> Message:
    request = Message(RecordDict(), dst_node_id=1, message_type="train")
    content = RecordDict(
        {
            "arrays": ArrayRecord({k: torch.from_numpy(v.astype(np.float32)) for k, v in values.items()}),
            "metrics": MetricRecord({"num-examples": users, "train-loss": 1.0}),
            "privacy": ConfigRecord(
                {"client": client, "epsilon-prv": 1.5, "history": json.dumps([[1.0, 0.1, 5]])}
            ),
        }
    )
    return Message(content, reply_to=request)


def test_weighted_average_by_users():
    a = {"user_head.1.weight": np.ones((2, 2)), "x.lora_B.default.weight": np.array([1.0, 2.0, 3.0])}
    b = {"user_head.1.weight": np.zeros((2, 2)), "x.lora_B.default.weight": np.array([4.0, 5.0, 6.0])}
    strategy = AdapterGuard(FedAvg(), EXPECTED)
    arrays, metrics = strategy.aggregate_train(1, [_reply(a, 300, "c0"), _reply(b, 100, "c1")])
    out = {k: v.numpy() for k, v in arrays.items()}
    np.testing.assert_allclose(out["user_head.1.weight"], np.full((2, 2), 0.75))
    np.testing.assert_allclose(out["x.lora_B.default.weight"], [1.75, 2.75, 3.75])
    assert metrics["train-loss"] == 1.0
    assert [r["client"] for r in strategy.privacy_reports[1]] == ["c0", "c1"]


def test_update_with_foreign_tensor_is_refused():
    good = {"user_head.1.weight": np.ones((2, 2)), "x.lora_B.default.weight": np.ones(3)}
    leaky = {**good, "encoder.embeddings.word_embeddings.weight": np.ones(3)}
    strategy = AdapterGuard(FedAvg(), EXPECTED)
    arrays, _ = strategy.aggregate_train(2, [_reply(good, 10, "c0"), _reply(leaky, 10, "c1")])
    np.testing.assert_allclose(arrays["user_head.1.weight"].numpy(), np.ones((2, 2)))
    assert len(strategy.refused[2]) == 1 and "word_embeddings" in strategy.refused[2][0]
