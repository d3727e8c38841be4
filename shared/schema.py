"""The two inputs of fedrec and how they are validated.

The item catalogue is public (every client and the server share it), so it is
loaded strictly: one bad row means the universe of items is wrong, and we stop
with a SchemaError naming the file, row and column.
Behaviour logs are private and messy, so a bad row is set aside in a quarantine
file with the reason, and the load goes on; the LoadReport accounts for every row
(read = kept + quarantined). A problem with the whole file (missing, empty, a
folder, not CSV or Parquet, a bad header) is a SchemaError for both.

Cells are text exactly as written (surrounding spaces stripped): a CSV is never parsed
as numbers, and a Parquet number used as an id must be whole (1.0 is read as "1"). Text
may not hold control characters, ids, titles and queries have size limits, and an event
time must fall in the plausibility window [PLAUSIBLE_SINCE, now + PLAUSIBLE_AHEAD].

Files are read in chunks of `chunk_rows` rows (CSV by the csv module's reader, Parquet by pyarrow's
`iter_batches`), so the memory a load takes grows with the chunk and with what it keeps, not with the
file; a row's number in an error or the quarantine is its data row in the whole file (header excluded,
from 1). A Parquet row group is the least pyarrow reads at once: a file written as one huge row group
is read as a whole.

Quarantine files hold private rows: they are written atomically with mode 0600, in a folder created
0700, one per input file, in CSV: the file's own columns as read, then QUARANTINE_COLUMNS. Up to
`QUARANTINE_PLAIN_CHARS` characters they are plain, `<quarantine_dir>/<file name>.quarantine.csv`;
above, the same CSV is streamed gzip-compressed to `<file name>.quarantine.csv.gz` (readable with
`pandas.read_csv(path, dtype=str, keep_default_na=False)` or `zcat`), and every row is still kept. Only
one of the two exists after a load (a stale one is removed); the LoadReport names it, and gives the
first rows of each reason (`examples`), so a person can see what went wrong without opening it.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import json
import math
import re
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from shared.durable import replacing, write_bytes
from shared.messages import shown

EVENT_TYPES = ("view", "click", "add_to_cart", "purchase", "search")

CATALOGUE_REQUIRED = ("item_id", "title")
CATALOGUE_COLUMNS = ("item_id", "title", "brand", "category", "price", "description")
EVENTS_REQUIRED = ("user_id", "item_id", "event", "timestamp")
EVENTS_COLUMNS = ("user_id", "item_id", "event", "timestamp", "query")

# Size limits, in characters after stripping surrounding whitespace.
MAX_ID_CHARS = 256
MAX_TITLE_CHARS = 1_000
MAX_QUERY_CHARS = 1_000
_LIMITS = {
    "user_id": MAX_ID_CHARS,
    "item_id": MAX_ID_CHARS,
    "title": MAX_TITLE_CHARS,
    "query": MAX_QUERY_CHARS,
}

# Event times outside [PLAUSIBLE_SINCE, load time + PLAUSIBLE_AHEAD] are quarantined: nothing was
# logged before online shops existed, and a day ahead allows for clocks and time zones. An all-digit
# timestamp is read as epoch seconds only inside this window (20260101 is a date, not 1970-08-23).
PLAUSIBLE_SINCE = pd.Timestamp("1995-01-01", tz="UTC")
PLAUSIBLE_AHEAD = pd.Timedelta(days=1)

# In the order they are checked: a row is quarantined for the first one it fails.
QUARANTINE_REASONS = {
    "bad_encoding": "a cell is not valid UTF-8",
    "bad_row": "more fields than the header has",
    "bad_id": "an id that is not text or a whole number (a fraction, a list, a boolean)",
    "bad_text": "a cell that is not text, or holds a control character (NUL, ESC, ...)",
    "too_long": "an id or query over its size limit",
    "missing_user": "no user_id",
    "unknown_item": "item_id is not in the catalogue",
    "unknown_event": f"event is not one of {', '.join(EVENT_TYPES)}",
    "bad_timestamp": "not an ISO-8601 time or plausible epoch seconds, or out of range",
    "implausible_timestamp": "a time outside the plausibility window",
    "missing_query": "a search without a query",
    "duplicate": "the same event as an earlier kept row",
}
# Rows read at a time: a chunk of a wide file at its size limits stays in the tens of MB.
CHUNK_ROWS = 100_000
# A quarantine over this many characters of CSV is written gzip-compressed; below, plain.
QUARANTINE_PLAIN_CHARS = 1 << 20
EXAMPLE_ROWS = 5  # the first rows of each reason a LoadReport lists

# What fedrec adds to each quarantined row (data row number, reason, column, fields beyond the header);
# prefixed, so that a column of the file named row, reason or column is kept as it is.
QUARANTINE_COLUMNS = ("_fedrec_row", "_fedrec_reason", "_fedrec_column", "_fedrec_extra")

# C0 controls other than tab and line breaks (\n, \r\n), DEL and C1 controls: NUL truncates text in C
# code, ESC (and CSI, \x9b) start terminal escape sequences.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]|\r(?!\n)")
# Bytes that are not UTF-8, as decoded with errors="surrogateescape".
_NOT_UTF8 = re.compile(r"[\udc80-\udcff]")
_EPOCH = r"[0-9]+(?:\.[0-9]+)?"
_NS_RANGE = (pd.Timestamp.min.tz_localize("UTC"), pd.Timestamp.max.tz_localize("UTC"))
# Parquet integers as pandas' nullable integers: as numpy ones, a chunk with an empty cell would turn
# them into floats (0 read as "0.0"), and a row would read differently with the rows around it.
_PARQUET_INTEGERS = {
    pa.int8(): pd.Int8Dtype(),
    pa.int16(): pd.Int16Dtype(),
    pa.int32(): pd.Int32Dtype(),
    pa.int64(): pd.Int64Dtype(),
    pa.uint8(): pd.UInt8Dtype(),
    pa.uint16(): pd.UInt16Dtype(),
    pa.uint32(): pd.UInt32Dtype(),
    pa.uint64(): pd.UInt64Dtype(),
}


class SchemaError(ValueError):
    """A file that cannot be used as it is; says where, so it can be fixed."""

    def __init__(self, file: str, message: str, row: int | None = None, column: str | None = None):
        self.file = file
        self.row = row  # 1-based data row, header excluded
        self.column = column
        self.message = message
        super().__init__(str(self))

    @property
    def where(self) -> str:
        """File, row and column, as far as known: "events.csv, row 3, column 'timestamp'"."""
        where = [self.file]
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(f"column {self.column!r}")
        return ", ".join(where)

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass
class LoadReport:
    """What happened to every row of an events file, so nothing disappears unnoticed."""

    file: str
    read: int
    kept: int
    quarantined: int
    reasons: dict[str, int] = field(default_factory=dict)
    quarantine_file: str | None = None
    examples: dict[str, list[int]] = field(default_factory=dict)  # first data rows of each reason

    def __post_init__(self) -> None:
        if self.read != self.kept + self.quarantined or sum(self.reasons.values()) != self.quarantined:
            raise AssertionError(f"{self.file}: rows do not reconcile: {self.to_dict()}")
        unknown = (set(self.reasons) | set(self.examples)) - set(QUARANTINE_REASONS)
        if unknown:
            raise AssertionError(f"{self.file}: unknown quarantine reasons {sorted(unknown)}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Unread:
    """A row that could not be read into the header's columns; its fields are kept for the quarantine."""

    reason: str  # bad_encoding or bad_row
    column: str  # the first column holding bytes that are not UTF-8, or ""
    fields: list[str]  # as read; bytes that are not UTF-8 are kept as surrogate escapes


