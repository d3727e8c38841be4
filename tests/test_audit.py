"""`fedrec audit`: verifies every client's ledger, recomputes ε, enforces caps, writes the report."""

from __future__ import annotations

import json
import shutil

import pytest

from audit.ledgers import audit, find_ledgers, main
from shared.ledger import BudgetExceeded, Ledger, sha256
from shared.privacy import epsilon
from shared.receipts import Receipts
from shared.report import PrivacyReport

DELTA = 1e-5
Q = 0.05
SIGMAS = {"client-0": 1.2, "client-1": 0.9}  # client-1 adds less noise: the worst case
ROUNDS, STEPS = 3, 10


def ledger_path(run, name):
    return run / "clients" / name / "privacy-ledger.jsonl"


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    for name, sigma in SIGMAS.items():
        ledger = Ledger(ledger_path(run, name))
        for r in range(1, ROUNDS + 1):
            release = ledger.append(name, r, STEPS, sigma, Q, 1.0, DELTA)
            receive(run, release, *ledger.receipt("", r))
    (run / "partitions").mkdir()  # other run contents are ignored
    return run


def receive(run, release, seq, line, private=True, noise="secret"):
    """What the server does when an update arrives: keep the client's report as a receipt."""
    report = PrivacyReport(
        client=release.client, round=release.round, run=release.run, private=private, noise=noise,
        unit="user", delta=release.delta, epsilon_prv=release.epsilon_prv, epsilon_rdp=release.epsilon_rdp,
        noise_multiplier=release.noise_multiplier, sample_rate=release.sample_rate, steps=release.steps,
        max_grad_norm=release.max_grad_norm, target_epsilon=0.0, epsilon_cap=0.0, ledger_seq=seq,
        ledger_hash=line,
    )  # fmt: skip
    Receipts(run / "server" / "receipts.jsonl").record(report, node=1)


@pytest.fixture
def run(template, tmp_path):
    return shutil.copytree(template, tmp_path / "run")


def expected(name, rounds=ROUNDS, accountant="prv"):
    return epsilon([(SIGMAS[name], Q, STEPS)] * rounds, DELTA, accountant)


def test_audit_of_a_clean_run(run, capsys):
    assert find_ledgers(run) == [ledger_path(run, "client-0"), ledger_path(run, "client-1")]
    result = audit(run)
    assert result["all_chains_ok"] and result["caps_respected"] and result["all_epsilons_recompute"]
    assert result["delta"] == DELTA
    by_name = {c["client"]: c for c in result["clients"]}
    for name, sigma in SIGMAS.items():
        c = by_name[name]
        assert c["ledger"] == f"clients/{name}/privacy-ledger.jsonl"
        assert c["chain_ok"] and not c["errors"]
        assert (c["rounds"], c["steps"]) == (ROUNDS, ROUNDS * STEPS)
        assert (c["noise_multiplier"], c["sample_rate"], c["max_grad_norm"]) == (sigma, Q, 1.0)
        assert (c["delta"], c["unit"], c["accountant"]) == (DELTA, "user", "prv")
        assert c["epsilon_prv"] == pytest.approx(expected(name), rel=1e-9)
        assert c["epsilon_rdp"] == pytest.approx(expected(name, accountant="rdp"), rel=1e-9)
        assert c["epsilon_prv"] < c["epsilon_rdp"]
        per_round = [p["epsilon_prv"] for p in c["epsilon_per_round"]]
        assert per_round == pytest.approx([expected(name, r) for r in range(1, ROUNDS + 1)], rel=1e-9)
        assert c["cap"] is None and c["cap_respected"] is None
    assert result["worst_client"]["client"] == "client-1"
    assert result["worst_client"]["epsilon_prv"] == by_name["client-1"]["epsilon_prv"]
    assert "user-level" in result["what_is_protected"].lower()
    assert "client-level dp (hiding a whole client's participation) is not claimed" in (
        result["what_is_protected"].lower()
    )

    assert main(run) == 0
    out = capsys.readouterr().out
    assert "client-0" in out and "client-1" in out and "TAMPERED" not in out
    assert f"{by_name['client-1']['epsilon_prv']:.3f}" in out
    assert "Worst-case client: client-1" in out


