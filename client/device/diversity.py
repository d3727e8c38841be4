"""Optional re-ranking for variety (maximal marginal relevance), and catalogue coverage.

Ten near-copies of one tent are ten good scores and one choice. MMR picks, one at a time, the candidate
with the best (1 − diversity)·score − diversity·(its highest cosine to an item already picked), among
the CANDIDATES_PER_RESULT·k best by score: diversity 0 is the plain ranking, 1 ignores relevance past
the first pick. Coverage, the share of the catalogue that a set of result lists shows at all, is how a
run reports what diversity buys (benchmarks/performance.py).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

CANDIDATES_PER_RESULT = 5  # MMR chooses among the 5·k best by score


def check_diversity(diversity: float) -> None:
    if not 0.0 <= diversity <= 1.0:
        raise ValueError(f"diversity must be between 0 and 1, got {diversity}")


def mmr(scores: np.ndarray, vectors: np.ndarray, k: int, diversity: float) -> list[int]:
    """Positions in `scores` (candidates, best first) in MMR order, k of them; `vectors` [C, d] unit."""
    check_diversity(diversity)
    if diversity == 0.0 or len(scores) <= 1:
        return list(range(min(k, len(scores))))
    similarity = vectors @ vectors.T
    chosen = [0]
    closest = similarity[0].copy()  # each candidate's highest similarity to a chosen one
    left = np.ones(len(scores), dtype=bool)
    left[0] = False
    while len(chosen) < min(k, len(scores)):
        value = np.where(left, (1 - diversity) * scores - diversity * closest, -np.inf)
        pick = int(np.argmax(value))
        chosen.append(pick)
        left[pick] = False
        closest = np.maximum(closest, similarity[pick])
    return chosen


def coverage(result_lists: Iterable[Iterable[str]], catalogue_size: int) -> float:
    """The share of the catalogue's items that appear in at least one of the result lists."""
    shown = {item_id for results in result_lists for item_id in results}
    return len(shown) / catalogue_size if catalogue_size else 0.0


def intra_list_similarity(vectors: np.ndarray) -> float:
    """Mean cosine between the distinct pairs of one result list ([k, d] unit vectors); 0 below 2 items."""
    if len(vectors) < 2:
        return 0.0
    similarity = vectors @ vectors.T
    upper = np.triu_indices(len(vectors), 1)
    return float(similarity[upper].mean())
