"""Membership-inference audit: the statistics by hand, and the attack on a real (tiny) model it must break."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from audit.membership import (
    attack_auc,
    epsilon_lower_bound,
    inputs_from_record,
    membership_scores,
    run_attack,
    training_pairs,
)
from audit.membership import main as attack_main
from client.randomness import reproducible
from client.train import TrainSettings, train_round
from shared.artifact import write_artifact
from shared.run_record import RUN_RECORD, PrivacySummary, RunRecord
from shared.signing import ensure_key_pair
from tests.conftest import TEXTS

DELTA = 1e-5
N_MEMBERS, N_NONMEMBERS, SEQUENCE = 8, 24, 8  # SEQUENCE items per user: 6 train + valid + test
OVERFIT = TrainSettings(
    private=False,
    batch_size=N_MEMBERS,
    local_steps=30,
    learning_rate=0.05,
    bias_learning_rate=0.05,
    num_negatives=1,
    hard_negatives=1,
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: the training below is 3-10x slower when it fights other work for two cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------- AUC
def test_auc_extremes():
    assert attack_auc([3.0, 4.0, 5.0], [0.0, 1.0, 2.0]) == 1.0
    assert attack_auc([0.0, 1.0, 2.0], [3.0, 4.0, 5.0]) == 0.0
    assert attack_auc([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == 0.5
    assert attack_auc([7.0] * 4, [7.0] * 9) == 0.5  # all ties count 1/2


def test_auc_by_hand():
    # member 0.9 beats all 3; member 0.4 beats 0.1, ties 0.4, loses to 0.5: 1.5; member 0.6 beats all 3.
    assert attack_auc([0.9, 0.4, 0.6], [0.5, 0.4, 0.1]) == pytest.approx(7.5 / 9)
    assert attack_auc([2.0], [1.0, 3.0]) == 0.5


def test_auc_refuses_nan_and_empty():
    with pytest.raises(ValueError, match="NaN"):
        attack_auc([1.0, np.nan], [0.0])
    with pytest.raises(ValueError, match="no scores"):
        attack_auc([], [0.0])


# ---------------------------------------------------------------------------------------------- ε bound
def test_epsilon_by_hand():
    # Thresholds 0..3 and +inf; the best are t=1 (TPR 1, FPR 1/2: log 2) and t=3 (TPR 1/2, FPR 0:
    # log(1 / (1 - 1/2)) = log 2); TPR = 1 with FPR = 0 (t=2) leaves both terms undefined.
    assert epsilon_lower_bound([2.0, 3.0], [0.0, 1.0], delta=0.0) == pytest.approx(math.log(2))


def test_epsilon_separated_large_samples_is_large():
    members, nonmembers = np.arange(1000.0) + 1000, np.arange(1000.0)
    raw = epsilon_lower_bound(members, nonmembers, DELTA)
    corrected = epsilon_lower_bound(members, nonmembers, DELTA, confidence=0.95)
    assert raw == pytest.approx(math.log(1000 * (1 - DELTA)))  # t = max non-member: TPR 1, FPR 1/1000
    assert 4.5 < corrected < raw
    # More users, a tighter bound: the same separation with 100 users a side certifies less.
    assert epsilon_lower_bound(members[:100], nonmembers[:100], DELTA, confidence=0.95) < corrected


def test_epsilon_same_distribution_is_about_zero():
    scores = np.random.default_rng(0).normal(size=300)
    assert epsilon_lower_bound(scores, scores.copy(), DELTA) == 0.0
    assert epsilon_lower_bound(scores, scores.copy(), DELTA, confidence=0.95) == 0.0
    rng = np.random.default_rng(1)
    members, nonmembers = rng.normal(size=2000), rng.normal(size=2000)
    assert abs(attack_auc(members, nonmembers) - 0.5) < 0.05
    # The point estimate reads noise in the tails (a threshold with, say, 5 members and 2 non-members
    # above it) as evidence; the Clopper-Pearson bound does not: why the corrected one is reported.
    corrected = epsilon_lower_bound(members, nonmembers, DELTA, confidence=0.95)
    assert corrected == 0.0 < epsilon_lower_bound(members, nonmembers, DELTA)
    # Reversed scores (non-members fit better) never count as evidence against privacy.
    assert epsilon_lower_bound(np.arange(50.0), np.arange(50.0) + 100, DELTA) == 0.0


def test_corrected_bound_never_exceeds_the_point_estimate():
    rng = np.random.default_rng(2)
    for n_m, n_n, shift in [(20, 20, 0.0), (50, 200, 1.0), (300, 100, 2.5), (5, 5, 10.0), (100, 100, 0.3)]:
        members = np.round(rng.normal(shift, 1, n_m), 1)  # rounded: ties too
        nonmembers = np.round(rng.normal(0, 1, n_n), 1)
        raw = epsilon_lower_bound(members, nonmembers, DELTA)
        assert 0.0 <= epsilon_lower_bound(members, nonmembers, DELTA, confidence=0.95) <= raw


# ---------------------------------------------------------------------------------------------- scores
def test_scores_are_the_models_catalogue_log_likelihood(tiny_model, tiny_catalogue):
    """Each pair's score is the log-softmax the training objective's catalogue term uses (model.forward)."""
    vectors, tokens = tiny_catalogue
    history = [3, 7, 1, 10]
    assert training_pairs(history) == [([3], 7), ([3, 7], 1), ([3, 7, 1], 10)]
    expected = []
    with torch.no_grad():
        for prefix, item in training_pairs(history):
            pooled = torch.from_numpy(tiny_model.pool_history(vectors, [prefix]))
            ids, mask = tokens[0][[item]][None], tokens[1][[item]][None]
            _, logits = tiny_model(ids, mask, pooled, torch.from_numpy(vectors))
            logits[0, prefix] = -math.inf
            expected.append(torch.log_softmax(logits.double(), dim=-1)[0, item].item())
    scores = membership_scores(tiny_model, vectors, [history, [5], []])
    assert scores[0] == pytest.approx(np.mean(expected), rel=1e-5)
    assert np.isnan(scores[1]) and np.isnan(scores[2])  # no (prefix, next item) pair


# ---------------------------------------------------------------------------------------------- planted leak
@pytest.fixture(scope="module")
def users() -> dict[str, list[list[int]]]:
    """Members and non-members drawn the same way: SEQUENCE distinct random items each."""
    rng = np.random.default_rng(0)
    sequences = [[int(i) for i in rng.permutation(len(TEXTS))[:SEQUENCE]] for _ in range(32)]
    return {"members": sequences[:N_MEMBERS], "nonmembers": sequences[N_MEMBERS:]}


@pytest.fixture(scope="module")
def overfit(tiny_model, tiny_catalogue, users):
    """A copy of the model trained WITHOUT DP, many Adam steps on the members' training parts only."""
    vectors, tokens = tiny_catalogue
    model = copy.deepcopy(tiny_model)
    train = [s[:-2] for s in users["members"]]
    train_round(model, train, vectors, tokens, OVERFIT, population=len(train), randomness=reproducible(0))
    model.eval()
    return model, model.encode_texts(TEXTS)  # the item vectors it would publish


