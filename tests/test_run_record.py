"""The run record (RUN_DIR/run.json): round trip, strict loading, atomic writing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from shared.durable import write_json
from shared.run_record import (
    RUN_RECORD,
    RUN_RECORD_VERSION,
    ClientLevelSummary,
    PrivacySummary,
    RoundRecord,
    RunRecord,
    RunRecordError,
)


def make_record() -> RunRecord:
    privacy = PrivacySummary(
        private=True,
        noise="secret",
        guarantees=["user-level DP inside each partner (DP-SGD, Opacus PRV accountant)"],
        secure_aggregation=False,
        unit="user",
        accountant="prv (rdp alongside)",
        delta=1e-5,
        max_grad_norm=1.0,
        target_epsilon={"client-0": None, "client-1": 8.0},
        epsilon_cap={"client-0": 10.0, "client-1": None},
        epsilon={"client-0": 1.25, "client-1": 2.5},
        epsilon_rdp={"client-0": 1.5, "client-1": 2.75},
        noise_multipliers={"client-0": 1.2, "client-1": 1.2},
        sample_rates={"client-0": 0.2, "client-1": 0.2},
        non_private_clients=[],
        client_level=ClientLevelSummary(
            unit="client",
            accountant="flower-rdp",
            clipping="server",
            clipping_norm=0.5,
            noise_multiplier=2.0,
            num_clients=2,
            delta=1e-5,
            releases=2,
            epsilon=30.5,
            epsilon_prv=29.0,
            epsilon_cap=None,
            ledger="/runs/x/server/privacy-ledger.jsonl",
        ),
    )
    rounds = [
        RoundRecord(0, None, None, {"test-recall@10": 0.1}, {}, 0.0),
        RoundRecord(
            1,
            {"unit-weight": 1.0},
            None,
            {"test-recall@10": 0.2, "test-ndcg@10": math.inf},
            {"client-0": 1.0, "client-1": 2.0},
            15.0,
            refused=["node 3: wrong shape"],
        ),
        RoundRecord(2, None, None, None, {}, 15.0, skipped=["budget"], stopped="client-level privacy budget"),
    ]
    return RunRecord(artifact="index/v0002", catalogue="/data/catalogue.csv", privacy=privacy, rounds=rounds)


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    path = tmp_path / RUN_RECORD
    make_record().save(path)
    return path


def rewrite(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_round_trip(saved: Path):
    loaded = RunRecord.load(saved)
    assert loaded == make_record()
    assert loaded.version == RUN_RECORD_VERSION
    assert isinstance(loaded.privacy.client_level, ClientLevelSummary)
    assert isinstance(loaded.rounds[1], RoundRecord) and loaded.rounds[1].refused == ["node 3: wrong shape"]
    assert loaded.artifact_path(saved.parent) == saved.parent / "index" / "v0002"
    data = json.loads(saved.read_text())
    assert list(data) == ["version", "artifact", "catalogue", "privacy", "rounds"]


def test_no_client_level_and_int_for_float(saved: Path):
    def change(data):
        data["privacy"]["client_level"] = None
        data["privacy"]["delta"] = 0  # an int is a number
        data["rounds"][1]["central_eval"]["test-recall@10"] = 1

    rewrite(saved, change)
    loaded = RunRecord.load(saved)
    assert loaded.privacy.client_level is None
    assert loaded.privacy.delta == 0.0 and isinstance(loaded.privacy.delta, float)
    assert loaded.rounds[1].central_eval == {"test-recall@10": 1.0, "test-ndcg@10": math.inf}


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda d: d.pop("artifact"), "artifact"),
        (lambda d: d["privacy"].pop("epsilon_rdp"), "privacy.epsilon_rdp"),
        (lambda d: d["rounds"][2].pop("stopped"), "rounds[2].stopped"),
        (lambda d: d["privacy"]["client_level"].pop("ledger"), "privacy.client_level.ledger"),
        (lambda d: d.pop("version"), "version"),
    ],
)
def test_a_missing_field_is_refused(saved: Path, change, field: str):
    rewrite(saved, change)
    with pytest.raises(RunRecordError, match="is missing") as err:
        RunRecord.load(saved)
    assert str(saved) in str(err.value) and repr(field) in str(err.value)


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda d: d.update(metrics=[]), "metrics"),
        (lambda d: d["privacy"].update(history=[]), "privacy.history"),
        (lambda d: d["rounds"][0].update(loss=0.5), "rounds[0].loss"),
    ],
)
def test_an_extra_field_is_refused(saved: Path, change, field: str):
    rewrite(saved, change)
    with pytest.raises(RunRecordError, match="not part of the format") as err:
        RunRecord.load(saved)
    assert str(saved) in str(err.value) and repr(field) in str(err.value)


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda d: d.update(artifact=3), "artifact"),
        (lambda d: d["privacy"].update(private="yes"), "privacy.private"),
        (lambda d: d["privacy"].update(delta=True), "privacy.delta"),  # a bool is not a number here
        (lambda d: d["privacy"].update(delta=None), "privacy.delta"),
        (lambda d: d["privacy"]["epsilon"].update({"client-1": "2.5"}), "privacy.epsilon.client-1"),
        (lambda d: d["privacy"].update(guarantees="all"), "privacy.guarantees"),
        (lambda d: d["privacy"]["client_level"].update(releases=2.0), "privacy.client_level.releases"),
        (lambda d: d["rounds"][1].update(round="1"), "rounds[1].round"),
        (lambda d: d["rounds"][1].update(refused=[None]), "rounds[1].refused[0]"),
        (lambda d: d["rounds"][0].update(train=[1.0]), "rounds[0].train"),
        (lambda d: d.update(rounds={}), "rounds"),
        (lambda d: d["rounds"].__setitem__(0, 0), "rounds[0]"),
    ],
)
def test_a_wrong_type_is_refused(saved: Path, change, field: str):
    rewrite(saved, change)
    with pytest.raises(RunRecordError, match="must be") as err:
        RunRecord.load(saved)
    assert str(saved) in str(err.value) and repr(field) in str(err.value)


@pytest.mark.parametrize("version", [0, 1, 2, 4, "3", None])
def test_a_wrong_version_is_refused(saved: Path, version):
    rewrite(saved, lambda d: d.update(version=version))
    with pytest.raises(RunRecordError, match="'version'") as err:
        RunRecord.load(saved)
    assert str(saved) in str(err.value)


def test_save_refuses_another_version(tmp_path: Path):
    record = make_record()
    record.version = RUN_RECORD_VERSION + 1
    with pytest.raises(RunRecordError, match="'version'"):
        record.save(tmp_path / RUN_RECORD)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("artifact", ["/abs/index/v0002", "../other/index/v0002", ""])
def test_an_artifact_outside_the_run_folder_is_refused(saved: Path, artifact: str):
    rewrite(saved, lambda d: d.update(artifact=artifact))
    with pytest.raises(RunRecordError, match="'artifact'"):
        RunRecord.load(saved)
    record = make_record()
    record.artifact = artifact
    with pytest.raises(RunRecordError, match="'artifact'"):
        record.save(saved.parent / "other.json")
    assert not (saved.parent / "other.json").exists()


def test_not_a_record(tmp_path: Path):
    with pytest.raises(RunRecordError, match="no run record"):
        RunRecord.load(tmp_path / RUN_RECORD)
    (tmp_path / RUN_RECORD).write_text('{"version": 1, ')
    with pytest.raises(RunRecordError, match="not a JSON run record"):
        RunRecord.load(tmp_path / RUN_RECORD)
    (tmp_path / RUN_RECORD).write_text("[]")
    with pytest.raises(RunRecordError, match="must be an object"):
        RunRecord.load(tmp_path / RUN_RECORD)


def test_save_refuses_what_load_would_refuse(tmp_path: Path):
    record = make_record()
    record.rounds[0].epsilon = {"client-0": "high"}  # type: ignore[dict-item]
    with pytest.raises(RunRecordError, match=r"'rounds\[0\]\.epsilon\.client-0'"):
        record.save(tmp_path / RUN_RECORD)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------- atomic
def test_save_leaves_no_temp_file_and_replaces(saved: Path):
    record = make_record()
    record.rounds = record.rounds[:1]
    record.save(saved)
    assert [p.name for p in saved.parent.iterdir()] == [RUN_RECORD]
    assert RunRecord.load(saved).rounds == record.rounds
    assert saved.stat().st_mode & 0o777 == 0o644


def test_a_write_that_fails_midway_leaves_the_old_record_intact(saved: Path, monkeypatch):
    before = saved.read_bytes()

    def crash(fd):  # the new bytes are in the temp file, then the disk fails before they are durable
        raise OSError("I/O error")

    monkeypatch.setattr("shared.durable.os.fsync", crash)
    record = make_record()
    record.catalogue = "/elsewhere.csv"
    with pytest.raises(OSError, match="I/O error"):
        record.save(saved)
    assert saved.read_bytes() == before
    assert [p.name for p in saved.parent.iterdir()] == [RUN_RECORD]  # the temp file is gone
    monkeypatch.undo()
    assert RunRecord.load(saved) == make_record()


def test_a_failed_rename_leaves_the_old_file_and_no_temp_file(tmp_path: Path, monkeypatch):
    path = tmp_path / "summary.json"
    write_json(path, {"a": 1})

    def refuse(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("shared.durable.os.replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]
