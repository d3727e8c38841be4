"""The server's receipts: one line per client reply it received, the outside anchor of every client ledger.

A client's hash chain proves its lines were not edited, but not that the file was not cut short or
rebuilt from scratch with fewer rounds. So the server, a different party, records what each client
reported with each update it used: the client, the round, ε, the noise source and the (seq, line hash)
of the release in the client's ledger. The auditor (`audit/ledgers.py`) checks every receipt against
the client's file: a missing ledger, a missing line (truncation) or a different line hash (rewrite) is
a failure, and so is a receipt of a non-private or reproducible-noise release.

Format (JSON lines, `RUN_DIR/server/receipts.jsonl`, hash-chained like the ledger): the canonical JSON
of the `PrivacyReport` fields, plus `node` (Flower's source node id), `seq`, `prev_hash`, `hash` and
`version`. Verified at load; errors name the file and line.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from shared.ledger import GENESIS, LedgerError, _read_all, canonical, record_hash, sha256
from shared.report import PrivacyReport

RECEIPTS_NAME = "receipts.jsonl"
RECEIPTS_VERSION = 1
_REPORT_FIELDS = tuple(f.name for f in fields(PrivacyReport))
_FIELDS = frozenset(_REPORT_FIELDS) | {"node", "seq", "prev_hash", "hash", "version"}


@dataclass(frozen=True)
class Receipt:
    report: PrivacyReport
    node: int
    seq: int


def parse(data: bytes, path: Path) -> list[Receipt]:
    """Verify the whole file; LedgerError names the file and line at fault."""
    if data and not data.endswith(b"\n"):
        raise LedgerError(f"{path}: last line has no newline (truncated or interrupted write)")
    out, prev = [], GENESIS
    for number, raw in enumerate(data.split(b"\n")[:-1] if data else [], start=1):
        where = f"{path}:{number}"
        try:
            rec = json.loads(raw.decode("ascii"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise LedgerError(f"{where}: not a JSON record ({exc})") from None
        if not isinstance(rec, dict) or set(rec) != _FIELDS:
            raise LedgerError(f"{where}: not a receipt (wrong fields)")
        if rec["version"] != RECEIPTS_VERSION or canonical(rec) != raw or record_hash(rec) != rec["hash"]:
            raise LedgerError(f"{where}: receipt altered after it was written (version, form or hash)")
        if rec["prev_hash"] != prev or rec["seq"] != number - 1:
            raise LedgerError(f"{where}: chain broken (a receipt was removed, inserted or reordered)")
        try:
            report = PrivacyReport.from_record({k: rec[k] for k in _REPORT_FIELDS}, where)
        except ValueError as exc:
            raise LedgerError(str(exc)) from None
        out.append(Receipt(report, int(rec["node"]), int(rec["seq"])))
        prev = sha256(raw)
    return out


class Receipts:
    """The server's receipts file at `path` (created on the first record)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def read(self) -> list[Receipt]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        return parse(data, self.path)

    def record(self, report: PrivacyReport, node: int) -> None:
        """Append one receipt under an exclusive lock, fsynced before the update is aggregated."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            data = _read_all(fd)
            done = parse(data, self.path)
            prev = sha256(data.split(b"\n")[-2]) if done else GENESIS
            rec: dict[str, Any] = {
                **asdict(report),
                "node": int(node),
                "seq": len(done),
                "prev_hash": prev,
                "version": RECEIPTS_VERSION,
            }
            rec["hash"] = record_hash(rec)
            os.write(fd, canonical(rec) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