@dataclass
class _Chunk:
    """Consecutive data rows of a file; the cells of an unread row are blank."""

    frame: pd.DataFrame  # indexed by data row from 0 (the file's row `index + 1`)
    unread: dict[int, _Unread] = field(default_factory=dict)  # by position in the chunk

    def row(self, position: int) -> int:
        """The 1-based data row number of the chunk's row at `position`."""
        return int(self.frame.index[position]) + 1

    def refuse_unread(self, name: str) -> None:
        """For strict loading: the first unread row is an error."""
        if self.unread:
            position, unread = min(self.unread.items())
            if unread.reason == "bad_encoding":
                message = "is not valid UTF-8"
            else:
                message = f"has {len(unread.fields)} fields, the header has {len(self.frame.columns)}"
            raise SchemaError(name, message, row=self.row(position), column=unread.column or None)


@dataclass
class _Source:
    """A file opened for reading: its header, and its rows in chunks (at least one, maybe empty).
    A context manager: the file is closed at the end of the block."""

    name: str
    columns: list[str]
    chunks: Iterator[_Chunk]
    close: Callable[[], None]

    def __enter__(self) -> _Source:
        return self

    def __exit__(self, *error: object) -> None:
        self.close()


def read_table(path: str | Path, *, chunk_rows: int = CHUNK_ROWS) -> pd.DataFrame:
    """Read a .csv (every cell as text exactly as written, empty cells as "") or a .parquet file.

    Strict: a row that cannot be read (bytes that are not UTF-8, more fields than the header) is an error.
    """
    frames = []
    with _read_table(Path(path), chunk_rows) as source:
        for chunk in source.chunks:
            chunk.refuse_unread(source.name)
            frames.append(chunk.frame)
    return pd.concat(frames).reset_index(drop=True) if len(frames) > 1 else frames[0].reset_index(drop=True)


