"""Large files: the loaders read them in chunks (row numbers stay those of the whole file), and a large
quarantine is kept whole, gzip-compressed, in the private folder."""

from __future__ import annotations

import csv
import gzip
import os
import stat
import tracemalloc
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shared.schema import QUARANTINE_COLUMNS, SchemaError, load_catalogue, load_events, read_table

CATALOGUE_CSV = "item_id,title,price\ni1,Tent,249.90\ni2,Bag,\ni3,Mug,4.5\n"
HEADER = "user_id,item_id,event,timestamp,query\n"
# data rows: 1 kept, 2 missing_user, 3 unknown_item, 4 unknown_event, 5 bad_timestamp, 6 missing_query,
# 7 duplicate of 1 (in another chunk whenever chunks hold fewer than 7 rows), 8-10 kept
EVENTS_CSV = HEADER + (
    "u1,i1,view,2026-01-01T10:00:00Z,\n"
    ",i1,click,2026-01-01T10:01:00Z,\n"
    "u1,nope,click,2026-01-01T10:01:00Z,\n"
    "u1,i1,like,2026-01-01T10:01:00Z,\n"
    "u1,i1,click,yesterday,\n"
    "u1,i2,search,2026-01-01T10:02:00Z,\n"
    "u1,i1,view,1767261600,\n"
    "u2,i2,search,1767261600,warm sleeping bag\n"
    "u0,i3,purchase,2026-01-01T09:00:00+02:00,\n"
    "u1,i2,click,1767262000.5,\n"
)
REASONS = ["missing_user", "unknown_item", "unknown_event", "bad_timestamp", "missing_query", "duplicate"]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def catalogue(tmp_path):
    return load_catalogue(write(tmp_path / "catalogue.csv", CATALOGUE_CSV))


