"""The server's record of one federated run: what each round did and which privacy holds at the end.

One file per run, `RUN_DIR/run.json`, written by the ServerApp once the run has ended and its index is
published, and read by whatever reports on the run (`fedrec simulate`, the quality benchmark, the
defaults of `fedrec audit --attack`). It is one JSON object (UTF-8, indented), `RunRecord`:

    version     RUN_RECORD_VERSION (3; 2 added privacy.federation, 3 its trending_sigma and trending_released)
    artifact    the published index folder, relative to the run folder (e.g. "index/v0004")
    catalogue   the catalogue file the server published from, as the server was given it
    privacy     `PrivacySummary`: which guarantees hold and each client's ε at the end of the run
                  private             a real guarantee holds (noise on, and not the test-only seeded noise)
                  noise               "secret", "reproducible" (test only: NOT private) or "none"
                  guarantees          what holds, in words
                  secure_aggregation  SecAgg+ was on
                  unit, accountant    the user-level privacy unit and accountant
                  delta               δ of every ε below
                  max_grad_norm       DP-SGD clipping norm (null: non-private run)
                  target_epsilon, epsilon_cap
                                      client -> value, null where the client set none
                  epsilon, epsilon_rdp, noise_multipliers, sample_rates
                                      client -> value, for the clients that trained privately
                  non_private_clients clients that trained without DP noise
                  client_level        `ClientLevelSummary` (null without client-level DP): clipping,
                                      clipping_norm, noise_multiplier, num_clients, delta, releases,
                                      epsilon (Flower's RDP accountant), epsilon_prv, epsilon_cap (null:
                                      none), unit ("client"), accountant, ledger (the server's ledger file)
                  federation          `FederationSummary` (null unless dp-mode = federation): sigma (of the
                                      sum of the shares), share_sigma, noise_shares (t), sample_rate,
                                      population, offered ("aggregate" with SecAgg+, else "share"), rounds
                                      (aggregated), epsilon (view -> PRV ε of this run's rounds and its
                                      trending release), epsilon_rdp, delta, ledger (the server's ledger
                                      file), trending_sigma (σ_T of round 0's trending release against the
                                      offered view, shared/trending.py; 0: none), trending_released
    rounds      one `RoundRecord` per round, in order; round 0 (the model before training) only when
                the server evaluates centrally
                  round
                  train               mean of the clients' train metrics (null: none came back); a private
                                      run's clients send only their unit weight
                  federated_eval      mean of the clients' own evaluation (null: not run; never in a
                                      private run)
                  central_eval        the server's evaluation (null: no central evaluator)
                  epsilon             client -> ε after this round, for the private clients that released
                  client_level_epsilon  client-level ε after this round (null without client-level DP)
                  refused, skipped    reasons an update was refused / a client did not train
                  stopped             why the round was not started (client-level budget), or null

Loading is strict: every field present with its type and nothing else, `version` equal to
RUN_RECORD_VERSION; anything else is a RunRecordError naming the file and the field at fault (as a path,
e.g. `rounds[2].epsilon.client-0`). An int is accepted where a float is expected. Non-finite numbers
are written as JSON NaN / Infinity, as Python's json module does. Writing is atomic (`shared/durable.py`):
a reader, or a crash, sees the old file or the new one, never a torn one.
"""

from __future__ import annotations

import dataclasses
import json
import types
from dataclasses import asdict, dataclass, field, fields
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any, Union, get_args, get_origin, get_type_hints

from shared.durable import write_json

RUN_RECORD_VERSION = 3
RUN_RECORD = "run.json"


class RunRecordError(ValueError):
    """A run record that cannot be read as this version's format; names the file and the field."""


@dataclass
class ClientLevelSummary:
    """Client-level DP at the end of the run (what `server.client_privacy.ClientLevelDP` accounted)."""

    unit: str
    accountant: str
    clipping: str  # "server" or "client"
    clipping_norm: float
    noise_multiplier: float
    num_clients: int
    delta: float
    releases: int
    epsilon: float  # Flower's RDP accountant
    epsilon_prv: float
    epsilon_cap: float | None
    ledger: str


@dataclass
class FederationSummary:
    """Federation-mode DP at the end of the run (`shared/federation.py`, `server/federation.py`)."""

    sigma: float
    share_sigma: float
    noise_shares: int
    sample_rate: float
    population: int
    offered: str
    rounds: int
    epsilon: dict[str, float]  # view -> ε (PRV) over this run's aggregated rounds
    epsilon_rdp: dict[str, float]
    delta: float
    ledger: str
    trending_sigma: float  # σ_T of round 0's trending release against the offered view (0: none planned)
    trending_released: bool  # round 0 was aggregated (its ε is in `epsilon`) and the list published


