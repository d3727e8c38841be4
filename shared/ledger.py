"""The privacy ledger: an on-disk, append-only, tamper-evident record of every DP release.

Two parties keep one. A client records each round of local DP-SGD whose result left it (unit "user":
its customers are protected). With client-level DP the server records each noised aggregate it
released (unit "client": a whole client's contribution is protected); its ledger lives in the run
folder under `server/`. The ledger is a JSON-lines file,
one release per line, each line hash-chained to the one before it; it is the only contract between a
party and the auditor (`audit/ledgers.py`). ε is never carried over as a running number: every line
records ε *after* that release, computed by `shared.privacy.epsilon` over the DP history of all the
releases before it plus this one, so a restarted client keeps composing from where it was.

A line is the canonical JSON (sorted keys, separators "," and ":") of:

    all `Release` fields, plus
    seq        0-based position in the file
    prev_hash  sha256 hex of the previous line's exact bytes (without its newline); "0" * 64 for the first
    hash       sha256 hex of the canonical JSON of this record without `hash`
    version    LEDGER_VERSION

Verification recomputes every hash and link and checks that each line is byte-for-byte canonical, so a
flipped byte anywhere, a removed, inserted or reordered line, or an edited ε is detected. What a hash
chain cannot show on its own is that the ledger was cut short or rebuilt from scratch: so with every
update a client reports the (seq, sha256) of its release's line, the server records it in its own
receipts (`shared/receipts.py`), and the auditor checks every receipt against the client's file.

Version 2 adds `noise` ("secret": noise and sampling from the OS's secure source; "reproducible": a
test-only seeded build, "not private") and `kind` ("release"). The cap is enforced *by the append*,
under the file lock: a release whose ε would pass `epsilon_cap` is refused and nothing is written, so
two trainers of one client cannot both pass a check and then both spend. A client appends before it
trains (the release is reserved), so a crash mid-round can only over-count, never under-count.

Non-finite ε (a release with noise multiplier 0, i.e. no DP) is written as JSON `Infinity`, as Python's
json module does. Files are created 0600: they are the partner's own state.

Repairs. A crash mid-append leaves a torn last line (bytes after the last newline); the ledger then
refuses every append. Its round was never trained or sent (the append precedes both), so nothing was
spent and nothing receipted. `Ledger.repair` (`fedrec ledger repair PATH`), under the append's lock,
writes the torn bytes, exactly, to a private file beside the ledger (`<ledger>.torn-<seq>-<sha256[:16]>`,
0600, fsynced), then writes over them a chained record of kind "repair", in the same version 2 format:

    all `Repair` fields (kind "repair", torn_sha256, torn_bytes, moved_to: the aside file's name,
    reason), plus seq, prev_hash, hash and version as above

A repair carries no DP release: histories, ε, caps and receipts skip it, but it holds its place in the
chain, so removing or editing it later breaks the chain like any other line. Only a torn last line is
repaired: if any complete line fails verification, the repair refuses and touches nothing. A ledger cut
short by whole lines and then "repaired" still fails the audit: the receipts of the removed lines no
longer match (`audit/ledgers.py`). Readers older than repairs refuse a ledger holding one (wrong fields).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

from shared.durable import fsync_folder, write_bytes
from shared.privacy import NOISE_REPRODUCIBLE, NOISE_SECRET, PRIVACY_UNIT, History, compact, epsilon

LEDGER_VERSION = 2
LEDGER_NAME = "privacy-ledger.jsonl"
GENESIS = "0" * 64
RELEASE = "release"
REPAIR = "repair"
DEFAULT_REPAIR_REASON = "torn last line: an append interrupted before its round was trained or sent"
# A training that outlives one Flower run (a server restarted from its checkpoint, server/checkpoint.py) is
# keyed by its name, sent in each round's train config under this key; a round trained again after a crash
# is keyed `retry_key(training, run)`, so its first reservation stays counted
TRAINING_KEY = "training-id"


def retry_key(training: str, run: str) -> str:
    """The ledger key of a round of `training` trained again, after a crash, by the Flower run `run`."""
    return f"{training}~{run}"


def of_training(key: str, training: str) -> bool:
    """Whether a ledger's run key names a release of this training (first try or retry)."""
    return key == training or key.startswith(f"{training}~")


class LedgerError(RuntimeError):
    """A ledger that cannot be trusted or a release that must not be recorded; names the file and line."""


class BudgetExceeded(LedgerError):
    """The release would pass the ε cap: refused by the append itself, nothing written."""


