"""The secret randomness of one private training round: DP noise, Poisson sampling, per-example draws.

DP-SGD is private only if the server cannot predict its noise. Each stream here is seeded from the
operating system's secure source (`secrets`), fresh for every round in every process; no seed is
derived from the run config, the node id or the round, and none is logged or sent. (Opacus'
`secure_mode` would draw the noise from torchcsprng instead of torch's Mersenne twister seeded from
the OS; torchcsprng has no build for this torch, so a seeded-from-OS generator is what we have.)

`reproducible(seed)` exists for tests and audits of broken builds only: every release trained with it
is labelled "not private: reproducible noise" in the ledger, the run record, the manifest and the audit.
Public randomness (shop generation, partitions, LoRA initialisation) keeps its seeds elsewhere.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import numpy as np
import torch

from shared.privacy import NOISE_REPRODUCIBLE, NOISE_SECRET


@dataclass(frozen=True)
class Randomness:
    noise: torch.Generator  # Opacus' noise_generator: the Gaussian noise added to clipped sums
    sampling: torch.Generator  # the Poisson sampler's generator: which users each step sees
    examples: np.random.SeedSequence  # one child stream per drawn example: positions and negatives
    source: str  # NOISE_SECRET or NOISE_REPRODUCIBLE, recorded with every release

    @property
    def private(self) -> bool:
        return self.source == NOISE_SECRET


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def secret() -> Randomness:
    """Fresh, unpredictable streams from the OS's secure source; call once per round."""
    return Randomness(
        noise=_generator(secrets.randbits(63)),
        sampling=_generator(secrets.randbits(63)),
        examples=np.random.SeedSequence(secrets.randbits(128)),
        source=NOISE_SECRET,
    )


def public_seed(run_seed: int, client_index: int, server_round: int) -> int:
    """TEST ONLY: a reproducible round's seed, from values the server knows (run config, client, round)."""
    return run_seed * 1_000_003 + client_index * 1_009 + server_round


def reproducible(seed: int) -> Randomness:
    """TEST ONLY: streams anyone who knows `seed` can replay; releases made with it are not private."""
    return Randomness(
        noise=_generator(seed),
        sampling=_generator(seed + 1),
        examples=np.random.SeedSequence(seed + 2),
        source=NOISE_REPRODUCIBLE,
    )