@dataclass
class PrivacySummary:
    """Which guarantees hold, and each client's ε composed over every round it trained in."""

    private: bool
    noise: str
    guarantees: list[str]
    secure_aggregation: bool
    unit: str
    accountant: str
    delta: float
    max_grad_norm: float | None
    target_epsilon: dict[str, float | None]
    epsilon_cap: dict[str, float | None]
    epsilon: dict[str, float]
    epsilon_rdp: dict[str, float]
    noise_multipliers: dict[str, float]
    sample_rates: dict[str, float]
    non_private_clients: list[str]
    client_level: ClientLevelSummary | None
    federation: FederationSummary | None = None


@dataclass
class RoundRecord:
    """What one server round did."""

    round: int
    train: dict[str, float] | None
    federated_eval: dict[str, float] | None
    central_eval: dict[str, float] | None
    epsilon: dict[str, float]
    client_level_epsilon: float | None
    refused: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    stopped: str | None = None


@dataclass
class RunRecord:
    """The whole run; `save` and `load` are the only way it goes to or comes from disk."""

    artifact: str  # relative to the run folder
    catalogue: str
    privacy: PrivacySummary
    rounds: list[RoundRecord]
    version: int = RUN_RECORD_VERSION

    def artifact_path(self, run_dir: str | Path) -> Path:
        """The published index folder of this run, whose record lies in `run_dir`."""
        return Path(run_dir) / self.artifact

    def to_dict(self) -> dict[str, Any]:
        """The on-disk form, `version` first."""
        return {"version": self.version, **asdict(self)}

    def save(self, path: str | Path) -> None:
        """Write atomically, after checking that `load` would accept what is written."""
        path = Path(path)
        data = self.to_dict()
        _verify(data, path)
        write_json(path, data)

    @classmethod
    def load(cls, path: str | Path) -> RunRecord:
        """Read and verify `path`; RunRecordError names the file and the field at fault."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RunRecordError(f"{path}: no run record (did the server finish the run?)") from None
        except (UnicodeDecodeError, ValueError) as err:
            raise RunRecordError(f"{path}: not a JSON run record ({err})") from None
        return _verify(data, path)


def _verify(data: Any, path: Path) -> RunRecord:
    """The record in `data`, if it is this version's format.

    The version is checked first (a later one may have other fields); the artifact must lie inside the
    run folder (a relative path that does not climb out of it).
    """
    if isinstance(data, dict) and "version" in data and data["version"] != RUN_RECORD_VERSION:
        raise RunRecordError(
            f"{path}: field 'version' is {data['version']!r}; this fedrec reads {RUN_RECORD_VERSION}"
        )
    record = _parse(RunRecord, data, path, "")
    artifact = PurePosixPath(record.artifact)
    if not record.artifact or artifact.is_absolute() or ".." in artifact.parts:
        raise RunRecordError(
            f"{path}: field 'artifact' must be a path inside the run folder, got {record.artifact!r}"
        )
    return record


# ---------------------------------------------------------------------------------------------- checking
@cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _parse(hint: Any, value: Any, path: Path, where: str, nullable: bool = False) -> Any:
    """`value` checked against the type `hint` (a dataclass, list, dict, union with None or scalar)."""
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise _refuse(path, where, hint, value, nullable)
        names = [f.name for f in fields(hint)]
        prefix = f"{where}." if where else ""
        for name in names:
            if name not in value:
                raise RunRecordError(f"{path}: field {prefix + name!r} is missing")
        extra = sorted(set(value) - set(names))
        if extra:
            raise RunRecordError(f"{path}: field {prefix + extra[0]!r} is not part of the format (extra)")
        return hint(**{n: _parse(_hints(hint)[n], value[n], path, prefix + n) for n in names})
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        (inner,) = [a for a in args if a is not type(None)]
        if value is None and type(None) in args:
            return None
        return _parse(inner, value, path, where, nullable=type(None) in args)
    if origin is list and isinstance(value, list):
        return [_parse(args[0], v, path, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict and isinstance(value, dict):
        return {k: _parse(args[1], v, path, f"{where}.{k}") for k, v in value.items()}
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (bool, int, float, str) and isinstance(value, hint):
        if hint is bool or not isinstance(value, bool):  # a bool is an int to Python, not to the format
            return value
    raise _refuse(path, where, hint, value, nullable)


def _refuse(path: Path, where: str, hint: Any, value: Any, nullable: bool) -> RunRecordError:
    if dataclasses.is_dataclass(hint):
        expected = f"an object ({hint.__name__})"
    else:
        names = {list: "a list", dict: "an object", bool: "true or false", int: "an integer"}
        expected = names.get(get_origin(hint) or hint) or {float: "a number", str: "a string"}[hint]
    got = "null" if value is None else f"{type(value).__name__} {value!r}"
    return RunRecordError(
        f"{path}: field {where or '(top level)'!r} must be {expected}{' or null' if nullable else ''},"
        f" got {got}"[:300]
    )


__all__ = [
    "RUN_RECORD",
    "RUN_RECORD_VERSION",
    "ClientLevelSummary",
    "FederationSummary",
    "PrivacySummary",
    "RoundRecord",
    "RunRecord",
    "RunRecordError",
]
