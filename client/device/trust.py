"""Which published artifacts this device trusts: the pinned publisher key, and no rollback.

The device pins its publisher's public key (shared/signing.py) and loads only an artifact signed by it
(shared/artifact.py). It also remembers, per publisher key, the newest round it accepted, in
`<state_dir>/accepted.json` (default `~/.fedrec/device`, written durably by shared/durable.py), and
refuses an older round: a rolled-back `LATEST` or a stale copy would otherwise serve an older, validly
signed model.
"""

from __future__ import annotations

import json
from pathlib import Path

from shared.artifact import Artifact, ArtifactError
from shared.durable import write_bytes
from shared.signing import run_public_key

STATE_FILE = "accepted.json"  # {publisher key id: {"round": newest accepted round, "version": its version}}


def default_state_dir() -> Path:
    return Path.home() / ".fedrec" / "device"


def publisher_key_file(artifact_dir: str | Path, given: str | Path | None = None) -> Path:
    """The public key to pin: `given`, else the run's own `<run>/server/publisher.pub` (for an artifact
    inside a run folder; trust in that folder's layout, as its operator has it)."""
    path = Path(given) if given else run_public_key(artifact_dir)
    if not path.is_file():
        hint = "" if given else ": pass the publisher's public key (publisher.pub) explicitly"
        raise FileNotFoundError(f"publisher key {path} does not exist{hint}")
    return path


def accept_round(state_dir: Path, artifact: Artifact) -> None:
    """Record `artifact`'s round as accepted from its publisher, refusing it if it is older than the
    newest round accepted from that publisher before (rollback)."""
    state_file = state_dir / STATE_FILE
    accepted = _read_state(state_file)
    key, newest = artifact.publisher_key_id, accepted.get(artifact.publisher_key_id, {}).get("round", -1)
    if artifact.round < newest:
        raise ArtifactError(
            artifact.path,
            None,
            f"rollback refused: round {artifact.round} is older than round {newest}, the newest this device "
            f"accepted from publisher key {key[:16]} (LATEST rolled back, or a stale copy; {state_file})",
        )
    if artifact.round > newest:
        accepted[key] = {"round": artifact.round, "version": artifact.version}
        state_dir.mkdir(parents=True, exist_ok=True)
        write_bytes(state_file, (json.dumps(accepted, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def _read_state(state_file: Path) -> dict[str, dict]:
    """The accepted rounds; an unreadable file is an error, not a reset (that would re-allow rollbacks)."""
    if not state_file.exists():
        return {}
    try:
        accepted = json.loads(state_file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{state_file}: device state is not valid JSON ({err}); fix or remove it") from None
    valid = isinstance(accepted, dict) and all(
        isinstance(v, dict) and isinstance(v.get("round"), int) for v in accepted.values()
    )
    if not valid:
        raise ValueError(f"{state_file}: device state is not a table of {{key id: {{round, version}}}}")
    return accepted
