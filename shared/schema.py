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

Quarantine files hold private rows: they are written atomically with mode 0600, in a
folder created 0700, one per input file (`<quarantine_dir>/<file name>.quarantine.csv`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from shared.durable import write_bytes
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


class SchemaError(ValueError):
    """A file that cannot be used as it is; says where, so it can be fixed."""

    def __init__(self, file: str, message: str, row: int | None = None, column: str | None = None):
        self.file = file
        self.row = row  # 1-based data row, header excluded
        self.column = column
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = [self.file]
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(f"column {self.column!r}")
        return f"{', '.join(where)}: {self.message}"


@dataclass
class LoadReport:
    """What happened to every row of an events file, so nothing disappears unnoticed."""

    file: str
    read: int
    kept: int
    quarantined: int
    reasons: dict[str, int] = field(default_factory=dict)
    quarantine_file: str | None = None

    def __post_init__(self) -> None:
        if self.read != self.kept + self.quarantined or sum(self.reasons.values()) != self.quarantined:
            raise AssertionError(f"{self.file}: rows do not reconcile: {self.to_dict()}")
        unknown = set(self.reasons) - set(QUARANTINE_REASONS)
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
class _Table:
    """A file as read: one frame row per data row; the cells of an unread row are blank."""

    name: str
    frame: pd.DataFrame
    unread: dict[int, _Unread] = field(default_factory=dict)  # by frame row

    def refuse_unread(self) -> None:
        """For strict loading: the first unread row is an error."""
        if self.unread:
            index, unread = min(self.unread.items())
            if unread.reason == "bad_encoding":
                message = "is not valid UTF-8"
            else:
                message = f"has {len(unread.fields)} fields, the header has {len(self.frame.columns)}"
            raise SchemaError(self.name, message, row=index + 1, column=unread.column or None)


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a .csv (every cell as text exactly as written, empty cells as "") or a .parquet file.

    Strict: a row that cannot be read (bytes that are not UTF-8, more fields than the header) is an error.
    """
    table = _read_table(Path(path))
    table.refuse_unread()
    return table.frame


def load_catalogue(path: str | Path) -> pd.DataFrame:
    """Load the public item catalogue; any defect raises SchemaError naming file, row and column."""
    table = _read_table(Path(path))
    name, raw = table.name, table.frame
    table.refuse_unread()
    _require_columns(raw, CATALOGUE_REQUIRED, name)
    if raw.empty:
        raise SchemaError(name, "has no items, only a header")

    out = pd.DataFrame(index=raw.index)
    for column in ("item_id", "title", "brand", "category", "description"):
        if column not in raw.columns:
            out[column] = ""
            continue
        out[column], _, problems = _clean(raw[column], column)
        for row, problem in enumerate(problems):
            if problem:
                raise SchemaError(name, problem, row=row + 1, column=column)
    for column in CATALOGUE_REQUIRED:
        empty = out.index[out[column] == ""]
        if len(empty):
            raise SchemaError(name, f"{column} is empty", row=int(empty[0]) + 1, column=column)

    duplicated = out["item_id"].duplicated()
    if duplicated.any():
        row = int(out.index[duplicated][0])
        first = int(out.index[out["item_id"] == out.at[row, "item_id"]][0])
        message = f"duplicate item_id {out.at[row, 'item_id']!r} (first seen in row {first + 1})"
        raise SchemaError(name, message, row=row + 1, column="item_id")

    prices = raw["price"] if "price" in raw.columns else pd.Series(float("nan"), index=raw.index)
    out["price"] = [_price(value, name, row + 1) for row, value in enumerate(prices.tolist())]
    out = out[list(CATALOGUE_COLUMNS)].reset_index(drop=True)
    for column in ("item_id", "title", "brand", "category", "description"):
        out[column] = out[column].astype(str)
    out["price"] = out["price"].astype(float)
    return out


def load_events(
    path: str | Path, catalogue: pd.DataFrame, quarantine_dir: str | Path
) -> tuple[pd.DataFrame, LoadReport]:
    """Load behaviour logs; bad rows go to <quarantine_dir>/<file name>.quarantine.csv with their reason.

    A duplicate is a row equal to an earlier kept row once parsed (same user, item, event,
    instant and query), so "2026-01-01T00:00:00Z" and 1767225600 are the same event.
    """
    path = Path(path)
    table = _read_table(path)
    raw = table.frame
    _require_columns(raw, EVENTS_REQUIRED, table.name)

    reason = np.full(len(raw), "", dtype=object)
    column = np.full(len(raw), "", dtype=object)
    kept_mask = np.ones(len(raw), dtype=bool)

    def fail(name: str, where: str, mask: pd.Series | np.ndarray) -> None:
        """Quarantine the rows in mask for `name`, unless they already failed an earlier check."""
        hit = kept_mask & np.asarray(mask, dtype=bool)
        reason[hit], column[hit], kept_mask[hit] = name, where, False

    for row, unread in table.unread.items():
        reason[row], column[row], kept_mask[row] = unread.reason, unread.column, False

    events = pd.DataFrame(index=raw.index)
    cell_reasons = {}
    for name in ("user_id", "item_id", "event", "query"):
        values = raw[name] if name in raw.columns else pd.Series("", index=raw.index, dtype=object)
        events[name], cell_reasons[name], _ = _clean(values, name)
    since, until = PLAUSIBLE_SINCE, pd.Timestamp.now(tz="UTC") + PLAUSIBLE_AHEAD
    events["timestamp"] = _timestamps(raw["timestamp"], since, until)

    for name in ("bad_encoding", "bad_id", "bad_text", "too_long"):
        for where, found in cell_reasons.items():
            fail(name, where, found == name)
    fail("missing_user", "user_id", events["user_id"] == "")
    fail("unknown_item", "item_id", ~events["item_id"].isin(set(catalogue["item_id"])))
    fail("unknown_event", "event", ~events["event"].isin(EVENT_TYPES))
    fail("bad_timestamp", "timestamp", events["timestamp"].isna())
    fail("implausible_timestamp", "timestamp", (events["timestamp"] < since) | (events["timestamp"] > until))
    fail("missing_query", "query", (events["event"] == "search") & (events["query"] == ""))
    # Only rows that would otherwise be kept can duplicate a kept row.
    repeats = events[kept_mask].duplicated(keep="first").reindex(raw.index, fill_value=False)
    fail("duplicate", "", repeats)

    target = Path(quarantine_dir) / f"{table.name}.quarantine.csv"
    quarantine_file = _write_quarantine(table, reason, column, target)
    report = LoadReport(
        file=table.name,
        read=len(raw),
        kept=int(kept_mask.sum()),
        quarantined=int((~kept_mask).sum()),
        reasons={name: int((reason == name).sum()) for name in QUARANTINE_REASONS},
        quarantine_file=quarantine_file,
    )

    kept = events[kept_mask].sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)
    for name in ("user_id", "item_id", "event", "query"):
        kept[name] = kept[name].astype(str)
    return kept[list(EVENTS_COLUMNS)], report


def item_texts(catalogue: pd.DataFrame) -> list[str]:
    """The text the encoder reads for each item: "title. brand. category", empty parts skipped."""
    texts = []
    columns = (catalogue["title"], catalogue["brand"], catalogue["category"])
    for title, brand, category in zip(*columns, strict=True):
        parts = [str(part).strip() for part in (title, brand, category)]
        texts.append(". ".join(part for part in parts if part))
    return texts


def _read_table(path: Path) -> _Table:
    """Read a .csv or .parquet file; a problem with the whole file is a SchemaError naming it."""
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
        data = path.read_bytes()
    except OSError as error:
        raise SchemaError(name, f"cannot be read: {error.strerror or error}") from None
    if not data:
        raise SchemaError(name, "is empty (0 bytes); expected at least a header")
    table = _read_csv(name, data) if suffix == ".csv" else _read_parquet(name, data)
    duplicated = table.frame.columns[table.frame.columns.duplicated()]
    if len(duplicated):
        raise SchemaError(name, "appears more than once in the header", column=str(duplicated[0]))
    return table


def _read_csv(name: str, data: bytes) -> _Table:
    """Parse CSV text; a row with bytes that are not UTF-8 or too many fields is kept aside as unread.

    What the csv module cannot parse at all (a field over its 128 KiB limit) is an error for the whole file.
    """
    text = data.decode("utf-8-sig", errors="surrogateescape")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        records = [record for record in reader if record]  # a blank line is not a row
    except csv.Error as error:
        raise SchemaError(name, f"cannot be read as CSV (line {reader.line_num}): {error}") from None
    if not records:
        raise SchemaError(name, "has no header row")
    header, rows = records[0], records[1:]
    if any(_NOT_UTF8.search(column) for column in header):
        raise SchemaError(name, "the header is not valid UTF-8")

    width = len(header)
    any_not_utf8 = _NOT_UTF8.search(text) is not None
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
    return _Table(name, pd.DataFrame(rows, columns=header, dtype=object), unread)


def _read_parquet(name: str, data: bytes) -> _Table:
    try:
        frame = pd.read_parquet(io.BytesIO(data))
    except Exception as error:  # pyarrow raises many kinds; every one means "not a Parquet file we can read"
        raise SchemaError(name, f"cannot be read as Parquet: {error}") from None
    return _Table(name, frame.reset_index(drop=True))


def _require_columns(frame: pd.DataFrame, required: tuple[str, ...], file: str) -> None:
    for column in required:
        if column not in frame.columns:
            found = ", ".join(repr(str(name)) for name in frame.columns)
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


def _write_quarantine(table: _Table, reason: np.ndarray, column: np.ndarray, target: Path) -> str | None:
    """Write the set-aside rows as read, privately and atomically; remove a stale file so the disk
    agrees with the report."""
    bad = np.flatnonzero(reason != "")
    if not len(bad):
        target.unlink(missing_ok=True)
        return None
    folder = target.parent
    if not folder.is_dir():
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    header = [str(name) for name in table.frame.columns]
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(header + list(QUARANTINE_COLUMNS))
    for row in bad:
        cells, extra = _as_read(table, row)
        writer.writerow([*cells, row + 1, reason[row], column[row], extra])
    # surrogateescape writes bytes that were not UTF-8 back exactly as they were read; 0600: private rows
    write_bytes(target, buffer.getvalue().encode("utf-8", errors="surrogateescape"), mode=0o600)
    return str(target)


def _as_read(table: _Table, row: int) -> tuple[list[str], str]:
    """A row's cells as read, and any fields beyond the header as a JSON list: nothing is lost."""
    width = len(table.frame.columns)
    unread = table.unread.get(row)
    if unread is None:
        return ["" if _missing(value) else str(value) for value in table.frame.loc[row].tolist()], ""
    extra = json.dumps(unread.fields[width:], ensure_ascii=False) if len(unread.fields) > width else ""
    return unread.fields[:width] + [""] * (width - len(unread.fields)), extra


def _missing(value: object) -> bool:
    """An empty Parquet cell: None, NA, NaT or NaN."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float | np.floating) and math.isnan(value)
