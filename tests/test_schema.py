import csv
import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shared.schema import (
    CATALOGUE_COLUMNS,
    EVENTS_COLUMNS,
    MAX_ID_CHARS,
    MAX_QUERY_CHARS,
    MAX_TITLE_CHARS,
    PLAUSIBLE_SINCE,
    QUARANTINE_COLUMNS,
    QUARANTINE_REASONS,
    LoadReport,
    SchemaError,
    item_texts,
    load_catalogue,
    load_events,
    read_table,
)

CATALOGUE_CSV = """item_id,title,brand,category,price,description
i1,Northpeak Ultralight Dome Tent,Northpeak,Tents,249.90,A light tent.
i2,Wildmere Mummy Sleeping Bag,Wildmere,Sleeping Bags,,Warm.
i3,Plain Mug,,Kitchen,4.5,
"""

# One row for each quarantine reason, between good rows (data row numbers in the comments).
EVENTS_CSV = """user_id,item_id,event,timestamp,query
u1,i1,view,2026-01-01T10:00:00Z,
,i1,click,2026-01-01T10:01:00Z,
u1,nope,click,2026-01-01T10:01:00Z,
u1,i1,like,2026-01-01T10:01:00Z,
u1,i1,click,yesterday,
u1,i2,search,2026-01-01T10:02:00Z,
u1,i1,view,2026-01-01T10:00:00Z,
u2,i2,search,1767261600,warm sleeping bag
u0,i3,purchase,2026-01-01T09:00:00+02:00,
u1,i2,click,1767262000.5,
"""
# rows: 1 kept, 2 missing_user, 3 unknown_item, 4 unknown_event, 5 bad_timestamp,
#       6 missing_query, 7 duplicate of 1, 8-10 kept


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def catalogue(tmp_path):
    return load_catalogue(write(tmp_path / "catalogue.csv", CATALOGUE_CSV))


def test_read_table_rejects_other_file_types(tmp_path):
    path = write(tmp_path / "events.json", "[]")
    with pytest.raises(SchemaError) as error:
        read_table(path)
    assert error.value.file == "events.json"
    assert "events.json" in str(error.value) and ".json" in error.value.message


def test_catalogue_is_loaded_in_file_order_with_all_columns(catalogue):
    assert list(catalogue.columns) == list(CATALOGUE_COLUMNS)
    assert list(catalogue["item_id"]) == ["i1", "i2", "i3"]
    assert catalogue["price"].dtype == float
    assert catalogue.loc[0, "price"] == 249.90 and catalogue.loc[2, "price"] == 4.5
    assert pd.isna(catalogue.loc[1, "price"])
    assert catalogue.loc[2, "brand"] == "" and catalogue.loc[2, "description"] == ""
    assert all(pd.api.types.is_string_dtype(catalogue[c]) for c in CATALOGUE_COLUMNS if c != "price")


def test_catalogue_optional_columns_are_filled(tmp_path):
    frame = load_catalogue(write(tmp_path / "c.csv", "item_id,title\na,Alpha\nb,Beta\n"))
    assert list(frame.columns) == list(CATALOGUE_COLUMNS)
    assert list(frame["brand"]) == ["", ""] and list(frame["description"]) == ["", ""]
    assert frame["price"].isna().all()


def test_missing_catalogue_column_names_file_and_column(tmp_path):
    path = write(tmp_path / "catalogue.csv", "item_id,brand\ni1,Northpeak\n")
    with pytest.raises(SchemaError) as error:
        load_catalogue(path)
    assert (error.value.file, error.value.row, error.value.column) == ("catalogue.csv", None, "title")
    assert str(error.value).startswith("catalogue.csv, column 'title': missing required column")


@pytest.mark.parametrize("price", ["abc", "-1", "inf", "nan"])
def test_bad_price_names_file_row_and_column(tmp_path, price):
    text = f"item_id,title,price\ni1,Tent,10\ni2,Bag,{price}\n"
    with pytest.raises(SchemaError) as error:
        load_catalogue(write(tmp_path / "catalogue.csv", text))
    assert (error.value.file, error.value.row, error.value.column) == ("catalogue.csv", 2, "price")
    assert str(error.value).startswith("catalogue.csv, row 2, column 'price': ")


