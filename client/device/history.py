"""A device's own history, read from a file or a list of ids, by its content (not its name).

Its cells are read by shared/schema.py's rule for text (a Parquet 1.0 is "1"), its events checked against
that module's event names; a defect in it is that module's SchemaError, naming the file, row and column,
with the value quoted as shared/messages.py does.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np
import pandas as pd

from shared.messages import shown
from shared.schema import EVENT_TYPES, SchemaError, cell_text
from shared.sequences import ENGAGEMENT

MAX_HISTORY_BYTES = 64 * 2**20  # a device's own history is small; a bigger file is the wrong file
HISTORY_SUFFIXES = (".csv", ".parquet", ".txt")  # a --history value ending so is a file name, not an id
PARQUET_MAGIC = b"PAR1"


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
