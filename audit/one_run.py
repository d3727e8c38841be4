"""The one-run privacy audit: a statistical lower bound on ε from gradient canaries.

Steinke, Nasr & Jagielski (2023), "Privacy auditing with one (1) training run". m canaries exist;
each was included in training independently with probability ½ (the secret S). The attacker sees
what was released and guesses, for r of the canaries, whether each was in; with v of the r guesses
right, any (ε, δ)-DP training makes "v or more right" unlikely when ε is small, so a large v
certifies at confidence 1 − β that the real ε is at least `epsilon_lower_bound(...)`. A correct
implementation stays below its accountant's ε (with probability ≥ 1 − β); a build whose noise is off
or predictable is flagged with a bound above it.

The canaries here are Dirac gradients: canary i adds C·e_i on a coordinate of its own in an audit
block that the model never uses, so no real user's gradient moves it. An included canary is
Poisson-sampled like a user (rate q) and clipped and noised by Opacus like a user. The attacker sees
the audit block of every step's released noisy gradient (white-box: more than the server, which sees
each round's result; the accountant's ε covers every step's release, so the bound stays valid) and
knows everything public: the code, the run config and hence the seed a reproducible build uses. It
runs two attacks and keeps the larger bound, each at confidence 1 − β/2 (Bonferroni):

    raw      score_i = Σ_t released_t[i]        (finds missing noise)
    replayed score_i = Σ_t (released_t[i] − the noise a public-seed build would have drawn)
                                                (finds noise that anyone can reproduce)

and guesses "in" for the `guesses` highest scores (abstaining on the rest; fixed before scoring).

What it can certify is bounded by m and δ: r perfect guesses certify at most about ln(p/(1−p)) with
p = β^(1/r) (≈ 3.5 at r = 100, 5.8 at r = 1,000), and the δ term grows with m. So the audit targets a
claimed ε below that ceiling (the audit run's config); at ε = 8 even a perfect attack cannot exceed it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from scipy import stats

CONFIDENCE = 0.95


def p_value(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """P[v or more of r guesses right] for any (ε, δ)-DP training with m canaries (Steinke et al., Thm 5.2).

    The ε part is the tail of Binomial(r, e^ε/(1+e^ε)) (each guess no better than randomized
    response); the δ part adds 2mδ times the worst ratio of the binomial mass just below v to the
    distance from v.
    """
    if not 0 <= v <= r <= m:
        raise ValueError(f"need 0 <= v <= r <= m, got m={m}, r={r}, v={v}")
    if epsilon < 0 or not 0 <= delta <= 1:
        raise ValueError(f"need ε >= 0 and 0 <= δ <= 1, got {epsilon}, {delta}")
    q = 1.0 / (1.0 + math.exp(-epsilon))
    tail = float(stats.binom.sf(v - 1, r, q))
    distance = np.arange(1, v + 1)
    below = np.cumsum(stats.binom.pmf(v - distance, r, q))  # P[v > Binomial ≥ v − i], i = 1..v
    worst = float((below / distance).max()) if v else 0.0
    return min(1.0, tail + 2 * m * delta * worst)


def epsilon_lower_bound(m: int, r: int, v: int, delta: float, confidence: float = CONFIDENCE) -> float:
    """The largest ε rejected at level 1 − confidence: the training's ε is at least this (0 if none)."""
    beta = 1.0 - confidence
    if not 0 < beta < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if p_value(m, r, v, 0.0, delta) >= beta:
        return 0.0
    low, high = 0.0, 1.0
    while p_value(m, r, v, high, delta) < beta:
        low, high = high, high + 1.0
    for _ in range(40):
        mid = (low + high) / 2
        low, high = (mid, high) if p_value(m, r, v, mid, delta) < beta else (low, mid)
    return low


@dataclass(frozen=True)
class NoiseLayout:
    """Public facts a noise replay needs: Opacus draws one Gaussian per trained tensor per step, in order."""

    shapes: list[tuple[int, ...]]  # the DPOptimizer's params, in noise-draw order
    block: int  # position of the audit block among them
    std: float  # σ·C of the build under audit (claimed)
    clip: float  # C
    steps_per_round: list[int]


def replay_public_noise(layout: NoiseLayout, seeds: list[int]) -> np.ndarray:
    """[T, m] audit-block noise in canary units, as a build seeded with `seeds` (one per round) drew it.

    A reproducible build creates its noise generator from the round's public seed and Opacus draws
    `torch.normal(0, σC, shape)` for each tensor in turn: anyone who reads the code can do the same.
    """
    out = []
    for seed, steps in zip(seeds, layout.steps_per_round, strict=True):
        generator = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            for index, shape in enumerate(layout.shapes):
                noise = torch.normal(0.0, layout.std, size=shape, generator=generator, dtype=torch.float32)
                if index == layout.block:
                    out.append(noise.flatten().numpy() / layout.clip)
    return np.stack(out)


@dataclass(frozen=True)
class AttackResult:
    attack: str
    guesses: int  # r
    correct: int  # v
    epsilon_lower_bound: float  # at confidence 1 − β/2 (two attacks)


@dataclass(frozen=True)
class OneRunAudit:
    canaries: int  # m
    included: int
    steps: int
    delta: float
    confidence: float
    claimed_epsilon: float  # the accountant's ε of the audited run (PRV), composed over all its steps
    epsilon_lower_bound: float  # the larger of the attacks' bounds: holds at `confidence` overall
    flagged: bool  # the bound exceeds the claim: the implementation does not deliver its ε
    attacks: list[AttackResult]
    threat_model: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


THREAT_MODEL = (
    "white-box gradient canaries (Dirac, one unused coordinate each, Poisson-sampled at the run's q,"
    " clipped and noised by Opacus like users); the attacker sees every step's released noisy gradient"
    " and all public values (code, run config, the seeds a reproducible build would use)"
)


def audit(
    released: np.ndarray,
    included: np.ndarray,
    replayed_noise: np.ndarray,
    claimed_epsilon: float,
    delta: float,
    guesses: int,
    confidence: float = CONFIDENCE,
) -> OneRunAudit:
    """Score, guess and bound. `released`: [T, m] audit-block gradients in canary units (× B / C);
    `included`: [m] the secret S, used only to count right guesses; `replayed_noise`: [T, m]."""
    m = included.shape[0]
    if released.shape != replayed_noise.shape or released.shape[1] != m:
        raise ValueError(f"shapes differ: released {released.shape}, replay {replayed_noise.shape}, m={m}")
    if not 0 < guesses <= m:
        raise ValueError(f"guesses must be in 1..{m}, got {guesses}")
    share = 1 - (1 - confidence) / 2  # Bonferroni over the two attacks
    results = []
    for name, scores in (
        ("raw", released.sum(axis=0)),
        ("replayed", (released - replayed_noise).sum(axis=0)),
    ):
        top = np.argsort(-scores, kind="stable")[:guesses]
        correct = int(included[top].sum())
        bound = epsilon_lower_bound(m, guesses, correct, delta, share)
        results.append(AttackResult(name, guesses, correct, bound))
    bound = max(r.epsilon_lower_bound for r in results)
    return OneRunAudit(
        canaries=m,
        included=int(included.sum()),
        steps=int(released.shape[0]),
        delta=delta,
        confidence=confidence,
        claimed_epsilon=claimed_epsilon,
        epsilon_lower_bound=bound,
        flagged=bound > claimed_epsilon,
        attacks=results,
        threat_model=THREAT_MODEL,
    )