@pytest.mark.parametrize(
    ("rows", "row", "column"),
    [
        ("i1,Tent\ni1,Other tent\n", 2, "item_id"),
        ("i1,Tent\n,Bag\n", 2, "item_id"),
        ("i1,Tent\ni2,Bag\ni3,  \n", 3, "title"),
    ],
)
def test_catalogue_row_errors(tmp_path, rows, row, column):
    with pytest.raises(SchemaError) as error:
        load_catalogue(write(tmp_path / "c.csv", "item_id,title\n" + rows))
    assert (error.value.row, error.value.column) == (row, column)


def test_missing_events_column_names_file_and_column(tmp_path, catalogue):
    path = write(tmp_path / "events.csv", "user_id,item_id,event\nu1,i1,view\n")
    with pytest.raises(SchemaError) as error:
        load_events(path, catalogue, tmp_path / "q")
    assert (error.value.file, error.value.column) == ("events.csv", "timestamp")
    assert "events.csv" in str(error.value) and "'timestamp'" in str(error.value)


def test_bad_rows_are_quarantined_with_reason_and_counted(tmp_path, catalogue):
    events, report = load_events(write(tmp_path / "events.csv", EVENTS_CSV), catalogue, tmp_path / "q")

    assert (report.read, report.kept, report.quarantined) == (10, 4, 6)
    assert report.read == report.kept + report.quarantined == len(events) + report.quarantined
    assert list(report.reasons) == list(QUARANTINE_REASONS)  # every reason is counted, zero or not
    assert {name: count for name, count in report.reasons.items() if count} == {
        "missing_user": 1,
        "unknown_item": 1,
        "unknown_event": 1,
        "bad_timestamp": 1,
        "missing_query": 1,
        "duplicate": 1,
    }
    assert report.file == "events.csv"
    assert report.quarantine_file == str(tmp_path / "q" / "events.csv.quarantine.csv")
    assert report.to_dict()["reasons"]["duplicate"] == 1

    quarantined = pd.read_csv(report.quarantine_file, dtype=str, keep_default_na=False)
    assert list(quarantined.columns) == [
        "user_id",
        "item_id",
        "event",
        "timestamp",
        "query",
        "_fedrec_row",
        "_fedrec_reason",
        "_fedrec_column",
        "_fedrec_extra",
    ]
    assert list(quarantined["_fedrec_row"]) == ["2", "3", "4", "5", "6", "7"]
    assert list(quarantined["_fedrec_reason"]) == [
        "missing_user",
        "unknown_item",
        "unknown_event",
        "bad_timestamp",
        "missing_query",
        "duplicate",
    ]
    assert list(quarantined["_fedrec_column"]) == ["user_id", "item_id", "event", "timestamp", "query", ""]
    assert quarantined.loc[3, "timestamp"] == "yesterday"  # original values are kept as read