def load_catalogue(path: str | Path, *, chunk_rows: int = CHUNK_ROWS) -> pd.DataFrame:
    """Load the public item catalogue; any defect raises SchemaError naming file, row and column."""
    with _read_table(Path(path), chunk_rows) as source:
        name = source.name
        _require_columns(source.columns, CATALOGUE_REQUIRED, name)
        parts = [_catalogue_chunk(name, chunk) for chunk in source.chunks]
    out = pd.concat(parts) if len(parts) > 1 else parts[0]
    if out.empty:
        raise SchemaError(name, "has no items, only a header")

    duplicated = out["item_id"].duplicated()
    if duplicated.any():
        row = int(out.index[duplicated][0])
        first = int(out.index[out["item_id"] == out.at[row, "item_id"]][0])
        message = f"duplicate item_id {out.at[row, 'item_id']!r} (first seen in row {first + 1})"
        raise SchemaError(name, message, row=row + 1, column="item_id")

    out = out[list(CATALOGUE_COLUMNS)].reset_index(drop=True)
    for column in ("item_id", "title", "brand", "category", "description"):
        out[column] = out[column].astype(str)
    out["price"] = out["price"].astype(float)
    return out


def _catalogue_chunk(name: str, chunk: _Chunk) -> pd.DataFrame:
    """One chunk of the catalogue, checked strictly: clean text, required cells, prices."""
    chunk.refuse_unread(name)
    raw = chunk.frame
    out = pd.DataFrame(index=raw.index)
    for column in ("item_id", "title", "brand", "category", "description"):
        if column not in raw.columns:
            out[column] = ""
            continue
        out[column], _, problems = _clean(raw[column], column)
        for position, problem in enumerate(problems):
            if problem:
                raise SchemaError(name, problem, row=chunk.row(position), column=column)
    for column in CATALOGUE_REQUIRED:
        empty = out.index[out[column] == ""]
        if len(empty):
            raise SchemaError(name, f"{column} is empty", row=int(empty[0]) + 1, column=column)
    prices = raw["price"] if "price" in raw.columns else pd.Series(float("nan"), index=raw.index)
    out["price"] = [
        _price(value, name, row + 1) for row, value in zip(raw.index, prices.tolist(), strict=True)
    ]
    return out


