"""A real deployment on loopback, as the README's "Deploy" section walks an operator through it.

A SuperLink with TLS and SuperNode authentication, four registered SuperNodes, each reading only its own
partner's log and keeping its own state folder, run a tiny two-round federation launched with `flwr run`;
the server publishes a signed index. The fourth partner's log is unusable: its own node says why and
refuses, every round, and the three others train. A SuperNode whose key is not registered, and one that
will not speak TLS, are refused. In another federation a SuperNode killed mid-round rejoins a later round
and a ServerApp killed after round 1 resumes (one training, both crashes); `flwr run .` as shipped trains
on the embedded shop. Every process a test starts is stopped by the test, by PID (its whole process tree:
the SuperLink starts a SuperExec and the ServerApp in their own sessions), and every wait is bounded.
Only 127.0.0.1 is used. Select with `-m deployment`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

from audit.ledgers import audit
from audit.ledgers import passed as audit_passed
from fedrec.deploy import (
    RunFailed,
    flower_env,
    make_certs,
    make_keys,
    register_node,
    run_logs,
    start_run,
    wait_for_run,
    wait_until_offline,
)
from fedrec.processes import process_tree
from server.checkpoint import CHECKPOINT_NAME
from shared.artifact import load_artifact
from shared.embedded import iid_split
from shared.ledger import LEDGER_NAME, Ledger, of_training, retry_key
from shared.run_record import RUN_RECORD, RunRecord
from shared.signing import run_public_key
from simulations.shop import ShopConfig, write_shop

pytestmark = pytest.mark.deployment

HOST = "127.0.0.1"
PARTNERS = 3
POPULATION = 50  # each partner's declared bound
# the deployment's mechanics, not a privacy mode: per-partner DP-SGD without SecAgg+ (its 3 extra message
# stages would each start a ClientApp process on every SuperNode, every round)
TINY = 'num-server-rounds=2 local-steps=1 batch-size=16 history-length=8 dp-mode="partner"'
TINY += " secure-aggregation=false"
THREE_ROUNDS = TINY.replace("num-server-rounds=2", "num-server-rounds=3")

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


def _started_at(pid: int) -> str | None:
    """The process's start time (field 22 of /proc/PID/stat): a PID reused later has another one."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _signal(pids: dict[int, str | None], sig: signal.Signals) -> None:
    for pid, started in pids.items():
        if started is not None and _started_at(pid) == started:  # still the process found, not a reuse
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass


