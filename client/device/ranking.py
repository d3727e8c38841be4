"""The top rows of the published index for one query row, with bans (history, purchases) and filters.

- No filter and few bans: the index's own search for k + bans rows, bans dropped (the fast path).
- A filter (or many bans) leaving at most EXACT_MAX rows: an exact scan of those rows. A graph index
  searched with a selective filter wanders far and can return fewer than k, and scanning 20k rows is
  a few milliseconds.
- More rows left: the index's search restricted to them by a FAISS ID selector (for HNSW, with the
  published efSearch: SearchParametersHNSW would otherwise use FAISS' default 16; for IVF, the published
  nprobe); if it still finds fewer than it should, the exact scan.

A compressed index (IVF-PQ, shared/artifact.py) scores with approximate codes: it is asked for
`rerank` × as many candidates, which are re-scored exactly from the published rows and cut to the best,
so every score returned is the exact u·v + β·τ·b, whatever the index.
"""

from __future__ import annotations

from collections.abc import Iterable

import faiss
import numpy as np

from client.device.threads import one_thread

EXACT_MAX = 20_000  # rows left after filtering, up to which an exact scan beats the filtered graph search
BANS_IN_SEARCH = 1_000  # bans up to which the index is asked for k + bans rows and the bans dropped


def index_rows(index: faiss.Index) -> np.ndarray:
    """The index's stored rows as a read-only NumPy view, no copy (both published types store them flat):
    [N, d + 1] without doubling a 150 MB artifact in memory. Valid while the index lives. Any other
    index type: its rows reconstructed (a copy)."""
    flat = index if isinstance(index, faiss.IndexFlat) else getattr(index, "storage", None)
    flat = None if flat is None else faiss.downcast_index(flat) if flat is not index else flat
    if not isinstance(flat, faiss.IndexFlat):
        return index.reconstruct_n(0, index.ntotal)
    rows = faiss.rev_swig_ptr(flat.get_xb(), index.ntotal * index.d).reshape(index.ntotal, index.d)
    rows.flags.writeable = False
    return rows


def top_rows(
    index: faiss.Index,
    rows: np.ndarray,
    query: np.ndarray,
    k: int,
    banned: Iterable[int] = (),
    allowed: np.ndarray | None = None,
    rerank: int = 1,
) -> list[tuple[int, float]]:
    """(row, score) of the best k rows for `query` ([1, d + 1] float32), best first, none banned and all
    `allowed` (a boolean mask; None: every row); `rerank` > 1: the index's candidates re-scored exactly."""
    banned = set(banned)
    n = index.ntotal
    if allowed is None and len(banned) <= BANS_IN_SEARCH:
        found = _search(index, rows, query, min(k + len(banned), n), rerank=rerank)
        found = [(row, score) for row, score in found if row not in banned][:k]
        if len(found) == min(k, n - len(banned)):
            return found
    mask = np.ones(n, dtype=bool) if allowed is None else allowed.copy()
    mask[list(banned)] = False
    left = int(mask.sum())
    if left == 0:
        return []
    if left > EXACT_MAX:
        found = _search(index, rows, query, min(k, left), mask, rerank)
        if len(found) == min(k, left):
            return found
    return _exact(rows, query, k, np.flatnonzero(mask))


def _search(
    index: faiss.Index,
    rows: np.ndarray,
    query: np.ndarray,
    want: int,
    mask: np.ndarray | None = None,
    rerank: int = 1,
) -> list[tuple[int, float]]:
    fetch = min(want * rerank, index.ntotal)
    params = None
    if mask is not None:
        bits = np.packbits(mask, bitorder="little")  # FAISS' bitmap: bit i & 7 of byte i >> 3
        selector = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bits))
        if isinstance(index, faiss.IndexHNSW):
            params = faiss.SearchParametersHNSW(sel=selector, efSearch=max(index.hnsw.efSearch, fetch))
        elif isinstance(index, faiss.IndexIVF):
            params = faiss.SearchParametersIVF(sel=selector, nprobe=index.nprobe)
        else:
            params = faiss.SearchParameters(sel=selector)
    with one_thread():
        scores, found = index.search(query, fetch, params=params)
    if rerank == 1:
        return [(int(r), float(s)) for s, r in zip(scores[0], found[0], strict=True) if r >= 0]
    candidates = found[0][found[0] >= 0]
    return _exact(rows, query, want, candidates)


def _exact(rows: np.ndarray, query: np.ndarray, k: int, candidates: np.ndarray) -> list[tuple[int, float]]:
    # many candidates: score every row in place rather than copy most of the index out first
    scores = (rows @ query[0])[candidates] if 2 * len(candidates) > len(rows) else rows[candidates] @ query[0]
    if len(candidates) > k:
        best = np.argpartition(-scores, k)[:k]
    else:
        best = np.arange(len(candidates))
    best = best[np.argsort(-scores[best], kind="stable")]
    return [(int(candidates[i]), float(scores[i])) for i in best]