def test_kept_events_are_typed_and_sorted_by_user_then_time(tmp_path, catalogue):
    events, _ = load_events(write(tmp_path / "events.csv", EVENTS_CSV), catalogue, tmp_path / "q")
    assert list(events.columns) == list(EVENTS_COLUMNS)
    assert str(events["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert list(events["user_id"]) == ["u0", "u1", "u1", "u2"]
    assert list(events["event"]) == ["purchase", "view", "click", "search"]
    expected = [
        "2026-01-01T07:00:00+00:00",
        "2026-01-01T10:00:00+00:00",
        "2026-01-01T10:06:40.500000+00:00",
        "2026-01-01T10:00:00+00:00",
    ]
    assert [t.isoformat() for t in events["timestamp"]] == expected
    assert list(events["query"]) == ["", "", "", "warm sleeping bag"]


@pytest.mark.parametrize("stamp", ["", "2026-13-01", "abc", "1e30", "nan", "12:00"])
def test_unparseable_timestamps_are_quarantined(tmp_path, catalogue, stamp):
    text = f"user_id,item_id,event,timestamp\nu1,i1,view,{stamp}\n"
    events, report = load_events(write(tmp_path / "e.csv", text), catalogue, tmp_path / "q")
    assert len(events) == 0 and report.reasons["bad_timestamp"] == 1


@pytest.mark.parametrize(
    "stamp", ["2026-01-01", "2026-01-01 10:00:00", "2026-01-01T10:00:00.250Z", "1767225600", "1767225600.75"]
)
def test_iso_and_epoch_timestamps_are_accepted(tmp_path, catalogue, stamp):
    text = f"user_id,item_id,event,timestamp\nu1,i1,view,{stamp}\n"
    events, report = load_events(write(tmp_path / "e.csv", text), catalogue, tmp_path / "q")
    assert report.kept == 1
    assert events.loc[0, "timestamp"].date().isoformat() == "2026-01-01"


def test_clean_file_writes_no_quarantine_and_removes_a_stale_one(tmp_path, catalogue):
    stale = tmp_path / "q" / "events.csv.quarantine.csv"
    stale.parent.mkdir()
    stale.write_text("left over from an earlier run")
    text = "user_id,item_id,event,timestamp\nu1,i1,view,2026-01-01T10:00:00Z\n"
    events, report = load_events(write(tmp_path / "events.csv", text), catalogue, tmp_path / "q")
    assert report.quarantine_file is None and report.quarantined == 0
    assert not stale.exists()
    assert list(events["query"]) == [""]  # the optional column is always present


def test_csv_and_parquet_give_the_same_frames(tmp_path):
    catalogue_csv = write(tmp_path / "catalogue.csv", CATALOGUE_CSV)
    typed = pd.read_csv(catalogue_csv)  # price as a float column, NaN where empty
    typed.to_parquet(tmp_path / "catalogue.parquet")
    catalogue = load_catalogue(catalogue_csv)
    pd.testing.assert_frame_equal(catalogue, load_catalogue(tmp_path / "catalogue.parquet"))

    events_csv = write(tmp_path / "events.csv", EVENTS_CSV)
    read_table(events_csv).to_parquet(tmp_path / "events.parquet")
    from_csv, csv_report = load_events(events_csv, catalogue, tmp_path / "q")
    from_parquet, parquet_report = load_events(tmp_path / "events.parquet", catalogue, tmp_path / "q")
    pd.testing.assert_frame_equal(from_csv, from_parquet)
    assert csv_report.reasons == parquet_report.reasons


def test_parquet_datetime_column_is_accepted(tmp_path, catalogue):
    frame = pd.DataFrame(
        {
            "user_id": ["u1"],
            "item_id": ["i1"],
            "event": ["view"],
            "timestamp": pd.to_datetime(["2026-01-01T10:00:00"]),
        }
    )
    frame.to_parquet(tmp_path / "events.parquet")
    events, report = load_events(tmp_path / "events.parquet", catalogue, tmp_path / "q")
    assert report.kept == 1
    assert events.loc[0, "timestamp"] == pd.Timestamp("2026-01-01T10:00:00Z")


def test_load_report_must_reconcile():
    with pytest.raises(AssertionError):
        LoadReport(file="e.csv", read=5, kept=3, quarantined=1, reasons={"duplicate": 1})
    with pytest.raises(AssertionError):
        LoadReport(file="e.csv", read=5, kept=3, quarantined=2, reasons={"duplicate": 1})


def test_item_texts_skip_empty_parts(catalogue):
    assert item_texts(catalogue) == [
        "Northpeak Ultralight Dome Tent. Northpeak. Tents",
        "Wildmere Mummy Sleeping Bag. Wildmere. Sleeping Bags",
        "Plain Mug. Kitchen",
    ]


# ------------------------------------------------------------------------------------ issue 16: bad inputs

HEADER = "user_id,item_id,event,timestamp,query\n"
GOOD_ROW = "u1,i1,view,2026-01-01T10:00:00Z,\n"


def load_one(tmp_path: Path, catalogue: pd.DataFrame, text: str) -> tuple[pd.DataFrame, LoadReport]:
    """Load an events file of a good row, then the given rows."""
    return load_events(write(tmp_path / "events.csv", HEADER + GOOD_ROW + text), catalogue, tmp_path / "q")


def only_reason(report: LoadReport) -> dict[str, int]:
    return {name: count for name, count in report.reasons.items() if count}


def quarantined_rows(report: LoadReport) -> pd.DataFrame:
    return pd.read_csv(report.quarantine_file, dtype=str, keep_default_na=False)


def write_parquet(path: Path, columns: dict[str, pa.Array]) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


@pytest.mark.parametrize(
    "stamp",
    [
        "1600-01-01T00:00:00Z",  # before pandas' nanosecond range (1677)
        "3000-01-01",  # after it (2262)
        "-2026-01-01",
        "20260101",  # a date written as digits is not epoch seconds (1970-08-23)
        "1767225600000",  # epoch milliseconds, not seconds
        "0",
        "-1767225600",  # negative epochs were kept
        "99999999999999999999999999",
    ],
)
def test_timestamps_out_of_range_or_ambiguous_are_bad(tmp_path, catalogue, stamp):
    events, report = load_one(tmp_path, catalogue, f"u2,i2,view,{stamp},\n")
    assert len(events) == 1 and report.kept == 1  # one bad row does not stop the file
    assert only_reason(report) == {"bad_timestamp": 1}
    assert quarantined_rows(report).loc[0, "timestamp"] == stamp


@pytest.mark.parametrize("stamp", ["1994-12-31T23:59:59Z", "1970-01-01", "2200-01-01", "2262-04-01"])
def test_timestamps_outside_the_window_are_implausible(tmp_path, catalogue, stamp):
    _, report = load_one(tmp_path, catalogue, f"u2,i2,view,{stamp},\n")
    assert only_reason(report) == {"implausible_timestamp": 1}
    assert quarantined_rows(report).loc[0, "_fedrec_column"] == "timestamp"


def test_the_window_ends_a_day_after_now(tmp_path, catalogue):
    now = pd.Timestamp.now(tz="UTC")
    rows = f"u2,i2,view,{(now + pd.Timedelta(hours=12)).isoformat()},\n"
    rows += f"u3,i2,view,{(now + pd.Timedelta(days=2)).isoformat()},\n"
    rows += f"u4,i2,view,{int((now + pd.Timedelta(days=2)).timestamp())},\n"  # digits: not an epoch then
    rows += f"u5,i2,view,{PLAUSIBLE_SINCE.isoformat()},\n"
    events, report = load_one(tmp_path, catalogue, rows)
    assert list(events["user_id"]) == ["u1", "u2", "u5"]
    assert only_reason(report) == {"implausible_timestamp": 1, "bad_timestamp": 1}


@pytest.mark.parametrize("unit", ["s", "ms", "us"])
@pytest.mark.parametrize("tz", [None, "UTC", "Europe/Paris"])
def test_parquet_times_out_of_range_are_quarantined(tmp_path, catalogue, unit, tz):
    stamps = [
        pd.Timestamp("2026-01-01T10:00:00"),
        pd.Timestamp("3000-01-01"),
        None,
        pd.Timestamp("1600-01-01"),
    ]
    stamps += [pd.Timestamp("1980-01-01")]
    times = pa.array([None if t is None else t.to_pydatetime() for t in stamps], pa.timestamp(unit, tz=tz))
    n = len(stamps)
    path = write_parquet(
        tmp_path / "events.parquet",
        {
            "user_id": pa.array([f"u{i}" for i in range(n)]),
            "item_id": pa.array(["i1"] * n),
            "event": pa.array(["view"] * n),
            "timestamp": times,
        },
    )
    events, report = load_events(path, catalogue, tmp_path / "q")
    assert list(events["user_id"]) == ["u0"]
    assert only_reason(report) == {"bad_timestamp": 3, "implausible_timestamp": 1}
    assert str(events["timestamp"].dtype) == "datetime64[ns, UTC]"


def test_parquet_epoch_numbers_follow_the_digit_rule(tmp_path, catalogue):
    seconds = [1767261600, 20260101, -1767261600, 1767261600]
    path = write_parquet(
        tmp_path / "events.parquet",
        {
            "user_id": pa.array(["u1", "u2", "u3", "u4"]),
            "item_id": pa.array(["i1"] * 4),
            "event": pa.array(["view"] * 4),
            "timestamp": pa.array([float(s) for s in seconds[:3]] + [1767261600.5], pa.float64()),
        },
    )
    events, report = load_events(path, catalogue, tmp_path / "q")
    assert list(events["user_id"]) == ["u1", "u4"]
    assert events.loc[1, "timestamp"] == pd.Timestamp("2026-01-01T10:00:00.5Z")
    assert only_reason(report) == {"bad_timestamp": 2}


# ------------------------------------------------------------------------------------------- read errors


def test_a_row_that_is_not_utf8_is_quarantined_exactly_as_read(tmp_path, catalogue):
    data = (
        (HEADER + GOOD_ROW).encode()
        + b"u2,i2,view,2026-01-01T11:00:00Z,caf\xe9\n"
        + b"u3,i1,view,1767261600,\n"
    )
    path = tmp_path / "events.csv"
    path.write_bytes(data)
    events, report = load_events(path, catalogue, tmp_path / "q")
    assert list(events["user_id"]) == ["u1", "u3"]
    assert only_reason(report) == {"bad_encoding": 1}
    written = Path(report.quarantine_file).read_bytes()
    assert b"u2,i2,view,2026-01-01T11:00:00Z,caf\xe9,2,bad_encoding,query," in written  # the byte is kept


def test_a_ragged_row_is_quarantined_with_its_extra_fields(tmp_path, catalogue):
    _, report = load_one(tmp_path, catalogue, 'u2,i2,view,2026-01-01T11:00:00Z,,surplus,"a,b"\n')
    assert only_reason(report) == {"bad_row": 1} and report.kept == 1
    row = quarantined_rows(report).iloc[0]
    assert (row["user_id"], row["_fedrec_row"], row["_fedrec_column"]) == ("u2", "2", "")
    assert row["_fedrec_extra"] == '["surplus", "a,b"]'


def test_a_short_row_is_padded_and_checked_as_usual(tmp_path, catalogue):
    events, report = load_one(tmp_path, catalogue, "u2,i2,view,2026-01-01T11:00:00Z\nu3,i2\n")
    assert list(events["user_id"]) == ["u1", "u2"]
    assert only_reason(report) == {"unknown_event": 1}


CATALOGUE_HEADER = "item_id,title,brand\n"


@pytest.mark.parametrize(
    ("data", "row", "column", "message"),
    [
        (b"i1,Tent,A\ni2,Caf\xe9,B\n", 2, "title", "not valid UTF-8"),
        (b"i1,Tent,A\ni2,Bag,B,extra\n", 2, None, "has 4 fields, the header has 3"),
    ],
)
def test_catalogue_read_errors_name_the_row(tmp_path, data, row, column, message):
    path = tmp_path / "catalogue.csv"
    path.write_bytes(CATALOGUE_HEADER.encode() + data)
    with pytest.raises(SchemaError, match=message) as error:
        load_catalogue(path)
    assert (error.value.file, error.value.row, error.value.column) == ("catalogue.csv", row, column)
    with pytest.raises(SchemaError):
        read_table(path)  # read_table is strict too


BOTH_HEADER = "item_id,title,user_id,event,timestamp"  # a header both loaders accept: rows are read


def make_directory(path: Path) -> Path:
    path.mkdir()
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda path: path, "no such file"),
        (lambda path: make_directory(path), "is a directory"),
        (lambda path: write(path, ""), "is empty"),
        (lambda path: write(path, "\n\n"), "no header"),
        (lambda path: path.write_bytes(b"\xff\xfeitem_id,title\n") and path, "header is not valid UTF-8"),
        (lambda path: write(path, "item_id,title,item_id\n1,a,2\n"), "more than once in the header"),
        (lambda path: write(path, f'{BOTH_HEADER}\ni1,"' + "x" * 200_000 + '"\n'), "cannot be read as CSV"),
    ],
)
@pytest.mark.parametrize("loader", ["catalogue", "events"])
def test_whole_file_problems_name_the_file(tmp_path, catalogue, make, message, loader):
    path = make(tmp_path / "data.csv")
    with pytest.raises(SchemaError, match=message) as error:
        if loader == "catalogue":
            load_catalogue(path)
        else:
            load_events(path, catalogue, tmp_path / "q")
    assert error.value.file == "data.csv" and str(error.value).startswith("data.csv")


