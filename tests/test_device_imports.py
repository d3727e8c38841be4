"""The device is its own party (issue 15, part 10): client/device/ imports only shared/ and itself (and
the standard library and third-party packages), never the partner's training client, the server, the
simulations or the command line, so that a phone or a shop backend can ship it alone."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "client" / "device"
PROJECT = ("client", "server", "simulations", "fedrec", "benchmarks", "audit", "shared", "tests")
ALLOWED = ("shared", "client.device")
TRAINING_ONLY = ("opacus", "flwr", "ray")


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in a file, relative ones resolved within client.device."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.lineno, f"client.device.{node.module or ''}" if node.level else node.module))
    return found


def test_the_device_is_a_package_of_its_own():
    assert (PACKAGE / "__init__.py").is_file()
    assert not (ROOT / "client" / "device.py").exists()
    assert {"runtime.py", "session.py"} <= {p.name for p in PACKAGE.glob("*.py")}


def test_device_modules_import_only_shared_and_the_device():
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for line, module in imports(path)
        if module.split(".")[0] in PROJECT
        and not any(module == allowed or module.startswith(allowed + ".") for allowed in ALLOWED)
    ]
    assert not wrong, wrong


def test_client_package_init_imports_nothing():
    """Importing client.device runs client/__init__.py first: it must not pull the training client in."""
    assert imports(ROOT / "client" / "__init__.py") == []


def test_importing_the_device_loads_nothing_of_the_training_side():
    script = (
        "import json, sys, client.device\n"
        f"ours = sorted(m for m in sys.modules if m.split('.')[0] in {PROJECT!r})\n"
        f"print(json.dumps([ours, [m for m in {TRAINING_ONLY!r} if m in sys.modules]]))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    loaded, training = json.loads(run.stdout.strip().splitlines()[-1])
    assert training == []
    assert all(m == "client" or m.startswith(("client.device", "shared")) for m in loaded), loaded