def test_cap_below_one_clients_epsilon_fails(run, capsys):
    cap = (expected("client-0") + expected("client-1")) / 2
    assert main(run, cap=cap) == 1
    result = json.loads((run / "audit" / "audit.json").read_text())
    by_name = {c["client"]: c for c in result["clients"]}
    assert by_name["client-0"]["cap_respected"] is True
    assert by_name["client-1"]["cap_respected"] is False
    assert by_name["client-1"]["cap"] == cap
    assert result["caps_respected"] is False
    assert "exceeds the cap" in capsys.readouterr().out


def test_cap_recorded_by_the_client_is_used(run):
    ledger = Ledger(ledger_path(run, "client-0"))
    before = ledger.path.read_bytes()
    with pytest.raises(BudgetExceeded, match="cap 0.5"):  # the append itself refuses to pass a cap
        ledger.append("client-0", ROUNDS + 1, STEPS, SIGMAS["client-0"], Q, 1.0, DELTA, epsilon_cap=0.5)
    assert ledger.path.read_bytes() == before
    release = ledger.append("client-0", ROUNDS + 1, STEPS, SIGMAS["client-0"], Q, 1.0, DELTA, epsilon_cap=9.0)
    receive(run, release, *ledger.receipt("", ROUNDS + 1))
    by_name = {c["client"]: c for c in audit(run)["clients"]}
    assert by_name["client-0"]["cap"] == 9.0 and by_name["client-0"]["cap_respected"] is True
    assert by_name["client-1"]["cap"] is None
    assert main(run, cap=0.5) == 1  # an explicit cap wins


def test_tampered_ledger_is_reported_not_accepted(run, capsys):
    path = ledger_path(run, "client-1")
    data = bytearray(path.read_bytes())
    data[data.index(b'"epsilon_prv":') + 14] ^= 0x01  # one flipped digit of the first ε
    path.write_bytes(bytes(data))
    result = audit(run)
    by_name = {c["client"]: c for c in result["clients"]}
    assert by_name["client-1"]["chain_ok"] is False and by_name["client-1"]["epsilon_prv"] is None
    assert ":1:" in by_name["client-1"]["message"]
    assert not result["all_chains_ok"]
    assert result["worst_client"]["client"] == "client-0"  # only valid ledgers count
    assert main(run) == 1
    out = capsys.readouterr().out
    assert "TAMPERED" in out and "client-1" in out


def test_rehashed_forgery_fails_the_epsilon_recomputation(run, capsys):
    # A forger who rewrites the whole chain with smaller ε keeps the hashes valid, but not the accounting.
    path = ledger_path(run, "client-1")
    prev, out = "0" * 64, []
    for raw in path.read_bytes().splitlines():
        rec = json.loads(raw)
        rec["epsilon_prv"] /= 10
        rec["prev_hash"] = prev
        body = {k: v for k, v in rec.items() if k != "hash"}
        rec["hash"] = sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
        line = json.dumps(rec, sort_keys=True, separators=(",", ":")).encode()
        prev = sha256(line)
        out.append(line + b"\n")
    path.write_bytes(b"".join(out))
    result = audit(run)
    c = {c["client"]: c for c in result["clients"]}["client-1"]
    assert c["chain_ok"] and len(c["errors"]) == ROUNDS
    assert c["epsilon_prv"] == pytest.approx(expected("client-1"), rel=1e-9)  # the recomputed value
    assert not result["all_epsilons_recompute"]
    assert main(run) == 1
    assert "ε MISMATCH" in capsys.readouterr().out


def test_report_files(run):
    assert main(run) == 0
    folder = run / "audit"
    report = (folder / "report.md").read_text()
    assert "![" in report and "(epsilon.png)" in report
    assert "client-1" in report and "What is protected" in report and "PASSED" in report
    assert (folder / "epsilon.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((folder / "audit.json").read_text())["worst_client"]["client"] == "client-1"


def test_nothing_to_audit(tmp_path, capsys):
    assert main(tmp_path) == 1
    assert "nothing to audit" in capsys.readouterr().out


def _problems(run, capsys):
    assert main(run) == 1
    return capsys.readouterr().out


def test_truncated_ledger_fails_the_audit(run, capsys):
    """Cutting the last round off leaves a chain that verifies; the server's receipt catches it."""
    path = ledger_path(run, "client-1")
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join(lines[:2]) + b"\n")
    assert Ledger(path).records()  # the chain alone is fine
    out = _problems(run, capsys)
    assert "client-1 round 3" in out and "TRUNCATED" in out


