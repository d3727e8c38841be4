"""The ClientApp runs `fedrec check` when it first sees a run: unusable files or no surviving event give a
refusal naming the file (never a value, count or path of the partner's), the load report stays on the
partner's console, and a run that passed is not checked again."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict

from client.app import locate_party, make_app
from client.check import CHECKED_RUNS, DATA_UNUSABLE, check_first_message
from shared.config import RunConfig

CATALOGUE = "item_id,title,price\ni1,Tent,99\ni2,Stove,45\ni3,Lantern,\n"
EVENTS = (
    "user_id,item_id,event,timestamp\n"
    "u1,i1,click,2024-01-01T10:00:00Z\n"
    "u1,i2,purchase,1704189600\n"
    "u2,i3,view,2024-01-02T10:00:00Z\n"
)
UNKNOWN_ITEMS = "user_id,item_id,event,timestamp\nu1,x1,click,2024-01-01T10:00:00Z\nu2,x2,view,1704189600\n"

pytestmark = pytest.mark.usefixtures("task_identity")  # tests/conftest.py


@pytest.fixture
def partner(tmp_path) -> Path:
    """A partner's folder: the public catalogue, its private events, its work dir."""
    folder = tmp_path / "secret-partner-folder"
    folder.mkdir()
    (folder / "catalogue.csv").write_text(CATALOGUE)
    (folder / "events.csv").write_text(EVENTS)
    return folder


def context(folder: Path, run_id: int = 7) -> Context:
    cfg = RunConfig.from_flower({"catalogue": str(folder / "catalogue.csv"), "run-dir": str(folder / "run")})
    node = {
        "data-path": str(folder / "events.csv"),
        "work-dir": str(folder / "work"),
        "client-name": "shop-3",
    }
    return Context(run_id, 1, node, RecordDict(), cfg.to_flower())


def ask(folder: Path, message_type: str = "train") -> Message:
    request = Message(
        RecordDict({"config": ConfigRecord({"server-round": 1})}), dst_node_id=1, message_type=message_type
    )
    return make_app()(request, context(folder))


@pytest.mark.parametrize("message_type", ["train", "evaluate"])
def test_an_unusable_catalogue_is_refused_with_where_not_what(partner, capsys, message_type):
    (partner / "catalogue.csv").write_text(CATALOGUE + "i4,Cup,-7\n")
    reply = ask(partner, message_type)
    assert reply.has_error() and reply.error.code == DATA_UNUSABLE
    reason = reply.error.reason
    assert reason.startswith("shop-3: not taking part: catalogue.csv, row 4, column 'price' is unusable")
    assert "-7" not in reason and str(partner) not in reason and "secret" not in reason
    assert "catalogue.csv, row 4, column 'price': price '-7'" in capsys.readouterr().err  # on its console
    assert not (partner / "work" / CHECKED_RUNS).exists()


def test_no_surviving_event_is_refused_and_every_row_kept(partner, capsys):
    (partner / "events.csv").write_text(UNKNOWN_ITEMS)
    reply = ask(partner)
    assert reply.has_error() and reply.error.code == DATA_UNUSABLE
    assert reply.error.reason == (
        "shop-3: not taking part: no event row of events.csv survived the checks (unknown_item)"
    )
    err = capsys.readouterr().err
    assert "shop-3: events " in err and "2 rows read, 0 kept, 2 quarantined" in err
    quarantine = partner / "work" / "quarantine" / "events.csv.quarantine.csv"
    assert len(quarantine.read_text().splitlines()) == 3 and stat.S_IMODE(quarantine.stat().st_mode) == 0o600


def test_an_unusable_events_file_is_refused_naming_it(partner):
    (partner / "events.csv").write_text("user_id,item_id\nu1,i1\n")
    reply = ask(partner)
    assert reply.has_error() and reply.error.code == DATA_UNUSABLE
    assert reply.error.reason.startswith("shop-3: not taking part: events.csv, column 'event' is unusable")


def test_a_run_that_passed_is_remembered_and_not_checked_again(partner, capsys):
    assert check_first_message(context(partner), {}, locate_party) is None
    passed = partner / "work" / CHECKED_RUNS / "run-7.json"
    assert stat.S_IMODE(passed.stat().st_mode) == 0o600
    assert stat.S_IMODE(passed.parent.stat().st_mode) == 0o700
    record = json.loads(passed.read_text())
    assert record["run"] == "7" and record["items"] == 3 and record["events"]["kept"] == 3
    assert "3 rows read, 3 kept, 0 quarantined" in capsys.readouterr().err

    (partner / "events.csv").write_text(UNKNOWN_ITEMS)  # changed mid-run: the run was checked already
    assert check_first_message(context(partner), {}, locate_party) is None
    assert capsys.readouterr().err == ""
    refusal = check_first_message(context(partner, run_id=8), {}, locate_party)  # a new run is checked
    assert refusal is not None and "no event row of events.csv" in refusal
    assert sorted(os.listdir(passed.parent)) == ["run-7.json"]
