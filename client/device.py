"""The on-device runtime: rank the published item index with the device's own history, locally.

A device downloads one artifact (shared/artifact.py) and nothing else. Its history never leaves it:
the user vector is built here by the user tower from the published item vectors, and the published
index is searched here. Text search runs the item tower (MiniLM + the published adapter) on the query.

Trust: the device pins its publisher's public key (shared/signing.py) and loads only an artifact signed
by it (shared/artifact.py). It also remembers, per publisher key, the newest round it accepted, in
`<state_dir>/accepted.json` (default `~/.fedrec/device`, written durably by shared/durable.py), and
refuses an older round: a rolled-back `LATEST` or a stale copy would otherwise serve an older, validly
signed model.

Inputs are checked before anything is loaded (`check_k`, `clean_query`, with shared/schema.py's query
limit). A history file is read by its content, its cells by shared/schema.py's rule for text (a Parquet
1.0 is "1"), its events checked against that module's event names; a defect in it is that module's
SchemaError, naming the file, row and column, with the value quoted as shared/messages.py does.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from shared.artifact import LATEST_FILE, Artifact, ArtifactError, latest, load_artifact
from shared.durable import write_bytes
from shared.messages import shown
from shared.model import ModelConfig, Recommender
from shared.schema import EVENT_TYPES, MAX_QUERY_CHARS, SchemaError, cell_text
from shared.sequences import ENGAGEMENT
from shared.signing import PublicKeyLike, run_public_key

STATE_FILE = "accepted.json"  # {publisher key id: {"round": newest accepted round, "version": its version}}
MAX_K = 1_000  # results per request: more is a mistake, and the index search grows with k
MAX_HISTORY_BYTES = 64 * 2**20  # a device's own history is small; a bigger file is the wrong file
HISTORY_SUFFIXES = (".csv", ".parquet", ".txt")  # a --history value ending so is a file name, not an id
PARQUET_MAGIC = b"PAR1"


def default_state_dir() -> Path:
    return Path.home() / ".fedrec" / "device"


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


@dataclass(frozen=True)
class Recommendation:
    item_id: str
    title: str
    score: float
    brand: str = ""
    category: str = ""
    price: float | None = None


class Device:
    def __init__(
        self, artifact_dir: str | Path, *, publisher_key: PublicKeyLike, state_dir: str | Path | None = None
    ) -> None:
        """Verify and load a published folder (or the LATEST one of a publication root) signed by the pinned
        `publisher_key` (a key or a public key PEM path), refusing a round older than the newest this
        device accepted (recorded in `state_dir`, default ~/.fedrec/device); no model yet."""
        path = Path(artifact_dir)
        folder = latest(path) if os.path.lexists(path / LATEST_FILE) else path
        self.artifact: Artifact = load_artifact(folder, public_key=publisher_key)
        accept_round(Path(state_dir) if state_dir is not None else default_state_dir(), self.artifact)
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
        check_k(k)
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

    def unknown(self, item_ids: Iterable[str]) -> list[str]:
        """The distinct ids, in order, that are not in the published catalogue."""
        return [item_id for item_id in dict.fromkeys(item_ids) if item_id not in self.position]

    def left_to_recommend(self, history: Iterable[str], exclude: Iterable[str] = ()) -> int:
        """How many items a recommendation could still return once the history and `exclude` are banned."""
        banned = {self.position[item_id] for item_id in [*history, *exclude] if item_id in self.position}
        return len(self.position) - len(banned)

    def search(self, query: str, k: int = 10) -> list[Recommendation]:
        """Top k items for a text query (cut to MAX_QUERY_CHARS, see clean_query), by the item tower's
        similarity."""
        check_k(k)
        query, _ = clean_query(query)
        model = self.model()
        return self._top(model.query_rows(model.encode_texts([query])), k, set())

    def _top(self, vector: np.ndarray, k: int, banned: set[int]) -> list[Recommendation]:
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


def publisher_key_file(artifact_dir: str | Path, given: str | Path | None = None) -> Path:
    """The public key to pin: `given`, else the run's own `<run>/server/publisher.pub` (for an artifact
    inside a run folder; trust in that folder's layout, as its operator has it)."""
    path = Path(given) if given else run_public_key(artifact_dir)
    if not path.is_file():
        hint = "" if given else ": pass the publisher's public key (publisher.pub) explicitly"
        raise FileNotFoundError(f"publisher key {path} does not exist{hint}")
    return path