def test_ledger_rebuilt_with_fewer_rounds_fails_the_audit(run, capsys):
    """The review's attack: delete the ledger, re-append fewer, cheaper rounds (ε 3.77 -> 2.91)."""
    path = ledger_path(run, "client-0")
    path.unlink()
    rebuilt = Ledger(path)
    for r in (1, 2):
        rebuilt.append("client-0", r, STEPS, SIGMAS["client-0"] * 2, Q, 1.0, DELTA)
    assert audit(run)["all_chains_ok"]  # it verifies on its own
    out = _problems(run, capsys)
    assert "client-0 round 1" in out and "REWRITTEN" in out and "TRUNCATED" in out


def test_missing_ledger_fails_the_audit(run, capsys):
    shutil.rmtree(ledger_path(run, "client-1").parent)
    out = _problems(run, capsys)
    assert "client-1 round 1" in out and "MISSING" in out


def test_non_private_and_seeded_participation_fail_the_audit(run, capsys):
    release = Ledger(ledger_path(run, "client-0")).releases()[0]
    receive(run, release, -1, "", private=False, noise="none")
    out = _problems(run, capsys)
    assert "non-private participation" in out


def test_reproducible_noise_is_labelled_not_private(tmp_path, capsys):
    run = tmp_path / "run"
    ledger = Ledger(ledger_path(run, "client-0"))
    release = ledger.append("client-0", 1, STEPS, 1.0, Q, 1.0, DELTA, noise="reproducible")
    receive(run, release, *ledger.receipt("", 1), noise="reproducible")
    out = _problems(run, capsys)
    assert "not private: reproducible noise" in out
    assert audit(run)["what_is_protected"].startswith("NOT PRIVATE")


def test_missing_or_forged_receipts_fail_the_audit(run, capsys):
    receipts = run / "server" / "receipts.jsonl"
    data = receipts.read_bytes()
    receipts.write_bytes(data.replace(b'"client-1"', b'"client-9"', 1))
    assert "receipts TAMPERED" in _problems(run, capsys)
    receipts.unlink()
    assert "no server receipts" in _problems(run, capsys)


TORN = b'{"accountant":"prv","client":"client-0","del'


def test_repaired_ledger_passes_with_a_notice(run, capsys):
    """A torn last line (a crash mid-append) moved aside is reported, not failed: it spent nothing."""
    ledger = Ledger(ledger_path(run, "client-0"))
    with ledger.path.open("ab") as f:
        f.write(TORN)
    repair = ledger.repair(reason="power cut")
    release = ledger.append("client-0", ROUNDS + 1, STEPS, SIGMAS["client-0"], Q, 1.0, DELTA)
    receive(run, release, *ledger.receipt("", ROUNDS + 1))
    result = audit(run)
    c = {c["client"]: c for c in result["clients"]}["client-0"]
    assert c["chain_ok"] and not c["errors"] and not result["receipts"]["problems"]
    assert c["repairs"] == [
        {"seq": ROUNDS, "torn_sha256": sha256(TORN), "torn_bytes": len(TORN), "moved_to": repair.moved_to,
         "reason": "power cut"}
    ]  # fmt: skip
    assert c["rounds"] == ROUNDS + 1 and c["round_numbers"] == [1, 2, 3, 4]
    assert c["epsilon_prv"] == pytest.approx(expected("client-0", ROUNDS + 1), rel=1e-9)  # ε ignores it
    assert main(run) == 0
    out = capsys.readouterr().out
    assert "NOTICE client-0: ledger repaired at line 4" in out and sha256(TORN) in out and "ERROR" not in out
    report = (run / "audit" / "report.md").read_text()
    assert "PASSED" in report and "## Notices" in report and "power cut" in report


@pytest.mark.parametrize("cut", ["whole lines, then a torn one", "inside the last line"])
def test_truncated_then_repaired_ledger_still_fails_the_audit(run, capsys, cut):
    """Cutting received releases off and calling it a torn line: the repair record cannot take their place."""
    path = ledger_path(run, "client-1")
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0] + TORN if cut.startswith("whole") else b"".join(lines[:2]) + lines[2][:30])
    assert Ledger(path).repair() is not None and audit(run)["all_chains_ok"]  # the chain alone is fine
    out = _problems(run, capsys)
    assert "client-1 round 3" in out and "REWRITTEN" in out
    if cut.startswith("whole"):
        assert "client-1 round 2" in out and "TRUNCATED" in out
