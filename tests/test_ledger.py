"""The client's privacy ledger: ε composes across releases and restarts, and tampering is detected."""

from __future__ import annotations

import json

import pytest

from shared.ledger import (
    GENESIS,
    LEDGER_VERSION,
    BudgetExceeded,
    Ledger,
    LedgerError,
    Release,
    sha256,
    verify,
)
from shared.privacy import epsilon

DELTA = 1e-5
Q = 0.05
# (σ, steps) per round; σ changes so the history does not collapse into one entry.
ROUNDS = [(1.0, 10), (1.2, 10), (1.0, 10), (1.1, 10)]


def write(ledger: Ledger, rounds=ROUNDS, start: int = 1, **kw) -> list[Release]:
    return [
        ledger.append("client-0", r, steps, sigma, Q, 1.0, DELTA, **kw)
        for r, (sigma, steps) in enumerate(rounds, start=start)
    ]


@pytest.fixture
def three(tmp_path):
    path = tmp_path / "clients" / "client-0" / "privacy-ledger.jsonl"
    return path, write(Ledger(path), ROUNDS[:3])


def test_chain_of_three_verifies_and_epsilon_composes(three):
    path, releases = three
    ok, message = verify(path)
    assert ok, message
    records = Ledger(path).records()
    assert [r["seq"] for r in records] == [0, 1, 2]
    assert [r["round"] for r in records] == [1, 2, 3]
    assert records[0]["prev_hash"] == GENESIS
    lines = path.read_bytes().split(b"\n")
    assert records[1]["prev_hash"] == sha256(lines[0]) and records[2]["prev_hash"] == sha256(lines[1])
    for i, (rel, rec) in enumerate(zip(releases, records, strict=True)):
        cumulative = [(sigma, Q, steps) for sigma, steps in ROUNDS[: i + 1]]
        assert rel.epsilon_prv == pytest.approx(epsilon(cumulative, DELTA, "prv"), rel=1e-9)
        assert rel.epsilon_rdp == pytest.approx(epsilon(cumulative, DELTA, "rdp"), rel=1e-9)
        assert rec["epsilon_prv"] == rel.epsilon_prv and rec["epsilon_rdp"] == rel.epsilon_rdp
        assert rec["unit"] == "user" and rec["version"] == LEDGER_VERSION
    assert all(a.epsilon_prv < b.epsilon_prv for a, b in zip(releases, releases[1:], strict=False))
    assert Ledger(path).history() == [(sigma, Q, steps) for sigma, steps in ROUNDS[:3]]


def test_line_layout(three):
    path, _ = three
    first = path.read_bytes().split(b"\n")[0]
    rec = json.loads(first)
    assert set(rec) == {
        "client", "round", "steps", "noise_multiplier", "sample_rate", "max_grad_norm", "delta", "accountant",
        "unit", "epsilon_prv", "epsilon_rdp", "epsilon_cap", "run", "noise", "kind", "seq", "prev_hash",
        "hash", "version",
    }  # fmt: skip
    body = {k: v for k, v in rec.items() if k != "hash"}
    assert rec["hash"] == sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())


def test_restarted_client_continues_the_chain(three, tmp_path):
    path, releases = three
    resumed = Ledger(path).append("client-0", 4, ROUNDS[3][1], ROUNDS[3][0], Q, 1.0, DELTA)
    straight = write(Ledger(tmp_path / "never-stopped.jsonl"))
    assert resumed == straight[3]  # same ε as a ledger that never stopped
    assert resumed.epsilon_prv > releases[-1].epsilon_prv  # composed, never from zero
    assert resumed.epsilon_prv == pytest.approx(
        epsilon([(s, Q, n) for s, n in ROUNDS], DELTA, "prv"), rel=1e-9
    )
    assert verify(path)[0] and len(Ledger(path).records()) == 4


def test_every_flipped_byte_is_detected(three):
    path, _ = three
    data = path.read_bytes()
    starts = [0] + [i + 1 for i, b in enumerate(data) if b == ord("\n")][:-1]
    for pos in range(len(data)):
        line = sum(1 for s in starts if s <= pos)
        path.write_bytes(data[:pos] + bytes([data[pos] ^ 0x01]) + data[pos + 1 :])
        ok, message = verify(path)
        assert not ok, f"flip at byte {pos} (line {line}) went unnoticed"
        assert f":{line}:" in message, message
        with pytest.raises(LedgerError, match=f":{line}:"):
            Ledger(path).records()
    path.write_bytes(data)
    assert verify(path)[0]


def test_removed_and_reordered_lines_are_detected(three):
    path, _ = three
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0] + lines[2])
    ok, message = verify(path)
    assert not ok and ":2:" in message and "removed" in message
    path.write_bytes(lines[0] + lines[2] + lines[1])
    assert not verify(path)[0]
    path.write_bytes(lines[1] + lines[2])  # first line dropped
    ok, message = verify(path)
    assert not ok and ":1:" in message
    with pytest.raises(LedgerError):  # a broken ledger takes no more releases
        Ledger(path).append("client-0", 4, 10, 1.0, Q, 1.0, DELTA)


