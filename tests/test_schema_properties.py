"""Property tests of the loaders and of a device's history reader: whatever the file holds, the outcome
is a load or a SchemaError (for the history reader: or a ValueError or OSError naming the file).

A load accounts for every row (read = kept + quarantined, each quarantined row in the private
quarantine file); a SchemaError names the file. Any other exception is a bug.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import stat
import tempfile
from datetime import datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client.device import read_history
from shared.schema import (
    CATALOGUE_COLUMNS,
    EVENT_TYPES,
    EVENTS_COLUMNS,
    MAX_ID_CHARS,
    MAX_TITLE_CHARS,
    PLAUSIBLE_AHEAD,
    PLAUSIBLE_SINCE,
    QUARANTINE_COLUMNS,
    QUARANTINE_REASONS,
    SchemaError,
    load_catalogue,
    load_events,
)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEWER = settings(SETTINGS, max_examples=50)  # each example loads a file twice, or reads a history
CATALOGUE = pd.DataFrame(
    {
        "item_id": ["i1", "i2", "1", "2"],
        "title": ["A", "B", "C", "D"],
        "brand": "",
        "category": "",
        "price": float("nan"),
        "description": "",
    }
)
CONTROL = {chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)]} - {"\t", "\n", "\r"}

# Values that pass some checks and fail others, by column; any column also gets arbitrary text.
VALUES = {
    "user_id": ["u1", "u2", "u3", " u1 ", "", "u" * 257],
    "item_id": ["i1", "i2", "i3", "1", "2", "1.0", "nope", "x" * 257],
    "event": ["view", "search", "purchase", "like"],
    "timestamp": [
        "2026-01-01T10:00:00Z",
        "2026-01-02",
        "1767261600",
        "1767261600.5",
        "3000-01-01",
        "20260101",
    ],
    "query": ["", "tent", "", "te\x00nt", "q" * 1001],
    "title": ["Tent", "Bag", "Mug", "", "t" * 1001, "red\x1b[0m"],
    "price": ["", "1.5", "0", "-1", "inf"],
}
# Bytes that break CSV rows: separators, quotes, line breaks, control characters, non-UTF-8.
PIECES = [
    b",",
    b'"',
    b"\n",
    b"\r\n",
    b"\r",
    b"\x00",
    b"\x1b[0m",
    b"\xff",
    b"\xe9",
    b"\xef\xbb\xbf",
    b"x" * 300,
]


def cell(column: str) -> st.SearchStrategy[str]:
    """Mostly a likely value of the column, sometimes arbitrary text."""
    likely = st.sampled_from(VALUES.get(column, [""]))
    printable = st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=6)
    return st.one_of([likely] * 8 + [printable, st.text(max_size=6)])


@st.composite
def csv_bytes(draw: st.DrawFn, columns: tuple[str, ...]) -> bytes:
    """A header and rows of likely values; some rows short or long, some bytes broken."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns)
    for _ in range(draw(st.integers(0, 6))):
        row = [draw(cell(column)) for column in columns]
        writer.writerow(row[: draw(st.integers(1, len(row)))] if draw(st.booleans()) else row)
        if draw(st.integers(0, 9)) == 9:
            writer.writerow([*row, "surplus"])
    data = out.getvalue().encode()
    for piece in draw(st.lists(st.sampled_from(PIECES), max_size=2)):
        at = draw(st.integers(0, len(data)))
        data = data[:at] + piece + data[at:]
    return data


def any_bytes(columns: tuple[str, ...]) -> st.SearchStrategy[bytes]:
    """Arbitrary bytes, or likely rows after a header."""
    return st.one_of(st.binary(max_size=300), csv_bytes(columns))


@st.composite
def column_values(draw: st.DrawFn, column: str, n: int) -> pa.Array:
    """One Parquet column of n cells: mostly text, sometimes a type a partner's export might have."""
    times = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31))
    kinds = [
        (st.integers(-(2**63), 2**63 - 1) | st.sampled_from([1, 1767261600, 20260101]), pa.int64()),
        (st.floats() | st.sampled_from([1.0, 2.0, 1767261600.5]), pa.float64()),
        (st.booleans(), pa.bool_()),
        (times, pa.timestamp("us")),
        (times, pa.timestamp("us", tz="UTC")),
        (st.dates(), pa.date32()),
        (st.lists(st.text(max_size=4), max_size=3), pa.list_(pa.string())),
        (st.binary(max_size=8), pa.binary()),
    ]
    values, kind = (
        draw(st.sampled_from(kinds)) if draw(st.integers(0, 3)) == 3 else (cell(column), pa.string())
    )
    return pa.array(
        draw(st.lists(st.one_of(values, values, values, st.none()), min_size=n, max_size=n)), kind
    )