def _stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM each started process and its descendants by PID, then SIGKILL what is left after 15 s."""
    pids = [pid for proc in procs for pid in process_tree(proc.pid, alive=proc.poll() is None)]
    _stop_pids(pids, procs)


def _stop_pids(roots: list[int], procs: list[subprocess.Popen] = ()) -> None:
    """`_stop` for PIDs: the processes `roots` and their descendants (`procs`: those this test reaps)."""
    pids = {pid: _started_at(pid) for root in set(roots) for pid in process_tree(root)}
    _signal(pids, signal.SIGTERM)
    deadline = time.monotonic() + 15
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    while time.monotonic() < deadline and any(_started_at(p) == s for p, s in pids.items() if s):
        time.sleep(0.5)
    _signal(pids, signal.SIGKILL)
    for proc in procs:
        proc.wait(timeout=10)


@pytest.fixture
def federation(tmp_path):
    """Partners' files, TLS files, keys, a Flower config naming the SuperLink, and the processes' list."""
    catalogue, events = write_shop(tmp_path / "shop", ShopConfig(n_items=120, n_users=90, seed=3))
    log = pd.read_csv(events)
    partners = []
    for index, users in enumerate(iid_split(sorted(log["user_id"].unique()), PARTNERS, seed=0)):
        folder = tmp_path / f"partner-{index}"  # what one partner holds: its log and its state
        folder.mkdir()
        log[log["user_id"].isin(users)].to_csv(folder / "events.csv", index=False)
        partners.append(folder)
    certs = make_certs(tmp_path / "certs")
    # one more for the TLS test's partner with an unusable log; the last one is never registered
    keys = make_keys(tmp_path / "keys", PARTNERS + 2)
    port = _free_port()
    home = tmp_path / "flwr-home"
    home.mkdir()
    (home / "config.toml").write_text(
        '[superlink]\ndefault = "fedrec"\n\n[superlink.fedrec]\n'
        f'address = "{HOST}:{port}"\nroot-certificates = "{certs["ca.crt"]}"\n'
    )
    env = flower_env(home)  # no Ray: a deployment's SuperNodes run each ClientApp as a process
    procs: list[subprocess.Popen] = []
    try:
        yield {
            "tmp": tmp_path,
            "catalogue": catalogue,
            "partners": partners,
            "certs": certs,
            "keys": keys,
            "port": port,
            "env": env,
            "procs": procs,
        }
    finally:
        _stop(procs)


def _start(fed, name: str, *args: str) -> subprocess.Popen:
    with open(fed["tmp"] / f"{name}.log", "wb") as log:  # the process keeps its own copy of the handle
        proc = subprocess.Popen(
            [str(BIN / args[0]), *args[1:]],
            env=fed["env"],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=fed["tmp"],
        )
    fed["procs"].append(proc)
    return proc


def _superlink(fed) -> subprocess.Popen:
    certs = fed["certs"]
    proc = _start(
        fed,
        "superlink",
        "flower-superlink",
        "--ssl-ca-certfile", str(certs["ca.crt"]),
        "--ssl-certfile", str(certs["server.pem"]),
        "--ssl-keyfile", str(certs["server.key"]),
        "--enable-supernode-auth",
        "--disable-runtime-dependency-installation",
        "--host", HOST,
        "--port", str(fed["port"]),
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not _listening(fed["port"]):
        assert proc.poll() is None, (fed["tmp"] / "superlink.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "the SuperLink did not listen within 60 s"
        time.sleep(0.5)
    return proc


def _supernode(fed, index: int, key: int, extra: tuple[str, ...] = (), tls: bool = True) -> subprocess.Popen:
    partner = fed["partners"][index]
    node_config = (
        f'data-path="{partner / "events.csv"}" catalogue="{fed["catalogue"]}" work-dir="{partner / "state"}"'
        f' client-index={index} client-name="partner-{index}" population={POPULATION}'
    )
    # without TLS, no key either: Flower's SuperNode itself refuses authentication over plaintext, and
    # the point here is the SuperLink's side: it speaks nothing but TLS
    key_file = fed["keys"][key][0]
    security = ["--root-certificates", str(fed["certs"]["ca.crt"])] if tls else ["--insecure"]
    security += ["--auth-supernode-private-key", str(key_file)] if tls else []
    return _start(
        fed,
        f"supernode-{index}-key-{key}" + ("" if tls else "-insecure"),
        "flower-supernode",
        "--superlink", f"{HOST}:{fed['port']}",
        *security,
        "--node-config", node_config,
        "--host", HOST,
        "--port", str(_free_port()),  # each SuperNode's own local Runtime API
        *extra,
    )  # fmt: skip


def _register(fed, count: int) -> list[int]:
    """`flwr supernode register` for the first `count` keys, side by side: their node IDs, in key order."""
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda key: register_node(key[1], "fedrec", fed["env"]), fed["keys"][:count]))


def _activations(fed, node_id: int) -> int:
    """How often the SuperLink activated SuperNode `node_id` (registered or offline -> online), as it logs."""
    lines = (fed["tmp"] / "superlink.log").read_text(errors="replace").splitlines()
    return sum(line.rstrip().endswith(f"[Fleet.ActivateNode] Activated node_id={node_id}") for line in lines)


def _completed(run_id: int, connection: str | None, env: dict[str, str], **bounds: float) -> bool:
    """Whether the run completed; if it did not, its log's end is shown (pytest prints it on failure)."""
    try:
        return wait_for_run(run_id, connection, env, **bounds) == "finished:completed"
    except RunFailed:
        print(run_logs(run_id, connection, env)[-8000:])
        raise


def _refused(proc: subprocess.Popen, within: float = 90) -> int:
    """The process's exit status: it must give up (bounded retries) within `within` seconds."""
    try:
        return proc.wait(timeout=within)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{proc.args[0]} still running after {within:.0f} s: not refused")


