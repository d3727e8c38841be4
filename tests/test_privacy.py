"""Privacy accounting facts the ledger and the auditor rely on (shared.privacy over Opacus' accountants)."""

from __future__ import annotations

import pytest
from opacus.accountants import RDPAccountant

from shared.privacy import PRIVACY_UNIT, compact, epsilon

DELTA = 1e-5


def test_rdp_matches_opacus_known_value():
    # Opacus' documented example: σ = 1.5, q = 0.04, 2250 steps, δ = 1e-5 -> ε ≈ 7.3291 under RDP.
    assert epsilon([(1.5, 0.04, 2250)], DELTA, "rdp") == pytest.approx(7.3291, abs=1e-3)


def test_prv_value_and_tighter_than_rdp():
    prv = epsilon([(1.5, 0.04, 2250)], DELTA, "prv")
    assert prv == pytest.approx(6.78, abs=0.02)  # opacus 1.6.0: 6.7791
    assert prv < epsilon([(1.5, 0.04, 2250)], DELTA, "rdp")  # PRV is the tighter accountant
    assert epsilon([(1.5, 0.04, 2250)], DELTA) == prv  # PRV is the default


@pytest.mark.parametrize("accountant", ["prv", "rdp"])
def test_rounds_compose_like_one_long_run(accountant):
    per_round = [(1.0, 0.05, 10)] * 3
    assert epsilon(per_round, DELTA, accountant) == pytest.approx(
        epsilon([(1.0, 0.05, 30)], DELTA, accountant)
    )


def test_history_format_is_opacus_own():
    # Stepping Opacus' accountant 30 times leaves exactly the history entry we compose with.
    acc = RDPAccountant()
    for _ in range(30):
        acc.step(noise_multiplier=1.0, sample_rate=0.05)
    assert acc.history == [(1.0, 0.05, 30)]
    assert epsilon(acc.history, DELTA, "rdp") == pytest.approx(acc.get_epsilon(delta=DELTA))


def test_composition_does_not_depend_on_round_order():
    a, b = (1.0, 0.05, 10), (2.0, 0.05, 10)
    assert epsilon([a, b], DELTA, "rdp") == pytest.approx(epsilon([b, a], DELTA, "rdp"))


def test_compact_merges_equal_consecutive_entries_only():
    history = [(1.0, 0.05, 10), (1.0, 0.05, 5), (2.0, 0.05, 3), (1.0, 0.05, 2)]
    assert compact(history) == [(1.0, 0.05, 15), (2.0, 0.05, 3), (1.0, 0.05, 2)]
    assert compact([(1.0, 0.05, 10), (1.0, 0.1, 10)]) == [(1.0, 0.05, 10), (1.0, 0.1, 10)]
    assert compact([]) == []
    assert epsilon(history, DELTA, "rdp") == pytest.approx(epsilon(compact(history), DELTA, "rdp"))


@pytest.mark.parametrize("accountant", ["prv", "rdp"])
def test_epsilon_grows_monotonically_over_rounds(accountant):
    history, eps = [], []
    for _ in range(4):
        history.append((1.0, 0.05, 10))
        eps.append(epsilon(history, DELTA, accountant))
    assert all(0 < a < b for a, b in zip(eps, eps[1:], strict=False))


def test_more_noise_less_epsilon():
    assert epsilon([(2.0, 0.05, 30)], DELTA, "rdp") < epsilon([(1.0, 0.05, 30)], DELTA, "rdp")


def test_empty_history_and_bad_accountant():
    assert epsilon([], DELTA, "prv") == 0.0
    assert epsilon([], DELTA, "rdp") == 0.0
    with pytest.raises(ValueError, match="unknown accountant"):
        epsilon([(1.0, 0.05, 10)], DELTA, "gdp")
    assert PRIVACY_UNIT == "user"