@st.composite
def parquet_bytes(draw: st.DrawFn, columns: tuple[str, ...]) -> bytes:
    """A small table whose columns (some of them left out) have arbitrary types, as Parquet."""
    n = draw(st.integers(0, 5))
    present = [
        name for name in columns if draw(st.integers(0, 9)) < 9
    ]  # each column is left out now and then
    table = pa.table({name: draw(column_values(name, n)) for name in present} or {"x": pa.nulls(n)})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def quarantined_rows(path: str) -> list[list[str]]:
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as handle:
        return list(csv.reader(handle))


def check_events(data: bytes, name: str) -> None:
    """load_events gives a reconciled load, or a SchemaError naming the file."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        quarantine = Path(folder) / "q"
        try:
            events, report = load_events(path, CATALOGUE, quarantine)
        except SchemaError as error:
            assert error.file == name and str(error).startswith(name)
            return
        assert report.read == report.kept + report.quarantined == len(events) + report.quarantined
        assert list(report.reasons) == list(QUARANTINE_REASONS)
        assert sum(report.reasons.values()) == report.quarantined
        assert list(events.columns) == list(EVENTS_COLUMNS)
        assert (
            events["item_id"].isin(set(CATALOGUE["item_id"])).all()
            and events["event"].isin(EVENT_TYPES).all()
        )
        assert (events["user_id"] != "").all() and (events["user_id"].str.len() <= MAX_ID_CHARS).all()
        assert not any(set(text) & CONTROL for text in events["query"])
        latest = pd.Timestamp.now(tz="UTC") + PLAUSIBLE_AHEAD
        assert events["timestamp"].between(PLAUSIBLE_SINCE, latest).all()
        if report.quarantined == 0:
            assert report.quarantine_file is None
            return
        assert stat.S_IMODE(os.stat(report.quarantine_file).st_mode) == 0o600
        header, *rows = quarantined_rows(report.quarantine_file)
        assert header[-len(QUARANTINE_COLUMNS) :] == list(QUARANTINE_COLUMNS)
        assert len(rows) == report.quarantined  # every set-aside row is in the file
        numbers = [int(row[len(header) - 4]) for row in rows]
        assert numbers == sorted(set(numbers)) and 1 <= numbers[0] and numbers[-1] <= report.read


def check_catalogue(data: bytes, name: str) -> None:
    """load_catalogue gives a clean catalogue, or a SchemaError naming the file."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        try:
            catalogue = load_catalogue(path)
        except SchemaError as error:
            assert error.file == name and str(error).startswith(name)
            return
        assert list(catalogue.columns) == list(CATALOGUE_COLUMNS) and len(catalogue) > 0
        assert catalogue["item_id"].is_unique and (catalogue["item_id"] != "").all()
        assert (catalogue["item_id"].str.len() <= MAX_ID_CHARS).all()
        assert (catalogue["title"] != "").all() and (catalogue["title"].str.len() <= MAX_TITLE_CHARS).all()
        for column in ("item_id", "title", "brand", "category", "description"):
            assert not any(set(text.replace("\r\n", "\n")) & (CONTROL | {"\r"}) for text in catalogue[column])
        assert ((catalogue["price"] >= 0) | catalogue["price"].isna()).all()


@SETTINGS
@given(any_bytes(EVENTS_COLUMNS))
def test_any_csv_events_file_loads_or_names_the_file(data):
    check_events(data, "events.csv")


@SETTINGS
@given(parquet_bytes(EVENTS_COLUMNS))
def test_any_small_parquet_events_table_loads_or_names_the_file(data):
    check_events(data, "events.parquet")


@SETTINGS
@given(st.binary(max_size=200))
def test_any_bytes_as_parquet_load_or_name_the_file(data):
    check_events(data, "events.parquet")
    check_catalogue(data, "catalogue.parquet")


@SETTINGS
@given(any_bytes(CATALOGUE_COLUMNS))
def test_any_csv_catalogue_loads_or_names_the_file(data):
    check_catalogue(data, "catalogue.csv")