def load_events(
    path: str | Path,
    catalogue: pd.DataFrame,
    quarantine_dir: str | Path,
    *,
    chunk_rows: int = CHUNK_ROWS,
    plain_quarantine_chars: int = QUARANTINE_PLAIN_CHARS,
) -> tuple[pd.DataFrame, LoadReport]:
    """Load behaviour logs; bad rows go to <quarantine_dir>/<file name>.quarantine.csv with their reason
    (.csv.gz above `plain_quarantine_chars`: see the module docstring).

    A duplicate is a row equal to an earlier kept row once parsed (same user, item, event,
    instant and query), so "2026-01-01T00:00:00Z" and 1767225600 are the same event.
    """
    items = set(catalogue["item_id"])
    since, until = PLAUSIBLE_SINCE, pd.Timestamp.now(tz="UTC") + PLAUSIBLE_AHEAD
    kept = _KeptEvents()
    read, counts = 0, dict.fromkeys(QUARANTINE_REASONS, 0)
    examples: dict[str, list[int]] = {}
    with (
        _read_table(Path(path), chunk_rows) as source,
        _Quarantine(Path(quarantine_dir), source.name, source.columns, plain_quarantine_chars) as quarantine,
    ):
        _require_columns(source.columns, EVENTS_REQUIRED, source.name)
        for chunk in source.chunks:
            events, reason, column = _check_events(chunk, items, since, until)
            candidates = reason == ""  # only rows that would otherwise be kept can duplicate a kept row
            repeats = kept.add(events[candidates])
            reason[np.flatnonzero(candidates)[repeats]] = "duplicate"
            quarantine.add(chunk, reason, column)
            read += len(events)
            for name, count in zip(*np.unique(reason[reason != ""], return_counts=True), strict=True):
                counts[name] += int(count)
                first = examples.setdefault(name, [])
                rows = chunk.frame.index[reason == name][: EXAMPLE_ROWS - len(first)]
                first.extend(int(row) + 1 for row in rows)
        quarantine_file = quarantine.finish()

    events = kept.frame()
    report = LoadReport(
        file=source.name,
        read=read,
        kept=len(events),
        quarantined=read - len(events),
        reasons=counts,
        quarantine_file=quarantine_file,
        examples={name: examples[name] for name in QUARANTINE_REASONS if name in examples},
    )
    events = events.sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)
    for name in ("user_id", "item_id", "event", "query"):
        events[name] = events[name].astype(str)
    return events[list(EVENTS_COLUMNS)], report


