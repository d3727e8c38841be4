"""The one-run canary audit: its bound, its noise replay, and its power against planted bugs."""

from __future__ import annotations

import numpy as np
import pytest

from audit.one_run import audit, epsilon_lower_bound, p_value
from simulations.canary_audit import canary_audit
from simulations.shop import ShopConfig

TINY_SHOP = ShopConfig(n_items=120, n_users=200, seed=3)
# frozen text tower: a step is a matmul. q = 20 / 100 = 0.2 over 30 steps: an included canary is
# sampled at least once with probability 1 − 0.8^30 ≈ 0.999
TINY_RUN = {
    "lora-rank": 0,
    "batch-size": 20,
    "local-steps": 15,
    "num-server-rounds": 2,
    "target-epsilon": 3.0,
}


def test_bound_reaches_the_papers_ceilings_and_no_further():
    """r perfect guesses certify ln(p/(1−p)), p = 0.05^(1/r): ≈ 3.5 at r = 100, 5.8 at r = 1,000."""
    assert epsilon_lower_bound(100, 100, 100, 0.0) == pytest.approx(3.49, abs=0.01)
    assert epsilon_lower_bound(1000, 1000, 1000, 0.0) == pytest.approx(5.81, abs=0.01)
    # chance-level guessing certifies nothing; more right guesses certify more; δ costs certainty
    assert epsilon_lower_bound(2000, 500, 260, 1e-5) == 0.0
    assert 0 < epsilon_lower_bound(2000, 500, 400, 1e-5) < epsilon_lower_bound(2000, 500, 450, 1e-5)
    assert epsilon_lower_bound(2000, 500, 500, 1e-3) < epsilon_lower_bound(2000, 500, 500, 0.0)
    # 450 of 500 right is implausible under ε = 1 and plausible under a weaker guarantee
    assert p_value(2000, 500, 450, 1.0, 1e-5) < 0.001 < 0.05 < p_value(2000, 500, 450, 2.0, 1e-5)


def test_pure_noise_certifies_nothing_and_perfect_scores_certify_the_ceiling():
    rng = np.random.default_rng(0)
    included = rng.random(2000) < 0.5
    noise = rng.normal(size=(30, 2000))
    blind = audit(noise, included, np.zeros_like(noise), claimed_epsilon=1.0, delta=1e-5, guesses=500)
    assert blind.epsilon_lower_bound < 0.5 and not blind.flagged
    seen = noise * 0 + included  # a leak: the release shows exactly which canaries were in
    leak = audit(seen, included, np.zeros_like(seen), claimed_epsilon=1.0, delta=1e-5, guesses=500)
    assert leak.attacks[0].correct == 500 and leak.epsilon_lower_bound > 4.5 and leak.flagged


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    root = tmp_path_factory.mktemp("canary-audit")
    return {
        build: canary_audit(root / build, build, canaries=2000, overrides=TINY_RUN, shop=TINY_SHOP)
        for build in ("correct", "noise-off", "seeded")
    }


def test_the_shipped_build_stays_below_its_accountant(builds):
    record = builds["correct"]
    assert record["claimed_epsilon"] == pytest.approx(3.0, abs=0.05)  # PRV, composed over both rounds
    assert record["steps"] == 30 and record["canaries"] == 2000
    assert not record["flagged"] and record["epsilon_lower_bound"] < record["claimed_epsilon"]
    replayed = next(a for a in record["attacks"] if a["attack"] == "replayed")
    assert replayed["correct"] < 0.75 * replayed["guesses"]  # the public seed tells nothing of secret noise


@pytest.mark.parametrize("build, attack", [("noise-off", "raw"), ("seeded", "replayed")])
def test_planted_bugs_are_flagged_well_above_the_claim(builds, build, attack):
    record = builds[build]
    found = next(a for a in record["attacks"] if a["attack"] == attack)
    assert found["correct"] == found["guesses"]  # the attack that fits the bug is perfect
    assert record["flagged"] and record["epsilon_lower_bound"] > 1.5 * record["claimed_epsilon"]