@pytest.mark.parametrize("data", [b"", b"not parquet at all", b"PAR1\x00\x00PAR1"])
def test_unreadable_parquet_names_the_file(tmp_path, catalogue, data):
    path = tmp_path / "events.parquet"
    path.write_bytes(data)
    with pytest.raises(SchemaError) as error:
        load_events(path, catalogue, tmp_path / "q")
    assert error.value.file == "events.parquet"


def test_a_file_that_cannot_be_read_names_the_file(tmp_path, monkeypatch):
    path = write(tmp_path / "catalogue.csv", CATALOGUE_CSV)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("shared.schema.open", refuse, raising=False)  # as root, chmod would not do
    with pytest.raises(SchemaError, match="cannot be read: Permission denied") as error:
        load_catalogue(path)
    assert error.value.file == "catalogue.csv"


def test_a_header_only_catalogue_is_an_error(tmp_path):
    with pytest.raises(SchemaError, match="no items") as error:
        load_catalogue(write(tmp_path / "catalogue.csv", "item_id,title\n"))
    assert error.value.file == "catalogue.csv"


def test_a_header_only_events_file_is_an_empty_log(tmp_path, catalogue):
    events, report = load_events(write(tmp_path / "events.csv", HEADER), catalogue, tmp_path / "q")
    assert len(events) == 0 and (report.read, report.kept, report.quarantined) == (0, 0, 0)


