from pathlib import Path

import pandas as pd
import pytest

from shared.schema import (
    CATALOGUE_COLUMNS,
    EVENTS_COLUMNS,
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
    assert report.reasons == {
        "missing_user": 1,
        "unknown_item": 1,
        "unknown_event": 1,
        "bad_timestamp": 1,
        "missing_query": 1,
        "duplicate": 1,
    }
    assert report.file == "events.csv"
    assert report.quarantine_file == str(tmp_path / "q" / "events.quarantine.csv")
    assert report.to_dict()["reasons"]["duplicate"] == 1

    quarantined = pd.read_csv(report.quarantine_file, dtype=str, keep_default_na=False)
    assert list(quarantined.columns) == [
        "user_id",
        "item_id",
        "event",
        "timestamp",
        "query",
        "row",
        "reason",
        "column",
    ]
    assert list(quarantined["row"]) == ["2", "3", "4", "5", "6", "7"]
    assert list(quarantined["reason"]) == [
        "missing_user",
        "unknown_item",
        "unknown_event",
        "bad_timestamp",
        "missing_query",
        "duplicate",
    ]
    assert list(quarantined["column"]) == ["user_id", "item_id", "event", "timestamp", "query", ""]
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
    stale = tmp_path / "q" / "events.quarantine.csv"
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
