"""Regression test for the Ray start-up hang: forking while another thread is in a numpy BLAS call.

Flower evaluates round 0 (numpy matmuls) in the ServerApp thread while the main thread starts Ray,
which forks its daemons. Without `fork_safe_blas` this script's BLAS thread hangs within a few
hundred forks here; with it, 500 forks leave it working.
"""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import os, subprocess, threading
    import numpy as np
    from threadpoolctl import threadpool_info
    from simulations.run import fork_safe_blas

    a = np.random.default_rng(0).random((2000, 384), dtype=np.float32)
    b = np.random.default_rng(1).random((4385, 384), dtype=np.float32)
    stop = threading.Event()
    done = []

    def evaluate():  # what the ServerApp thread does at round 0
        while not stop.is_set():
            a @ b.T
            done.append(1)

    with fork_safe_blas():
        blas = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
        print("blas threads", blas, flush=True)
        worker = threading.Thread(target=evaluate, daemon=True)
        worker.start()
        for _ in range(500):  # what Ray's start-up does (fork + exec, with a preexec_fn)
            subprocess.Popen(["true"], preexec_fn=lambda: None).wait()
        stop.set()
        worker.join(timeout=30)
    if worker.is_alive():
        print("BLAS thread stuck after forking", flush=True)
        os._exit(3)
    print("matmuls", len(done), flush=True)
    """
)


def test_forking_during_numpy_blas_does_not_deadlock_under_fork_safe_blas():
    run = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "blas threads [1" in run.stdout and "blas threads []" not in run.stdout, run.stdout
    matmuls = int(run.stdout.split("matmuls")[1])
    assert matmuls > 0  # the BLAS thread really ran during the forks
