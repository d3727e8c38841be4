"""`fedrec check`: validate a partner's catalogue and events without training, and say what a run would keep.

A partner runs it on its own machine before a run, so it imports only shared/ (no model, no Flower): the
same loaders as training (shared/schema.py), so what it reports is what training would see.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shared.schema import QUARANTINE_REASONS, LoadReport, load_catalogue, load_events

QUARANTINE_DIR = "quarantine"  # default: a private folder beside the events file


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
            lines.append(f"  {reason}: {count} ({QUARANTINE_REASONS[reason]})")
    if report.quarantine_file:
        lines.append(f"quarantined rows: {report.quarantine_file} (private: mode 0600)")
    if report.read and not report.kept:
        lines.append("warning: no event row was kept; this partner has nothing to train on")
    return lines
