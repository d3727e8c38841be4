"""FedAvg over adapters through the guard: receipts, and refusal of updates that carry anything else."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg

from server.release_book import ReleaseBook
from server.strategy import AdapterGuard
from shared.adapters import WEIGHT
from shared.receipts import Receipts
from shared.report import PrivacyReport

pytestmark = pytest.mark.usefixtures("task_identity")  # tests/conftest.py


EXPECTED = {"user_head.1.weight": (2, 2), "x.lora_B.default.weight": (3,)}


REPORT = PrivacyReport(
    client="c0", round=1, run="7", private=True, noise="secret", unit="user", delta=1e-5, epsilon_prv=1.5,
    epsilon_rdp=1.9, noise_multiplier=1.0, sample_rate=0.1, steps=5, max_grad_norm=1.0, target_epsilon=8.0,
    epsilon_cap=10.0, ledger_seq=0, ledger_hash="ab" * 32,
)  # fmt: skip


def _reply(values: dict[str, np.ndarray], client: str, server_round: int = 1, privacy=None) -> Message:
    request = Message(RecordDict(), dst_node_id=1, message_type="train")
    report = replace(REPORT, client=client, round=server_round).to_record() if privacy is None else privacy
    content = RecordDict(
        {
            "arrays": ArrayRecord({k: torch.from_numpy(v.astype(np.float32)) for k, v in values.items()}),
            "metrics": MetricRecord({WEIGHT: 1}),
            "privacy": ConfigRecord(report),
        }
    )
    return Message(content, reply_to=request)


def _guard(tmp_path) -> AdapterGuard:
    return AdapterGuard(FedAvg(weighted_by_key=WEIGHT), EXPECTED, ReleaseBook(tmp_path))


def test_equal_weight_mean_and_every_report_receipted(tmp_path):
    a = {"user_head.1.weight": np.ones((2, 2)), "x.lora_B.default.weight": np.array([1.0, 2.0, 3.0])}
    b = {"user_head.1.weight": np.zeros((2, 2)), "x.lora_B.default.weight": np.array([4.0, 5.0, 6.0])}
    strategy = _guard(tmp_path)
    arrays, _ = strategy.aggregate_train(1, [_reply(a, "c0"), _reply(b, "c1")])
    out = {k: v.numpy() for k, v in arrays.items()}
    np.testing.assert_allclose(out["user_head.1.weight"], np.full((2, 2), 0.5))
    np.testing.assert_allclose(out["x.lora_B.default.weight"], [2.5, 3.5, 4.5])
    assert [r.client for r in strategy.book.reports[1]] == ["c0", "c1"]
    receipts = Receipts(tmp_path / "receipts.jsonl").read()
    assert [(r.report.client, r.report.ledger_hash, r.seq) for r in receipts] == [
        ("c0", "ab" * 32, 0),
        ("c1", "ab" * 32, 1),
    ]


@pytest.mark.parametrize(
    "privacy, why",
    [
        ({}, "fields differ"),
        ({**REPORT.to_record(), "train-loss": 0.7}, "unexpected \\['train_loss'\\]"),
        ({**REPORT.to_record(), "epsilon-prv": "1.5"}, "must be float"),
        ({**REPORT.to_record(), "round": 3}, "for round 3 in round 1"),
    ],
)
def test_update_without_a_valid_privacy_report_is_refused(tmp_path, privacy, why):
    good = {"user_head.1.weight": np.ones((2, 2)), "x.lora_B.default.weight": np.ones(3)}
    strategy = _guard(tmp_path)
    strategy.aggregate_train(1, [_reply(good, "c0"), _reply(good, "c1", privacy=privacy)])
    assert len(strategy.refused[1]) == 1
    assert re.search(why, strategy.refused[1][0]), strategy.refused[1][0]
    assert [r.report.client for r in Receipts(tmp_path / "receipts.jsonl").read()] == ["c0"]


def test_update_with_foreign_tensor_is_refused(tmp_path):
    good = {"user_head.1.weight": np.ones((2, 2)), "x.lora_B.default.weight": np.ones(3)}
    leaky = {**good, "encoder.embeddings.word_embeddings.weight": np.ones(3)}
    strategy = _guard(tmp_path)
    arrays, _ = strategy.aggregate_train(2, [_reply(good, "c0", 2), _reply(leaky, "c1", 2)])
    np.testing.assert_allclose(arrays["user_head.1.weight"].numpy(), np.ones((2, 2)))
    assert len(strategy.refused[2]) == 1 and "word_embeddings" in strategy.refused[2][0]
