"""Every privacy report the server receives, kept per round and anchored in the server's receipts.

Both aggregation paths (message API and SecAgg+) hand each reply's report here before the update is
aggregated. The report is parsed strictly (`shared/report.py`); a receipt is written (`shared/receipts.py`)
so that the client's ledger can later be checked against what the server actually saw. A reply whose
report is missing or malformed is refused: an update without its accounting must not be used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shared.receipts import RECEIPTS_NAME, Receipts
from shared.report import PrivacyReport


class ReleaseBook:
    def __init__(self, state_dir: str | Path) -> None:
        self.receipts = Receipts(Path(state_dir) / RECEIPTS_NAME)
        self.reports: dict[int, list[PrivacyReport]] = {}  # round -> one report per client

    def record(self, server_round: int, raw: dict[str, Any], node: int) -> PrivacyReport:
        """Parse, check the round, write the receipt; ValueError (reason) if the update must be refused."""
        report = PrivacyReport.from_record(raw, f"node {node}")
        if report.round != server_round:
            raise ValueError(f"node {node}: privacy report for round {report.round} in round {server_round}")
        self.receipts.record(report, node)
        self.reports.setdefault(server_round, []).append(report)
        return report

    def latest(self) -> dict[str, PrivacyReport]:
        """Each client's last report: its ε composed over everything it released so far."""
        out: dict[str, PrivacyReport] = {}
        for server_round in sorted(self.reports):
            for report in self.reports[server_round]:
                out[report.client] = report
        return dict(sorted(out.items()))