def test_a_utf8_byte_order_mark_is_not_part_of_the_header(tmp_path):
    path = tmp_path / "catalogue.csv"
    path.write_bytes(b"\xef\xbb\xbf" + CATALOGUE_CSV.encode())
    assert list(load_catalogue(path)["item_id"]) == ["i1", "i2", "i3"]


# --------------------------------------------------------------------------------------------- coercions


def test_ids_are_text_exactly_as_written(tmp_path):
    frame = load_catalogue(write(tmp_path / "c.csv", "item_id,title\n007,Bond\n1.0,One\n1e3,Thousand\n"))
    assert list(frame["item_id"]) == ["007", "1.0", "1e3"]


def test_parquet_whole_float_ids_match_their_integer_text(tmp_path):
    write(tmp_path / "catalogue.csv", "item_id,title\n1,One\n2,Two\n")
    catalogue = load_catalogue(tmp_path / "catalogue.csv")
    path = write_parquet(
        tmp_path / "events.parquet",
        {
            "user_id": pa.array([10.0, 11.0, 12.5, None, 13.0]),
            "item_id": pa.array([1.0, 2.0, 1.0, 1.0, 2.5]),
            "event": pa.array(["view"] * 5),
            "timestamp": pa.array(["2026-01-01T10:00:00Z"] * 5),
        },
    )
    events, report = load_events(path, catalogue, tmp_path / "q")
    assert list(events["user_id"]) == ["10", "11"] and list(events["item_id"]) == ["1", "2"]
    assert only_reason(report) == {"bad_id": 2, "missing_user": 1}
    assert list(quarantined_rows(report)["_fedrec_column"]) == ["user_id", "user_id", "item_id"]


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        (pa.array([1.0, 2.5]), "not an id"),
        (pa.array([["a"], ["b", "c"]]), "not an id"),
        (pa.array([True, False]), "not an id"),
    ],
)
def test_catalogue_refuses_ids_that_are_not_text_or_whole(tmp_path, ids, message):
    path = write_parquet(tmp_path / "catalogue.parquet", {"item_id": ids, "title": pa.array(["A", "B"])})
    with pytest.raises(SchemaError, match=message) as error:
        load_catalogue(path)
    assert (error.value.file, error.value.column) == ("catalogue.parquet", "item_id")
    assert error.value.row in (1, 2)