def test_attack_finds_a_planted_leak(overfit, users):
    model, vectors = overfit
    members = membership_scores(model, vectors, [s[:-2] for s in users["members"]])
    nonmembers = membership_scores(model, vectors, [s[:-2] for s in users["nonmembers"]])
    assert attack_auc(members, nonmembers) >= 0.8
    assert members.mean() > nonmembers.mean()
    assert epsilon_lower_bound(members, nonmembers, DELTA) >= 2.0
    assert 0.0 < epsilon_lower_bound(members, nonmembers, DELTA, confidence=0.95)


def test_untrained_model_cannot_tell(tiny_model, tiny_catalogue, users):
    """The same users under the model nobody trained: no membership signal, AUC within sampling noise.

    Null AUC for 8 vs 24 users has a standard deviation of about 0.12; the band is about 2 of them.
    """
    vectors, _ = tiny_catalogue
    members = membership_scores(tiny_model, vectors, [s[:-2] for s in users["members"]])
    nonmembers = membership_scores(tiny_model, vectors, [s[:-2] for s in users["nonmembers"]])
    assert 0.25 <= attack_auc(members, nonmembers) <= 0.75


# ---------------------------------------------------------------------------------------------- a run folder
def write_events(path, sequences: list[list[int]], prefix: str) -> None:
    rows = [
        {
            "user_id": f"{prefix}-{u:02d}",
            "item_id": f"sku-{item:02d}",
            "event": "click",
            "timestamp": f"2026-01-01T00:{minute:02d}:00+00:00",
            "query": "",
        }
        for u, sequence in enumerate(sequences)
        for minute, item in enumerate(sequence)
    ]
    pd.DataFrame(rows).to_csv(path, index=False)


