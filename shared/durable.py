"""Durable writes: a reader, or a crash, sees the old file or the new one, never a torn one.

The bytes go to a temp file in the target's folder, which is flushed and fsynced, then renamed over the
target (atomic on POSIX), and the folder is fsynced so that the rename itself survives a crash. On any
failure the temp file is removed and the target is as it was.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_bytes(path: str | Path, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data`, durably; `mode` 0o600 for a party's private state."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def fsync_folder(folder: str | Path) -> None:
    """Make a folder's entries (a file created or renamed in it) survive a crash."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: str | Path, data: Any, mode: int = 0o644) -> None:
    """`data` as indented JSON (encoded before anything is touched), durably."""
    write_bytes(path, (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8"), mode)
