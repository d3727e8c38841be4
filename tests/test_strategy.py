"""FedAvg over adapters through the guard: receipts, and refusal of updates that carry anything else."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
from flwr.serverapp.strategy import FedAvg

from server.release_book import ReleaseBook
from server.secure_aggregation import SecureRecorder
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


def _reply(
    values: dict[str, np.ndarray], client: str, server_round: int = 1, privacy=None, dtype=np.float32
) -> Message:
    request = Message(RecordDict(), dst_node_id=1, message_type="train")
    report = replace(REPORT, client=client, round=server_round).to_record() if privacy is None else privacy
    content = RecordDict(
        {
            "arrays": ArrayRecord({k: torch.from_numpy(v.astype(dtype)) for k, v in values.items()}),
            "metrics": MetricRecord({WEIGHT: 1}),
            "privacy": ConfigRecord(report),
        }
    )
    return Message(content, reply_to=request)


ZEROS = {name: np.zeros(shape) for name, shape in EXPECTED.items()}


class _Grid:
    """Just enough of a Grid for FedAvg.configure_train: two connected nodes."""

    def get_node_ids(self) -> list[int]:
        return [1, 2]


def _guard(tmp_path, server_round=1, global_=ZEROS, max_update_norm: float = 100.0) -> AdapterGuard:
    """A guard whose round was configured (as `Strategy.start` does) from the global `global_`."""
    guard = AdapterGuard(
        FedAvg(weighted_by_key=WEIGHT), EXPECTED, ReleaseBook(tmp_path), None, max_update_norm
    )
    record = ArrayRecord({k: torch.from_numpy(v.astype(np.float32)) for k, v in global_.items()})
    assert len(list(guard.configure_train(server_round, record, ConfigRecord(), _Grid()))) == 2
    return guard


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
    strategy = _guard(tmp_path, server_round=2)
    arrays, _ = strategy.aggregate_train(2, [_reply(good, "c0", 2), _reply(leaky, "c1", 2)])
    np.testing.assert_allclose(arrays["user_head.1.weight"].numpy(), np.ones((2, 2)))
    assert len(strategy.refused[2]) == 1 and "word_embeddings" in strategy.refused[2][0]


# ---------------------------------------------------------------- update validation (issue 14, part 5)

GOOD_A = {"user_head.1.weight": np.full((2, 2), 0.5), "x.lora_B.default.weight": np.array([1.0, 2.0, 3.0])}
GOOD_B = {"user_head.1.weight": np.full((2, 2), -0.5), "x.lora_B.default.weight": np.array([3.0, 2.0, 1.0])}


def _with(values: dict[str, np.ndarray], name: str, index: tuple[int, ...], value: float) -> dict:
    changed = {k: v.copy() for k, v in values.items()}
    changed[name][index] = value
    return changed


@pytest.mark.parametrize(
    "bad, dtype, why",
    [
        (_with(GOOD_A, "x.lora_B.default.weight", (1,), np.nan), np.float32, "non-finite"),
        (_with(GOOD_A, "user_head.1.weight", (0, 1), np.inf), np.float32, "non-finite"),
        (_with(GOOD_A, "user_head.1.weight", (0, 1), -np.inf), np.float32, "non-finite"),
        (GOOD_A, np.float64, "dtype float64 != float32"),
        (GOOD_A, np.float16, "dtype float16 != float32"),
        (
            _with(GOOD_A, "user_head.1.weight", (1, 1), 1e6),
            np.float32,
            r"update norm 1e\+06 > max-update-norm 100",
        ),
    ],
)
def test_bad_update_is_refused_and_the_others_are_averaged(tmp_path, bad, dtype, why):
    strategy = _guard(tmp_path)
    replies = [_reply(GOOD_A, "c0"), _reply(bad, "c1", dtype=dtype), _reply(GOOD_B, "c2")]
    arrays, _ = strategy.aggregate_train(1, replies)
    assert len(strategy.refused[1]) == 1
    assert re.fullmatch(f"node 1: .*{why}.*", strategy.refused[1][0]), strategy.refused[1][0]
    out = {k: v.numpy() for k, v in arrays.items()}
    for name in EXPECTED:
        np.testing.assert_allclose(out[name], (GOOD_A[name] + GOOD_B[name]) / 2)
        assert np.isfinite(out[name]).all()
    assert [r.report.client for r in Receipts(tmp_path / "receipts.jsonl").read()] == ["c0", "c2"]


def test_update_norm_is_measured_from_this_rounds_global_over_all_tensors(tmp_path):
    far = {name: np.full(shape, 10.0) for name, shape in EXPECTED.items()}  # 7 values: norm 10·√7 from 0
    strategy = _guard(tmp_path, global_=far, max_update_norm=1.0)
    near = _with(far, "x.lora_B.default.weight", (0,), 10.6)  # 0.6 from the global
    over = _with(near, "user_head.1.weight", (0, 0), 10.9)  # √(0.36 + 0.81) > 1: only both together
    arrays, _ = strategy.aggregate_train(1, [_reply(near, "c0"), _reply(over, "c1")])
    assert strategy.refused[1] == ["node 1: update norm 1.082 > max-update-norm 1"]
    np.testing.assert_allclose(arrays["x.lora_B.default.weight"].numpy(), [10.6, 10, 10], rtol=1e-6)


def test_honest_update_passes_and_a_round_never_configured_is_refused(tmp_path):
    strategy = _guard(tmp_path)
    arrays, _ = strategy.aggregate_train(1, [_reply(GOOD_A, "c0")])
    assert 1 not in strategy.refused
    np.testing.assert_allclose(arrays["x.lora_B.default.weight"].numpy(), [1.0, 2.0, 3.0])
    strategy.aggregate_train(3, [_reply(GOOD_A, "c0", 3)])
    assert strategy.refused[3] == ["node 1: no global model configured for round 3: update norm unknown"]


class _Summed:
    """A legacy strategy standing in for SecAgg+'s FedAvg: its aggregate is given."""

    def __init__(self, arrays: list[np.ndarray]) -> None:
        self.arrays = arrays

    def aggregate_fit(self, server_round, results, failures):
        return ndarrays_to_parameters(self.arrays), {"train-loss": 0.5}


@pytest.mark.parametrize(
    "arrays, why",
    [
        ([np.ones((2, 2), np.float32), np.array([1, np.nan, 3], np.float32)], "non-finite values .* \\[1\\]"),
        ([np.full((2, 2), np.inf, np.float32), np.ones(3, np.float32)], "non-finite values .* \\[0\\]"),
        ([np.ones((2, 2), np.float32), np.ones(4, np.float32)], "shapes"),
        ([np.ones((2, 2), np.float32), np.ones(3, np.float32)], None),
    ],
)
def test_secure_aggregate_that_is_not_finite_is_refused_and_the_global_kept(tmp_path, arrays, why):
    recorder = SecureRecorder(_Summed(arrays), ReleaseBook(tmp_path), None, list(EXPECTED.values()))
    parameters, _ = recorder.aggregate_fit(1, [], [])
    if why is None:
        assert 1 not in recorder.refused and len(parameters_to_ndarrays(parameters)) == 2
    else:
        assert parameters is None  # Flower's fit workflow keeps the previous global model
        assert re.match(f"aggregate refused, previous global kept: {why}", recorder.refused[1][0])
    assert recorder.train_metrics[1] == {"train-loss": 0.5}