def quarantined(path: str) -> pd.DataFrame:
    """A quarantine file's rows as read (.gz by its name), bytes that are not UTF-8 as surrogate escapes."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="surrogateescape", newline="") as handle:
        header, *rows = csv.reader(handle)
    return pd.DataFrame(rows, columns=header, dtype=object)


def as_parquet(tmp_path: Path, text: str, name: str = "events.parquet", row_group: int = 3) -> Path:
    path = tmp_path / name
    table = pa.Table.from_pandas(read_table(write(tmp_path / "as-text.csv", text)), preserve_index=False)
    pq.write_table(table, path, row_group_size=row_group)  # several row groups, so several batches
    return path


# --------------------------------------------------------------------------------------------- chunks
@pytest.mark.parametrize("chunk_rows", [1, 2, 3, 6, 100_000])
@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_chunks_change_nothing_row_numbers_are_the_files(tmp_path, catalogue, chunk_rows, kind):
    path = write(tmp_path / "events.csv", EVENTS_CSV) if kind == "csv" else as_parquet(tmp_path, EVENTS_CSV)
    whole, whole_report = load_events(path, catalogue, tmp_path / "whole")
    events, report = load_events(path, catalogue, tmp_path / "q", chunk_rows=chunk_rows)
    pd.testing.assert_frame_equal(events, whole)
    assert (report.read, report.kept, report.quarantined) == (10, 4, 6)
    assert report.reasons == whole_report.reasons
    rows = quarantined(report.quarantine_file)
    assert list(rows["_fedrec_row"]) == ["2", "3", "4", "5", "6", "7"]  # data rows of the whole file
    assert list(rows["_fedrec_reason"]) == REASONS
    assert Path(report.quarantine_file).read_bytes() == Path(whole_report.quarantine_file).read_bytes()


def test_unreadable_rows_in_later_chunks_keep_their_row_numbers(tmp_path, catalogue):
    path = tmp_path / "events.csv"
    good = b"u1,i1,view,2026-01-01T10:00:00Z,\n"
    path.write_bytes(
        HEADER.encode() + good + b"u2,i1,view,2026-01-01T10:00:00Z,\n" + b"u\xff,i1,view,1767261600,\n"
        b"u3,i1,view,2026-01-01T10:00:00Z,,surplus\n" + good
    )
    _, report = load_events(path, catalogue, tmp_path / "q", chunk_rows=2)
    rows = quarantined(report.quarantine_file)
    assert list(rows["_fedrec_row"]) == ["3", "4", "5"]
    assert list(rows["_fedrec_reason"]) == ["bad_encoding", "bad_row", "duplicate"]
    assert list(rows["_fedrec_extra"]) == ["", '["surplus"]', ""]
    assert b"u\xff" in Path(report.quarantine_file).read_bytes()  # the bytes as they were
    assert report.examples == {"bad_encoding": [3], "bad_row": [4], "duplicate": [5]}


@pytest.mark.parametrize(
    ("rows", "row", "column", "message"),
    [
        ("i1,Tent,1\ni2,Bag,2\ni3,Mug,3\ni4,Cup,-1\n", 4, "price", "price"),
        (
            "i1,Tent,1\ni2,Bag,2\ni3,Mug,3\ni1,Cup,4\n",
            4,
            "item_id",
            r"duplicate item_id 'i1' \(first seen in row 1\)",
        ),
        ("i1,Tent,1\ni2,Bag,2\ni3,Mug,3\ni4,,4\n", 4, "title", "title is empty"),
        ("i1,Tent,1\ni2,Bag,2\ni3,Mug,3\ni4,Cup\x1b,4\n", 4, "title", "control character"),
        ("i1,Tent,1\ni2,Bag,2\ni3,Mug,3\ni4,Cup,4,5\n", 4, None, "has 4 fields"),
    ],
)
def test_catalogue_errors_in_a_later_chunk_name_the_files_row(tmp_path, rows, row, column, message):
    path = write(tmp_path / "catalogue.csv", "item_id,title,price\n" + rows)
    with pytest.raises(SchemaError, match=message) as error:
        load_catalogue(path, chunk_rows=2)
    assert (error.value.file, error.value.row, error.value.column) == ("catalogue.csv", row, column)


def test_catalogue_in_chunks_is_the_same_catalogue(tmp_path):
    rows = "".join(f"i{i},Item {i},{i}.5\n" for i in range(25))
    path = write(tmp_path / "catalogue.csv", "item_id,title,price\n" + rows)
    pd.testing.assert_frame_equal(load_catalogue(path, chunk_rows=4), load_catalogue(path))
    parquet = as_parquet(tmp_path, "item_id,title,price\n" + rows, "catalogue.parquet", row_group=7)
    pd.testing.assert_frame_equal(load_catalogue(parquet, chunk_rows=3), load_catalogue(path))


def test_a_csv_error_in_a_later_chunk_leaves_the_old_quarantine(tmp_path, catalogue):
    folder = tmp_path / "q"
    _, report = load_events(write(tmp_path / "events.csv", EVENTS_CSV), catalogue, folder)
    before = Path(report.quarantine_file).read_bytes()
    broken = EVENTS_CSV + 'u1,i1,view,2026-01-01T10:00:00Z,"' + "x" * 200_000 + '"\n'
    with pytest.raises(SchemaError, match="cannot be read as CSV") as error:
        load_events(write(tmp_path / "events.csv", broken), catalogue, folder, chunk_rows=2)
    assert error.value.file == "events.csv"
    assert Path(report.quarantine_file).read_bytes() == before
    assert [p.name for p in folder.iterdir()] == ["events.csv.quarantine.csv"]  # no temp file left


@pytest.mark.parametrize("chunk_rows", [0, -1, 1.5, True])
def test_chunk_rows_must_be_a_positive_int(tmp_path, catalogue, chunk_rows):
    with pytest.raises(ValueError, match="chunk_rows"):
        load_events(
            write(tmp_path / "events.csv", EVENTS_CSV), catalogue, tmp_path / "q", chunk_rows=chunk_rows
        )


def peak_bytes(tmp_path: Path, rows: int) -> int:
    """Peak Python allocations while loading `rows` duplicate rows in chunks of 1,000."""
    path = tmp_path / f"events-{rows}.csv"
    path.write_text(HEADER + "u1,i1,view,2026-01-01T10:00:00Z,\n" * rows)
    catalogue = pd.DataFrame({"item_id": ["i1"]})
    tracemalloc.start()
    try:
        _, report = load_events(
            path, catalogue, tmp_path / "q", chunk_rows=1_000, plain_quarantine_chars=10_000
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (report.kept, report.quarantined) == (1, rows - 1)
    return peak


def test_memory_follows_the_chunk_not_the_file(tmp_path):
    """Four times the rows, about the same peak (read whole, the old loader's grew with the file: 12.8 MB
    for 20,000 rows of 33 bytes); every quarantined row is still written."""
    small, large = peak_bytes(tmp_path, 4_000), peak_bytes(tmp_path, 16_000)
    assert large < 1.5 * small, f"peak {small / 1e6:.2f} MB for 4,000 rows, {large / 1e6:.2f} MB for 16,000"


# --------------------------------------------------------------------------------------------- quarantine
def test_a_large_quarantine_is_kept_whole_compressed_and_private(tmp_path, catalogue):
    folder = tmp_path / "q"
    path = write(tmp_path / "events.csv", EVENTS_CSV)
    _, plain = load_events(path, catalogue, tmp_path / "plain")
    _, report = load_events(path, catalogue, folder, chunk_rows=2, plain_quarantine_chars=100)
    assert report.quarantine_file == str(folder / "events.csv.quarantine.csv.gz")
    assert [p.name for p in folder.iterdir()] == ["events.csv.quarantine.csv.gz"]
    assert stat.S_IMODE(os.stat(report.quarantine_file).st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    # every row, byte for byte the plain file's CSV
    assert (
        gzip.decompress(Path(report.quarantine_file).read_bytes()) == Path(plain.quarantine_file).read_bytes()
    )
    rows = quarantined(report.quarantine_file)
    assert list(rows.columns[-4:]) == list(QUARANTINE_COLUMNS) and len(rows) == report.quarantined == 6
    assert report.examples == {reason: [row] for reason, row in zip(REASONS, range(2, 8), strict=True)}


def test_the_same_rows_give_the_same_compressed_bytes(tmp_path, catalogue):
    path = write(tmp_path / "events.csv", EVENTS_CSV)
    _, a = load_events(path, catalogue, tmp_path / "a", plain_quarantine_chars=100)
    _, b = load_events(path, catalogue, tmp_path / "b", plain_quarantine_chars=100)
    assert Path(a.quarantine_file).read_bytes() == Path(b.quarantine_file).read_bytes()  # no time in it


def test_the_plain_and_compressed_quarantines_replace_each_other(tmp_path, catalogue):
    folder = tmp_path / "q"
    path = write(tmp_path / "events.csv", EVENTS_CSV)
    load_events(path, catalogue, folder, plain_quarantine_chars=100)
    load_events(path, catalogue, folder)
    assert [p.name for p in folder.iterdir()] == ["events.csv.quarantine.csv"]
    load_events(path, catalogue, folder, plain_quarantine_chars=100)
    assert [p.name for p in folder.iterdir()] == ["events.csv.quarantine.csv.gz"]
    _, report = load_events(write(path, HEADER + "u1,i1,view,2026-01-01T10:00:00Z,\n"), catalogue, folder)
    assert report.quarantine_file is None and not any(folder.iterdir())  # the disk agrees with the report


def test_examples_are_the_first_rows_of_each_reason(tmp_path, catalogue):
    rows = "".join(f"u{i},nope,view,2026-01-01T10:00:00Z,\n" for i in range(12))
    _, report = load_events(
        write(tmp_path / "events.csv", HEADER + rows), catalogue, tmp_path / "q", chunk_rows=4
    )
    assert report.reasons["unknown_item"] == 12 and report.examples == {"unknown_item": [1, 2, 3, 4, 5]}


def test_a_parquet_integer_reads_the_same_whatever_the_rows_around_it(tmp_path, catalogue):
    """An integer column with an empty cell used to become floats: 0 was quarantined as "0.0"."""
    table = pa.table(
        {
            "user_id": ["", "u1"],
            "item_id": ["i1", "i1"],
            "event": ["view", "view"],
            "timestamp": ["2026-01-01T10:00:00Z"] * 2,
            "score": pa.array([0, None], pa.int64()),
        }
    )
    pq.write_table(table, tmp_path / "events.parquet")
    for chunk_rows in (1, 2):
        _, report = load_events(tmp_path / "events.parquet", catalogue, tmp_path / "q", chunk_rows=chunk_rows)
        row = quarantined(report.quarantine_file).iloc[0]
        assert (row["score"], row["_fedrec_reason"]) == ("0", "missing_user")
