"""What a ranking asks for, kept in parts, so that every score splits exactly into what each part added.

The published index scores an item row [v, τ·b] against a query row [u, β]: u·v + β·τ·b. Every query
row the device builds is a sum of parts: the user vector is a weighted sum of its history items' lifted
vectors (shared/model.py's user tower is linear up to one normalisation, see tower.py), a text query's
vector a sum of its words' token states (query.py), a personalized search a blend of both. So
u·v = Σ part·v, exactly, and the parts that added most to an item's score are its explanation: history
items for a recommendation, query words for a search. The rest of the score is the item's learned
popularity (β·τ·b), reported apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ITEM, TERM, QUERY = "item", "term", "query"  # what a part is: a history item, a query word, a past query
TRENDING = "trending"  # the reason of a new shopper's result: the published trending list (runtime.py)


@dataclass(frozen=True)
class Reason:
    """One part's share of a result's score: a history item (`kind` item, `key` its id) or a query word;
    for a new shopper's result (`kind` trending, `key` the training that released the list), its place in
    the trending list, `weight` its noisy vote total."""

    kind: str
    key: str
    text: str
    weight: float


@dataclass(frozen=True)
class Intent:
    """Parts [P, d] summing to the query vector, one label (kind, key, text) per part, and β, the weight
    of the items' popularity column (1 for a recommendation, 0 for a pure text match). A label whose
    kind is "" (a query's [CLS]/[SEP] tokens) counts in the score but is never shown as a reason."""

    parts: np.ndarray
    labels: tuple[tuple[str, str, str], ...]
    popularity: float

    def row(self) -> np.ndarray:
        """The query row [Σ parts, β] the index is searched with: float32 [1, d + 1]."""
        vector = self.parts.sum(axis=0, dtype=np.float64)
        return np.ascontiguousarray(np.append(vector, self.popularity)[None], dtype=np.float32)

    def scaled(self, factor: float) -> Intent:
        return Intent(self.parts * factor, self.labels, self.popularity * factor)

    def plus(self, other: Intent) -> Intent:
        """Both intents at once: a personalized search is α·query + (1 − α)·profile."""
        parts = np.concatenate([self.parts, other.parts])
        return Intent(parts, self.labels + other.labels, self.popularity + other.popularity)

    def reasons(self, item_vector: np.ndarray, top: int = 3) -> tuple[Reason, ...]:
        """The `top` parts that added most to the score of an item with this vector (positive shares only)."""
        shares = self.parts @ item_vector
        order = np.argsort(-shares, kind="stable")
        out = []
        for i in order:
            kind, key, text = self.labels[i]
            if shares[i] <= 0 or len(out) == top:
                break
            if kind:
                out.append(Reason(kind, key, text, round(float(shares[i]), 4)))
        return tuple(out)
