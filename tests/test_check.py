"""`fedrec check`: a partner's files validated without training; the load report on stdout, exit 0 when
the catalogue is usable, 1 with one line naming the file and row when a file is not."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pandas as pd
import pytest

from fedrec.cli import main

CATALOGUE = "item_id,title,brand,price\ni1,Tent,TrailPeak,99\ni2,Stove,NorthCamp,45\ni3,Lantern,NorthCamp,\n"
EVENTS = (
    "user_id,item_id,event,timestamp\n"
    "u1,i1,click,2024-01-01T10:00:00Z\n"
    "u1,i2,purchase,1704189600\n"
    "u2,i3,view,2024-01-02T10:00:00Z\n"
    "u2,i9,click,2024-01-02T11:00:00Z\n"  # unknown_item
    "u2,i1,like,2024-01-02T12:00:00Z\n"  # unknown_event
    "u2,i1,click,yesterday\n"  # bad_timestamp
    "u1,i1,click,2024-01-01T10:00:00Z\n"  # duplicate
)


@pytest.fixture
def files(tmp_path) -> tuple[Path, Path]:
    (tmp_path / "items.csv").write_text(CATALOGUE)
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "events.csv").write_text(EVENTS)
    return tmp_path / "items.csv", tmp_path / "logs" / "events.csv"


def counts(out: str) -> tuple[int, int, int]:
    found = re.search(r"(\d+) rows read, (\d+) kept, (\d+) quarantined", out)
    assert found, out
    return int(found[1]), int(found[2]), int(found[3])


def test_good_files_report_every_row_and_exit_0(files, capsys):
    catalogue, events = files
    assert main(["check", "--catalogue", str(catalogue), "--events", str(events)]) == 0
    out = capsys.readouterr().out
    assert f"catalogue {catalogue}: 3 items, usable" in out
    read, kept, quarantined = counts(out)
    assert (read, kept, quarantined) == (7, 3, 4) and read == kept + quarantined
    for reason in ("unknown_item", "unknown_event", "bad_timestamp", "duplicate"):
        assert re.search(rf"^  {reason}: 1 \(", out, re.MULTILINE), out
    quarantine = events.parent / "quarantine" / "events.csv.quarantine.csv"  # the default: beside the events
    assert f"quarantined rows: {quarantine}" in out
    assert stat.S_IMODE(quarantine.stat().st_mode) == 0o600
    assert len(pd.read_csv(quarantine)) == 4


def test_quarantine_folder_can_be_chosen_and_the_catalogue_checked_alone(files, tmp_path, capsys):
    catalogue, events = files
    private = tmp_path / "private"
    argv = ["check", "--catalogue", str(catalogue), "--events", str(events), "--quarantine", str(private)]
    assert main(argv) == 0
    assert (private / "events.csv.quarantine.csv").exists()
    assert not (events.parent / "quarantine").exists()
    capsys.readouterr()

    assert main(["check", "--catalogue", str(catalogue)]) == 0
    assert capsys.readouterr().out == f"catalogue {catalogue}: 3 items, usable\n"


def test_clean_parquet_events_quarantine_nothing(files, tmp_path, capsys):
    catalogue, _ = files
    events = tmp_path / "events.parquet"
    pd.DataFrame(
        {
            "user_id": ["u1", "u1"],
            "item_id": ["i1", "i2"],
            "event": ["click", "view"],
            "timestamp": [1.7e9, 1.75e9],
        }
    ).to_parquet(events)
    assert main(["check", "--catalogue", str(catalogue), "--events", str(events)]) == 0
    out = capsys.readouterr().out
    assert counts(out) == (2, 2, 0) and "quarantined rows" not in out
    assert not (tmp_path / "quarantine").exists()


def test_all_rows_quarantined_is_usable_but_warned(files, capsys):
    catalogue, events = files
    events.write_text("user_id,item_id,event,timestamp\nu1,i9,click,2024-01-01\n")
    assert main(["check", "--catalogue", str(catalogue), "--events", str(events)]) == 0
    out = capsys.readouterr().out
    assert counts(out) == (1, 0, 1) and "warning: no event row was kept" in out


@pytest.mark.parametrize(
    "content, where",
    [
        (
            "item_id,title\ni1,Tent\ni2,Stove\ni1,Again\n",
            "items.csv, row 3, column 'item_id': duplicate item_id",
        ),
        ("item_id,title,price\ni1,Tent,-4\n", "items.csv, row 1, column 'price'"),
        ("item_id,title\ni1,Tent\ni2,\x1b[2J\n", "items.csv, row 2, column 'title'"),
        ("item_id,title\n", "items.csv: has no items, only a header"),
        ("item,title\ni1,Tent\n", "items.csv, column 'item_id': missing required column"),
        ("", "items.csv: is empty"),
    ],
)
def test_a_bad_catalogue_is_exit_1_with_file_and_row(files, capsys, content, where):
    catalogue, events = files
    catalogue.write_text(content)
    assert main(["check", "--catalogue", str(catalogue), "--events", str(events)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err and "\x1b" not in captured.err
    assert lines[0].startswith(f"fedrec check: unusable: {where}"), lines


@pytest.mark.parametrize("events", ["absent.csv", "logs", "events.json"])
def test_an_unusable_events_file_is_exit_1_naming_it(files, tmp_path, capsys, events):
    catalogue, _ = files
    assert main(["check", "--catalogue", str(catalogue), "--events", str(tmp_path / events)]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fedrec check: unusable: {Path(events).name}: "), lines