def test_parquet_catalogue_with_whole_float_ids_reads_them_as_integers(tmp_path):
    path = write_parquet(
        tmp_path / "c.parquet", {"item_id": pa.array([1.0, 2.0]), "title": pa.array(["A", "B"])}
    )
    assert list(load_catalogue(path)["item_id"]) == ["1", "2"]


def test_list_valued_ids_are_quarantined(tmp_path, catalogue):
    path = write_parquet(
        tmp_path / "events.parquet",
        {
            "user_id": pa.array([["u1"], ["u2"]]),
            "item_id": pa.array(["i1", "i1"]),
            "event": pa.array(["view", "view"]),
            "timestamp": pa.array(["2026-01-01T10:00:00Z"] * 2),
        },
    )
    events, report = load_events(path, catalogue, tmp_path / "q")
    assert len(events) == 0 and only_reason(report) == {"bad_id": 2}


@pytest.mark.parametrize("column", ["title", "brand", "category", "description"])
@pytest.mark.parametrize("bad", ["\x00", "\x1b[31mred", "\x07", "\x9b2J", "a\rb", "\x7f"])
def test_catalogue_refuses_control_characters(tmp_path, column, bad):
    values = {"item_id": ["i1", "i2"], "title": ["A", "B"], "brand": ["", ""]}
    values |= {"category": ["", ""], "description": ["", ""]}
    values[column][1] = f"x{bad}y"
    pd.DataFrame(values).to_csv(tmp_path / "c.csv", index=False, quoting=csv.QUOTE_ALL)  # quotes a lone \r
    with pytest.raises(SchemaError, match="control character") as error:
        load_catalogue(tmp_path / "c.csv")
    assert (error.value.row, error.value.column) == (2, column)


