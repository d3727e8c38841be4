"""This client's share of the trending release (round 0 of a federation-mode training, shared/trending.py).

Every local user (no sampling) votes 1/√m for each of its m most recent distinct training items; the sum
gets this client's secret Gaussian share and is divided by the federation's declared population, the
same at every client, so that the server's sum times N is the noisy vote total. The noise is drawn from
the round's secret generator (client/randomness.py), never from a seed the server could know.
"""

from __future__ import annotations

import numpy as np
import torch

from shared.trending import CLIP, vote_totals


def trending_share(
    histories: list[list[int]],
    n_items: int,
    per_user: int,
    *,
    share_sigma: float,
    population: int,
    noise: torch.Generator,
) -> np.ndarray:
    """(Σ votes + N(0, (share_sigma·CLIP)²) per item) / population, float32 [n_items]."""
    totals = torch.from_numpy(vote_totals(histories, n_items, per_user))
    if share_sigma > 0:
        totals = totals + torch.normal(
            0.0, share_sigma * CLIP, (n_items,), generator=noise, dtype=torch.float64
        )
    return (totals / population).numpy().astype(np.float32)