def test_run_attack_on_a_run_folder(tmp_path, overfit, users, tiny_model, monkeypatch):
    model, vectors = overfit
    ids = [f"sku-{i:02d}" for i in range(len(TEXTS))]
    catalogue = pd.DataFrame({"item_id": ids, "title": [t.split(". ")[0] for t in TEXTS]})
    catalogue.to_csv(tmp_path / "catalogue.csv", index=False)
    artifact = write_artifact(
        tmp_path / "index",
        round=1,
        item_ids=ids,
        item_vectors=model.item_rows(vectors),
        items=catalogue,
        trainable_state=model.trainable_state(),
        model_config=model.config.to_dict(),
        info={"private": False},
        signing_key=ensure_key_pair(tmp_path / "server"),  # the run's key, where the audit looks for it
    )
    write_events(tmp_path / "members.csv", users["members"], "member")
    write_events(tmp_path / "heldout.csv", users["nonmembers"], "heldout")

    def fresh(config):  # a new Recommender without reloading MiniLM: the untrained weights, copied
        assert config == tiny_model.config
        return copy.deepcopy(tiny_model)

    monkeypatch.setattr("shared.model.Recommender", fresh)
    inputs = {"artifact": artifact.resolve(), "catalogue": str(tmp_path / "catalogue.csv"), "delta": DELTA}
    result = run_attack(tmp_path, tmp_path / "members.csv", tmp_path / "heldout.csv", **inputs)

    direct_m = membership_scores(model, vectors, [s[:-2] for s in users["members"]])
    direct_n = membership_scores(model, vectors, [s[:-2] for s in users["nonmembers"]])
    assert result["members"] == N_MEMBERS and result["nonmembers"] == N_NONMEMBERS
    assert result["auc"] == pytest.approx(attack_auc(direct_m, direct_n))
    assert result["epsilon_lower_bound"] == pytest.approx(epsilon_lower_bound(direct_m, direct_n, DELTA))
    assert 0 < result["epsilon_lower_bound_95"] <= result["epsilon_lower_bound"]
    assert result["delta"] == DELTA and "member" in result["threat_model"]
    assert result["epsilon_accountant"] is None and result["private"] is None  # no claims were given
    assert json.loads((tmp_path / "attack.json").read_text()) == result

    with pytest.raises(ValueError, match="in both"):
        run_attack(
            tmp_path, tmp_path / "members.csv", [tmp_path / "heldout.csv", tmp_path / "members.csv"], **inputs
        )

    # The command line: inputs from the server's run record, the accountant's claims shown alongside.
    privacy = PrivacySummary(
        private=False,
        noise="none",
        guarantees=["NONE: non-private run"],
        secure_aggregation=False,
        unit="user",
        accountant="prv (rdp alongside)",
        delta=DELTA,
        max_grad_norm=None,
        target_epsilon={},
        epsilon_cap={},
        epsilon={},
        epsilon_rdp={},
        noise_multipliers={},
        sample_rates={},
        non_private_clients=["client-0"],
        client_level=None,
    )
    record = RunRecord(
        artifact=artifact.relative_to(tmp_path).as_posix(),
        catalogue=str(tmp_path / "catalogue.csv"),
        privacy=privacy,
        rounds=[],
    )
    record.save(tmp_path / RUN_RECORD)
    assert inputs_from_record(tmp_path) == inputs | {"private": False, "epsilon_accountant": None}
    (tmp_path / "attack.json").unlink()
    argv = [str(tmp_path), "--members", str(tmp_path / "members.csv"), "--nonmembers"]
    assert attack_main([*argv, str(tmp_path / "heldout.csv")]) == 0
    assert json.loads((tmp_path / "attack.json").read_text()) == result | {"private": False}