def accept_round(state_dir: Path, artifact: Artifact) -> None:
    """Record `artifact`'s round as accepted from its publisher, refusing it if it is older than the
    newest round accepted from that publisher before (rollback)."""
    state_file = state_dir / STATE_FILE
    accepted = _read_state(state_file)
    key, newest = artifact.publisher_key_id, accepted.get(artifact.publisher_key_id, {}).get("round", -1)
    if artifact.round < newest:
        raise ArtifactError(
            artifact.path,
            None,
            f"rollback refused: round {artifact.round} is older than round {newest}, the newest this device "
            f"accepted from publisher key {key[:16]} (LATEST rolled back, or a stale copy; {state_file})",
        )
    if artifact.round > newest:
        accepted[key] = {"round": artifact.round, "version": artifact.version}
        state_dir.mkdir(parents=True, exist_ok=True)
        write_bytes(state_file, (json.dumps(accepted, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def _read_state(state_file: Path) -> dict[str, dict]:
    """The accepted rounds; an unreadable file is an error, not a reset (that would re-allow rollbacks)."""
    if not state_file.exists():
        return {}
    try:
        accepted = json.loads(state_file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{state_file}: device state is not valid JSON ({err}); fix or remove it") from None
    valid = isinstance(accepted, dict) and all(
        isinstance(v, dict) and isinstance(v.get("round"), int) for v in accepted.values()
    )
    if not valid:
        raise ValueError(f"{state_file}: device state is not a table of {{key id: {{round, version}}}}")
    return accepted


def read_history(arg: str) -> tuple[list[str], set[str]]:
    """A device's history (oldest first) and the ids it purchased, from one of:

    - an existing file, read by its content (not its name): Parquet (magic bytes `PAR1`), a CSV whose
      first line is a header naming an `item_id` column, or text with one item id per line (blank lines
      and # comments skipped; nothing purchased). A table with an `event` column is an event log: the
      history is the items engaged with (views do not count, as in training), distinct, in order of first
      engagement (by `timestamp` when there is one, else file order), and the purchased set is the
      `purchase` events; an unknown event, an empty id or an unreadable time is an error naming the row;
    - a value that looks like a path (a `/` or a file suffix such as .csv) but names no file: an error;
    - otherwise comma-separated item ids: "B001,B002" (nothing purchased).
    """
    if not arg.strip():
        raise ValueError("empty history: give comma-separated item ids or a history file")
    path = Path(arg)
    if not os.path.exists(arg):  # unlike Path.exists, False (not OSError) for a long list of ids
        if "/" in arg or path.suffix.lower() in HISTORY_SUFFIXES:
            raise FileNotFoundError(f"history file {arg}: no such file")
        ids = [part.strip() for part in arg.split(",") if part.strip()]
        if not ids:
            raise ValueError(f"history {arg!r} holds no item id")
        return ids, set()
    if path.is_dir():
        raise IsADirectoryError(f"history file {arg}: is a directory, not a file")
    if path.stat().st_size > MAX_HISTORY_BYTES:
        raise ValueError(
            f"history file {arg}: over {MAX_HISTORY_BYTES // 2**20} MiB; a device history is small"
        )
    data = path.read_bytes()
    if data.startswith(PARQUET_MAGIC):
        try:
            table = pd.read_parquet(io.BytesIO(data))
        except Exception as err:  # pyarrow raises many kinds; each means "not a Parquet file we can read"
            raise SchemaError(arg, f"cannot be read as Parquet: {err}") from None
        return _from_table(table, arg)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise SchemaError(arg, f"line {line} is not valid UTF-8 (nor is the file Parquet)") from None
    try:
        records = [record for record in csv.reader(io.StringIO(text, newline="")) if record]
    except csv.Error as err:  # e.g. a field over the csv module's 128 KiB limit
        raise SchemaError(arg, f"cannot be read as CSV or text: {err}") from None
    header = [cell.strip() for cell in records[0]] if records else []
    if "item_id" in header:
        return _from_table(_csv_table(arg, header, records[1:]), arg)
    ids = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "," in line:
            hint = "a text history has one item id per line; a CSV needs an item_id header"
            raise SchemaError(arg, f"line {number} holds a comma: {hint}")
        ids.append(line)
    if not ids:
        raise ValueError(f"history file {arg}: holds no item id")
    return ids, set()


def _csv_table(name: str, header: list[str], rows: list[list[str]]) -> pd.DataFrame:
    """The rows of a history CSV as text; a row with more or fewer fields than the header is an error."""
    for row, fields in enumerate(rows):
        if len(fields) != len(header):
            message = f"has {len(fields)} fields, the header has {len(header)}"
            raise SchemaError(name, message, row=row + 1)
    return pd.DataFrame(rows, columns=header, dtype=object)


def _from_table(table: pd.DataFrame, name: str) -> tuple[list[str], set[str]]:
    """History and purchases from a table with an item_id column (see read_history)."""
    if "item_id" not in table.columns:
        found = ", ".join(repr(str(column)) for column in table.columns)
        raise SchemaError(name, f"no item_id column (found: {found or 'none'})", column="item_id")
    if table.empty:
        raise ValueError(f"history file {name}: holds no item id, only a header")
    ids = _texts(table["item_id"], name, "item_id")
    for row, item_id in enumerate(ids):
        if not item_id:
            raise SchemaError(name, "item_id is empty", row=row + 1, column="item_id")
    if "user_id" in table.columns:
        users = len(set(_texts(table["user_id"], name, "user_id")))
        if users > 1:
            raise SchemaError(
                name, f"holds {users} users; a device holds one user's history", column="user_id"
            )
    order = list(range(len(ids)))
    if "timestamp" in table.columns:
        order = _parse_times(table["timestamp"], name).sort_values(kind="stable").index.tolist()
    if "event" not in table.columns:
        return [ids[row] for row in order], set()
    events = _texts(table["event"], name, "event")
    for row, event in enumerate(events):
        if event not in EVENT_TYPES:
            message = f"unknown event {shown(event)}; expected one of {', '.join(EVENT_TYPES)}"
            raise SchemaError(name, message, row=row + 1, column="event")
    history = list(dict.fromkeys(ids[row] for row in order if events[row] in ENGAGEMENT))
    return history, {item_id for item_id, event in zip(ids, events, strict=True) if event == "purchase"}


def _texts(values: pd.Series, name: str, column: str) -> list[str]:
    """Cells as stripped text ("" when missing); a Parquet whole number 1.0 is "1", as in a CSV."""
    texts = []
    for row, value in enumerate(values.tolist()):
        text = None if isinstance(value, bytes) else cell_text(value, whole=True)  # the loaders' rule
        if text is None:
            raise SchemaError(
                name, f"is not text or a whole number: {shown(value)}", row=row + 1, column=column
            )
        texts.append(text.strip())
    return texts


def _parse_times(values: pd.Series, name: str) -> pd.Series:
    """Epoch seconds or ISO-8601 text (or a Parquet time) -> UTC times, for ordering; an unreadable or
    empty timestamp is an error naming its row, not a guess."""
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        parsed = values.dt.tz_localize("UTC") if values.dt.tz is None else values.dt.tz_convert("UTC")
    else:
        text = pd.Series(_texts(values, name, "timestamp"), index=values.index, dtype=object)
        digits = text.str.fullmatch(r"[0-9]+(?:\.[0-9]+)?").astype(bool)
        seconds = pd.to_datetime(text.where(digits).astype(float), unit="s", utc=True, errors="coerce")
        iso = pd.to_datetime(text.where(~digits & (text != "")), format="ISO8601", utc=True, errors="coerce")
        parsed = seconds.where(digits, iso)
    if parsed.isna().any():
        row = int(np.flatnonzero(parsed.isna().to_numpy())[0])
        message = f"timestamp {shown(values.iloc[row])} is not epoch seconds or ISO-8601"
        raise SchemaError(name, message, row=row + 1, column="timestamp")
    return parsed.reset_index(drop=True)