@SETTINGS
@given(parquet_bytes(CATALOGUE_COLUMNS))
def test_any_small_parquet_catalogue_loads_or_names_the_file(data):
    check_catalogue(data, "catalogue.parquet")


# --------------------------------------------------------------------------------------------- device history
HISTORY_COLUMNS = ("user_id", "item_id", "event", "timestamp")
HISTORY_NAMES = ["history.csv", "history.parquet", "history.txt", "history"]  # read by content, not name


def check_history(data: bytes, name: str) -> None:
    """read_history gives a history (ids, perhaps none engaged with) and a purchased set, or an error
    naming the file."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        arg = str(path)
        try:
            history, purchased = read_history(arg)
        except SchemaError as error:
            assert error.file == arg and str(error).startswith(arg)
            return
        except (ValueError, OSError) as error:  # FileNotFoundError, IsADirectoryError: OSError
            assert arg in str(error), repr(error)
            return
        assert isinstance(history, list) and all(isinstance(item, str) and item for item in history)
        assert isinstance(purchased, set) and all(isinstance(item, str) and item for item in purchased)


def history_text() -> st.SearchStrategy[bytes]:
    """One id a line, with comments, blanks, commas and broken bytes now and then."""
    line = st.one_of(
        st.sampled_from(["i1", "i2", " i3 ", "# a comment", "", "i1,i2", "\x00", "1.0"]),
        st.text(max_size=8),
    )
    lines = st.lists(line, max_size=6).map(lambda found: "\n".join(found).encode("utf-8", "surrogatepass"))
    return st.one_of(lines, st.binary(max_size=100))


@FEWER
@given(st.one_of(any_bytes(HISTORY_COLUMNS), history_text()), st.sampled_from(HISTORY_NAMES))
def test_any_history_file_reads_or_names_the_file(data, name):
    check_history(data, name)


@FEWER
@given(parquet_bytes(HISTORY_COLUMNS), st.sampled_from(HISTORY_NAMES))
def test_any_small_parquet_history_table_reads_or_names_the_file(data, name):
    check_history(data, name)


# --------------------------------------------------------------------------------------------- chunks
def load_outcome(path: Path, folder: Path, **options) -> tuple:
    """What load_events makes of a file: the error's file, or the events, report and quarantine text."""
    try:
        events, report = load_events(path, CATALOGUE, folder, **options)
    except SchemaError as error:
        return ("error", error.file)
    written = Path(report.quarantine_file).read_bytes() if report.quarantine_file else b""
    if written[:2] == b"\x1f\x8b":
        written = gzip.decompress(written)
    counts = (report.read, report.kept, report.quarantined, report.reasons, report.examples)
    return ("loaded", events, counts, written)


@FEWER
@given(
    st.one_of(
        any_bytes(EVENTS_COLUMNS).map(lambda d: (d, "events.csv")),
        parquet_bytes(EVENTS_COLUMNS).map(lambda d: (d, "events.parquet")),
    ),
    st.integers(1, 4),
    st.integers(0, 300),
)
def test_events_in_any_chunks_load_as_the_whole_file(file, chunk_rows, plain_chars):
    """Chunks and compression change nothing: the same events, counts, first rows and quarantined rows."""
    data, name = file
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        whole = load_outcome(path, Path(folder) / "whole")
        chunked = load_outcome(
            path, Path(folder) / "chunked", chunk_rows=chunk_rows, plain_quarantine_chars=plain_chars
        )
    assert whole[0] == chunked[0] and whole[2:] == chunked[2:]
    if whole[0] == "loaded":
        pd.testing.assert_frame_equal(whole[1], chunked[1])


@FEWER
@given(any_bytes(CATALOGUE_COLUMNS), st.integers(1, 4))
def test_a_catalogue_in_any_chunks_loads_as_the_whole_file(data, chunk_rows):
    """The same catalogue, or an error for both (the first error found may differ: chunks go in turn)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "catalogue.csv"
        path.write_bytes(data)
        outcomes = []
        for options in ({}, {"chunk_rows": chunk_rows}):
            try:
                outcomes.append(load_catalogue(path, **options))
            except SchemaError as error:
                assert error.file == "catalogue.csv"
                outcomes.append(None)
    assert (outcomes[0] is None) == (outcomes[1] is None)
    if outcomes[0] is not None:
        pd.testing.assert_frame_equal(*outcomes)
