"""`fedrec recommend` and `fedrec search` on bad input: arguments are checked before anything loads, every
failure is one line on stderr with a non-zero exit, and a history is read by its content, not its name.

The signed artifact is test_device.py's (its fixtures, imported), so it is built the same way."""
# ruff: noqa: F811 (the imported fixtures are test arguments)

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from test_device import TENTS, catalogue, published  # noqa: F401 (its fixtures, used as arguments below)

from client.device import MAX_K, Device, read_history
from fedrec.cli import main
from shared.schema import MAX_QUERY_CHARS, SchemaError


@pytest.fixture
def no_load(monkeypatch):
    """Make loading the artifact fail loudly: a test using this shows the command never got that far."""

    def refuse(self, *args, **kwargs):
        raise AssertionError("Device was loaded before the arguments were checked")

    monkeypatch.setattr(Device, "__init__", refuse)


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A private HOME: the default device state (~/.fedrec/device) lands there."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def error_of(capsys, argv: list[str], status: int = 2) -> str:
    """Run the command; it must exit `status` with exactly one error line (besides the pinned-key note)."""
    assert main(argv) == status
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if not line.startswith("pinned publisher key")]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"fedrec {argv[0]}: "), lines
    return lines[0]


def recommend(history: str, *more: str) -> list[str]:
    return ["recommend", "--artifact", "absent-index", "--history", history, *more]


# ------------------------------------------------------------------------ refused before anything loads
@pytest.mark.parametrize("k", ["0", "-1", str(MAX_K + 1), "1000000000000"])
def test_k_out_of_range_is_refused_before_the_model_loads(no_load, capsys, k):
    line = error_of(capsys, recommend("i000", "-k", k))
    assert line == f"fedrec recommend: error: k must be between 1 and {MAX_K}, got {k}"
    line = error_of(capsys, ["search", "tent", "--artifact", "absent-index", "-k", k])
    assert line == f"fedrec search: error: k must be between 1 and {MAX_K}, got {k}"


@pytest.mark.parametrize("query", ["", "   ", "\n\t"])
def test_an_empty_query_is_refused(no_load, capsys, query):
    assert "empty query" in error_of(capsys, ["search", query, "--artifact", "absent-index"])


def test_a_huge_query_is_cut_before_tokenizing_and_said_so(published, home, monkeypatch, capsys):
    searched = []
    monkeypatch.setattr(Device, "search", lambda self, query, k=10, **options: searched.append(query) or [])
    query = "ultralight tent " * 700_000  # 11 MB
    assert main(["search", query, "--artifact", str(published)]) == 0
    err = capsys.readouterr().err
    assert f"only its first {MAX_QUERY_CHARS} are searched" in err and "Traceback" not in err
    assert searched == [query.strip()[:MAX_QUERY_CHARS]]


BAD_HISTORIES = {  # file name: (content, what the error says)
    "events.csv": (b"item_id,event\ni001,click\ni002,like\n", "row 2, column 'event': unknown event 'like'"),
    "times.csv": (b"item_id,event,timestamp\ni001,click,yesterday\n", "row 1, column 'timestamp'"),
    "huge_time.csv": (b"item_id,timestamp\ni001,99999999999999999999\n", "row 1, column 'timestamp'"),
    "ragged.csv": (b"item_id,event\ni001,click,extra\n", "row 1: has 3 fields, the header has 2"),
    "empty_id.csv": (b"item_id,event\n,click\n", "row 1, column 'item_id': item_id is empty"),
    "header_only.csv": (b"item_id,event\n", "holds no item id, only a header"),
    "two_users.csv": (b"user_id,item_id\nu1,i001\nu2,i002\n", "holds 2 users"),
    "latin1.txt": (b"i001\ncaf\xe9\n", "line 2 is not valid UTF-8"),
    "commas.txt": (b"i001\ni002,i003\n", "line 2 holds a comma"),
    "empty.txt": (b"", "holds no item id"),
    "comments.txt": (b"# nothing yet\n\n", "holds no item id"),
    "broken.parquet": (b"PAR1 not really", "cannot be read as Parquet"),
    "views.csv": (b"item_id,event\ni001,view\n", "no item engaged with (views do not count)"),
}


@pytest.mark.parametrize("name", sorted(BAD_HISTORIES))
def test_a_bad_history_file_is_one_line_naming_where(no_load, tmp_path, capsys, name):
    content, expected = BAD_HISTORIES[name]
    path = tmp_path / name
    path.write_bytes(content)
    line = error_of(capsys, recommend(str(path)))
    assert line.startswith("fedrec recommend: error: ") and expected in line, line
    assert str(path) in line


@pytest.mark.parametrize(
    "history, expected",
    [
        ("", "empty history"),
        (" , ,", "holds no item id"),
        ("x.parquet", "history file x.parquet: no such file"),
        ("history.csv", "no such file"),
        ("mine/history", "no such file"),
    ],
)
def test_an_empty_or_missing_history_is_refused(no_load, tmp_path, monkeypatch, capsys, history, expected):
    monkeypatch.chdir(tmp_path)
    assert expected in error_of(capsys, recommend(history))


