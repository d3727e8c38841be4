"""Durable writes: a reader, or a crash, sees the old file or the new one, never a torn one.

The bytes go to a temp file in the target's folder, which is flushed and fsynced, then renamed over the
target (atomic on POSIX), and the folder is fsynced so that the rename itself survives a crash. On any
failure the temp file is removed and the target is as it was. `replacing` does the same for a file
written piece by piece (a stream too large to hold in memory).

`exclusive_lock` serialises writers that share a folder (publishers of one artifact index): an
advisory `fcntl.flock` on a lock file that is created once and never removed, released when the
holder closes it or dies, so a crashed writer never leaves the folder locked.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def write_bytes(path: str | Path, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data`, durably; `mode` 0o600 for a party's private state."""
    with replacing(path, mode) as f:
        f.write(data)


@contextmanager
def replacing(path: str | Path, mode: int = 0o644) -> Iterator[IO[bytes]]:
    """A binary file to write `path`'s new content into; it replaces `path`, durably, when the block
    ends without an exception (else it is removed and `path` is as it was)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


@contextmanager
def exclusive_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on the file `path` (created 0o644 if absent) for the block; waits for
    the holder, in this process or another."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


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