def _check_events(
    chunk: _Chunk, items: set[str], since: pd.Timestamp, until: pd.Timestamp
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """One chunk's events, parsed, and each row's quarantine reason and column ("" when kept so far)."""
    raw = chunk.frame
    reason = np.full(len(raw), "", dtype=object)
    column = np.full(len(raw), "", dtype=object)

    def fail(name: str, where: str, mask: pd.Series | np.ndarray) -> None:
        """Quarantine the rows in mask for `name`, unless they already failed an earlier check."""
        hit = (reason == "") & np.asarray(mask, dtype=bool)
        reason[hit], column[hit] = name, where

    for position, unread in chunk.unread.items():
        reason[position], column[position] = unread.reason, unread.column

    events = pd.DataFrame(index=raw.index)
    cell_reasons = {}
    for name in ("user_id", "item_id", "event", "query"):
        values = raw[name] if name in raw.columns else pd.Series("", index=raw.index, dtype=object)
        events[name], cell_reasons[name], _ = _clean(values, name)
    events["timestamp"] = _timestamps(raw["timestamp"], since, until)

    for name in ("bad_encoding", "bad_id", "bad_text", "too_long"):
        for where, found in cell_reasons.items():
            fail(name, where, found == name)
    fail("missing_user", "user_id", events["user_id"] == "")
    fail("unknown_item", "item_id", ~events["item_id"].isin(items))
    fail("unknown_event", "event", ~events["event"].isin(EVENT_TYPES))
    fail("bad_timestamp", "timestamp", events["timestamp"].isna())
    fail("implausible_timestamp", "timestamp", (events["timestamp"] < since) | (events["timestamp"] > until))
    fail("missing_query", "query", (events["event"] == "search") & (events["query"] == ""))
    return events, reason, column


class _KeptEvents:
    """The events kept so far, chunk by chunk, and the duplicate check across chunks.

    A candidate row is matched against the kept rows by a 64-bit hash of its parsed values (8 bytes
    a kept row, computed once a second chunk comes), and only the kept rows whose hash it shares are
    compared with it exactly.
    """

    KEY = ["user_id", "item_id", "event", "timestamp", "query"]

    def __init__(self) -> None:
        self.parts: list[pd.DataFrame] = []
        self.hashes: list[np.ndarray | None] = []  # of each part's rows, None until needed

    def add(self, candidates: pd.DataFrame) -> np.ndarray:
        """Keep the candidates that repeat no kept row (nor an earlier candidate); a mask of the others."""
        both = candidates[self.KEY]
        hashes = None
        if self.parts:  # a later chunk: the kept rows that may be equal, then the candidates
            hashes = self._hash(candidates)
            if self.hashes[0] is None:  # the first chunk's, not needed until now
                self.hashes[0] = self._hash(self.parts[0])
            earlier = [
                part[np.isin(seen, hashes)] for part, seen in zip(self.parts, self.hashes, strict=True)
            ]
            both = pd.concat([*(part[self.KEY] for part in earlier if len(part)), both])
        repeats = both.duplicated(keep="first").to_numpy()[len(both) - len(candidates) :]
        if not self.parts or (~repeats).any():
            self.parts.append(candidates[~repeats])
            self.hashes.append(None if hashes is None else hashes[~repeats])
        return repeats

    def _hash(self, frame: pd.DataFrame) -> np.ndarray:
        return pd.util.hash_pandas_object(frame[self.KEY], index=False).to_numpy()

    def frame(self) -> pd.DataFrame:
        """The kept events in file order."""
        return pd.concat(self.parts) if len(self.parts) > 1 else self.parts[0]


def item_texts(catalogue: pd.DataFrame) -> list[str]:
    """The text the encoder reads for each item: "title. brand. category", empty parts skipped."""
    texts = []
    columns = (catalogue["title"], catalogue["brand"], catalogue["category"])
    for title, brand, category in zip(*columns, strict=True):
        parts = [str(part).strip() for part in (title, brand, category)]
        texts.append(". ".join(part for part in parts if part))
    return texts


def _read_table(path: Path, chunk_rows: int) -> _Source:
    """Open a .csv or .parquet file and read its header; a problem with the whole file is a SchemaError
    naming it, whether found now or in a later chunk."""
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ValueError(f"chunk_rows must be a positive int, got {chunk_rows!r}")
    name = path.name
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise SchemaError(name, f"unsupported file type {suffix or '(none)'!r}; expected .csv or .parquet")
    try:
        if not path.exists():
            raise SchemaError(name, f"no such file (looked in {path.parent})")
        if not path.is_file():
            raise SchemaError(
                name, "is a directory, not a file" if path.is_dir() else "is not a regular file"
            )
        if path.stat().st_size == 0:
            raise SchemaError(name, "is empty (0 bytes); expected at least a header")
        source = _csv_source(path, chunk_rows) if suffix == ".csv" else _parquet_source(path, chunk_rows)
    except OSError as error:
        raise SchemaError(name, f"cannot be read: {error.strerror or error}") from None
    duplicated = pd.Index(source.columns)[pd.Index(source.columns).duplicated()]
    if len(duplicated):
        source.close()
        raise SchemaError(name, "appears more than once in the header", column=str(duplicated[0]))
    return source


def _csv_source(path: Path, chunk_rows: int) -> _Source:
    """A CSV file's header and its rows in chunks; a row with bytes that are not UTF-8 or too many fields
    is kept aside as unread.

    What the csv module cannot parse at all (a field over its 128 KiB limit) is an error for the whole
    file. Bytes that are not UTF-8 are decoded as surrogate escapes, so they can be written back as read.
    """
    name = path.name
    handle = open(path, encoding="utf-8-sig", errors="surrogateescape", newline="")
    reader = csv.reader(handle)
    records = (record for record in reader if record)  # a blank line is not a row

    def take(count: int) -> list[list[str]]:
        try:
            return list(itertools.islice(records, count))
        except csv.Error as error:
            raise SchemaError(name, f"cannot be read as CSV (line {reader.line_num}): {error}") from None
        except OSError as error:
            raise SchemaError(name, f"cannot be read: {error.strerror or error}") from None

    try:
        header = take(1)
        if not header:
            raise SchemaError(name, "has no header row")
        header = header[0]
        if any(_NOT_UTF8.search(column) for column in header):
            raise SchemaError(name, "the header is not valid UTF-8")
    except BaseException:
        handle.close()
        raise

    def chunks() -> Iterator[_Chunk]:
        start = 0
        while rows := take(chunk_rows):
            yield _csv_chunk(header, rows, start)
            start += len(rows)
        if not start:
            yield _csv_chunk(header, [], 0)

    return _Source(name, header, chunks(), handle.close)


def _csv_chunk(header: list[str], rows: list[list[str]], start: int) -> _Chunk:
    """Rows as the header's columns: short rows padded with "", unreadable rows set aside (as blanks)."""
    width = len(header)
    any_not_utf8 = any(_NOT_UTF8.search("".join(fields)) for fields in rows)
    unread: dict[int, _Unread] = {}
    for index, fields in enumerate(rows):
        if len(fields) == width and not any_not_utf8:
            continue  # the usual row, as it is
        not_utf8 = [i for i, value in enumerate(fields) if _NOT_UTF8.search(value)]
        if not_utf8:
            where = header[not_utf8[0]] if not_utf8[0] < width else ""
            unread[index] = _Unread("bad_encoding", where, fields)
            rows[index] = [""] * width
        elif len(fields) > width:
            unread[index] = _Unread("bad_row", "", fields)
            rows[index] = [""] * width
        else:
            rows[index] = fields + [""] * (width - len(fields))  # missing trailing cells are empty
    index = pd.RangeIndex(start, start + len(rows))
    return _Chunk(pd.DataFrame(rows, columns=header, index=index, dtype=object), unread)


def _parquet_source(path: Path, chunk_rows: int) -> _Source:
    """A Parquet file's columns and its rows in chunks (pyarrow record batches, as pandas frames)."""
    name = path.name
    parquet = None
    try:
        parquet = pq.ParquetFile(path)
        # the columns as pandas shows them (a stored pandas index is not a column)
        empty = parquet.schema_arrow.empty_table().to_pandas(types_mapper=_PARQUET_INTEGERS.get)
        empty = empty.reset_index(drop=True)
    except Exception as error:  # pyarrow raises many kinds; every one means "not a Parquet file we can read"
        if parquet is not None:
            parquet.close()
        raise SchemaError(name, f"cannot be read as Parquet: {error}") from None

    def chunks() -> Iterator[_Chunk]:
        start = 0
        batches = parquet.iter_batches(batch_size=chunk_rows)
        while True:
            try:
                batch = next(batches, None)
                frame = None if batch is None else batch.to_pandas(types_mapper=_PARQUET_INTEGERS.get)
            except Exception as error:  # as above: a defect found in a later row group
                raise SchemaError(name, f"cannot be read as Parquet (after row {start}): {error}") from None
            if frame is None:
                break
            frame.index = pd.RangeIndex(start, start + len(frame))
            yield _Chunk(frame)
            start += len(frame)
        if not start:
            yield _Chunk(empty)

    return _Source(name, [str(column) for column in empty.columns], chunks(), parquet.close)


def _require_columns(columns: list[str], required: tuple[str, ...], file: str) -> None:
    for column in required:
        if column not in columns:
            found = ", ".join(repr(str(name)) for name in columns)
            raise SchemaError(file, f"missing required column (found: {found or 'none'})", column=column)


def _clean(values: pd.Series, column: str) -> tuple[pd.Series, pd.Series, list[str]]:
    """Cells as stripped text, the quarantine reason of each ("" if fine), and what is wrong (for errors).

    A cell must be text, or a whole number for an id: a Parquet id 1.0 is "1", as the same id in a CSV.
    """
    limit = _LIMITS.get(column)
    cells = values.tolist()
    if _plain_text(cells, limit):
        texts, reasons, problems = [cell.strip() for cell in cells], [""] * len(cells), [""] * len(cells)
    else:  # cell by cell, to say which cells are bad and why (there is at least one cell)
        is_id = column in ("user_id", "item_id")
        checked = zip(*(_check_cell(cell, is_id, limit) for cell in cells), strict=True)
        texts, reasons, problems = (list(part) for part in checked)
    return (
        pd.Series(texts, index=values.index, dtype=object),
        pd.Series(reasons, index=values.index),
        problems,
    )


def _plain_text(cells: list, limit: int | None) -> bool:
    """Whether all cells are text free of control characters and within the limit: the usual case
    (every CSV column), checked at once because it is much faster than cell by cell."""
    if not all(type(cell) is str for cell in cells):
        return False
    joined = "\t".join(cells)  # a tab is allowed, and cannot hide a lone \r
    if _NOT_UTF8.search(joined) or _CONTROL.search(joined):
        return False
    return limit is None or max((len(cell.strip()) for cell in cells), default=0) <= limit


def _check_cell(value: object, is_id: bool, limit: int | None) -> tuple[str, str, str]:
    """One cell as stripped text ("" if it is bad), its quarantine reason, and what is wrong with it."""
    text = cell_text(value, whole=is_id)
    if text is None:
        what = "an id (text or a whole number)" if is_id else "text"
        return "", "bad_id" if is_id else "bad_text", f"is not {what}: {shown(value)}"
    if _NOT_UTF8.search(text):  # Parquet bytes that are not UTF-8
        return "", "bad_encoding", "is not valid UTF-8"
    if match := _CONTROL.search(text):
        return "", "bad_text", f"contains the control character {match.group()!r}"
    text = text.strip()
    if limit is not None and len(text) > limit:
        return "", "too_long", f"is {len(text)} characters long, over the limit of {limit}"
    return text, "", ""


def cell_text(value: object, whole: bool = False) -> str | None:
    """The text a cell holds, missing is ""; None if it holds no text (or a fraction, if `whole`)."""
    if _missing(value):
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="surrogateescape")
    if isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        number = float(value)
        if number.is_integer():
            return str(int(number))
        return None if whole else repr(number)
    return None