def test_a_history_folder_or_unreadable_file_is_one_line(no_load, tmp_path, monkeypatch, capsys):
    assert "is a directory" in error_of(capsys, recommend(str(tmp_path)))
    mine = tmp_path / "mine.csv"
    mine.write_text("item_id\ni001\n")

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)  # root reads any file: fake the refusal
    assert "Permission denied" in error_of(capsys, recommend(str(mine)))


# --------------------------------------------------------------------------- history read by content
def test_history_files_are_read_by_content_not_name(tmp_path):
    events = pd.DataFrame(
        {
            "user_id": ["u1"] * 3,
            "item_id": ["i005", "i001", "i003"],
            "event": ["purchase", "click", "view"],
            "timestamp": pd.to_datetime(["2024-01-03", "2024-01-01", "2024-01-02"], utc=True),
        }
    )
    events.to_parquet(tmp_path / "events.parquet")
    events.to_parquet(tmp_path / "events.csv")  # Parquet under a CSV name
    for name in ("events.parquet", "events.csv"):
        assert read_history(str(tmp_path / name)) == (["i001", "i005"], {"i005"})

    pd.DataFrame({"item_id": [7.0, 3.0]}).to_parquet(tmp_path / "ids")  # whole floats, as a CSV has them
    assert read_history(str(tmp_path / "ids")) == (["7", "3"], set())
    pd.DataFrame({"item_id": [7.5]}).to_parquet(tmp_path / "fraction.parquet")
    with pytest.raises(SchemaError, match="row 1, column 'item_id': is not text or a whole number"):
        read_history(str(tmp_path / "fraction.parquet"))

    (tmp_path / "events.txt").write_text("item_id,event,timestamp\ni002,click,1704189600\ni001,click,1\n")
    assert read_history(str(tmp_path / "events.txt")) == (["i001", "i002"], set())  # a CSV, by its header
    (tmp_path / "basket.csv").write_text("# my basket\ni003\n\ni001\n")  # text, by its content
    assert read_history(str(tmp_path / "basket.csv")) == (["i003", "i001"], set())

    many = [f"i{i:03d}" for i in range(100)]  # a list longer than a file name may be is still ids
    assert read_history(",".join(many)) == (many, set())


def test_an_unknown_event_names_file_row_and_column(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("item_id,event\ni001,click\ni002,purchase\ni003,\x1b[31mlike\n")
    with pytest.raises(SchemaError) as raised:
        read_history(str(path))
    assert (raised.value.file, raised.value.row, raised.value.column) == (str(path), 3, "event")
    assert "'\\x1b[31mlike'" in str(raised.value)  # escaped, not a terminal command


# ------------------------------------------------------------------------ with the real artifact
def test_unknown_ids_are_counted_on_one_line_and_the_rest_recommended(published, home, capsys):
    history = ",".join([*TENTS, "nope", "B00X", "nope"])
    argv = ["recommend", "--artifact", str(published), "--history", history, "-k", "3", "--json"]
    assert main([*argv, "--exclude", "i004", "gone"]) == 0
    out = capsys.readouterr()
    notes = [line for line in out.err.splitlines() if "not in the" in line]
    assert notes[0].startswith("fedrec recommend: 2 of 6 history item ids are not in the published catalogue")
    assert notes[0].endswith("skipped: 'nope', 'B00X'")
    assert notes[1] == "fedrec recommend: 1 --exclude ids not in the catalogue: 'gone'"
    recs = json.loads(out.out)
    assert len(recs) == 3 and not {r["item_id"] for r in recs} & {*TENTS, "i004"}


def test_a_history_of_unknown_ids_only_is_refused(published, home, capsys):
    argv = ["recommend", "--artifact", str(published), "--history", "nope,B00X"]
    assert "no history item id is in the published catalogue" in error_of(capsys, argv)


def test_nothing_left_to_recommend_is_exit_1_not_empty_output(
    published, home, catalogue, monkeypatch, capsys
):
    monkeypatch.setattr(Device, "model", lambda self: pytest.fail("the model loaded for nothing"))
    ids = catalogue["item_id"].tolist()
    everything = ["recommend", "--artifact", str(published), "--history", ",".join(ids)]
    line = error_of(capsys, everything, status=1)
    assert line.startswith(
        f"fedrec recommend: nothing to recommend: the history and exclusions cover all {len(ids)}"
    )
    half = [
        "recommend",
        "--artifact",
        str(published),
        "--history",
        ",".join(ids[:10]),
        "--exclude",
        *ids[10:],
    ]
    assert "nothing to recommend" in error_of(capsys, half, status=1)


@pytest.mark.parametrize("command", [["search", "tent"], ["recommend", "--history", "i001"]])
def test_a_bad_artifact_or_key_is_one_line(command, published, home, tmp_path, capsys):
    key = ["--publisher-key", str(published.parent / "server" / "publisher.pub")]
    (tmp_path / "file").write_text("not an artifact")
    assert "refused" in error_of(capsys, [*command, "--artifact", str(tmp_path / "file"), *key])
    assert "refused" in error_of(capsys, [*command, "--artifact", str(tmp_path), *key])
    assert "not a PEM public key" in error_of(
        capsys, [*command, "--artifact", str(published), "--publisher-key", str(tmp_path / "file")]
    )
    (home / ".fedrec" / "device").mkdir(parents=True)
    (home / ".fedrec" / "device" / "accepted.json").mkdir()  # the device state, unreadable
    assert "accepted.json" in error_of(capsys, [*command, "--artifact", str(published)])