def test_tls_authenticated_deployment_publishes_an_index_and_a_bad_partner_fails_alone(federation):
    """Four registered SuperNodes; partner 3's log is unusable: its own node says why (file and column),
    every round, and refuses; the three others train both rounds and the index is published. A SuperNode
    whose key is not registered, and one that will not speak TLS, are refused."""
    fed = federation
    started = time.monotonic()
    bad = fed["tmp"] / "partner-3"  # a fourth partner, whose log has no user_id / item_id / timestamp
    bad.mkdir()
    (bad / "events.csv").write_text("when,who\nyesterday,someone\n")
    fed["partners"].append(bad)
    assert len(fed["partners"]) == 4 and len(fed["keys"]) == 5
    _superlink(fed)
    _register(fed, 4)
    for index in range(4):
        _supernode(fed, index, key=index)

    # refused: a key nobody registered; and a SuperNode that will not speak TLS
    retries = ("--max-retries", "2", "--max-wait-time", "20")
    unregistered = _supernode(fed, 0, key=4, extra=retries)
    plaintext = _supernode(fed, 1, key=1, extra=retries, tls=False)

    run_dir = fed["tmp"] / "server-run"
    # min-clients: the SuperNodes online before each round (partner-level DP needs no number of replies),
    # so that all four, the bad one too, are asked every round
    config = f'{TINY} min-clients=4 run-dir="{run_dir}" catalogue="{fed["catalogue"]}"'
    run_id = start_run(str(Path.cwd()), "fedrec", [config], fed["env"])
    assert _completed(run_id, "fedrec", fed["env"], timeout=420, pending_timeout=90)

    record = RunRecord.load(run_dir / RUN_RECORD)
    assert [r.round for r in record.rounds] == [1, 2]
    assert sorted(record.privacy.epsilon) == [f"partner-{i}" for i in range(PARTNERS)]
    published = record.artifact_path(run_dir)
    artifact = load_artifact(published, public_key=run_public_key(published))
    assert published.name == "v0002" and artifact.manifest["round"] == 2
    for index, partner in enumerate(fed["partners"][:PARTNERS]):  # each one's state stays in its own folder
        ledger = Ledger(partner / "state" / LEDGER_NAME)
        assert [r.round for r in ledger.releases()] == [1, 2]
        assert not (run_dir / "clients" / f"partner-{index}").exists()

    for r in record.rounds:  # the bad partner's refusal reaches the server, no more
        assert any("partner-3: not taking part" in reason for reason in r.skipped)
    assert not (bad / "state" / LEDGER_NAME).exists()
    log = (fed["tmp"] / "supernode-3-key-3.log").read_text(errors="replace")
    assert "partner-3: fedrec check: unusable: events.csv, column 'user_id': missing required column" in log

    assert _refused(unregistered) != 0
    assert _refused(plaintext) != 0
    activated = (fed["tmp"] / "superlink.log").read_text().count("[Fleet.ActivateNode] Activated node_id")
    assert activated == 4  # the bad partner's SuperNode joined; neither refused SuperNode ever did
    print(f"deployment: 4 SuperNodes (1 bad) x 2 rounds, TLS + auth, in {time.monotonic() - started:.0f} s")


def _local_superlinks(home: Path) -> list[int]:
    """The local SuperLinks `flwr run` started (detached) for this FLWR_HOME, found by their log path."""
    marker = str(home / "local-superlink").encode()
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"flower-superlink" in argv and marker in argv:
            found.append(int(proc.name))
    return found


