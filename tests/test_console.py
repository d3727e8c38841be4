"""What `fedrec simulate` prints: quiet and readable by default, Flower's and Ray's logs with --verbose.

Both runs are real `fedrec simulate` processes (3 simulated clients, federation mode under SecAgg+, on a
tiny shop), started together to keep the test short. Quiet: one line per central evaluation, the data
lines, the results table, the privacy lines and the demo, and nothing of Flower's INFO/DEBUG log, of the
Ray workers' output or of Python's warnings. Verbose: Flower's log, each line once, and the clients'.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

from simulations.shop import ShopConfig, write_shop

RUN_CONFIG = "lora-rank=0 target-epsilon=4.0"
PYTHON_WARNING = re.compile(r"\w*Warning: |warnings\.warn\(")  # how Python prints a warning
FLOWER_LINE = re.compile(r"\b(INFO|DEBUG)\b")  # Flower's console lines ('INFO :  [ROUND 1]')


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("console")
    catalogue, events = write_shop(root / "data", ShopConfig(n_items=120, n_users=90, seed=5))
    data = ["--catalogue", str(catalogue), "--events", str(events)]
    plans = {
        "quiet": [*data, "--run-config", f"num-server-rounds=2 {RUN_CONFIG}"],
        "verbose": [*data, "--run-config", f"num-server-rounds=1 {RUN_CONFIG}", "--verbose", "--no-demo"],
    }
    ray_dirs, procs = [], {}
    try:
        for name, args in plans.items():
            # Ray's own folder, short (its socket paths are limited) and apart from any other run's
            ray_dirs.append(tempfile.mkdtemp(prefix=f"ray-{name}-", dir="/tmp"))
            env = {**os.environ, "RAY_TMPDIR": ray_dirs[-1], "PYTHONUNBUFFERED": "1"}
            command = [sys.executable, "-m", "fedrec.cli", "simulate", "--out", str(root / name), *args]
            procs[name] = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
            )
        outputs = {name: proc.communicate(timeout=400)[0] for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for folder in ray_dirs:
            shutil.rmtree(folder, ignore_errors=True)
    for name, proc in procs.items():
        assert proc.returncode == 0, f"{name} run failed:\n{outputs[name][-4000:]}"
    return root, outputs


def test_quiet_by_default(runs):
    root, outputs = runs
    out = outputs["quiet"]
    lines = out.splitlines()
    assert len(lines) < 80, out
    assert lines[0].startswith("data: 120 items; 3726 events read, 3726 kept, 0 quarantined"), out
    assert any(line.startswith("partitions (iid): users per client [30, 30, 30]") for line in lines)
    evaluations = [line for line in lines if line.startswith("round ")]
    assert [line.split()[1] for line in evaluations] == ["0/2", "1/2", "2/2"], out
    assert all("valid Recall@10" in line and "test" not in line for line in evaluations)
    assert "== results (test: last item per user" in out
    assert re.search(r"^fedrec \(user-level DP \+ SecAgg\+\) +\d\.\d{4} +\d\.\d{4}$", out, re.M), out
    assert "privacy: user-level (ε, δ=1e-05)-DP across the federation" in out
    assert "-- search: 'ultralight tent'" in out  # the demo: recommendations and searches
    assert not FLOWER_LINE.search(out), out
    assert not PYTHON_WARNING.search(out), out
    assert "(pid=" not in out and "ClientAppActor" not in out  # no Ray worker output
    assert "Loading weights" not in out and "\x1b" not in out  # no progress bars, no colours
    # the files are written as before
    summary = json.loads((root / "quiet" / "summary.json").read_text())
    assert summary["config"]["num-server-rounds"] == 2
    assert (root / "quiet" / "run.json").exists()
    evaluated = (root / "quiet" / "server" / "central-eval.jsonl").read_text().splitlines()
    assert [json.loads(line)["round"] for line in evaluated] == [0, 1, 2]


def test_verbose_brings_flowers_and_rays_logs_back(runs):
    _, outputs = runs
    out = outputs["verbose"]
    assert FLOWER_LINE.search(out), out
    assert out.count("[ROUND 1]") == 1, out  # each Flower line once (not again through the root logger)
    assert "ClientAppActor" in out, out  # the Ray workers forward their output
    assert "== results (test: last item per user" in out
