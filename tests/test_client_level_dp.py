"""The server's client-level accountant: Flower's numbers, a tamper-evident ledger, resume and cap."""

from __future__ import annotations

import pytest
from flwr.serverapp import PrivacyConfig, RdpAccountant
from flwr.supercore.privacy_accounting import GaussianPrivacyEvent, NeighboringRelation, SamplingMethod

from server.client_privacy import ClientLevelDP
from shared.config import RunConfig
from shared.ledger import Ledger
from shared.privacy import epsilon


def _flower(sigma: float, releases: int, n: int) -> float:
    acc = RdpAccountant(
        PrivacyConfig(1e-5, n, NeighboringRelation.ADD_OR_REMOVE_ONE, SamplingMethod.NO_AMPLIFICATION)
    )
    acc.compose(GaussianPrivacyEvent(sigma, n, n), releases)
    return acc.get_privacy_spent().epsilon


def test_releases_compose_like_one_flower_accountant_and_are_ledgered(tmp_path):
    dp = ClientLevelDP(
        RunConfig(dp_mode="partner", secure_aggregation=False, client_noise_multiplier=1.3), 5, tmp_path
    )
    for r in (1, 2, 3):
        dp.compose(r)
    assert dp.epsilon() == pytest.approx(_flower(1.3, 3, 5), rel=1e-12)
    releases = Ledger(tmp_path / "privacy-ledger.jsonl").releases()
    assert [(r.unit, r.sample_rate, r.steps) for r in releases] == [("client", 1.0, 1)] * 3
    # Opacus' RDP accountant at sample rate 1 is the same Gaussian mechanism: the ledger agrees exactly.
    assert releases[-1].epsilon_rdp == pytest.approx(dp.epsilon(), rel=1e-9)
    assert releases[-1].epsilon_prv == pytest.approx(epsilon([(1.3, 1.0, 3)], 1e-5), rel=1e-9)
    assert releases[-1].epsilon_prv < releases[-1].epsilon_rdp


def test_a_restarted_server_resumes_from_its_ledger(tmp_path):
    cfg = RunConfig(dp_mode="partner", secure_aggregation=False, client_noise_multiplier=1.0)
    first = ClientLevelDP(cfg, 4, tmp_path)
    first.compose(1)
    first.compose(2)
    restarted = ClientLevelDP(cfg, 4, tmp_path)  # a new process: only the ledger survives
    assert restarted.releases() == 2 and restarted.epsilon() == pytest.approx(first.epsilon())
    restarted.compose(3)
    assert restarted.epsilon() == pytest.approx(_flower(1.0, 3, 4), rel=1e-12)


def test_cap_refuses_the_release_that_would_pass_it(tmp_path):
    cap = (_flower(2.0, 2, 3) + _flower(2.0, 3, 3)) / 2
    dp = ClientLevelDP(
        RunConfig(
            dp_mode="partner", secure_aggregation=False, client_noise_multiplier=2.0, client_epsilon_cap=cap
        ),
        3,
        tmp_path,
    )
    allowed = 0
    while not dp.would_exceed():
        allowed += 1
        dp.compose(allowed)
    assert allowed == 2 and dp.epsilon() <= cap


def test_secure_aggregation_with_client_level_dp_needs_client_side_clipping():
    with pytest.raises(ValueError, match="client-clipping=client"):
        RunConfig(dp_mode="partner", secure_aggregation=True, client_noise_multiplier=1.0)
    with pytest.raises(ValueError, match="client-clipping"):
        RunConfig(client_clipping="both")
