"""Load benchmark (not a test): N SuperNodes on loopback × 3 rounds of a small shop, as deployed.

One SuperLink with TLS and SuperNode authentication, N registered SuperNodes, each reading its own
partner's log (the README's "Deploy" path), federation mode (the default) without SecAgg+, a small
training budget (one DP step a round, batch 16, history 8). Measured per N:

- wall time per round: between the server's checkpoints of consecutive rounds (server/checkpoint.py is
  written once a round is complete); round 1 counts from `flwr run`, so it includes the ServerApp's start;
- peak RSS per SuperNode: the largest sum of VmRSS over one SuperNode's process tree (the SuperNode, its
  SuperExec and the ClientApp process it starts for each message), sampled every 0.25 s; and the largest
  single process's VmHWM (a ClientApp's own peak), which sampling cannot miss;
- bytes per client per round: the adapter payload each way (float32 arrays of the global trainable
  state, as a reply carries them), without gRPC/TLS framing and the few-hundred-byte privacy report.

N runs only while MemAvailable holds N × the largest per-node peak measured so far (× 1.2): an N that
does not fit is reported with how many nodes would fit in 24 GB, not run into the OOM killer.

    .venv/bin/python -m benchmarks.deployment_load --nodes 5 10 20
writes benchmarks/results/deployment_load.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd

from fedrec.deploy import flower_env, flwr, make_certs, make_keys, start_run, wait_for_run
from fedrec.processes import process_tree
from server.checkpoint import CHECKPOINT_NAME
from shared.durable import write_json
from shared.embedded import iid_split
from simulations.shop import ShopConfig, write_shop

HOST = "127.0.0.1"
ROUNDS = 3
USERS_PER_PARTNER = 30
POPULATION = 40  # each partner's declared bound (≥ its users)
BUDGET = (
    f'num-server-rounds={ROUNDS} local-steps=1 batch-size=16 history-length=8 dp-mode="federation"'
    " secure-aggregation=false"
)
GB = 1 << 30
BIN = Path(sys.executable).parent
RESULTS = Path(__file__).parent / "results"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _status(pid: int, field: str) -> int:
    """A /proc/PID/status field in bytes (VmRSS, VmHWM); 0 when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _stop(roots: list[int]) -> None:
    """SIGTERM every started process tree by PID, SIGKILL what is left after 15 s."""
    pids = {pid for root in roots for pid in process_tree(root)}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 15
        while (
            sig == signal.SIGTERM and time.monotonic() < deadline and any(_status(p, "VmRSS") for p in pids)
        ):
            time.sleep(0.5)


def _available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


class Monitor(threading.Thread):
    """Samples each SuperNode tree's RSS and the server's checkpointed round until stopped."""

    def __init__(self, nodes: list[int], checkpoint: Path) -> None:
        super().__init__(daemon=True)
        self.nodes, self.checkpoint = nodes, checkpoint
        self.peak_tree = dict.fromkeys(nodes, 0)
        self.peak_process = dict.fromkeys(nodes, 0)
        self.rounds: dict[int, float] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for node in self.nodes:
                pids = process_tree(node)
                self.peak_tree[node] = max(self.peak_tree[node], sum(_status(p, "VmRSS") for p in pids))
                self.peak_process[node] = max([self.peak_process[node], *(_status(p, "VmHWM") for p in pids)])
            try:
                done = json.loads(self.checkpoint.read_text())["round"]
                self.rounds.setdefault(done, time.monotonic())
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.25)