def test_tabs_and_line_breaks_are_text(tmp_path):
    frame = pd.DataFrame({"item_id": ["i1"], "title": ["A\tB"], "description": ["line 1\r\nline 2\nline 3"]})
    frame.to_csv(tmp_path / "c.csv", index=False)
    loaded = load_catalogue(tmp_path / "c.csv")
    assert loaded.loc[0, "description"] == "line 1\r\nline 2\nline 3" and loaded.loc[0, "title"] == "A\tB"


@pytest.mark.parametrize("query", ["\x00", "tent\x1b]0;pwned\x07", "\x01"])
def test_control_characters_in_a_query_are_quarantined(tmp_path, catalogue, query):
    frame = pd.DataFrame(
        [["u2", "i2", "search", "2026-01-01T11:00:00Z", query]], columns=list(EVENTS_COLUMNS)
    )
    events, report = load_one(tmp_path, catalogue, frame.to_csv(index=False, header=False))
    assert only_reason(report) == {"bad_text": 1} and list(events["user_id"]) == ["u1"]
    assert quarantined_rows(report).loc[0, "_fedrec_column"] == "query"


# ---------------------------------------------------------------------------------------------- size limits


@pytest.mark.parametrize(("column", "limit"), [("item_id", MAX_ID_CHARS), ("title", MAX_TITLE_CHARS)])
def test_catalogue_size_limits(tmp_path, column, limit):
    values = {"item_id": ["i1", "i2"], "title": ["A", "B"]}
    values[column][1] = "x" * limit
    pd.DataFrame(values).to_csv(tmp_path / "c.csv", index=False)
    assert len(load_catalogue(tmp_path / "c.csv")) == 2  # at the limit is fine
    values[column][1] = "x" * (limit + 1)
    pd.DataFrame(values).to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(SchemaError, match="over the limit") as error:
        load_catalogue(tmp_path / "c.csv")
    assert (error.value.row, error.value.column) == (2, column)


def test_events_size_limits(tmp_path, catalogue):
    rows = f"{'u' * MAX_ID_CHARS},i2,view,2026-01-01T11:00:00Z,\n"
    rows += f"{'u' * (MAX_ID_CHARS + 1)},i2,view,2026-01-01T11:00:00Z,\n"
    rows += f"u3,{'i' * (MAX_ID_CHARS + 1)},view,2026-01-01T11:00:00Z,\n"
    rows += f"u4,i2,search,2026-01-01T11:00:00Z,{'q' * MAX_QUERY_CHARS}\n"
    rows += f"u5,i2,search,2026-01-01T11:00:00Z,{'q' * (MAX_QUERY_CHARS + 1)}\n"
    events, report = load_one(tmp_path, catalogue, rows)
    assert len(events) == 3 and only_reason(report) == {"too_long": 3}
    assert list(quarantined_rows(report)["_fedrec_column"]) == ["user_id", "item_id", "query"]


# ----------------------------------------------------------------------------------------- the quarantine


