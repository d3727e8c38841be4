"""What `fedrec simulate` prints: quiet and readable by default, Flower's and Ray's logs with --verbose.

The quiet run is a real `fedrec simulate` process (3 simulated clients, federation mode under SecAgg+,
2 rounds, on a tiny shop): one line per central evaluation, the data lines, the results table, the
privacy lines and the demo, and nothing of Flower's INFO/DEBUG log, of the Ray workers' output or of
Python's warnings. What --verbose changes (Flower's log back, each line once; Ray's workers forward
their output; Ray's logger at INFO) is checked in-process, without a second simulation.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest
from flwr.common.logger import log

from shared.config import RunConfig
from simulations.shop import ShopConfig, write_shop

RUN_CONFIG = "lora-rank=0 target-epsilon=4.0"
PYTHON_WARNING = re.compile(r"\w*Warning: |warnings\.warn\(")  # how Python prints a warning
FLOWER_LINE = re.compile(r"\b(INFO|DEBUG)\b")  # Flower's console lines ('INFO :  [ROUND 1]')


@pytest.fixture(scope="module")
def quiet_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("console")
    catalogue, events = write_shop(root / "data", ShopConfig(n_items=120, n_users=90, seed=5))
    ray_dir = tempfile.mkdtemp(prefix="ray-console-", dir="/tmp")  # short: Ray's socket paths are limited
    command = [
        *(sys.executable, "-m", "fedrec.cli", "simulate", "--out", str(root / "run")),
        *("--catalogue", str(catalogue), "--events", str(events)),
        *("--run-config", f"num-server-rounds=2 {RUN_CONFIG}"),
    ]
    env = {**os.environ, "RAY_TMPDIR": ray_dir, "PYTHONUNBUFFERED": "1"}
    try:
        run = subprocess.run(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, timeout=400
        )
    finally:
        shutil.rmtree(ray_dir, ignore_errors=True)
    assert run.returncode == 0, run.stdout[-4000:]
    return root / "run", run.stdout


def test_quiet_by_default(quiet_run):
    run_dir, out = quiet_run
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
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["config"]["num-server-rounds"] == 2
    assert (run_dir / "run.json").exists()
    evaluated = (run_dir / "server" / "central-eval.jsonl").read_text().splitlines()
    assert [json.loads(line)["round"] for line in evaluated] == [0, 1, 2]


def _flower_lines(verbose: bool) -> tuple[str, str]:
    """What Flower's handlers and the root logger's (Opacus installs one) print of a few Flower lines."""
    from simulations.run import console

    flower, root = io.StringIO(), io.StringIO()
    handlers = (logging.StreamHandler(flower), logging.StreamHandler(root))
    logging.getLogger("flwr").addHandler(handlers[0])
    logging.getLogger().addHandler(handlers[1])
    try:
        with console(verbose=verbose):
            log(logging.INFO, "[ROUND 1]")
            log(logging.WARNING, "DEPRECATED FEATURE: The `run_simulation` function is deprecated and ...")
            log(logging.ERROR, "a real error")
            log(logging.ERROR, "ClientAppException occurred. Message: not taking part in this SecAgg+ round: "
                "client-0: privacy budget: over the cap\nTraceback ...")  # fmt: skip
            log(
                logging.ERROR,
                "Traceback (most recent call last):\n ... not taking part in this SecAgg+ round: x",
            )
    finally:
        logging.getLogger("flwr").removeHandler(handlers[0])
        logging.getLogger().removeHandler(handlers[1])
    return flower.getvalue(), root.getvalue()


def test_quiet_console_keeps_flowers_errors_and_refusals_in_one_line_each():
    flower, root = _flower_lines(verbose=False)
    assert flower.splitlines() == [
        "a real error",
        "a client is not taking part in this SecAgg+ round: client-0: privacy budget: over the cap",
    ]
    assert root == ""  # not a second time through the root logger
    assert (
        logging.getLogger("flwr").propagate and logging.getLogger("flwr").level == logging.DEBUG
    )  # restored


def test_verbose_console_brings_flowers_log_back_once():
    flower, root = _flower_lines(verbose=True)
    assert flower.count("[ROUND 1]") == 1 and "DEPRECATED FEATURE" in flower and "Traceback" in flower
    assert root == ""


@pytest.mark.parametrize("quiet", [True, False], ids=["quiet", "verbose"])
def test_ray_workers_forward_their_output_only_when_verbose(tmp_path, monkeypatch, quiet):
    import flwr.simulation

    from simulations.run import run_flower_simulation

    seen = {}
    monkeypatch.setattr(flwr.simulation, "run_simulation", lambda **kwargs: seen.update(kwargs))
    cfg = RunConfig.from_flower({"run-dir": str(tmp_path), "num-server-rounds": 1})
    with pytest.raises(RuntimeError, match="ended without a result") as failed:
        run_flower_simulation(cfg, 3, quiet=quiet)  # the fake engine writes no run record
    init_args = seen["backend_config"]["init_args"]
    assert init_args["log_to_driver"] is not quiet
    assert init_args["logging_level"] == ("WARNING" if quiet else "INFO")
    assert ("--verbose" in str(failed.value)) is quiet