def test_edited_epsilon_is_detected_even_with_its_own_hash_redone(three):
    path, _ = three
    lines = path.read_bytes().split(b"\n")
    rec = json.loads(lines[1])
    rec["epsilon_prv"] = 0.01
    body = {k: v for k, v in rec.items() if k != "hash"}
    rec["hash"] = sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    lines[1] = json.dumps(rec, sort_keys=True, separators=(",", ":")).encode()
    path.write_bytes(b"\n".join(lines))
    ok, message = verify(path)
    assert not ok and ":3:" in message  # line 3 no longer links to the edited line 2


def test_interrupted_write_is_detected(three):
    path, _ = three
    data = path.read_bytes()
    path.write_bytes(data[:-40])
    ok, message = verify(path)
    assert not ok and ":3:" in message


def test_duplicate_round_is_refused(three):
    path, _ = three
    before = path.read_bytes()
    with pytest.raises(LedgerError, match="already recorded"):
        Ledger(path).append("client-0", 2, 10, 1.2, Q, 1.0, DELTA)
    with pytest.raises(LedgerError, match="belongs to client"):
        Ledger(path).append("client-9", 4, 10, 1.0, Q, 1.0, DELTA)
    with pytest.raises(LedgerError, match="sample_rate"):
        Ledger(path).append("client-0", 4, 10, 1.0, 1.5, 1.0, DELTA)
    assert path.read_bytes() == before  # nothing written


def test_project_equals_what_append_records(three):
    path, _ = three
    ledger = Ledger(path)
    before = path.read_bytes()
    projected = ledger.project(ROUNDS[3][0], Q, ROUNDS[3][1], DELTA)
    assert path.read_bytes() == before  # projecting writes nothing
    release = ledger.append("client-0", 4, ROUNDS[3][1], ROUNDS[3][0], Q, 1.0, DELTA, epsilon_cap=10.0)
    assert projected == (release.epsilon_prv, release.epsilon_rdp)
    assert release.epsilon_cap == 10.0 and Ledger(path).records()[-1]["epsilon_cap"] == 10.0
    assert ledger.epsilon(DELTA) == projected


def test_empty_and_missing_ledger(tmp_path):
    ledger = Ledger(tmp_path / "none.jsonl")
    assert ledger.records() == [] and ledger.history() == []
    assert ledger.project(1.0, Q, 10, DELTA)[1] == pytest.approx(epsilon([(1.0, Q, 10)], DELTA, "rdp"))
    assert not (tmp_path / "none.jsonl").exists()
    assert verify(tmp_path / "none.jsonl")[0] is False


def test_release_without_noise_is_infinite(tmp_path):
    release = Ledger(tmp_path / "l.jsonl").append("client-0", 1, 10, 0.0, Q, 1.0, DELTA)
    assert release.epsilon_prv == float("inf") and release.epsilon_rdp == float("inf")
    assert verify(tmp_path / "l.jsonl")[0]


def _append_one(path: str, round_: int, cap: float) -> str:
    try:
        Ledger(path).append("client-0", round_, 10, 1.0, Q, 1.0, DELTA, epsilon_cap=cap)
        return "ok"
    except BudgetExceeded:
        return "refused"


def test_concurrent_appenders_cannot_pass_the_cap_together(tmp_path):
    """The review's race (two trainers of one client both passed a check-then-act cap: 3.37 > 3.0).
    Four processes append at once; the cap admits two releases; the lock makes that exact."""
    import multiprocessing

    path = tmp_path / "l.jsonl"
    two, three = epsilon([(1.0, Q, 20)], DELTA), epsilon([(1.0, Q, 30)], DELTA)
    cap = (two + three) / 2
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        outcomes = pool.starmap(_append_one, [(str(path), r, cap) for r in range(1, 5)])
    assert sorted(outcomes) == ["ok", "ok", "refused", "refused"]
    assert Ledger(path).epsilon(DELTA)[0] == pytest.approx(two) and two <= cap


# Repairs: a crash mid-append leaves a torn last line; `Ledger.repair` moves it aside, chained and audited.

TORN = b'{"accountant":"prv","client":"client-0","delta":1e-05,"epsilon_cap":null,"epsilon_p'


def _aside_files(folder) -> list:
    return sorted(folder.glob("*.torn-*"))


