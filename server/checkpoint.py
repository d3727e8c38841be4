"""The server's checkpoint: what a restarted ServerApp needs to resume a training at its next round.

A Flower run ends with its ServerApp: a server killed mid-training (or its machine rebooted) starts
again as a new Flower run with a new run id. Without a checkpoint it would start from round 1, train
rounds it already trained and count ε from zero. So after every completed round the ServerApp writes
one file, `RUN_DIR/server/checkpoint.json`, atomically (`shared/durable.py`: a crash leaves the old
checkpoint or the new one), and a server started on the same run folder resumes from it
(`server/app.py`).

The training. A training is named once, by the run id of the Flower run that started it (`training`).
The server sends it to the clients in each round's train config (`shared.ledger.TRAINING_KEY`);
clients and the server key their privacy ledgers by it, not by the Flower run id, with the absolute
round, so every ledger sees one sequence of rounds 1..N across restarts: no round is recorded twice,
and a new run id is never mistaken for a new budget (ε always composes over a party's whole ledger).
A round that was interrupted by the crash (a party reserved its release, the server never checkpointed
the round) is trained again; its first reservation stays counted and the retry is ledgered as
`<training>~<run>` (`shared.ledger.retry_key`): over-counting, never under-counting.

Format: one JSON object (UTF-8), every field required, nothing else:

    version           CHECKPOINT_VERSION (3; 1 without `trending` and 2 without `optimizer.average` are
                      refused: resume them with the fedrec that wrote them)
    training          the training's name (see above)
    run               the Flower run id of the server that wrote this checkpoint
    round             the last completed round (0: none yet); training resumes at round + 1
    finished          true once the index of the last round is published and run.json written: a
                      finished training is never trained again, nor restarted from round 1
    config            the run config less this machine's paths (`RunConfig.without_paths`): a server
                      started with any other value is refused, never silently mixed
    catalogue_sha256  sha256 of the catalogue file's bytes: another catalogue is refused
    arrays            the global trainable tensors after `round`: name -> ARRAY
    optimizer         federation mode's server Adam (`server/federation.py`), null otherwise:
                        aggregated  the server step's releases in this training (a round trained
                                    again after a crash counts twice: both were seen)
                        state       parameter name -> {"step": number, "exp_avg": ARRAY, "exp_avg_sq": ARRAY}
                        average     parameter name -> ARRAY: the moving average of the steps' models
                                    that the server evaluates and publishes (`model-average-decay`)
    reports           round -> the privacy reports received that round (`shared/report.py`, as sent):
                      each client's ε composes over its whole ledger, so the last report of each is its ε
    trending          the trending list released in round 0 (`shared/trending.py`, its JSON text), null
                      without one: a resumed training publishes it and never releases it again
    history           round -> what the run record keeps of it: train, federated_eval, central_eval,
                      refused, skipped, stopped (as `shared/run_record.RoundRecord`); round 0 only with
                      central evaluation
    signature         Ed25519 signature, hex, by the run's publisher key (`RUN_DIR/server/publisher.key`,
                      readable by the server only), over CHECKPOINT_DOMAIN + the canonical JSON (sorted
                      keys, separators "," and ":", ASCII) of every other field

    ARRAY = {"dtype": "float32", "shape": [int, ...], "data": base64 of the little-endian C-order bytes}

Rounds are JSON object keys, so decimal strings. Loading verifies, in this order, and refuses with a
`CheckpointError` naming the file and the field: the fields and their types, the version, the
signature (a checkpoint edited by hand, or by anyone without the publisher key, is refused), then the
match with the starting server: its config, its catalogue's hash, its adapters' names and shapes; with
federation DP the server's ledger must hold exactly `optimizer.aggregated` releases of this training up
to `round` (a checkpoint rolled back or forward against the ledger is refused).
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shared import signing
from shared.durable import write_bytes
from shared.ledger import canonical
from shared.report import PrivacyReport
from shared.trending import Trending, TrendingError

CHECKPOINT_NAME = "checkpoint.json"
CHECKPOINT_VERSION = 3
CHECKPOINT_DOMAIN = b"fedrec server checkpoint v1\0"  # a checkpoint signature is never a manifest's
HISTORY_KEYS = ("train", "federated_eval", "central_eval", "refused", "skipped", "stopped")
_FIELDS: dict[str, type | tuple[type, ...]] = {
    "version": int,
    "training": str,
    "run": str,
    "round": int,
    "finished": bool,
    "config": dict,
    "catalogue_sha256": str,
    "arrays": dict,
    "optimizer": (dict, type(None)),
    "reports": dict,
    "history": dict,
    "trending": (str, type(None)),
    "signature": str,
}


class CheckpointError(ValueError):
    """A checkpoint that must not be resumed from; names the file and the field at fault."""


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _encode(array: np.ndarray) -> dict[str, Any]:
    a = np.ascontiguousarray(array, dtype="<f4")
    return {"dtype": "float32", "shape": list(a.shape), "data": base64.b64encode(a.tobytes()).decode()}


def _decode(raw: Any, where: str) -> np.ndarray:
    if not isinstance(raw, dict) or set(raw) != {"dtype", "shape", "data"}:
        raise CheckpointError(f"{where}: not an array (dtype, shape, data)")
    shape = raw["shape"]
    if (
        raw["dtype"] != "float32"
        or not isinstance(shape, list)
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
    ):
        raise CheckpointError(f"{where}: dtype must be float32 and shape a list of sizes")
    try:
        data = base64.b64decode(raw["data"], validate=True)
    except (TypeError, ValueError):
        raise CheckpointError(f"{where}: data is not base64") from None
    if len(data) != 4 * int(np.prod(shape, dtype=np.int64)):
        raise CheckpointError(f"{where}: {len(data)} bytes do not hold a float32 array of shape {shape}")
    return np.frombuffer(data, dtype="<f4").reshape(shape).astype(np.float32)


@dataclass
class Checkpoint:
    """The state of one training after its last completed round (module docstring)."""

    training: str
    run: str
    round: int
    config: dict[str, Any]
    catalogue_sha256: str
    arrays: dict[str, np.ndarray]
    # {"aggregated": n, "state": {name: {step, exp_avg, exp_avg_sq}}, "average": {name: array}}
    optimizer: dict[str, Any] | None = None
    reports: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    history: dict[int, dict[str, Any]] = field(default_factory=dict)
    finished: bool = False
    trending: Trending | None = None

    def _body(self) -> dict[str, Any]:
        optimizer = None
        if self.optimizer is not None:
            optimizer = {
                "aggregated": int(self.optimizer["aggregated"]),
                "state": {
                    name: {
                        "step": float(s["step"]),
                        "exp_avg": _encode(s["exp_avg"]),
                        "exp_avg_sq": _encode(s["exp_avg_sq"]),
                    }
                    for name, s in self.optimizer["state"].items()
                },
                "average": {name: _encode(a) for name, a in self.optimizer["average"].items()},
            }
        return {
            "version": CHECKPOINT_VERSION,
            "training": self.training,
            "run": self.run,
            "round": int(self.round),
            "finished": bool(self.finished),
            "config": self.config,
            "catalogue_sha256": self.catalogue_sha256,
            "arrays": {name: _encode(a) for name, a in self.arrays.items()},
            "optimizer": optimizer,
            "reports": {str(r): reports for r, reports in sorted(self.reports.items())},
            "history": {str(r): h for r, h in sorted(self.history.items())},
            "trending": None if self.trending is None else self.trending.to_json().decode(),
        }

    def save(self, path: str | Path, key: signing.Ed25519PrivateKey) -> None:
        """Sign and write atomically (0600: the adapters before publication are the server's)."""
        body = self._body()
        body["signature"] = signing.sign(key, CHECKPOINT_DOMAIN + canonical(body)).hex()
        write_bytes(path, canonical(body) + b"\n", mode=0o600)

    @classmethod
    def load(cls, path: str | Path, key: signing.Ed25519PrivateKey) -> Checkpoint:
        """Read and verify format and signature (not yet the match with a server: `check_matches`)."""
        path = Path(path)
        try:
            raw = json.loads(path.read_bytes().decode("ascii"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise CheckpointError(f"{path}: not a checkpoint (unreadable JSON: {exc})") from None
        if isinstance(raw, dict) and raw.get("version", CHECKPOINT_VERSION) != CHECKPOINT_VERSION:
            raise CheckpointError(
                f"{path}: field 'version' is {raw['version']!r}, this server reads {CHECKPOINT_VERSION}"
            )
        if not isinstance(raw, dict) or set(raw) != set(_FIELDS):
            got = set(raw) if isinstance(raw, dict) else set()
            missing, extra = sorted(set(_FIELDS) - got), sorted(got - set(_FIELDS))
            raise CheckpointError(f"{path}: wrong fields (missing {missing}, unexpected {extra})")
        for name, kind in _FIELDS.items():
            if (isinstance(raw[name], bool) and kind is not bool) or not isinstance(raw[name], kind):
                raise CheckpointError(f"{path}: field 'checkpoint.{name}' has the wrong type")
        body = {k: v for k, v in raw.items() if k != "signature"}
        try:
            signature = bytes.fromhex(raw["signature"])
        except ValueError:
            signature = b""
        if not signing.verify(key.public_key(), signature, CHECKPOINT_DOMAIN + canonical(body)):
            raise CheckpointError(
                f"{path}: field 'signature' does not verify under the run's publisher key: the checkpoint"
                " was altered after the server wrote it (or written by another server); not resuming"
            )
        optimizer = raw["optimizer"]
        if optimizer is not None:
            optimizer = {
                "aggregated": int(optimizer["aggregated"]),
                "state": {
                    name: {
                        "step": float(s["step"]),
                        "exp_avg": _decode(s["exp_avg"], f"{path}: field 'optimizer.state.{name}.exp_avg'"),
                        "exp_avg_sq": _decode(
                            s["exp_avg_sq"], f"{path}: field 'optimizer.state.{name}.exp_avg_sq'"
                        ),
                    }
                    for name, s in optimizer["state"].items()
                },
                "average": {
                    name: _decode(a, f"{path}: field 'optimizer.average.{name}'")
                    for name, a in optimizer["average"].items()
                },
            }
        reports = {int(r): list(v) for r, v in raw["reports"].items()}
        for r, items in reports.items():
            for i, report in enumerate(items):
                try:
                    PrivacyReport.from_record(report, f"{path}: field 'reports.{r}[{i}]'")
                except ValueError as exc:
                    raise CheckpointError(str(exc)) from None
        history = {int(r): h for r, h in raw["history"].items()}
        for r, h in history.items():
            if not isinstance(h, dict) or set(h) != set(HISTORY_KEYS):
                raise CheckpointError(f"{path}: field 'history.{r}': fields must be {list(HISTORY_KEYS)}")
        trending = None
        if raw["trending"] is not None:
            try:
                trending = Trending.from_json(raw["trending"].encode(), f"{path}: field 'trending'")
            except TrendingError as exc:
                raise CheckpointError(str(exc)) from None
        return cls(
            training=raw["training"],
            run=raw["run"],
            round=raw["round"],
            config=raw["config"],
            catalogue_sha256=raw["catalogue_sha256"],
            arrays={n: _decode(a, f"{path}: field 'arrays.{n}'") for n, a in raw["arrays"].items()},
            optimizer=optimizer,
            reports=reports,
            history=history,
            finished=raw["finished"],
            trending=trending,
        )

    def check_matches(
        self,
        path: str | Path,
        config: dict[str, Any],
        catalogue_sha256: str,
        shapes: dict[str, tuple[int, ...]],
        ledger_releases: int | None,
    ) -> None:
        """Refuse (CheckpointError naming the field) a server that is not this training's: another run
        config, catalogue or model; or a server ledger that disagrees with the rounds aggregated."""
        for key in sorted(set(config) | set(self.config)):
            if config.get(key) != self.config.get(key):
                raise CheckpointError(
                    f"{path}: field 'config.{key}' is {self.config.get(key)!r}, this server's run config"
                    f" says {config.get(key)!r}: a training resumes only with the config it started with"
                    " (use a new run-dir for a new training)"
                )
        if catalogue_sha256 != self.catalogue_sha256:
            raise CheckpointError(
                f"{path}: field 'catalogue_sha256': the catalogue is not the one this training started"
                " with (sha256 differs); use a new run-dir for a new catalogue"
            )
        got = {n: tuple(a.shape) for n, a in self.arrays.items()}
        if got != {n: tuple(s) for n, s in shapes.items()}:
            wrong = sorted(set(got) ^ set(shapes)) or sorted(n for n in got if got[n] != tuple(shapes[n]))
            raise CheckpointError(f"{path}: field 'arrays.{wrong[0]}': not this model's adapters")
        if self.optimizer and {n: tuple(a.shape) for n, a in self.optimizer["average"].items()} != got:
            raise CheckpointError(f"{path}: field 'optimizer.average': not this model's adapters")
        if not 0 <= self.round <= int(config.get("num-server-rounds", self.round)):
            raise CheckpointError(f"{path}: field 'round' {self.round} is outside the planned rounds")
        if ledger_releases is not None:
            aggregated = self.optimizer["aggregated"] if self.optimizer else 0
            if aggregated != ledger_releases:
                raise CheckpointError(
                    f"{path}: field 'optimizer.aggregated' is {aggregated}, the server's privacy ledger holds"
                    f" {ledger_releases} releases of training {self.training} up to round {self.round}"
                )
