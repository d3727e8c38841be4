"""The on-device runtime: rank the published item index with the device's own history, locally.

A device downloads one artifact (shared/artifact.py) and nothing else. Its history never leaves it:
the user vector is built here from the published item vectors by the published user tower (tower.py),
and the published index is searched here (ranking.py). Text search runs the item tower (MiniLM + the
published adapter, shared/model.py) on the query (query.py). Every query row is kept in parts
(intent.py), so a result can say which history items or query words earned its score; results can be
filtered (filters.py), re-ranked for variety (diversity.py), and a session (session.py) updates them as
events happen. Trust (the pinned publisher key, no rollback) is trust.py's.

A new shopper (no history yet) gets the artifact's trending list (`trending.json`, shared/trending.py):
the items most engaged with across the federation, by vote totals released once per training with
differential privacy, in their published order. An artifact without one (formats 2 and 3, a partner-mode
run, `trending-items` 0) has nothing to offer before the first event, and says so.

Inputs are checked before anything is loaded (`check_k`, `clean_query`, with shared/schema.py's query
limit); an unknown item id is an error that names it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from client.device.diversity import CANDIDATES_PER_RESULT, check_diversity, mmr
from client.device.filters import FilterColumns, Filters
from client.device.intent import ITEM, TRENDING, Intent, Reason
from client.device.items import ItemTable, Recommendation
from client.device.query import query_intent
from client.device.query_encoder import (
    QUERY_ENCODERS,
    Agreement,
    agreement,
    compressed_encoder,
    sample_queries,
)
from client.device.ranking import index_rows, top_rows
from client.device.tower import UserTower
from client.device.trust import accept_round, default_state_dir
from shared.artifact import LATEST_FILE, Artifact, latest, load_artifact
from shared.encoder import HIDDEN_SIZE
from shared.model import ModelConfig, Recommender
from shared.schema import MAX_QUERY_CHARS
from shared.signing import PublicKeyLike

MAX_K = 1_000  # results per request: more is a mistake, and the index search grows with k


def check_k(k: int) -> None:
    """Refuse a k out of range before anything is loaded or encoded."""
    if not 1 <= k <= MAX_K:
        raise ValueError(f"k must be between 1 and {MAX_K}, got {k}")


def clean_query(query: str) -> tuple[str, bool]:
    """The query stripped and cut to MAX_QUERY_CHARS (tokenizing a huge one takes seconds and gigabytes),
    and whether it was cut; an empty query is an error."""
    query = query.strip()
    if not query:
        raise ValueError("empty query: give the words to search for")
    return query[:MAX_QUERY_CHARS], len(query) > MAX_QUERY_CHARS


def check_share(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value}")


class Device:
    def __init__(
        self,
        artifact_dir: str | Path,
        *,
        publisher_key: PublicKeyLike,
        state_dir: str | Path | None = None,
        query_encoder: str = "fp32",
    ) -> None:
        """Verify and load a published folder (or the LATEST one of a publication root) signed by the pinned
        `publisher_key` (a key or a public key PEM path), refusing a round older than the newest this
        device accepted (recorded in `state_dir`, default ~/.fedrec/device); no model yet.

        `query_encoder` ("fp32", "bf16", "int8"): the precision search encodes queries in; a compressed
        one is checked against fp32 at the first search and used only where it agrees (query_encoder.py)."""
        if query_encoder not in QUERY_ENCODERS:
            raise ValueError(f"query_encoder must be one of {list(QUERY_ENCODERS)}, got {query_encoder!r}")
        path = Path(artifact_dir)
        folder = latest(path) if os.path.lexists(path / LATEST_FILE) else path
        self.artifact: Artifact = load_artifact(folder, public_key=publisher_key)
        accept_round(Path(state_dir) if state_dir is not None else default_state_dir(), self.artifact)
        self.position = {item_id: row for row, item_id in enumerate(self.artifact.item_ids)}
        self.items = ItemTable(self.artifact.items)
        self.filter_columns = FilterColumns(self.artifact.items)
        # [N, d + 1], no copy: the exact rows beside a compressed index, else a view of the index's own
        self.rows = self.artifact.rows if self.artifact.rows is not None else index_rows(self.artifact.index)
        self.vectors = self.rows[:, :HIDDEN_SIZE]  # the item vectors, without the popularity column
        self._model: Recommender | None = None
        self._tower: UserTower | None = None
        self.query_encoder = query_encoder  # asked for; `query_encoder_used` is what runs, once known
        self.query_encoder_used: str | None = "fp32" if query_encoder == "fp32" else None
        self.query_agreement: Agreement | None = None
        self._query_module = None

    # ------------------------------------------------------------------ what is built on first use
    def model(self) -> Recommender:
        """The published recommender (MiniLM + adapter + user head), built on first use (a few seconds);
        only text search needs it."""
        if self._model is None:
            model = Recommender(ModelConfig.from_dict(self.artifact.model_config))
            model.load_trainable_state(self.artifact.trainable_state)
            self._model = model.eval()
        return self._model

    def tower(self) -> UserTower:
        """The published user tower in NumPy (no MiniLM needed to recommend)."""
        if self._tower is None:
            config = ModelConfig.from_dict(self.artifact.model_config)
            self._tower = UserTower(config, self.artifact.trainable_state)
        return self._tower

    def query_intent(self, query: str) -> Intent:
        """A query's row in parts (query.py), by the query encoder this device runs."""
        model = self.model()
        if self.query_encoder_used is None:  # first search with a compressed encoder asked for
            self._choose_query_encoder(model)
        return query_intent(model, query, self._query_module)

    def _choose_query_encoder(self, model: Recommender) -> None:
        """Build the compressed encoder and keep it only if it agrees with fp32 on catalogue titles."""
        fast = compressed_encoder(model.encoder, self.query_encoder)
        queries = sample_queries(list(self.items.titles))
        full = np.vstack([query_intent(model, q).row() for q in queries])
        quick = np.vstack([query_intent(model, q, fast).row() for q in queries])
        self.query_agreement = agreement(full, quick, self.rows)
        if self.query_agreement.holds:
            self._query_module, self.query_encoder_used = fast, self.query_encoder
        else:
            self.query_encoder_used = "fp32"

    @property
    def query_encoder_note(self) -> str:
        """What search encodes queries with, and why (for a CLI or API to show)."""
        a = self.query_agreement
        if a is None:
            return f"query encoder {self.query_encoder_used or self.query_encoder + ' (not yet checked)'}"
        verdict = "used" if a.holds else "refused, fp32 used instead"
        return (
            f"query encoder {self.query_encoder} {verdict}: cosine to fp32 min {a.cosine_min:.4f} "
            f"(mean {a.cosine_mean:.4f}), top-10 overlap {a.overlap_at_10:.3f} on {a.queries} titles"
        )

    # ------------------------------------------------------------------ items
    def unknown(self, item_ids: Iterable[str]) -> list[str]:
        """The distinct ids, in order, that are not in the published catalogue."""
        return [item_id for item_id in dict.fromkeys(item_ids) if item_id not in self.position]

    def row_of(self, item_id: str) -> int:
        """The index row of a published item; an unknown id is an error naming it."""
        row = self.position.get(item_id)
        if row is None:
            raise ValueError(f"item id {item_id!r} is not in the published catalogue {self.artifact.version}")
        return row

    def left_to_recommend(self, history: Iterable[str], exclude: Iterable[str] = ()) -> int:
        """How many items a recommendation could still return once the history and `exclude` are banned."""
        banned = {self.position[item_id] for item_id in [*history, *exclude] if item_id in self.position}
        return len(self.position) - len(banned)

    def profile(self, history: list[str], strengths: Iterable[float] | None = None) -> Intent:
        """The user vector of a history (oldest first, distinct, all published), one part per item."""
        unknown = self.unknown(history)
        if unknown:
            raise ValueError(
                f"{len(unknown)} history item id(s) not in the published catalogue "
                f"{self.artifact.version}: {unknown[:10]}"
            )
        rows = [self.position[item_id] for item_id in history]
        labels = [(ITEM, self.items.ids[row], self.items.titles[row]) for row in rows]
        weights = None if strengths is None else np.fromiter(strengths, dtype=np.float32)
        return self.tower().intent(self.vectors[rows], labels, weights)

    def no_trending(self, what: str) -> str:
        """Why `what` (an empty history or session) has nothing to recommend from on this artifact."""
        return (
            f"{what}: there is nothing to recommend from, and the published index {self.artifact.version} "
            "carries no trending list for new shoppers (try search instead)"
        )

    # ------------------------------------------------------------------ what a shopper asks for
    def recommend(
        self,
        history: list[str],
        k: int = 10,
        exclude: Iterable[str] = (),
        *,
        filters: Filters | None = None,
        diversity: float = 0.0,
        explain: bool = False,
    ) -> list[Recommendation]:
        """Top k items for a history (oldest first); history and `exclude` (purchased) never come back.

        An empty history (a new shopper) gets the trending list instead (`trending`: `diversity` and
        `explain` do not apply, each result carries its trending reason); an artifact without one makes it
        an error that says so."""
        check_k(k)
        history = list(dict.fromkeys(history))  # distinct, in order of first engagement, as in training
        if not history:
            if self.artifact.trending is None:
                raise ValueError(self.no_trending("empty history"))
            check_diversity(diversity)
            banned = {self.position[i] for i in exclude if i in self.position}
            return self.trending(k, banned, filters=filters)
        intent = self.profile(history)
        banned = {self.position[i] for i in [*history, *exclude] if i in self.position}
        return self.rank(intent, k, banned, filters=filters, diversity=diversity, explain=explain)

    def search(
        self,
        query: str,
        k: int = 10,
        *,
        filters: Filters | None = None,
        history: list[str] | None = None,
        personalize: float = 0.0,
        exclude: Iterable[str] = (),
        diversity: float = 0.0,
        explain: bool = False,
    ) -> list[Recommendation]:
        """Top k items for a text query (cut to MAX_QUERY_CHARS, see clean_query) by the item tower's
        similarity; with a `history` and `personalize` α > 0, ranked by (1 − α)·query + α·profile (the
        profile brings its items' popularity with it). Nothing the shopper saw is hidden, only `exclude`."""
        check_k(k)
        check_share("personalize", personalize)
        query, _ = clean_query(query)
        intent = self.query_intent(query)
        if personalize > 0:
            if not history:
                raise ValueError("personalized search needs a history")
            profile = self.profile(list(dict.fromkeys(history)))
            intent = intent.scaled(1 - personalize).plus(profile.scaled(personalize))
        banned = {self.position[i] for i in exclude if i in self.position}
        return self.rank(intent, k, banned, filters=filters, diversity=diversity, explain=explain)

    def similar(
        self,
        item_id: str,
        k: int = 10,
        *,
        filters: Filters | None = None,
        exclude: Iterable[str] = (),
        diversity: float = 0.0,
    ) -> list[Recommendation]:
        """Substitutes: the items nearest to this one in the learned item space (popularity left out)."""
        check_k(k)
        row = self.row_of(item_id)
        intent = Intent(self.vectors[row][None].copy(), ((ITEM, item_id, self.items.titles[row]),), 0.0)
        banned = {row} | {self.position[i] for i in exclude if i in self.position}
        return self.rank(intent, k, banned, filters=filters, diversity=diversity)

    def complements(
        self,
        item_id: str,
        k: int = 10,
        *,
        filters: Filters | None = None,
        exclude: Iterable[str] = (),
        diversity: float = 0.0,
    ) -> list[Recommendation]:
        """ "Goes with this item": what the published model recommends to a shopper whose whole history is
        this one item (its next-item prediction, popularity included), from categories other than its
        own. With a trained user head and item ID rows that carries learned co-engagement; with text
        alone it is relatedness across categories (a tent: its footprint, stakes, a sleeping bag)."""
        check_k(k)
        row = self.row_of(item_id)
        if not self.items.categories[row]:
            raise ValueError(f"item {item_id!r} has no category: complements come from other categories")
        allowed = self.filter_columns.other_categories(row)
        mask = self.filter_columns.mask(filters)
        allowed = allowed if mask is None else allowed & mask
        banned = {row} | {self.position[i] for i in exclude if i in self.position}
        return self.rank(self.profile([item_id]), k, banned, allowed=allowed, diversity=diversity)

    def session(self, history: Iterable[str] = (), purchased: Iterable[str] = (), **options):
        """A Session (session.py) over this device, starting from a history and purchases."""
        from client.device.session import Session

        return Session(self, history, purchased, **options)

    # ------------------------------------------------------------------ the new shopper's list
    def trending(
        self, k: int, banned: Iterable[int] = (), *, filters: Filters | None = None
    ) -> list[Recommendation]:
        """The first k items of the published trending list, in its order (most voted first), none banned
        (rows) and all passing `filters`; fewer if fewer are left. A result's score is its noisy vote total
        (not a model score: there is no user to score against), and its one reason says it is trending.
        The list is a fixed ranking, so diversity does not apply to it."""
        check_k(k)
        listed = self.artifact.trending
        if listed is None:
            raise ValueError(f"the published index {self.artifact.version} carries no trending list")
        mask = self.filter_columns.mask(filters)
        if mask is not None and not mask.any():
            raise ValueError(f"no published item matches the filters ({(filters or Filters()).describe()})")
        banned = set(banned)
        dp = "DP vote total" if listed.private else "vote total, not private"
        found = []
        for item_id, total in zip(listed.item_ids, listed.totals, strict=True):
            row = self.position[item_id]  # the artifact checked that every listed item is published
            if row in banned or (mask is not None and not mask[row]):
                continue
            text = f"trending: among the federation's most engaged items ({dp} {total:.1f})"
            reason = Reason(TRENDING, listed.training, text, round(total, 4))
            found.append(self.items.result(row, total, (reason,)))
            if len(found) == k:
                break
        return found

    # ------------------------------------------------------------------ the one ranking path
    def rank(
        self,
        intent: Intent,
        k: int,
        banned: Iterable[int] = (),
        *,
        filters: Filters | None = None,
        allowed: np.ndarray | None = None,
        diversity: float = 0.0,
        explain: bool = False,
    ) -> list[Recommendation]:
        """The k best items for `intent`, none banned, all passing `filters` (and `allowed`, a row mask);
        MMR re-ranked when `diversity` > 0; with their reasons when `explain`."""
        check_k(k)
        check_diversity(diversity)
        mask = self.filter_columns.mask(filters)
        if allowed is not None:
            mask = allowed if mask is None else mask & allowed
        if mask is not None and not mask.any():
            raise ValueError(f"no published item matches the filters ({(filters or Filters()).describe()})")
        want = min(CANDIDATES_PER_RESULT * k, len(self.rows)) if diversity > 0 else k
        found = top_rows(
            self.artifact.index, self.rows, intent.row(), want, banned, mask, self.artifact.rerank
        )
        if diversity > 0 and found:
            vectors = self.vectors[[row for row, _ in found]]
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
            order = mmr(np.array([score for _, score in found]), vectors, k, diversity)
            found = [found[i] for i in order]
        return [
            self.items.result(row, score, intent.reasons(self.vectors[row]) if explain else ())
            for row, score in found[:k]
        ]