def test_flwr_run_as_shipped_trains_on_the_embedded_shop(tmp_path):
    """`flwr run .` with no catalogue configured: the simulation federation derives the embedded shop,
    trains and publishes; a run that fails exits non-zero through `fedrec deploy run`."""
    home = tmp_path / "flwr-home"
    ray = tempfile.mkdtemp(prefix="fedrec-ray-")  # short: Ray's socket paths must fit in 107 bytes
    env = flower_env(home) | {
        "RAY_TMPDIR": ray,
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(_free_port()),  # not the shared default ports
        "FLWR_LOCAL_CONTROL_API_PORT": str(_free_port()),
    }
    run_dir = tmp_path / "run"
    tiny = f'num-server-rounds=1 local-steps=1 batch-size=32 run-dir="{run_dir}"'  # else as shipped
    started = time.monotonic()
    superlinks: list[int] = []
    try:
        run_id = start_run(str(Path.cwd()), None, [tiny], env, ["client-resources-num-cpus=1"])
        superlinks = _local_superlinks(home)
        assert _completed(run_id, None, env, timeout=480, pending_timeout=90)
        record = RunRecord.load(run_dir / RUN_RECORD)
        published = record.artifact_path(run_dir)
        assert load_artifact(published, public_key=run_public_key(published)).manifest["round"] == 1
        for index in range(2):  # both simulated partners trained, each on the share it derived
            ledger = Ledger(run_dir / "clients" / f"client-{index}" / LEDGER_NAME)
            assert [r.round for r in ledger.releases()] == [0, 1]  # round 0: the trending list's release
        assert record.catalogue == str(run_dir / "data" / "catalogue.csv")  # the embedded shop
        took = time.monotonic() - started

        bad = start_run(str(Path.cwd()), None, [f'{tiny} catalogue="{tmp_path / "absent.csv"}"'], env)
        with pytest.raises(RunFailed, match="finished:failed"):
            wait_for_run(bad, None, env, timeout=120, pending_timeout=60)
        assert "absent.csv" in run_logs(bad, None, env)  # the reason, in the run's log
    finally:
        _stop_pids(superlinks + _local_superlinks(home))
        shutil.rmtree(ray, ignore_errors=True)
    print(f"flwr run . (embedded shop, 2 SuperNodes, 1 round): {took:.0f} s")


