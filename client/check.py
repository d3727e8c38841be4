"""`fedrec check`: validate a partner's catalogue and events without training, and say what a run would keep.

A partner runs it on its own machine before a run, so it imports only shared/ (no model, no Flower): the
same loaders as training (shared/schema.py), so what it reports is what training would see.

The ClientApp runs the same check when it first sees a run (`check_first_message`, from the top of its
`train` and `evaluate`), and refuses the message (Error code DATA_UNUSABLE) when the catalogue or the
events file is unusable or no event row survives. The full load report goes to the partner's own
console (stderr); the refusal that goes to the server says only which file (by name), row and column,
or which quarantine reasons emptied the events: no value, count or path of the partner's leaves. A run
that passed is remembered, so later messages of the run are not checked again:
`<work_dir>/checked-runs/run-<run id>.json` (mode 0600) holds the load report that passed.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.durable import write_json
from shared.schema import QUARANTINE_REASONS, LoadReport, SchemaError, load_catalogue, load_events

QUARANTINE_DIR = "quarantine"  # default: a private folder beside the events file; a ClientApp's work dir
CHECKED_RUNS = "checked-runs"  # in a ClientApp's work dir: one file per run whose data passed the check
DATA_UNUSABLE = 453  # Error code of a reply that refuses because the partner's files are unusable
ON_CONSOLE = "the load report is on the partner's console"


@dataclass
class CheckResult:
    catalogue: str
    items: int
    events: str | None = None
    report: LoadReport | None = None


def default_quarantine_dir(events: str | Path) -> Path:
    """Where quarantined rows go unless told: next to the events file, so private rows stay with it."""
    return Path(events).parent / QUARANTINE_DIR


def check_files(
    catalogue: str | Path, events: str | Path | None = None, quarantine_dir: str | Path | None = None
) -> CheckResult:
    """Load the catalogue strictly and the events (if given) as training would; a SchemaError (naming the
    file, row and column) means the files are unusable as they are."""
    items = load_catalogue(catalogue)
    result = CheckResult(catalogue=str(catalogue), items=len(items))
    if events is not None:
        folder = quarantine_dir if quarantine_dir is not None else default_quarantine_dir(events)
        _, result.report = load_events(events, items, folder)
        result.events = str(events)
    return result


def describe(result: CheckResult) -> list[str]:
    """The load report as lines for a person: counts, quarantine reasons, where the quarantine went."""
    lines = [f"catalogue {result.catalogue}: {result.items} items, usable"]
    report = result.report
    if report is None:
        return lines
    counts = f"{report.read} rows read, {report.kept} kept, {report.quarantined} quarantined"
    lines.append(f"events {result.events}: {counts}")
    for reason, count in report.reasons.items():
        if count:
            rows = ", ".join(str(row) for row in report.examples.get(reason, []))
            more = ", ..." if count > len(report.examples.get(reason, [])) else ""
            lines.append(f"  {reason}: {count} ({QUARANTINE_REASONS[reason]}); rows {rows}{more}")
    if report.quarantine_file:
        compressed = ", gzip-compressed CSV" if report.quarantine_file.endswith(".gz") else ""
        lines.append(f"quarantined rows: {report.quarantine_file} (private: mode 0600{compressed})")
    if report.read and not report.kept:
        lines.append("warning: no event row was kept; this partner has nothing to train on")
    return lines


def check_first_message(
    context: Any, overrides: dict[str, Any], locate_party: Callable[[Any, Any], Any]
) -> str | None:
    """For a ClientApp (`context`: its Flower Context): None when this run's data passed the check, now
    or at an earlier message of the run; else the reason to refuse with, the report on stderr.

    `locate_party(context, cfg)` says where the partner's files are (client/app.py's).
    """
    from shared.config import RunConfig  # not needed by `fedrec check`

    party = locate_party(context, RunConfig.from_flower({**context.run_config, **overrides}))
    work_dir = Path(party.work_dir)
    passed = work_dir / CHECKED_RUNS / f"run-{context.run_id}.json"
    if passed.exists():
        return None
    try:
        result = check_files(party.catalogue, party.events, work_dir / QUARANTINE_DIR)
    except SchemaError as err:
        print(f"{party.name}: fedrec check: unusable: {err}", file=sys.stderr, flush=True)
        return f"{party.name}: not taking part: {err.where} is unusable as it is ({ON_CONSOLE})"
    for line in describe(result):
        print(f"{party.name}: {line}", file=sys.stderr, flush=True)
    report = result.report
    assert report is not None  # events were given
    if not report.kept:
        reasons = ", ".join(reason for reason, count in report.reasons.items() if count) or "it holds none"
        return f"{party.name}: not taking part: no event row of {report.file} survived the checks ({reasons})"
    passed.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    record = {"run": str(context.run_id), "items": result.items, "events": report.to_dict()}
    write_json(passed, record, mode=0o600)
    return None
