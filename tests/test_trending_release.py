"""The trending list's DP release (shared/trending.py): privacy facts of each piece.

- one user's votes have L2 norm at most 1, whatever the history: the sensitivity the noise is sized for;
- a client's share carries secret Gaussian noise of std σ_T/√t (client/trending.py);
- the release is composed into the run's target ε, and a release that leaves no budget is refused;
- the list the server keeps is strict to parse, and survives a checkpoint only as signed.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client import randomness
from client.trending import trending_share
from server.checkpoint import CHECKPOINT_NAME, Checkpoint, CheckpointError
from shared.config import RunConfig
from shared.federation import FederationConfigError, federation_noise
from shared.signing import generate_key
from shared.trending import Trending, TrendingError, user_votes, vote_totals

histories = st.lists(st.integers(0, 29), max_size=40)


@settings(max_examples=200, deadline=None)
@given(history=histories, others=st.lists(histories, max_size=5), per_user=st.integers(1, 8))
def test_one_user_moves_the_totals_by_at_most_one_in_l2(history, others, per_user):
    without = vote_totals(others, 30, per_user)
    with_user = vote_totals([*others, history], 30, per_user)
    assert np.linalg.norm(with_user - without) <= 1.0 + 1e-12
    votes = user_votes(history, per_user)
    assert len(votes) == len(set(votes)) == min(per_user, len(set(history)))
    assert (
        votes == list(dict.fromkeys(reversed(history)))[:per_user]
    )  # the most recent distinct, newest first


def test_recent_distinct_items_get_the_votes():
    assert user_votes([1, 2, 3, 2, 4], 3) == [4, 2, 3]
    totals = vote_totals([[1, 2, 3, 2, 4], [4]], 6, 3)
    np.testing.assert_allclose(totals, np.array([0, 0, 1, 1, 2, 0]) / math.sqrt(3))


def test_a_share_carries_secret_noise_of_std_sigma_t_over_sqrt_t():
    rng = np.random.default_rng(0)
    users = [list(rng.integers(0, 20_000, size=6)) for _ in range(300)]
    exact = vote_totals(users, 20_000, 5)
    share = 10.0 / math.sqrt(3)

    def reply() -> np.ndarray:
        values = trending_share(
            users, 20_000, 5, share_sigma=share, population=1000, noise=randomness.secret().noise
        )
        return values.astype(np.float64) * 1000

    a, b = reply(), reply()
    assert not np.allclose(a, b)  # fresh secret noise: nothing to replay
    for values in (a, b):
        assert np.std(values - exact) == pytest.approx(share, rel=0.03)
    clean = trending_share(
        users, 20_000, 5, share_sigma=0.0, population=1000, noise=randomness.secret().noise
    )
    np.testing.assert_allclose(clean * 1000, exact, rtol=1e-6)
    assert np.abs(a / 1000).max() < 8.0  # inside SecAgg+'s clipping range


FED = {"dp-mode": "federation", "federation-population": 1000, "min-clients": 3, "num-server-rounds": 50}


def test_a_trending_release_that_leaves_no_budget_is_refused():
    with pytest.raises(FederationConfigError, match="trending-noise-multiplier"):
        federation_noise(
            RunConfig.from_flower({**FED, "target-epsilon": 0.3, "trending-noise-multiplier": 2.0})
        )
    off = federation_noise(RunConfig.from_flower({**FED, "trending-items": 0}))
    assert off.trending_sigma == 0 and off.history("aggregate", 5, trending=True) == [(off.sigma, 0.1, 5)]
    partner = RunConfig.from_flower({**FED, "dp-mode": "partner"})
    assert not partner.trending  # partner mode releases no trending list


def _trending() -> Trending:
    return Trending.from_totals(
        np.array([3.0, 9.0, -1.0, 9.0]),
        ["a", "b", "c", "d"],
        3,
        noise_multiplier=10.0,
        items_per_user=5,
        private=True,
        training="t",
    )


def test_the_list_is_the_top_totals_and_parses_strictly():
    trending = _trending()
    assert trending.item_ids == ("b", "d", "a") and trending.totals == (
        9.0,
        9.0,
        3.0,
    )  # ties: catalogue order
    assert Trending.from_json(trending.to_json(), "here") == trending
    raw = json.loads(trending.to_json())
    for field, value, why in [
        ("totals", [1.0, 2.0, 3.0], "descending"),
        ("item_ids", ["b", "b", "a"], "twice"),
        ("private", 1, "wrong type"),
        ("noise_multiplier", 0.0, "needs noise"),
    ]:
        with pytest.raises(TrendingError, match=rf"here: .*{why}"):
            Trending.from_json(json.dumps({**raw, field: value}).encode(), "here")
    with pytest.raises(TrendingError, match="expected"):
        Trending.from_json(json.dumps({**raw, "extra": 1}).encode(), "here")


def test_a_checkpoint_keeps_the_list_under_its_signature(tmp_path):
    key, path = generate_key(), tmp_path / CHECKPOINT_NAME
    checkpoint = Checkpoint(
        training="t", run="r", round=0, config={}, catalogue_sha256="ab" * 32, arrays={}, trending=_trending()
    )
    checkpoint.save(path, key)
    assert Checkpoint.load(path, key).trending == _trending()
    raw = json.loads(path.read_text())
    raw["trending"] = raw["trending"].replace('"b"', '"c"', 1)  # a forged list: another item on top
    path.write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="signature"):
        Checkpoint.load(path, key)
    for old in (1, 2):  # 1: without the trending list; 2: without the published average
        raw["version"] = old
        path.write_text(json.dumps(raw))
        with pytest.raises(CheckpointError, match=f"field 'version' is {old}, this server reads 3"):
            Checkpoint.load(path, key)
