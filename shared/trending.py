"""The trending list a new shopper sees before it has any history: released once per training with DP.

Mechanism (federation mode, `trending-items` > 0): round 0 of a training, before the first training round,
is one Gaussian release of vote totals over the catalogue, with the user as the unit.

- every partner takes each of its users' `trending-items-per-user` (m) most recent distinct items of the
  training split and gives each 1/√m: one user's votes have L2 norm ≤ 1, whatever the history (the
  sensitivity to adding or removing one user is 1);
- it sums its users' votes, adds its secret Gaussian share N(0, σ_T²/t) to every item (t = min-clients,
  as for the training's shares, `shared/federation.py`) and divides by N (federation-population) so that
  every value sits well inside SecAgg+'s clipping range;
- the server multiplies the sum back by N: the vote totals with noise of std σ_T (the SecAgg+ sum), or
  σ_T/√t per share (a server that sees one share).

No user is sampled (q = 1). Every party records it as round 0 of the training in its ledger (σ_T under
its view, q 1, one step, clip 1), and the training's σ is calibrated with it in the history
(`shared/federation.py`), so the run's target ε covers both. Ranking the totals and publishing the top
`trending-items` with the artifact (`trending.json`, shared/artifact.py) is post-processing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

TRENDING_ROUND = 0  # the ledger round of the release: before training round 1
TRENDING_RELEASE = "trending"  # the train config's `release` value that asks a client for its share
RELEASE_KEY = "release"
TRENDING_ARRAY = "trending"  # the one array of the release: not an adapter, and DP-released like one
CLIP = 1.0  # L2 norm of one user's votes


class TrendingError(ValueError):
    """A trending list that cannot be trusted; names where."""


def user_votes(history: Sequence[int], per_user: int) -> list[int]:
    """The user's most recent `per_user` distinct items (oldest first in `history`), most recent first."""
    if per_user < 1:
        raise ValueError(f"per_user must be >= 1, got {per_user}")
    seen: list[int] = []
    for item in reversed(history):
        if item not in seen:
            seen.append(item)
            if len(seen) == per_user:
                break
    return seen


def vote_totals(histories: Iterable[Sequence[int]], n_items: int, per_user: int) -> np.ndarray:
    """Σ over users of their votes (1/√m on each of their m most recent distinct items): float64 [n_items]."""
    totals = np.zeros(n_items, dtype=np.float64)
    weight = 1.0 / math.sqrt(per_user)
    for history in histories:
        for item in user_votes(history, per_user):
            totals[item] += weight
    return totals


@dataclass(frozen=True)
class Trending:
    """The published list: the top items by noisy vote total, and how it was released."""

    item_ids: tuple[str, ...]  # most voted first
    totals: tuple[float, ...]  # the noisy vote totals, in the same order
    noise_multiplier: float  # σ_T of the sum (the view the run offers), in units of CLIP; 0: not private
    items_per_user: int
    private: bool  # secret noise (False: a non-private or reproducible run)
    training: str  # the training whose round 0 released it (the ledgers' key)

    def __post_init__(self) -> None:
        if len(self.item_ids) != len(self.totals):
            raise TrendingError(f"{len(self.item_ids)} item ids but {len(self.totals)} totals")
        if len(set(self.item_ids)) != len(self.item_ids):
            raise TrendingError("an item is listed twice")
        if not all(math.isfinite(t) for t in self.totals):
            raise TrendingError("a total is not finite")
        if list(self.totals) != sorted(self.totals, reverse=True):
            raise TrendingError("totals are not in descending order")
        if self.items_per_user < 1 or not (
            math.isfinite(self.noise_multiplier) and self.noise_multiplier >= 0
        ):
            raise TrendingError("items_per_user must be >= 1 and noise_multiplier finite and >= 0")
        if self.private and self.noise_multiplier <= 0:
            raise TrendingError("a private list needs noise")

    @classmethod
    def from_totals(
        cls,
        totals: np.ndarray,
        item_ids: Sequence[str],
        top: int,
        *,
        noise_multiplier: float,
        items_per_user: int,
        private: bool,
        training: str,
    ) -> Trending:
        """The `top` items by noisy total (ties by catalogue order): post-processing of the release."""
        if len(totals) != len(item_ids):
            raise TrendingError(f"{len(totals)} totals for a catalogue of {len(item_ids)} items")
        order = np.argsort(-np.asarray(totals, dtype=np.float64), kind="stable")[:top]
        return cls(
            item_ids=tuple(str(item_ids[i]) for i in order),
            totals=tuple(float(totals[i]) for i in order),
            noise_multiplier=float(noise_multiplier),
            items_per_user=int(items_per_user),
            private=bool(private),
            training=str(training),
        )

    def unpublished(self, item_ids: Iterable[str]) -> list[str]:
        """The listed items that are not among `item_ids` (a catalogue), in list order."""
        published = set(item_ids)
        return [item_id for item_id in self.item_ids if item_id not in published]

    def to_json(self) -> bytes:
        """Canonical JSON (sorted keys): the bytes an artifact's `trending.json` holds."""
        data = asdict(self) | {"item_ids": list(self.item_ids), "totals": list(self.totals)}
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes, where: str) -> Trending:
        """Parse `to_json`'s bytes strictly; TrendingError names `where` and the field at fault."""
        try:
            raw = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as err:
            raise TrendingError(f"{where}: not JSON ({err})") from None
        fields = {"item_ids", "totals", "noise_multiplier", "items_per_user", "private", "training"}
        if not isinstance(raw, dict) or set(raw) != fields:
            got = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
            raise TrendingError(f"{where}: fields {got}, expected {sorted(fields)}")
        kinds = {
            "item_ids": list,
            "totals": list,
            "noise_multiplier": (int, float),
            "items_per_user": int,
            "private": bool,
            "training": str,
        }
        for name, kind in kinds.items():
            if not isinstance(raw[name], kind) or (kind is int and isinstance(raw[name], bool)):
                raise TrendingError(
                    f"{where}: field {name!r} has the wrong type ({type(raw[name]).__name__})"
                )
        if not all(isinstance(i, str) for i in raw["item_ids"]):
            raise TrendingError(f"{where}: field 'item_ids' holds a non-string")
        if not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in raw["totals"]):
            raise TrendingError(f"{where}: field 'totals' holds a non-number")
        try:
            return cls(
                item_ids=tuple(raw["item_ids"]),
                totals=tuple(float(t) for t in raw["totals"]),
                noise_multiplier=float(raw["noise_multiplier"]),
                items_per_user=raw["items_per_user"],
                private=raw["private"],
                training=raw["training"],
            )
        except TrendingError as err:
            raise TrendingError(f"{where}: {err}") from None
