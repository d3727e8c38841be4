"""Privacy accounting both sides agree on: ε of a DP-SGD history under Opacus' accountants.

A history is Opacus' own format, a list of (noise_multiplier, sample_rate, steps) entries; composing
over rounds is concatenating histories. Keeping the history (not a running ε) is what makes ε exact:
an accountant rebuilt from the whole history gives the ε of *all* training the data saw.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.accountants.utils import get_noise_multiplier

History = list[tuple[float, float, int]]
ACCOUNTANTS = {"prv": PRVAccountant, "rdp": RDPAccountant}
PRIVACY_UNIT = "user"  # one example per sampled user per step, built from that user's own history
NOISE_SECRET = "secret"  # DP noise and sampling seeded from the OS's secure source, fresh per round
NOISE_REPRODUCIBLE = "reproducible"  # test-only seeded streams: whoever knows the seed can subtract the noise
NOT_PRIVATE_LABEL = "not private: reproducible noise"  # printed on every output of a reproducible run


def compact(history: History) -> History:
    """Merge consecutive entries with the same (σ, q), as Opacus does; ε is unchanged."""
    out: History = []
    for sigma, q, steps in history:
        if out and out[-1][0] == sigma and out[-1][1] == q:
            out[-1] = (sigma, q, out[-1][2] + steps)
        else:
            out.append((float(sigma), float(q), int(steps)))
    return out


def epsilon(history: History, delta: float, accountant: str = "prv") -> float:
    """ε at δ of the whole history; 0.0 for an empty one."""
    if not history:
        return 0.0
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"unknown accountant {accountant!r}; choose from {sorted(ACCOUNTANTS)}")
    acc = ACCOUNTANTS[accountant]()
    acc.history = compact(history)
    # PRV at sample rate 1 (client-level DP) takes log(1 - q) = log 0; large σ overflows harmlessly
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # RDP's "optimal order is the largest alpha"
        return float(acc.get_epsilon(delta=delta))


class BudgetSpent(ValueError):
    """No σ can keep ε(history + planned steps) at or below the target: the remaining budget is spent."""


def calibrate_noise(
    target_epsilon: float, delta: float, sample_rate: float, steps: int, history: History | None = None
) -> float:
    """The smallest σ (PRV) with ε(history + `steps` more at σ) ≤ target: never overshoots.

    With an empty history this is Opacus' own search. With one (the ledger's), σ is found on the
    remaining budget by bisection, so a partner that already spent some ε gets more noise, not a
    larger total. Raises BudgetSpent when even σ = SIGMA_MAX cannot stay under the target.
    """
    if not history:
        return _calibrate_fresh(target_epsilon, delta, sample_rate, steps)
    past = compact(history)
    total = _composed_with(past, "ε already spent", target_epsilon, delta, sample_rate, steps)
    # The usual case: the earlier rounds followed the plan, so their σ still fits (one ε evaluation).
    low = past[-1][0]
    if total(low) <= target_epsilon:
        return float(low)
    return _smallest_sigma(total, target_epsilon, low)


def _smallest_sigma(total, target_epsilon: float, low: float) -> float:
    """The smallest σ above `low` (which does not fit) with total(σ) ≤ target, to 0.5 %, rounded up."""
    high = low * 1.25
    while total(high) > target_epsilon:  # bracket upwards (terminates: SIGMA_MAX fits)
        low, high = high, min(high * 1.25, SIGMA_MAX)
    while high / low > 1.005:  # geometric bisection, each ε evaluation ~1 s
        mid = (low * high) ** 0.5
        low, high = (low, mid) if total(mid) <= target_epsilon else (mid, high)
    return float(high)


SIGMA_MAX = 100.0


def calibrate_after(
    prior: History, target_epsilon: float, delta: float, sample_rate: float, steps: int
) -> float:
    """The smallest σ (PRV, to 0.5 %, rounded up) with ε(prior + `steps` at σ) ≤ target, for a planned
    history that starts with other releases (federation mode's trending release before its rounds).

    The σ without the prior is a lower bound (adding releases never lowers ε); bisection from there.
    Raises BudgetSpent when the prior alone reaches the target or no σ up to SIGMA_MAX fits.
    """
    fresh = _calibrate_fresh(target_epsilon, delta, sample_rate, steps)
    if not prior:
        return fresh
    total = _composed_with(
        compact(prior), "the releases before training spend ε", target_epsilon, delta, sample_rate, steps
    )
    return _smallest_sigma(total, target_epsilon, fresh)


def _composed_with(
    past: History, spent: str, target_epsilon: float, delta: float, sample_rate: float, steps: int
) -> Callable[[float], float]:
    """ε(past + `steps` at σ) as a function of σ; BudgetSpent if no σ up to SIGMA_MAX meets the target."""

    def total(sigma: float) -> float:
        return epsilon(past + [(sigma, sample_rate, steps)], delta)

    if epsilon(past, delta) >= target_epsilon or total(SIGMA_MAX) > target_epsilon:
        raise BudgetSpent(
            f"{spent} {epsilon(past, delta):.3f}: no noise multiplier up to {SIGMA_MAX:g} keeps"
            f" {steps} more steps at or below the target ε {target_epsilon:g} (δ={delta:g})"
        )
    return total


def _calibrate_fresh(target_epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    sigma = get_noise_multiplier(
        target_epsilon=target_epsilon,
        target_delta=delta,
        sample_rate=sample_rate,
        steps=steps,
        accountant="prv",
    )
    while epsilon([(sigma, sample_rate, steps)], delta) > target_epsilon:
        sigma *= 1.01
    return float(sigma)