def _price(value: object, file: str, row: int) -> float:
    if value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == "":
        return float("nan")
    try:
        price = float(str(value).strip())
    except ValueError:
        price = float("nan")
    if not math.isfinite(price) or price < 0:
        raise SchemaError(file, f"price {shown(value)} is not a non-negative number", row=row, column="price")
    return price


def _timestamps(values: pd.Series, since: pd.Timestamp, until: pd.Timestamp) -> pd.Series:
    """Parse ISO-8601 text or epoch seconds to UTC; anything else becomes NaT.

    An all-digit value is epoch seconds only if that falls in [since, until]; a time pandas cannot
    hold in nanoseconds (before 1677 or after 2262) is NaT too, not an error.
    """
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        stamps = values.dt.tz_convert("UTC") if values.dt.tz is not None else values.dt.tz_localize("UTC")
        return _as_ns(stamps)
    cells = values.tolist()
    if not all(type(cell) is str for cell in cells):
        cells = [_time_text(cell) for cell in cells]
    text = pd.Series([cell.strip() for cell in cells], index=values.index, dtype=object)
    out = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
    digits = text.str.fullmatch(_EPOCH).astype(bool)
    seconds = text[digits].astype(float)
    plausible = seconds[seconds.between(since.timestamp(), until.timestamp())]
    out[plausible.index] = pd.to_datetime(plausible, unit="s", utc=True).astype("datetime64[ns, UTC]")
    iso = text[~digits & (text != "")]
    out[iso.index] = _as_ns(pd.to_datetime(iso, format="ISO8601", utc=True, errors="coerce"))
    return out


