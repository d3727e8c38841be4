"""Privacy accounting both sides agree on: ε of a DP-SGD history under Opacus' accountants.

A history is Opacus' own format, a list of (noise_multiplier, sample_rate, steps) entries; composing
over rounds is concatenating histories. Keeping the history (not a running ε) is what makes ε exact:
an accountant rebuilt from the whole history gives the ε of *all* training the data saw.
"""

from __future__ import annotations

import numpy as np
from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.accountants.utils import get_noise_multiplier

History = list[tuple[float, float, int]]
ACCOUNTANTS = {"prv": PRVAccountant, "rdp": RDPAccountant}
PRIVACY_UNIT = "user"  # one example per sampled user per step, built from that user's own history


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
    with np.errstate(divide="ignore"):  # PRV at sample rate 1 (client-level DP) takes log(1 - q) = log 0
        return float(acc.get_epsilon(delta=delta))


def calibrate_noise(target_epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """The smallest σ (Opacus' search, PRV) whose ε over `steps` is at most the target: never overshoots."""
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