def _running(pid: int, started: str | None) -> bool:
    """Still that process, and not a zombie its parent has yet to reap."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return _started_at(pid) == started and state not in ("Z", "X")


def _checkpointed(run_dir: Path) -> int:
    """The last round the server checkpointed (0: none yet)."""
    path = run_dir / "server" / CHECKPOINT_NAME
    return json.loads(path.read_text())["round"] if path.exists() else 0


def _wait_for(condition, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"{what} not within {within:.0f} s"
        time.sleep(0.5)


def test_a_supernode_killed_mid_round_rejoins_and_a_server_killed_after_round_1_resumes(federation):
    """One training, two crashes. Three SuperNodes, two needed, three rounds. Partner-2's SuperNode is
    killed (SIGKILL) while it trains round 1, its release reserved in its ledger; the SuperLink reports it
    unavailable once its heartbeats stop, the two others go on. Restarted at once it is refused (the
    SuperLink still counts it online). The ServerApp process is SIGKILLed once round 1 is checkpointed.
    Partner-2 is restarted with the same key and state folder once the SuperLink counts it offline. A new
    run on the same run folder with a tampered checkpoint is refused; with the checkpoint as written it
    resumes at round 2 and ends after the planned 3 rounds: partner-2 trains the later rounds, each
    partner's ledger is one sequence of rounds of one training (partner-2's: round 1 reserved, then each
    round it trained once), ε composed over both runs, the server's receipts matching the ledgers."""
    fed = federation
    started = time.monotonic()
    _superlink(fed)
    superlink_pid = fed["procs"][0].pid
    ids = _register(fed, PARTNERS)
    nodes = [_supernode(fed, index, key=index) for index in range(PARTNERS)]
    run_dir = fed["tmp"] / "server-run"
    config = f'{THREE_ROUNDS} min-clients=2 run-dir="{run_dir}" catalogue="{fed["catalogue"]}"'
    first = start_run(str(Path.cwd()), "fedrec", [config], fed["env"])

    victim = fed["partners"][2] / "state" / LEDGER_NAME
    _wait_for(lambda: victim.exists() and Ledger(victim).releases(), 240, "partner-2 training round 1")
    crashed = {pid: _started_at(pid) for pid in process_tree(nodes[2].pid)}  # SuperNode, SuperExec, ClientApp
    _signal(crashed, signal.SIGKILL)  # a crash: no goodbye to the SuperLink, only missing heartbeats
    nodes[2].wait(timeout=10)
    # its last heartbeat (every ~24 s) holds it online for 60 s: restarted now, it is refused and exits
    too_soon = _supernode(fed, 2, key=2)
    assert _refused(too_soon, within=60) != 0
    refusal = (fed["tmp"] / "supernode-2-key-2.log").read_text(errors="replace")
    assert "[code: 2004] Failed to activate SuperNode" in refusal  # not retried: exit code 305

    # round 1 ends once the SuperLink answers for partner-2 as unavailable; then the server dies
    _wait_for(lambda: _checkpointed(run_dir) >= 1, 300, "round 1 checkpointed")
    serverapps = {
        pid: _started_at(pid)
        for pid in process_tree(superlink_pid)
        if b"flwr-serverapp" in Path(f"/proc/{pid}/cmdline").read_bytes()
    }
    assert serverapps, "no ServerApp process found"
    _signal(serverapps, signal.SIGKILL)  # the server dies: no goodbye, no last checkpoint
    _wait_for(lambda: not any(_running(p, s) for p, s in serverapps.items()), 10, "the ServerApp gone")
    assert _checkpointed(run_dir) == 1  # killed before round 2 was checkpointed (3 s a round at least)

    wait_until_offline(ids[2], "fedrec", fed["env"], timeout=150)
    _supernode(fed, 2, key=2)  # the same key, the same node-config and state folder

    path = run_dir / "server" / CHECKPOINT_NAME
    written = path.read_bytes()
    tampered = json.loads(written)
    tampered["round"] = 0  # e.g. to train round 1 again
    path.write_text(json.dumps(tampered))
    refused = start_run(str(Path.cwd()), "fedrec", [config], fed["env"])
    with pytest.raises(RunFailed, match="finished:failed"):
        wait_for_run(refused, "fedrec", fed["env"], timeout=240, pending_timeout=90)
    assert f"{path}: field 'signature' does not verify" in run_logs(refused, "fedrec", fed["env"])
    path.write_bytes(written)

    # partner-2 back before the resumed run's first round: it rejoins the later rounds of the training
    _wait_for(lambda: _activations(fed, ids[2]) == 2, 60, "partner-2 back online")
    resumed = start_run(str(Path.cwd()), "fedrec", [config], fed["env"])
    assert _completed(resumed, "fedrec", fed["env"], timeout=420, pending_timeout=90)
    assert f"resuming training {first} after round 1 of 3" in run_logs(resumed, "fedrec", fed["env"])
    record = RunRecord.load(run_dir / RUN_RECORD)
    assert [r.round for r in record.rounds] == [1, 2, 3]
    assert sorted(record.rounds[0].epsilon) == ["partner-0", "partner-1"]  # round 1: restored, no partner-2
    assert all({"partner-0", "partner-1"} <= set(r.epsilon) for r in record.rounds)
    saved = json.loads(path.read_text())
    assert (saved["training"], saved["run"], saved["round"], saved["finished"]) == (
        str(first),
        str(resumed),
        3,
        True,
    )
    assert record.artifact_path(run_dir).name == "v0003"
    ledgers = [partner / "state" / LEDGER_NAME for partner in fed["partners"]]
    for name, ledger in zip(("partner-0", "partner-1"), ledgers[:2], strict=True):
        releases = Ledger(ledger).releases()
        assert all(of_training(r.run, str(first)) for r in releases)  # one training, across two runs
        assert [r.round for r in releases if r.run == str(first)] == [1, 2, 3]  # round 1 recorded once
        # a round 2 reserved before the kill stays counted; its retry is keyed by the resumed run
        assert {r.run for r in releases} <= {str(first), retry_key(str(first), str(resumed))}
        spent = Ledger(ledger).epsilon(1e-5)[0]
        assert record.privacy.epsilon[name] == pytest.approx(spent)  # composed over both runs
        assert record.rounds[0].epsilon[name] == pytest.approx(releases[0].epsilon_prv)
        assert releases[0].epsilon_prv < spent
    releases = Ledger(victim).releases()
    rounds = [r.round for r in releases]
    assert all(r.run == str(first) for r in releases)  # one training, its ledger intact across the crashes
    assert rounds[0] == 1 and rounds == sorted(set(rounds))  # round 1 reserved, then each round once
    assert rounds[1:] and rounds[-1] == 3, f"partner-2 did not rejoin: its ledger has rounds {rounds}"
    assert [r.round for r in record.rounds[1:] if "partner-2" in r.epsilon] == rounds[1:]
    receipts = run_dir / "server" / "receipts.jsonl"  # those of both runs match the partners' ledgers
    assert audit_passed(audit(fed["tmp"], ledgers=ledgers, receipts=receipts))
    took = time.monotonic() - started
    print(f"deployment: a SuperNode killed and rejoining, the server killed and resumed: {took:.0f} s")
