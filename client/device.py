"""The on-device runtime: rank the published item index with the device's own history, locally.

A device downloads one artifact (shared/artifact.py) and nothing else. Its history never leaves it:
the user vector is built here by the user tower from the published item vectors, and the published
index is searched here. Text search runs the item tower (MiniLM + the published adapter) on the query.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from shared.artifact import LATEST_FILE, Artifact, latest, load_artifact
from shared.model import ModelConfig, Recommender
from shared.sequences import ENGAGEMENT


@dataclass(frozen=True)
class Recommendation:
    item_id: str
    title: str
    score: float
    brand: str = ""
    category: str = ""
    price: float | None = None


class Device:
    def __init__(self, artifact_dir: str | Path) -> None:
        """Verify and load a published folder (or the LATEST one of a publication root); no model yet."""
        path = Path(artifact_dir)
        self.artifact: Artifact = load_artifact(latest(path) if (path / LATEST_FILE).exists() else path)
        self.position = {item_id: row for row, item_id in enumerate(self.artifact.item_ids)}
        self._model: Recommender | None = None
        self._vectors: np.ndarray | None = None

    def model(self) -> Recommender:
        """The published recommender (MiniLM + adapter + user head), built on first use (a few seconds)."""
        if self._model is None:
            model = Recommender(ModelConfig.from_dict(self.artifact.model_config))
            model.load_trainable_state(self.artifact.trainable_state)
            self._model = model.eval()
        return self._model

    def recommend(self, history: list[str], k: int = 10, exclude: Iterable[str] = ()) -> list[Recommendation]:
        """Top k items for a history (oldest first); history and `exclude` (purchased) never come back."""
        history = list(dict.fromkeys(history))  # distinct, in order of first engagement, as in training
        if not history:
            raise ValueError("empty history: there is nothing to recommend from (try search instead)")
        unknown = [item_id for item_id in history if item_id not in self.position]
        if unknown:
            raise ValueError(
                f"{len(unknown)} history item id(s) not in the published catalogue "
                f"{self.artifact.version}: {unknown[:10]}"
            )
        rows = [self.position[item_id] for item_id in history]
        if self._vectors is None:
            self._vectors = self.artifact.item_vectors()
        model = self.model()
        user = model.user_rows(model.user_vectors(self._vectors, [rows]))
        banned = set(rows) | {self.position[i] for i in exclude if i in self.position}
        return self._top(user, k, banned)

    def search(self, query: str, k: int = 10) -> list[Recommendation]:
        """Top k items for a text query, by the item tower's similarity."""
        if not query.strip():
            raise ValueError("empty query")
        model = self.model()
        return self._top(model.query_rows(model.encode_texts([query])), k, set())

    def _top(self, vector: np.ndarray, k: int, banned: set[int]) -> list[Recommendation]:
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        index = self.artifact.index
        scores, rows = index.search(
            np.ascontiguousarray(vector, dtype=np.float32), min(k + len(banned), index.ntotal)
        )
        found = [
            (float(s), int(r))
            for s, r in zip(scores[0], rows[0], strict=True)
            if r >= 0 and int(r) not in banned
        ]
        return [self._recommendation(row, score) for score, row in found[:k]]

    def _recommendation(self, row: int, score: float) -> Recommendation:
        item = self.artifact.items.iloc[row]
        price = item.get("price")
        return Recommendation(
            item_id=str(item["item_id"]),
            title=str(item.get("title", "")),
            score=score,
            brand=str(item.get("brand", "")),
            category=str(item.get("category", "")),
            price=None if price is None or pd.isna(price) else float(price),
        )


def read_history(arg: str) -> tuple[list[str], set[str]]:
    """A device's history (oldest first) and the ids it purchased, from one of:

    - comma-separated item ids: "B001,B002" (nothing purchased);
    - a text file with one item id per line (blank lines and # comments skipped; nothing purchased);
    - a CSV with an item_id column; with an `event` column it is an event log: the history is the items
      engaged with (views do not count, as in training), distinct, in order of first engagement (by
      `timestamp` when there is one, else file order), and the purchased set is the `purchase` events.
    """
    path = Path(arg)
    if not path.is_file():
        if path.suffix.lower() in (".csv", ".txt") or "/" in arg:
            raise FileNotFoundError(f"history file {arg} does not exist")
        return [part.strip() for part in arg.split(",") if part.strip()], set()
    if path.suffix.lower() != ".csv":
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        return [line for line in lines if line and not line.startswith("#")], set()

    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "item_id" not in table.columns:
        raise ValueError(f"{path}: no item_id column (found {list(table.columns)})")
    if "user_id" in table.columns and table["user_id"].nunique() > 1:
        users = table["user_id"].nunique()
        raise ValueError(f"{path}: holds {users} users; a device holds one user's history")
    if "event" in table.columns and "timestamp" in table.columns:
        table = table.loc[_parse_times(table["timestamp"], path).sort_values(kind="stable").index]
    table["item_id"] = table["item_id"].str.strip()
    table = table[table["item_id"] != ""]
    if "event" not in table.columns:
        return table["item_id"].tolist(), set()
    events = table["event"].str.strip()
    history = list(dict.fromkeys(table.loc[events.isin(ENGAGEMENT), "item_id"]))
    return history, set(table.loc[events == "purchase", "item_id"])


def _parse_times(values: pd.Series, path: Path) -> pd.Series:
    """Epoch seconds or ISO-8601 text -> UTC times; an unreadable timestamp is an error, not a guess."""
    text = values.str.strip()
    seconds = pd.to_numeric(text, errors="coerce")
    iso = pd.to_datetime(text.where(seconds.isna(), None), format="ISO8601", utc=True, errors="coerce")
    parsed = pd.to_datetime(seconds, unit="s", utc=True).fillna(iso)
    if parsed.isna().any():
        row = int(np.flatnonzero(parsed.isna().to_numpy())[0])
        raise ValueError(
            f"{path}: row {row + 1}: timestamp {values.iloc[row]!r} is not epoch seconds or ISO-8601"
        )
    return parsed