@pytest.mark.parametrize("torn", [TORN, b"x" * 2000], ids=["short", "longer-than-the-record"])
def test_torn_last_line_is_repaired_and_the_client_goes_on(three, tmp_path, torn):
    path, releases = three
    ledger = Ledger(path)
    spent = ledger.epsilon(DELTA)
    with path.open("ab") as f:
        f.write(torn)  # the crash: an append cut short
    with pytest.raises(LedgerError, match="no newline"):
        ledger.append("client-0", 4, ROUNDS[3][1], ROUNDS[3][0], Q, 1.0, DELTA)

    repair = ledger.repair()
    assert repair is not None and repair.kind == "repair"
    assert (repair.torn_bytes, repair.torn_sha256) == (len(torn), sha256(torn))
    (aside,) = _aside_files(path.parent)
    assert aside.name == repair.moved_to and aside.read_bytes() == torn  # byte for byte
    assert aside.stat().st_mode & 0o777 == 0o600
    ok, message = verify(path)
    assert ok and "1 repair" in message, message
    records = ledger.records()
    assert [r["kind"] for r in records] == ["release"] * 3 + ["repair"]
    lines = path.read_bytes().split(b"\n")
    assert records[3]["seq"] == 3 and records[3]["prev_hash"] == sha256(lines[2]) and lines[-1] == b""
    assert records[3]["torn_sha256"] == sha256(torn) and records[3]["moved_to"] == aside.name
    assert ledger.epsilon(DELTA) == spent  # a repair spends nothing
    assert ledger.releases() == releases and ledger.head() == (4, sha256(lines[3]))

    resumed = ledger.append("client-0", 4, ROUNDS[3][1], ROUNDS[3][0], Q, 1.0, DELTA)
    assert resumed == write(Ledger(tmp_path / "never-torn.jsonl"))[3]  # same ε as a ledger never torn
    assert ledger.receipt("", 4) == (4, sha256(path.read_bytes().split(b"\n")[4]))
    assert verify(path)[0] and [r.round for r in ledger.releases()] == [1, 2, 3, 4]


def test_torn_first_line_is_repaired(tmp_path):
    path = tmp_path / "l.jsonl"
    path.write_bytes(TORN)
    ledger = Ledger(path)
    assert ledger.repair(reason="crash while recording round 1") is not None
    assert [r["kind"] for r in ledger.records()] == ["repair"]
    assert ledger.records()[0]["reason"] == "crash while recording round 1" and ledger.history() == []
    assert (
        ledger.append("client-0", 1, 10, 1.0, Q, 1.0, DELTA) == write(Ledger(tmp_path / "b"), ROUNDS[:1])[0]
    )


def test_repair_of_an_intact_or_missing_ledger_does_nothing(three, tmp_path):
    path, _ = three
    before = path.read_bytes()
    assert Ledger(path).repair() is None
    assert path.read_bytes() == before and not _aside_files(path.parent)
    assert Ledger(tmp_path / "none.jsonl").repair() is None and not (tmp_path / "none.jsonl").exists()


@pytest.mark.parametrize("torn", [b"", TORN], ids=["no-torn-line", "with-torn-line"])
def test_repair_refuses_a_broken_chain(three, torn):
    path, _ = three
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0] + lines[2] + torn)  # line 2 removed: evidence, not a torn line
    before = path.read_bytes()
    with pytest.raises(LedgerError, match=r":2:.*not repaired"):
        Ledger(path).repair()
    assert path.read_bytes() == before and not _aside_files(path.parent)


def test_repair_needs_a_reason(three):
    path, _ = three
    with pytest.raises(LedgerError, match="reason"):
        Ledger(path).repair(reason=" ")


def _rehash(line: bytes, **changes) -> bytes:
    rec = {**json.loads(line), **changes}
    body = {k: v for k, v in rec.items() if k != "hash"}
    rec["hash"] = sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    return json.dumps(rec, sort_keys=True, separators=(",", ":")).encode()


def test_editing_or_removing_a_repair_record_breaks_the_chain(three):
    path, _ = three
    with path.open("ab") as f:
        f.write(TORN)
    Ledger(path).repair()
    Ledger(path).append("client-0", 4, 10, 1.0, Q, 1.0, DELTA)
    good = path.read_bytes()
    lines = good.split(b"\n")
    assert json.loads(lines[3])["kind"] == "repair"
    tampered = {
        "removed": lines[:3] + lines[4:],
        "edited": lines[:3] + [lines[3].replace(b"torn last line", b"nothing at all")] + lines[4:],
        "edited and rehashed": lines[:3] + [_rehash(lines[3], torn_bytes=1)] + lines[4:],
        "made a release": lines[:3] + [_rehash(lines[3], kind="release")] + lines[4:],
    }
    for what, new in tampered.items():
        path.write_bytes(b"\n".join(new))
        ok, message = verify(path)
        assert not ok and (":4:" in message or ":5:" in message), (what, message)
    path.write_bytes(good)
    assert verify(path)[0]


def test_cli_ledger_repair_exit_codes(three, capsys):
    from fedrec.cli import main

    path, _ = three
    assert main(["ledger", "repair", str(path)]) == 0
    assert "nothing to repair" in capsys.readouterr().out
    with path.open("ab") as f:
        f.write(TORN)
    assert main(["ledger", "repair", str(path), "--reason", "power cut"]) == 0
    out = capsys.readouterr().out
    (aside,) = _aside_files(path.parent)
    assert (
        str(aside) in out
        and sha256(TORN) in out
        and f"head: 4 line(s), last line sha256 {Ledger(path).head()[1]}" in out
    )
    assert Ledger(path).records()[-1]["reason"] == "power cut"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[1] + lines[2] + TORN)  # first line removed: broken beyond a torn line
    assert main(["ledger", "repair", str(path)]) == 1
    assert "not repaired" in capsys.readouterr().err
    assert main(["ledger", "repair", str(path.parent / "missing.jsonl")]) == 2