def test_quarantine_is_private(tmp_path, catalogue):
    folder = tmp_path / "private" / "q"
    _, report = load_events(write(tmp_path / "events.csv", EVENTS_CSV), catalogue, folder)
    assert stat.S_IMODE(os.stat(report.quarantine_file).st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert [p.name for p in folder.iterdir()] == ["events.csv.quarantine.csv"]  # no temporary file left


def test_rewriting_a_quarantine_file_makes_it_private(tmp_path, catalogue):
    folder = tmp_path / "q"
    folder.mkdir(mode=0o755)
    old = write(folder / "events.csv.quarantine.csv", "old")
    old.chmod(0o644)
    _, report = load_events(write(tmp_path / "events.csv", EVENTS_CSV), catalogue, folder)
    assert stat.S_IMODE(os.stat(report.quarantine_file).st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755  # a folder it did not create is left alone


def test_user_columns_named_like_metadata_are_kept(tmp_path, catalogue):
    text = "user_id,item_id,event,timestamp,row,reason,column\n,i1,view,2026-01-01T10:00:00Z,r,why,c\n"
    _, report = load_events(write(tmp_path / "events.csv", text), catalogue, tmp_path / "q")
    row = quarantined_rows(report).iloc[0]
    assert (row["row"], row["reason"], row["column"]) == ("r", "why", "c")
    assert (row["_fedrec_row"], row["_fedrec_reason"], row["_fedrec_column"]) == (
        "1",
        "missing_user",
        "user_id",
    )
    assert list(quarantined_rows(report).columns[-4:]) == list(QUARANTINE_COLUMNS)


def test_csv_and_parquet_logs_of_one_name_have_their_own_quarantine(tmp_path, catalogue):
    csv_path = write(tmp_path / "logs.csv", EVENTS_CSV)
    read_table(csv_path).to_parquet(tmp_path / "logs.parquet")
    _, from_csv = load_events(csv_path, catalogue, tmp_path / "q")
    _, from_parquet = load_events(tmp_path / "logs.parquet", catalogue, tmp_path / "q")
    assert from_csv.quarantine_file != from_parquet.quarantine_file
    assert sorted(p.name for p in (tmp_path / "q").iterdir()) == [
        "logs.csv.quarantine.csv",
        "logs.parquet.quarantine.csv",
    ]
    assert len(quarantined_rows(from_csv)) == len(quarantined_rows(from_parquet)) == 6


def test_every_reason_is_counted_and_rows_reconcile(tmp_path, catalogue):
    rows = [
        b"u1,i1,view,2026-01-01T10:00:00Z,",  # kept
        b"u1,i1,view,2026-01-01T10:01:00Z,\xff",  # bad_encoding
        b"u1,i1,view,2026-01-01T10:01:00Z,,x",  # bad_row
        b"u1,i1,view,2026-01-01T10:01:00Z,\x00",  # bad_text
        b"u" * (MAX_ID_CHARS + 1) + b",i1,view,2026-01-01T10:01:00Z,",  # too_long
        b",i1,view,2026-01-01T10:01:00Z,",  # missing_user
        b"u1,i9,view,2026-01-01T10:01:00Z,",  # unknown_item
        b"u1,i1,like,2026-01-01T10:01:00Z,",  # unknown_event
        b"u1,i1,view,20260101,",  # bad_timestamp
        b"u1,i1,view,1990-01-01,",  # implausible_timestamp
        b"u1,i1,search,2026-01-01T10:01:00Z,",  # missing_query
        b"u1,i1,view,1767261600,",  # duplicate: 2026-01-01T10:00:00Z in epoch seconds
    ]
    path = tmp_path / "events.csv"
    path.write_bytes(HEADER.encode() + b"\n".join(rows) + b"\n")
    events, report = load_events(path, catalogue, tmp_path / "q")
    expected = {name: 1 for name in QUARANTINE_REASONS if name != "bad_id"}
    assert only_reason(report) == expected
    assert report.read == report.kept + report.quarantined == len(rows) and len(events) == 1


def test_load_report_refuses_unknown_reasons():
    with pytest.raises(AssertionError, match="unknown"):
        LoadReport(file="e.csv", read=1, kept=0, quarantined=1, reasons={"cosmic_ray": 1})


def test_numpy_values_render_as_read_in_the_quarantine(tmp_path, catalogue):
    frame = pd.DataFrame(
        {
            "user_id": ["u1", "u2"],
            "item_id": ["i1", "nope"],
            "event": ["view", "view"],
            "timestamp": ["2026-01-01T10:00:00Z"] * 2,
            "score": np.array([1.5, np.nan]),
        }
    )
    frame.to_parquet(tmp_path / "events.parquet")
    _, report = load_events(tmp_path / "events.parquet", catalogue, tmp_path / "q")
    row = quarantined_rows(report).iloc[0]
    assert (row["item_id"], row["score"], row["_fedrec_reason"]) == ("nope", "", "unknown_item")
