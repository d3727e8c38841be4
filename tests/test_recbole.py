"""load_atomic on a tiny hand-made RecBole atomic folder, and on the real Scientific data when present."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from shared.schema import (
    CATALOGUE_COLUMNS,
    EVENTS_COLUMNS,
    PLAUSIBLE_SINCE,
    SchemaError,
    load_catalogue,
    load_events,
)
from simulations.recbole import SET_ASIDE_REASONS, load_atomic

REAL = Path("/work/shared/datasets/amazon-scientific")


def tsv(*rows: str) -> str:
    """Lines whose fields are separated by " | " in this file, written with tabs."""
    return "".join(row.replace(" | ", "\t") + "\n" for row in rows)


# 5 items, indices 0..4 = B0A..B0E; .text lists them in another order, texts end in a space as in UniSRec.
# 4 users; histories in the .inter files are truncated to their last 3 items (UniSRec uses 50).
# Full sequences (item indices):   AZED [0 1 2 3 4 2 1]  ABEL [4 3 2]  AMOS [1 0 3 4]  ACE [2 4 0 3 1]
FILES = {
    ".item2index": tsv("B0A | 0", "B0B | 1", "B0C | 2", "B0D | 3", "B0E | 4"),
    ".user2index": tsv("AZED | 0", "ABEL | 1", "AMOS | 2", "ACE | 3"),
    ".text": tsv(
        "item_id:token | text:token_seq",
        "B0C | Pyrex Beaker 250 ml. Lab Supplies Beakers. Pyrex. ",
        "B0A | Nitrile Gloves, Large. Safety Gloves. Kimtech. ",
        "B0E | Digital Caliper 150 mm. Measuring Calipers. Mitutoyo. ",
        "B0B | Kapton Tape 10 mm. Tapes Polyimide. 3M. ",
        "B0D | Pipette Tips 200 ul. Lab Supplies Pipettes. Eppendorf. ",
    ),
    ".train.inter": tsv(
        "user_id:token | item_id_list:token_seq | item_id:token",
        "0 | 1 2 3 | 4",
        "0 | 0 1 2 | 3",
        "0 | 0 1 | 2",
        "0 | 0 | 1",
        "2 | 1 | 0",
        "3 | 2 4 | 0",
        "3 | 2 | 4",
    ),
    ".valid.inter": tsv(
        "user_id:token | item_id_list:token_seq | item_id:token",
        "0 | 2 3 4 | 2",
        "1 | 4 | 3",
        "2 | 1 0 | 3",
        "3 | 2 4 0 | 3",
    ),
    ".test.inter": tsv(
        "user_id:token | item_id_list:token_seq | item_id:token",
        "0 | 3 4 2 | 1",
        "1 | 4 3 | 2",
        "2 | 1 0 3 | 4",
        "3 | 4 0 3 | 1",
    ),
    ".sequences.tsv": tsv(
        "user_asin | item_asins_chronological",
        "AZED | B0A B0B B0C B0D B0E B0C B0B",
        "ABEL | B0E B0D B0C",
        "AMOS | B0B B0A B0D B0E",
        "ACE | B0C B0E B0A B0D B0B",
    ),
}
USERS = ["ABEL", "ACE", "AMOS", "AZED"]
TRAIN = [[4], [2, 4, 0], [1, 0], [0, 1, 2, 3, 4]]
VALID = [3, 3, 3, 2]
TEST = [2, 1, 4, 1]
INTERACTIONS = 19


def make(folder: Path, name: str = "Sci", **changes: str | None) -> Path:
    """Write the tiny dataset; `changes` maps a suffix (dots as underscores) to new text, None to omit it."""
    folder.mkdir(parents=True, exist_ok=True)
    files = dict(FILES)
    for key, text in changes.items():
        files["." + key.replace("_", ".")] = text
    for suffix, text in files.items():
        if text is not None:
            (folder / f"{name}{suffix}").write_text(text, encoding="utf-8")
    return folder


def edit(suffix: str, old: str, new: str) -> str:
    assert FILES[suffix].count(old) == 1, old
    return FILES[suffix].replace(old, new)


def test_catalogue_split_and_report_are_exactly_the_published_ones(tmp_path):
    data = load_atomic(make(tmp_path / "sci"))

    assert data.name == "Sci"
    catalogue = data.catalogue
    assert list(catalogue.columns) == list(CATALOGUE_COLUMNS)
    assert list(catalogue["item_id"]) == ["B0A", "B0B", "B0C", "B0D", "B0E"]  # item2index order, not .text
    assert catalogue.at[2, "title"] == "Pyrex Beaker 250 ml. Lab Supplies Beakers. Pyrex."
    assert (catalogue[["brand", "category", "description"]] == "").all().all()
    assert catalogue["price"].map(math.isnan).all()
    written = tmp_path / "catalogue.csv"
    catalogue.to_csv(written, index=False)
    pd.testing.assert_frame_equal(load_catalogue(written), catalogue)

    users = data.users
    assert (users.users, users.train, users.valid, users.test) == (USERS, TRAIN, VALID, TEST)
    assert users.too_short == []
    # The test history is the full sequence before the test target, not the file's 3-item window.
    assert users.split("test")[0][3] == [0, 1, 2, 3, 4, 2]

    report = data.report
    assert (report["users"], report["items"], report["interactions"]) == (4, 5, INTERACTIONS)
    assert (report["users_read"], report["interactions_read"]) == (4, INTERACTIONS)
    assert (report["users_set_aside"], report["interactions_set_aside"]) == (0, 0)
    assert report["set_aside_reasons"] == dict.fromkeys(SET_ASIDE_REASONS, 0)
    assert report["sequence_source"] == "Sci.sequences.tsv"
    assert report["token_format"]["Sci.test.inter"] == {"items": "index", "users": "index"}
    assert report["token_format"]["Sci.sequences.tsv"] == {"items": "asin", "users": "asin"}
    # AZED repeats items 2 and 1, which are also its valid and test targets.
    assert report["data_notes"] == {
        "users_with_repeated_items": 1,
        "repeated_interactions": 2,
        "valid_target_in_history": 1,
        "test_target_in_history": 1,
    }


def test_the_split_is_rebuilt_from_the_inter_files_without_a_sequences_file(tmp_path):
    with_file = load_atomic(make(tmp_path / "a"))
    without = load_atomic(make(tmp_path / "b", sequences_tsv=None))
    assert without.report["sequence_source"] == "Sci.train.inter (rebuilt)"
    assert without.users == with_file.users
    pd.testing.assert_frame_equal(without.events, with_file.events)


def test_without_a_sequences_file_a_set_aside_user_still_counts_all_its_interactions(tmp_path):
    # AZED's 7 interactions must be counted from the training prefixes, not from a truncated window.
    test = edit(".test.inter", "0\t3 4 2\t1", "0\t3 4 2\t9")
    report = load_atomic(make(tmp_path / "sci", sequences_tsv=None, test_inter=test)).report
    assert report["set_aside_reasons"]["unknown_item"] == 1
    assert (report["interactions"], report["interactions_set_aside"]) == (INTERACTIONS - 7, 7)


def test_inter_files_may_hold_asins_instead_of_indices(tmp_path):
    asin = {str(i): f"B0{letter}" for i, letter in enumerate("ABCDE")}
    reviewer = {"0": "AZED", "1": "ABEL", "2": "AMOS", "3": "ACE"}
    changes = {}
    for part in ("train", "valid", "test"):
        lines = FILES[f".{part}.inter"].splitlines(keepends=True)
        rows = [line.rstrip("\n").split("\t") for line in lines[1:]]
        rows = [[reviewer[u], " ".join(asin[t] for t in h.split()), asin[t]] for u, h, t in rows]
        changes[f"{part}_inter"] = lines[0] + "".join("\t".join(row) + "\n" for row in rows)
    data = load_atomic(make(tmp_path / "sci", **changes))
    assert data.report["token_format"]["Sci.valid.inter"] == {"items": "asin", "users": "asin"}
    assert (data.users.users, data.users.train, data.users.test) == (USERS, TRAIN, TEST)


@pytest.mark.parametrize(
    "suffix", [".text", ".item2index", ".user2index", ".train.inter", ".valid.inter", ".test.inter"]
)
def test_a_missing_file_is_named(tmp_path, suffix):
    folder = make(tmp_path / "sci")
    (folder / f"Sci{suffix}").unlink()
    with pytest.raises(SchemaError) as error:
        load_atomic(folder, name="Sci")
    assert error.value.file == f"Sci{suffix}" and "missing file" in str(error.value)


@pytest.mark.parametrize(
    ("suffix", "old", "new", "column"),
    [
        (".text", "item_id:token", "item_id", "item_id:token"),
        (".test.inter", "\titem_id:token", "\titem:token", "item_id:token"),
        (".valid.inter", "item_id_list:token_seq", "item_id_list", "item_id_list:token_seq"),
        (".sequences.tsv", "user_asin", "user", "user_asin"),
    ],
)
def test_a_header_without_the_expected_column_is_an_error(tmp_path, suffix, old, new, column):
    folder = make(tmp_path / "sci", **{suffix[1:].replace(".", "_"): edit(suffix, old, new)})
    with pytest.raises(SchemaError) as error:
        load_atomic(folder)
    assert (error.value.file, error.value.column) == (f"Sci{suffix}", column)
    assert f"'{column}'" in str(error.value)


@pytest.mark.parametrize(
    ("suffix", "old", "new", "message"),
    [
        (".item2index", "B0E\t4", "B0E\t5", "indices must be 0..4"),
        (".item2index", "B0E\t4", "B0E\tfour", "not a non-negative integer index"),
        (".text", "B0D\t", "B0X\t", "have no text"),
        (".text", "B0B\tKapton Tape 10 mm. Tapes Polyimide. 3M. ", "B0B\t ", "empty"),
    ],
)
def test_a_defective_catalogue_is_an_error(tmp_path, suffix, old, new, message):
    folder = make(tmp_path / "sci", **{suffix[1:].replace(".", "_"): edit(suffix, old, new)})
    with pytest.raises(SchemaError, match=message) as error:
        load_atomic(folder)
    assert error.value.file == f"Sci{suffix}"


def test_an_unknown_item_sets_its_user_aside_counted_and_quarantined(tmp_path):
    folder = make(
        tmp_path / "sci", test_inter=edit(".test.inter", "3 | 4 0 3 | 1".replace(" | ", "\t"), "3\t4 0 3\t9")
    )
    quarantine = tmp_path / "quarantine"
    data = load_atomic(folder, quarantine_dir=quarantine)

    report = data.report
    assert data.users.users == ["ABEL", "AMOS", "AZED"]
    assert report["unknown_item_rows"] == {
        "Sci.train.inter": 0,
        "Sci.valid.inter": 0,
        "Sci.test.inter": 1,
        "Sci.sequences.tsv": 0,
    }
    assert report["set_aside_reasons"]["unknown_item"] == 1 and report["users_set_aside"] == 1
    assert (report["interactions"], report["interactions_set_aside"]) == (INTERACTIONS - 5, 5)
    assert report["interactions_read"] == INTERACTIONS
    example = report["examples"][0]
    assert (example["user_id"], example["file"], example["row"], example["column"]) == (
        "ACE",
        "Sci.test.inter",
        4,
        "item_id:token",
    )
    assert "'9'" in example["detail"]
    written = pd.read_csv(report["quarantine_file"], dtype=str, keep_default_na=False)
    assert list(written["user_id"]) == ["ACE"] and list(written["reason"]) == ["unknown_item"]
    assert "ACE" not in set(data.events["user_id"])

    # Reloading fixed data removes the stale quarantine file, so the disk agrees with the report.
    clean = load_atomic(make(tmp_path / "sci"), quarantine_dir=quarantine)
    assert clean.report["quarantine_file"] is None and not any(quarantine.iterdir())


def test_an_unknown_asin_in_the_sequences_file_is_counted(tmp_path):
    sequences = edit(".sequences.tsv", "ABEL\tB0E B0D B0C", "ABEL\tB0E B0Z B0C")
    folder = make(tmp_path / "sci", sequences_tsv=sequences)
    report = load_atomic(folder).report
    assert report["unknown_item_rows"]["Sci.sequences.tsv"] == 1
    assert report["examples"][0]["user_id"] == "ABEL" and report["examples"][0]["reason"] == "unknown_item"


def test_an_inconsistent_or_incomplete_split_is_reported(tmp_path):
    folder = make(
        tmp_path / "sci",
        # AMOS: valid target 0 contradicts the sequence (3); ABEL: no test row at all;
        # ACE: a training prefix row is missing; a row for user index 7 is not in user2index.
        valid_inter=edit(".valid.inter", "2\t1 0\t3", "2\t1 0\t0") + "7\t1 2\t3\n",
        test_inter=edit(".test.inter", "1\t4 3\t2\n", ""),
        train_inter=edit(".train.inter", "3\t2 4\t0\n", ""),
    )
    data = load_atomic(folder)
    report = data.report
    assert data.users.users == ["AZED"]
    assert report["set_aside_reasons"] == {
        "unknown_user": 1,
        "unknown_item": 0,
        "missing_split": 1,
        "inconsistent_split": 2,
    }
    by_user = {e["user_id"]: e for e in report["examples"]}
    assert by_user["AMOS"]["file"] == "Sci.valid.inter" and by_user["AMOS"]["column"] == "item_id:token"
    assert by_user["ABEL"]["reason"] == "missing_split" and by_user["ABEL"]["file"] == "Sci.test.inter"
    assert by_user["ACE"]["file"] == "Sci.train.inter"
    assert by_user["#7"]["reason"] == "unknown_user"
    assert (report["users_read"], report["users_in_user2index"]) == (5, 4)
    # Every interaction of the sequences file is kept or set aside with its user (user 7 has none there).
    assert report["interactions"] + report["interactions_set_aside"] == report["interactions_read"]
    assert report["interactions"] == 7 and report["interactions_read"] == INTERACTIONS


def test_events_are_fedrec_events_with_ordinal_timestamps(tmp_path):
    data = load_atomic(make(tmp_path / "sci"))
    events = data.events
    assert list(events.columns) == list(EVENTS_COLUMNS) and len(events) == INTERACTIONS
    assert (events["event"] == "purchase").all() and (events["query"] == "").all()
    ace = events[events["user_id"] == "ACE"]
    assert list(ace["item_id"]) == ["B0C", "B0E", "B0A", "B0D", "B0B"]
    assert list((ace["timestamp"] - PLAUSIBLE_SINCE).dt.total_seconds()) == [0, 1, 2, 3, 4]

    data.catalogue.to_csv(tmp_path / "catalogue.csv", index=False)
    events.to_csv(tmp_path / "events.csv", index=False)
    loaded, report = load_events(
        tmp_path / "events.csv", load_catalogue(tmp_path / "catalogue.csv"), tmp_path / "quarantine"
    )
    assert (report.read, report.kept, report.quarantined) == (INTERACTIONS, INTERACTIONS, 0)
    pd.testing.assert_frame_equal(loaded, events)


def test_the_dataset_name_is_found_or_must_be_given(tmp_path):
    folder = make(tmp_path / "two")
    make(folder, name="Other")
    with pytest.raises(SchemaError, match="exactly one"):
        load_atomic(folder)
    assert load_atomic(folder, name="Other").name == "Other"


@pytest.mark.skipif(not REAL.is_dir(), reason=f"{REAL} is not on this machine")
def test_the_real_scientific_dataset_loads_whole():
    data = load_atomic(REAL)
    report = data.report
    assert data.name == "Scientific"
    assert len(data.catalogue) == 4385 and data.catalogue["item_id"].is_unique
    users = data.users
    assert len(users.users) == len(users.valid) == len(users.test) == 8442
    assert all(len(history) >= 1 for history in users.train)
    # README: 59,427 interactions, each kept or set aside with a reason.
    assert report["interactions_read"] == 59427
    assert report["interactions"] + report["interactions_set_aside"] == 59427
    assert report["interactions"] == len(data.events) == sum(len(t) + 2 for t in users.train)
    assert report["users_set_aside"] == 0 and report["interactions_set_aside"] == 0
