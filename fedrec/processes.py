"""The processes a Flower process started, read from /proc: what stopping a SuperLink or SuperNode must stop.

A SuperNode starts a SuperExec, which starts a ClientApp each round; a SuperExec whose SuperNode exited is
reparented to init but still names it with `--parent-pid`. So a tree here follows both links: the parent
PID and that argument. Linux only (it reads /proc); the deployment tests and the load benchmark use it to
stop, by PID, everything they started.
"""

from __future__ import annotations

from pathlib import Path


def _children() -> tuple[dict[int, list[int]], dict[int, list[int]]]:
    """Each live process's children: by parent PID, and by the `--parent-pid` a SuperExec names."""
    by_ppid: dict[int, list[int]] = {}
    by_argument: dict[int, list[int]] = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        by_ppid.setdefault(ppid, []).append(int(proc.name))
        if b"--parent-pid" in argv[:-1]:
            by_argument.setdefault(int(argv[argv.index(b"--parent-pid") + 1]), []).append(int(proc.name))
    return by_ppid, by_argument


def process_tree(pid: int, alive: bool = True) -> list[int]:
    """`pid` and all its descendants, parents first. For a process that has exited (its PID may be reused)
    only what it left behind: the SuperExecs naming it, and theirs."""
    by_ppid, by_argument = _children()
    found, todo = [], list(by_argument.get(pid, [])) if not alive else [pid]
    while todo:
        current = todo.pop()
        if current not in found:
            found.append(current)
            todo.extend(by_ppid.get(current, []) + by_argument.get(current, []))
    return found
