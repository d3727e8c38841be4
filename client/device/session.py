"""A shopper's visit on the device: events come in as they happen, fresh recommendations go out at once.

Nothing is re-encoded: an item event adds that item's published vector to the session's history, and the
user tower (tower.py, NumPy) pools it again, so a recommendation after an event costs the pooling, one
index search and ten result rows (about a millisecond at 100k items, benchmarks/performance.py).

- Order is intent: an item engaged with again moves to the most recent place, and the tower weighs
  recent items more (recency**age, the model's own pooling, over its last `history_length` entries).
- Engagement (click, add_to_cart, purchase, a search that led to an item) counts as in training (1);
  a view, which training leaves out as too weak, counts EVENT_STRENGTH["view"].
- A search for words with no item joins the history as the query's vector (the item tower puts queries
  and items in one space): what the shopper is looking for now.
- Items the session has seen (viewed or engaged with) are not recommended back, and purchases never
  are; a search shows everything that matches (a shopper may search for what they bought).
- Before its first event a session is a new shopper's: it recommends the artifact's trending list
  (runtime.py's `Device.trending`), less its purchases; from the first event on, the model does.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from client.device.diversity import check_diversity
from client.device.filters import Filters
from client.device.intent import ITEM, QUERY, Intent
from client.device.items import Recommendation
from client.device.runtime import check_k, check_share, clean_query
from shared.schema import EVENT_TYPES

if TYPE_CHECKING:
    from client.device.runtime import Device

EVENT_STRENGTH = {"view": 0.5, "click": 1.0, "add_to_cart": 1.0, "purchase": 1.0, "search": 1.0}
MAX_ENTRIES = 1_000  # history entries a session keeps (the tower pools only its last history_length)


class Session:
    def __init__(
        self,
        device: Device,
        history: Iterable[str] = (),
        purchased: Iterable[str] = (),
        *,
        k: int = 10,
        filters: Filters | None = None,
        diversity: float = 0.0,
        explain: bool = False,
    ) -> None:
        """A session starting from a history (engaged item ids, oldest first) and purchases (ids the
        catalogue no longer holds are ignored); k, filters, diversity and explain apply to every
        recommendation it returns unless a call says otherwise."""
        check_k(k)
        self.device, self.k, self.filters = device, k, filters
        self.diversity, self.explain = diversity, explain
        # (kind, key) -> (vector, label, strength), oldest first: an item's key is its id, a query's its text
        self._entries: dict[tuple[str, str], tuple[np.ndarray, tuple[str, str, str], float]] = {}
        self.seen: set[int] = set()
        self.purchased: set[int] = {device.position[i] for i in purchased if i in device.position}
        for item_id in history:
            self._item("click", item_id)

    # ------------------------------------------------------------------ events
    def add(self, event: str, item_id: str | None = None, query: str | None = None) -> list[Recommendation]:
        """Record one event (view, click, add_to_cart, purchase: an item; search: words, an item found
        by them, or both) and return fresh recommendations."""
        if event not in EVENT_TYPES:
            raise ValueError(f"unknown event {event!r}; expected one of {', '.join(EVENT_TYPES)}")
        if event == "search" and query is not None:
            self._query(query)
        if item_id is not None:
            self._item(event, item_id)
        elif event != "search":
            raise ValueError(f"a {event} event needs an item id")
        elif query is None:
            raise ValueError("a search event needs a query or the item id it led to")
        return self.recommend()

    def history(self) -> list[str]:
        """The session's items and queries, oldest first, as 'item:<id>' / 'query:<text>'."""
        return [f"{kind}:{key}" for kind, key in self._entries]

    # ------------------------------------------------------------------ answers
    def can_recommend(self) -> bool:
        """Whether `recommend` has something to go on: an event, or (before any) a trending list."""
        return bool(self._entries) or self.device.artifact.trending is not None

    def recommend(
        self,
        k: int | None = None,
        *,
        filters: Filters | None = None,
        diversity: float | None = None,
        explain: bool | None = None,
    ) -> list[Recommendation]:
        """Top k items for the session as it is now; seen and purchased items never come back. Before
        any event, the trending list (`diversity` and `explain` do not apply to it; see Device.trending)."""
        if not self._entries:
            if self.device.artifact.trending is None:
                raise ValueError(self.device.no_trending("empty session (no event yet)"))
            check_diversity(self.diversity if diversity is None else diversity)
            return self.device.trending(
                self.k if k is None else k,
                self.seen | self.purchased,
                filters=self.filters if filters is None else filters,
            )
        return self.device.rank(
            self._profile(),
            self.k if k is None else k,
            self.seen | self.purchased,
            filters=self.filters if filters is None else filters,
            diversity=self.diversity if diversity is None else diversity,
            explain=self.explain if explain is None else explain,
        )

    def search(
        self,
        query: str,
        k: int | None = None,
        *,
        filters: Filters | None = None,
        personalize: float = 0.0,
        explain: bool | None = None,
    ) -> list[Recommendation]:
        """Search (personalized by the session so far when `personalize` > 0), then record the query."""
        check_share("personalize", personalize)
        query, _ = clean_query(query)
        intent = self.device.query_intent(query)
        searched = intent
        if personalize > 0 and self._entries:
            intent = intent.scaled(1 - personalize).plus(self._profile().scaled(personalize))
        self._remember((QUERY, query), searched.parts.sum(axis=0), (QUERY, query, query), 1.0)
        return self.device.rank(
            intent,
            self.k if k is None else k,
            filters=self.filters if filters is None else filters,
            explain=self.explain if explain is None else explain,
        )

    # ------------------------------------------------------------------ the history
    def _item(self, event: str, item_id: str) -> None:
        row = self.device.row_of(item_id)
        self.seen.add(row)
        if event == "purchase":
            self.purchased.add(row)
        label = (ITEM, item_id, self.device.items.titles[row])
        self._remember((ITEM, item_id), self.device.vectors[row], label, EVENT_STRENGTH[event])

    def _query(self, query: str) -> None:
        query, _ = clean_query(query)
        vector = self.device.query_intent(query).parts.sum(axis=0)
        self._remember((QUERY, query), vector, (QUERY, query, query), EVENT_STRENGTH["search"])

    def _profile(self) -> Intent:
        """The session's user vector, from its last `history_length` entries."""
        entries = list(self._entries.values())[-self.device.tower().length :]
        vectors = np.stack([vector for vector, _, _ in entries])
        strengths = np.array([strength for _, _, strength in entries], dtype=np.float32)
        return self.device.tower().intent(vectors, [label for _, label, _ in entries], strengths)

    def _remember(
        self, key: tuple[str, str], vector: np.ndarray, label: tuple[str, str, str], strength: float
    ) -> None:
        previous = self._entries.pop(key, None)
        if previous is not None:
            strength = max(strength, previous[2])
        self._entries[key] = (np.asarray(vector, dtype=np.float32), label, strength)
        while len(self._entries) > MAX_ENTRIES:
            del self._entries[next(iter(self._entries))]