@dataclass(frozen=True)
class Release:
    """One DP release: a round of local DP-SGD that left a client, or one noised aggregate of the server."""

    client: str
    round: int
    steps: int
    noise_multiplier: float
    sample_rate: float
    max_grad_norm: float
    delta: float
    accountant: str = "prv"  # the accountant the client enforces its cap with
    unit: str = PRIVACY_UNIT  # "user": each client's users are protected; "client" only for a server ledger
    epsilon_prv: float = 0.0  # ε AFTER this release, composed over all earlier ones
    epsilon_rdp: float = 0.0
    epsilon_cap: float | None = None  # the ε cap the client enforces, if any
    run: str = ""  # federation run id; (run, client, round) is unique, so one ledger can span several runs
    noise: str = NOISE_SECRET  # NOISE_REPRODUCIBLE: test-only seeded noise, replayable by anyone
    kind: str = RELEASE

    @property
    def private(self) -> bool:
        """A real guarantee: noise present and unpredictable."""
        return self.noise == NOISE_SECRET and self.noise_multiplier > 0

    @property
    def epsilon(self) -> float:
        """ε under the accountant this release is enforced with."""
        return self.epsilon_rdp if self.accountant == "rdp" else self.epsilon_prv


@dataclass(frozen=True)
class Repair:
    """A torn last line moved aside: no DP release, but chained like one so it cannot vanish silently."""

    torn_sha256: str  # sha256 hex of the exact bytes moved aside
    torn_bytes: int
    moved_to: str  # the aside file's name, beside the ledger (a name, never a path)
    reason: str
    kind: str = REPAIR


_CHAIN_FIELDS = {"seq", "prev_hash", "hash", "version"}
RELEASE_FIELDS = tuple(f.name for f in fields(Release))
RECORD_FIELDS = frozenset(RELEASE_FIELDS) | _CHAIN_FIELDS
REPAIR_FIELDS = tuple(f.name for f in fields(Repair))
REPAIR_RECORD_FIELDS = frozenset(REPAIR_FIELDS) | _CHAIN_FIELDS
_CHAIN_TYPES: dict[str, tuple[type, ...]] = {
    "seq": (int,),
    "prev_hash": (str,),
    "hash": (str,),
    "version": (int,),
}
_REPAIR_TYPES: dict[str, tuple[type, ...]] = {
    "torn_sha256": (str,),
    "torn_bytes": (int,),
    "moved_to": (str,),
    "reason": (str,),
    "kind": (str,),
    **_CHAIN_TYPES,
}
_TYPES: dict[str, tuple[type, ...]] = {
    "client": (str,),
    "round": (int,),
    "steps": (int,),
    "noise_multiplier": (int, float),
    "sample_rate": (int, float),
    "max_grad_norm": (int, float),
    "delta": (int, float),
    "accountant": (str,),
    "unit": (str,),
    "epsilon_prv": (int, float),
    "epsilon_rdp": (int, float),
    "epsilon_cap": (int, float, type(None)),
    "run": (str,),
    "noise": (str,),
    "kind": (str,),
    **_CHAIN_TYPES,
}