def _time_text(value: object) -> str:
    """A time cell as text: a date or datetime (from Parquet) in ISO-8601, a number as its digits."""
    if isinstance(value, date) and value is not pd.NaT:
        return value.isoformat()
    return cell_text(value) or ""


def _as_ns(stamps: pd.Series) -> pd.Series:
    """UTC times of any resolution as datetime64[ns, UTC]; what does not fit becomes NaT."""
    return stamps.where(stamps.between(*_NS_RANGE)).astype("datetime64[ns, UTC]")


class _Quarantine:
    """The rows a load sets aside, as read, written privately (0600, folder 0700) and atomically.

    Rows are held as CSV text up to `plain_chars` characters and then written as one plain file; once
    they are more, they are streamed gzip-compressed to the .csv.gz file instead, so memory stays
    bounded. Used as a context manager: an exception leaves the previous quarantine file as it was.
    """

    def __init__(self, folder: Path, name: str, header: list[str], plain_chars: int):
        self.folder, self.width, self.plain_chars = folder, len(header), plain_chars
        self.plain = folder / f"{name}.quarantine.csv"
        self.compressed = folder / f"{name}.quarantine.csv.gz"
        self.text = io.StringIO(newline="")
        self.writer = csv.writer(self.text)
        self.writer.writerow([str(column) for column in header] + list(QUARANTINE_COLUMNS))
        self.rows = 0
        self.stream: IO[bytes] | None = None  # the gzip stream, once past plain_chars
        self.files = ExitStack()

    def __enter__(self) -> _Quarantine:
        return self

    def __exit__(self, *error) -> None:
        self.files.__exit__(*error)  # on an exception, the temp file is removed

    def add(self, chunk: _Chunk, reason: np.ndarray, column: np.ndarray) -> None:
        """The chunk's rows with a reason, as read, in file order."""
        bad = np.flatnonzero(reason != "")
        if not len(bad):
            return
        cells = [chunk.frame[name].iloc[bad].tolist() for name in chunk.frame.columns]
        for i, position in enumerate(bad):
            unread = chunk.unread.get(position)
            if unread is None:
                row, extra = ["" if _missing(values[i]) else str(values[i]) for values in cells], ""
            else:  # any fields beyond the header as a JSON list: nothing is lost
                fields = unread.fields
                extra = (
                    json.dumps(fields[self.width :], ensure_ascii=False) if len(fields) > self.width else ""
                )
                row = fields[: self.width] + [""] * (self.width - len(fields))
            self.writer.writerow([*row, chunk.row(position), reason[position], column[position], extra])
        self.rows += len(bad)
        if self.stream is None and self.text.tell() > self.plain_chars:
            self._make_folder()
            file = self.files.enter_context(replacing(self.compressed, mode=0o600))
            self.stream = self.files.enter_context(gzip.GzipFile(fileobj=file, mode="wb", mtime=0))
        if self.stream is not None:
            self.stream.write(self._take_text())

    def finish(self) -> str | None:
        """Write the file (or remove a stale one when nothing was set aside); the path written, or None."""
        if not self.rows:
            self.plain.unlink(missing_ok=True)
            self.compressed.unlink(missing_ok=True)
            return None
        if self.stream is None:
            self._make_folder()
            write_bytes(self.plain, self._take_text(), mode=0o600)
            self.compressed.unlink(missing_ok=True)
            return str(self.plain)
        self.files.close()  # the gzip stream ends, the file replaces the old one
        self.plain.unlink(missing_ok=True)
        return str(self.compressed)

    def _take_text(self) -> bytes:
        # surrogateescape writes bytes that were not UTF-8 back exactly as they were read
        data = self.text.getvalue().encode("utf-8", errors="surrogateescape")
        self.text.seek(0)
        self.text.truncate()
        return data

    def _make_folder(self) -> None:
        if not self.folder.is_dir():
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)


def _missing(value: object) -> bool:
    """An empty Parquet cell: None, NA, NaT or NaN."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float | np.floating) and math.isnan(value)