def run_load(n: int, work: Path) -> dict[str, Any]:
    """One deployment of `n` SuperNodes × ROUNDS rounds; its measurements."""
    catalogue, events = write_shop(
        work / "shop", ShopConfig(n_items=120, n_users=n * USERS_PER_PARTNER, seed=3)
    )
    log = pd.read_csv(events)
    partners = []
    for index, users in enumerate(iid_split(sorted(log["user_id"].unique()), n, seed=0)):
        folder = work / f"partner-{index}"
        folder.mkdir()
        log[log["user_id"].isin(users)].to_csv(folder / "events.csv", index=False)
        partners.append(folder)
    certs, keys = make_certs(work / "certs"), make_keys(work / "keys", n)
    port = _free_port()
    home = work / "flwr-home"
    home.mkdir()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "load"\n\n[superlink.load]\naddress = "{HOST}:{port}"\n'
        f'root-certificates = "{certs["ca.crt"]}"\n'
    )
    env = flower_env(home)
    started: list[int] = []

    def start(name: str, *args: str) -> subprocess.Popen:
        with open(work / f"{name}.log", "wb") as out:
            proc = subprocess.Popen(
                [str(BIN / args[0]), *args[1:]], env=env, stdout=out, stderr=subprocess.STDOUT
            )
        started.append(proc.pid)
        return proc

    try:
        start(
            "superlink", "flower-superlink",
            "--ssl-ca-certfile", str(certs["ca.crt"]), "--ssl-certfile", str(certs["server.pem"]),
            "--ssl-keyfile", str(certs["server.key"]), "--enable-supernode-auth",
            "--disable-runtime-dependency-installation", "--host", HOST, "--port", str(port),
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while socket.socket().connect_ex((HOST, port)) != 0:
            assert time.monotonic() < deadline, "the SuperLink did not listen within 60 s"
            time.sleep(0.5)
        for index in range(n):
            flwr(["supernode", "register", str(keys[index][1]), "load"], env, timeout=60)
        nodes = []
        for index, partner in enumerate(partners):
            node_config = (
                f'data-path="{partner / "events.csv"}" catalogue="{catalogue}" work-dir="{partner / "state"}"'
                f' client-index={index} client-name="partner-{index}" population={POPULATION}'
            )
            nodes.append(
                start(
                    f"supernode-{index}", "flower-supernode", "--superlink", f"{HOST}:{port}",
                    "--root-certificates", str(certs["ca.crt"]),
                    "--auth-supernode-private-key", str(keys[index][0]),
                    "--node-config", node_config, "--host", HOST, "--port", str(_free_port()),
                ).pid
            )  # fmt: skip
        run_dir = work / "server-run"
        monitor = Monitor(nodes, run_dir / "server" / CHECKPOINT_NAME)
        monitor.start()
        config = (
            f'{BUDGET} min-clients={n} federation-population={n * POPULATION} run-dir="{run_dir}"'
            f' catalogue="{catalogue}"'
        )
        began = time.monotonic()
        run_id = start_run(str(Path.cwd()), "load", [config], env)
        status = wait_for_run(run_id, "load", env, timeout=600 + 60 * n, pending_timeout=120)
        ended = time.monotonic()
        monitor.done.set()
        monitor.join()
    finally:
        _stop(started)
    marks = [began] + [monitor.rounds[r] for r in range(1, ROUNDS + 1)]
    saved = json.loads((run_dir / "server" / CHECKPOINT_NAME).read_text())
    payload = sum(4 * math.prod(a["shape"]) for a in saved["arrays"].values())
    return {
        "nodes": n,
        "status": status,
        "rounds": ROUNDS,
        "round_seconds": [round(b - a, 1) for a, b in zip(marks, marks[1:], strict=False)],
        "total_seconds": round(ended - began, 1),
        "peak_rss_per_supernode_gb": round(max(monitor.peak_tree.values()) / GB, 3),
        "mean_peak_rss_per_supernode_gb": round(sum(monitor.peak_tree.values()) / n / GB, 3),
        "peak_single_process_gb": round(max(monitor.peak_process.values()) / GB, 3),
        "bytes_per_client_per_round": {"up": payload, "down": payload},
    }


def _markdown(results: list[dict[str, Any]], skipped: list[str]) -> str:
    lines = [
        "# Deployment load: N SuperNodes on loopback × 3 rounds (TLS + SuperNode auth)",
        "",
        "`benchmarks/deployment_load.py`: federation mode without SecAgg+, one DP step a round (batch 16,"
        f" history 8), {USERS_PER_PARTNER} users per partner, 120 items; one machine with"
        f" {os.cpu_count()} cores and {_meminfo_total() / GB:.0f} GB. Round 1 includes the ServerApp's"
        " start.",
        "",
        "| N | rounds (s) | total (s) | peak RSS / SuperNode tree (GB, max / mean) | largest process (GB) |"
        " bytes / client / round (up = down) |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['nodes']} | {', '.join(f'{s:.1f}' for s in r['round_seconds'])} |"
            f" {r['total_seconds']:.0f} |"
            f" {r['peak_rss_per_supernode_gb']:.2f} / {r['mean_peak_rss_per_supernode_gb']:.2f} |"
            f" {r['peak_single_process_gb']:.2f} | {r['bytes_per_client_per_round']['up']:,} |"
        )
    lines += ["", *[f"- {s}" for s in skipped]]
    return "\n".join(lines) + "\n"


def _meminfo_total() -> int:
    return int(Path("/proc/meminfo").read_text().split()[1]) * 1024


def main(argv: list[str] | None = None) -> int:
    """Run the load for each N that fits in memory; write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    results, skipped, peak = [], [], 0.0
    for n in args.nodes:
        if peak and n * peak * 1.2 > _available():
            fits = int(24 * GB // (peak * 1.2))
            skipped.append(
                f"N = {n} not run: {n} × {peak / GB:.2f} GB peak per SuperNode (× 1.2) > the"
                f" {_available() / GB:.1f} GB available; about {fits} SuperNodes fit in 24 GB (each ClientApp"
                " process holds torch, MiniLM and the catalogue while it trains)"
            )
            print(skipped[-1], flush=True)
            continue
        with tempfile.TemporaryDirectory(prefix=f"fedrec-load-{n}-") as work:
            result = run_load(n, Path(work))
        print(json.dumps(result), flush=True)
        results.append(result)
        peak = max(peak, result["peak_rss_per_supernode_gb"] * GB)
    args.out.mkdir(parents=True, exist_ok=True)
    saved = args.out / "deployment_load.json"
    if saved.exists():  # keep the sizes measured before and not run now
        earlier = json.loads(saved.read_text())["results"]
        results = sorted(
            [r for r in earlier if r["nodes"] not in args.nodes] + results, key=lambda r: r["nodes"]
        )
    write_json(saved, {"results": results, "skipped": skipped})
    (args.out / "deployment_load.md").write_text(_markdown(results, skipped))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