def canonical(record: dict[str, Any]) -> bytes:
    """The one serialisation hashes are computed over (and lines are written in)."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def record_hash(record: dict[str, Any]) -> str:
    return sha256(canonical({k: v for k, v in record.items() if k != "hash"}))


def line_hash(record: dict[str, Any]) -> str:
    """sha256 of the record's line as written (its canonical bytes): what the next line's prev_hash holds."""
    return sha256(canonical(record))


def is_release(record: dict[str, Any]) -> bool:
    """A DP release (as opposed to a repair record, which spends nothing)."""
    return record["kind"] == RELEASE


def history_of(records: list[dict[str, Any]]) -> History:
    """The composed DP history (Opacus' (σ, q, steps) entries) of these records' releases, in ledger order."""
    return compact(
        [
            (float(r["noise_multiplier"]), float(r["sample_rate"]), int(r["steps"]))
            for r in records
            if is_release(r) and r["steps"] > 0
        ]
    )


@lru_cache(maxsize=4096)
def _epsilon_cached(history: tuple[tuple[float, float, int], ...], delta: float, accountant: str) -> float:
    if any(sigma <= 0 for sigma, _, _ in history):
        return math.inf  # a release without noise: no DP guarantee at all
    return epsilon(list(history), delta, accountant)


def epsilons(history: History, delta: float) -> tuple[float, float]:
    """(ε_prv, ε_rdp) of a history at δ; memoised (PRV takes ~1 s and audits repeat prefixes)."""
    key = tuple((float(s), float(q), int(n)) for s, q, n in compact(history))
    return _epsilon_cached(key, float(delta), "prv"), _epsilon_cached(key, float(delta), "rdp")


def _check_release(path: Path, **values: Any) -> None:
    def bad(msg: str) -> LedgerError:
        return LedgerError(f"{path}: refusing to record release: {msg}")

    if not isinstance(values["client"], str) or not values["client"]:
        raise bad("client must be a non-empty string")
    for name in ("round", "steps"):
        if isinstance(values[name], bool) or not isinstance(values[name], int) or values[name] < 0:
            raise bad(f"{name} must be a non-negative int, got {values[name]!r}")
    for name in ("noise_multiplier", "max_grad_norm"):
        if not (math.isfinite(values[name]) and values[name] >= 0):
            raise bad(f"{name} must be finite and >= 0, got {values[name]!r}")
    if not 0 < values["sample_rate"] <= 1:
        raise bad(f"sample_rate must be in (0, 1], got {values['sample_rate']!r}")
    if not 0 < values["delta"] < 1:
        raise bad(f"delta must be in (0, 1), got {values['delta']!r}")
    if values["accountant"] not in ("prv", "rdp"):
        raise bad(f"accountant must be 'prv' or 'rdp', got {values['accountant']!r}")
    cap = values["epsilon_cap"]
    if cap is not None and not (isinstance(cap, (int, float)) and math.isfinite(cap) and cap > 0):
        raise bad(f"epsilon_cap must be None or finite and > 0, got {cap!r}")
    if values["noise"] not in (NOISE_SECRET, NOISE_REPRODUCIBLE):
        raise bad(f"noise must be {NOISE_SECRET!r} or {NOISE_REPRODUCIBLE!r}, got {values['noise']!r}")


def parse(data: bytes, path: Path | str) -> list[dict[str, Any]]:
    """Verify a whole ledger's bytes and return its records; LedgerError names the file and line at fault."""
    path = Path(path)
    if not data:
        return []
    lines = data.split(b"\n")
    if lines[-1] != b"":
        raise LedgerError(f"{path}:{len(lines)}: last line has no newline (truncated or interrupted write)")
    lines.pop()
    records: list[dict[str, Any]] = []
    prev, client, seen = GENESIS, None, set()
    for number, raw in enumerate(lines, start=1):
        where = f"{path}:{number}"
        try:
            rec = json.loads(raw.decode("ascii"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise LedgerError(f"{where}: not a JSON record ({exc.__class__.__name__}: {exc})") from None
        if not isinstance(rec, dict):
            raise LedgerError(f"{where}: not a JSON object")
        repair = rec.get("kind") == REPAIR
        expected, types_of = (REPAIR_RECORD_FIELDS, _REPAIR_TYPES) if repair else (RECORD_FIELDS, _TYPES)
        if set(rec) != expected:
            missing, extra = sorted(expected - set(rec)), sorted(set(rec) - expected)
            raise LedgerError(f"{where}: wrong fields (missing {missing}, unexpected {extra})")
        for name, types in types_of.items():
            if isinstance(rec[name], bool) or not isinstance(rec[name], types):
                raise LedgerError(f"{where}: field {name!r} has the wrong type ({rec[name]!r})")
        if rec["version"] != LEDGER_VERSION:
            if rec["version"] == 1:
                raise LedgerError(f"{where}: ledger version 1 (no noise source recorded): not trusted")
            raise LedgerError(f"{where}: ledger version {rec['version']}, this code reads {LEDGER_VERSION}")
        if canonical(rec) != raw:
            raise LedgerError(f"{where}: line is not in canonical form (edited by hand?)")
        if repair:
            _check_repair_record(rec, where)
        elif rec["noise"] not in (NOISE_SECRET, NOISE_REPRODUCIBLE) or rec["kind"] != RELEASE:
            raise LedgerError(f"{where}: unknown noise {rec['noise']!r} or kind {rec['kind']!r}")
        if record_hash(rec) != rec["hash"]:
            raise LedgerError(f"{where}: hash mismatch: the record was altered after it was written")
        if rec["prev_hash"] != prev:
            raise LedgerError(
                f"{where}: chain broken: prev_hash does not match line {number - 1}"
                " (a line was removed, inserted or reordered)"
                if number > 1
                else f"{where}: chain broken: the first line does not start the chain (lines removed?)"
            )
        if rec["seq"] != number - 1:
            raise LedgerError(f"{where}: seq {rec['seq']} where {number - 1} was expected")
        if not repair:
            if client is not None and rec["client"] != client:
                raise LedgerError(f"{where}: release of client {rec['client']!r} in the ledger of {client!r}")
            key = (rec["run"], rec["round"])
            if key in seen:
                raise LedgerError(f"{where}: round {rec['round']} recorded twice (double-counted release)")
            client = rec["client"]
            seen.add(key)
        prev = sha256(raw)
        records.append(rec)
    return records


def _check_repair_record(rec: dict[str, Any], where: str) -> None:
    digest, name = rec["torn_sha256"], rec["moved_to"]
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise LedgerError(f"{where}: repair record: torn_sha256 is not a sha256 hex digest")
    if rec["torn_bytes"] < 1:
        raise LedgerError(f"{where}: repair record: torn_bytes must be >= 1")
    if not name.isprintable() or "/" in name or name in ("", ".", ".."):
        raise LedgerError(f"{where}: repair record: moved_to must be a file name beside the ledger")


def _last_line_hash(data: bytes) -> str:
    """sha256 of the last complete line of verified ledger bytes (GENESIS if none): the next prev_hash."""
    return sha256(data.split(b"\n")[-2]) if data else GENESIS


def _write_fully(fd: int, data: bytes, offset: int | None = None) -> None:
    written = 0
    while written < len(data):
        chunk = data[written:]
        written += os.write(fd, chunk) if offset is None else os.pwrite(fd, chunk, offset + written)


def _read_all(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


class Ledger:
    """A privacy ledger at `path` (JSON lines; created on the first append)."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)

    def _read(self) -> bytes:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return b""
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)  # never read an append half-way
            return _read_all(fd)
        finally:
            os.close(fd)

    def records(self) -> list[dict[str, Any]]:
        """All records, releases and repairs (index = seq), after verifying the whole chain."""
        return parse(self._read(), self.path)

    def releases(self) -> list[Release]:
        """The DP releases, in order (repair records skipped: they spend nothing)."""
        return [Release(**{k: r[k] for k in RELEASE_FIELDS}) for r in self.records() if is_release(r)]

    def history(self) -> History:
        """The composed DP history of all releases (what the next ε composes onto)."""
        return history_of(self.records())

    def head(self) -> tuple[int, str]:
        """(number of lines, hash of the last line's bytes): report it elsewhere to detect truncation."""
        data = self._read()
        return len(parse(data, self.path)), _last_line_hash(data)

    def receipt(self, run: str, round: int) -> tuple[int, str]:
        """(seq, line hash) of the release of (run, round): what the client reports to the server."""
        for rec in self.records():
            if is_release(rec) and rec["run"] == run and rec["round"] == round:
                return rec["seq"], line_hash(rec)
        raise LedgerError(f"{self.path}: no release of round {round} in run {run!r}")

    def run_key(self, training: str, run: str, round: int) -> str:
        """The key to record `round` of `training` under: the training's name, or, if that round is
        already recorded (reserved before a crash, then trained again), its retry key for this run."""
        done = {(r.run, r.round) for r in self.releases()}
        return retry_key(training, run) if (training, round) in done and training != run else training

    def epsilon(self, delta: float) -> tuple[float, float]:
        """(ε_prv, ε_rdp) spent so far, at δ."""
        return epsilons(self.history(), delta)

    def project(
        self, noise_multiplier: float, sample_rate: float, steps: int, delta: float
    ) -> tuple[float, float]:
        """(ε_prv, ε_rdp) if one more release like this were made: check a cap *before* training."""
        new = [(float(noise_multiplier), float(sample_rate), int(steps))] if steps > 0 else []
        return epsilons(self.history() + new, delta)

    def append(
        self,
        client: str,
        round: int,  # the ledger's own word for a federated round
        steps: int,
        noise_multiplier: float,
        sample_rate: float,
        max_grad_norm: float,
        delta: float,
        *,
        epsilon_cap: float | None = None,
        accountant: str = "prv",
        unit: str = PRIVACY_UNIT,
        run: str = "",
        noise: str = NOISE_SECRET,
    ) -> Release:
        """Record one release (before its result leaves the client); returns it with ε after it.

        Refused (LedgerError, nothing written) if the ledger is broken, if this (run, round) is already
        recorded (a restarted client must resume, not double-count), or if it names another client;
        refused with BudgetExceeded if ε (under `accountant`) after it would pass `epsilon_cap`. The
        check and the write happen under one exclusive lock, so concurrent appenders cannot both pass.
        """
        _check_release(
            self.path,
            client=client,
            round=round,
            steps=steps,
            noise_multiplier=noise_multiplier,
            sample_rate=sample_rate,
            max_grad_norm=max_grad_norm,
            delta=delta,
            accountant=accountant,
            epsilon_cap=epsilon_cap,
            noise=noise,
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            data = _read_all(fd)
            records = parse(data, self.path)
            releases = [r for r in records if is_release(r)]
            where = f"{self.path}:{len(records) + 1}"
            if releases and releases[0]["client"] != client:
                raise LedgerError(
                    f"{where}: this ledger belongs to client {releases[0]['client']!r}, not {client!r}"
                )
            if any(r["run"] == run and r["round"] == round for r in releases):
                raise LedgerError(
                    f"{where}: round {round} of client {client!r} is already recorded; a restarted client"
                    " must resume from the next round, not record (and count) a release twice"
                )
            new = [(float(noise_multiplier), float(sample_rate), int(steps))] if steps > 0 else []
            eps_prv, eps_rdp = epsilons(history_of(records) + new, delta)
            spent = eps_rdp if accountant == "rdp" else eps_prv
            if epsilon_cap is not None and spent > epsilon_cap:
                raise BudgetExceeded(
                    f"{where}: round {round} of client {client!r} would bring ε to {spent:.3f} > cap"
                    f" {epsilon_cap:g} (δ={delta:g}, {accountant}); not recorded, so it must not be trained"
                )
            release = Release(
                client=client,
                round=int(round),
                steps=int(steps),
                noise_multiplier=float(noise_multiplier),
                sample_rate=float(sample_rate),
                max_grad_norm=float(max_grad_norm),
                delta=float(delta),
                accountant=accountant,
                unit=unit,
                epsilon_prv=eps_prv,
                epsilon_rdp=eps_rdp,
                epsilon_cap=None if epsilon_cap is None else float(epsilon_cap),
                run=run,
                noise=noise,
            )
            record = {
                **asdict(release),
                "seq": len(records),
                "prev_hash": _last_line_hash(data),
                "version": LEDGER_VERSION,
            }
            record["hash"] = record_hash(record)
            _write_fully(fd, canonical(record) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)  # releases the lock
        if created:
            fsync_folder(self.path.parent)
        return release

    def repair(self, reason: str = DEFAULT_REPAIR_REASON) -> Repair | None:
        """Move a torn last line aside and record that as a chained "repair" entry; None if nothing is torn.

        A torn line is an append that never finished, so its round was never trained or sent: moving it
        aside unblocks the client without hiding a release. Refused (LedgerError, nothing written) if any
        complete line fails verification: a broken chain is evidence, never repaired. Under the append's
        exclusive lock; the torn bytes are durable aside before the ledger changes, and the repair record
        is written over them, so the ledger never holds its complete lines without the record.
        """
        if not isinstance(reason, str) or not reason.strip():
            raise LedgerError(f"{self.path}: a repair needs a reason")
        try:  # not O_APPEND: the record is written at the torn line's offset
            fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            data = _read_all(fd)
            cut = data.rfind(b"\n") + 1  # end of the last complete line
            complete, torn = data[:cut], data[cut:]
            try:
                records = parse(complete, self.path)
            except LedgerError as exc:
                raise LedgerError(
                    f"{exc}; not repaired: a repair moves a torn last line, never mends a chain"
                ) from None
            if not torn:
                return None
            digest = sha256(torn)
            repair = Repair(
                torn_sha256=digest,
                torn_bytes=len(torn),
                moved_to=f"{self.path.name}.torn-{len(records)}-{digest[:16]}",
                reason=reason,
            )
            # private and durable; its name holds the bytes' hash, so a rerun after a crash rewrites the same
            # bytes (the ledger still holds them until the repair record is written over them)
            write_bytes(self.path.parent / repair.moved_to, torn, mode=0o600)
            record = {
                **asdict(repair),
                "seq": len(records),
                "prev_hash": _last_line_hash(complete),
                "version": LEDGER_VERSION,
            }
            record["hash"] = record_hash(record)
            line = canonical(record) + b"\n"
            _write_fully(fd, line, offset=cut)
            os.ftruncate(fd, cut + len(line))  # drop what is left of a longer torn line
            os.fsync(fd)
        finally:
            os.close(fd)  # releases the lock
        return repair


def verify(path: str | os.PathLike[str]) -> tuple[bool, str]:
    """(ok, message) for the ledger at `path`; a broken or tampered chain: False and the line at fault."""
    path = Path(path)
    if not path.is_file():
        return False, f"{path}: no ledger file"
    try:
        records = Ledger(path).records()
    except LedgerError as exc:
        return False, str(exc)
    if not records:
        return True, f"{path}: empty ledger (no releases)"
    repairs = sum(1 for r in records if not is_release(r))
    also = f" and {repairs} repair(s)" if repairs else ""
    return True, f"{path}: chain of {len(records) - repairs} releases{also} verified"
