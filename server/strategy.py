"""FedAvg over adapter tensors, with the server-side half of the "only adapters leave a client" rule.

Flower's FedAvg does the weighted average (weights: each client's number of training users). This
class only adds: replies carrying any tensor that is not an expected adapter (name and shape) are
refused before aggregation, each client's privacy report is kept per round for the run summary, and
clients that declined to train (their privacy budget cap) are recorded; the others carry on.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from logging import WARNING

from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.serverapp.strategy import FedAvg
from flwr.supercore import log

from shared.adapters import AdapterLeakError, from_record


class AdapterFedAvg(FedAvg):
    def __init__(self, expected: dict[str, tuple[int, ...]], **kwargs) -> None:
        super().__init__(**kwargs)
        self.expected = expected
        self.privacy_reports: dict[int, list[dict]] = {}  # round -> one report per client
        self.refused: dict[int, list[str]] = {}  # round -> reasons an update was refused
        self.skipped: dict[int, list[str]] = {}  # round -> reasons a client did not train (e.g. budget cap)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        accepted = []
        for msg in replies:
            if msg.has_error():
                self.skipped.setdefault(server_round, []).append(msg.error.reason)
                accepted.append(msg)  # FedAvg logs and skips error replies
                continue
            try:
                from_record(msg.content["arrays"], self.expected)
            except (AdapterLeakError, KeyError) as err:
                reason = f"node {msg.metadata.src_node_id}: {err}"
                log(WARNING, "refused update: %s", reason)
                self.refused.setdefault(server_round, []).append(reason)
                continue
            accepted.append(msg)
            if "privacy" in msg.content:
                report = dict(msg.content["privacy"])
                if "history" in report:
                    report["history"] = json.loads(str(report["history"]))
                self.privacy_reports.setdefault(server_round, []).append(report)
        return super().aggregate_train(server_round, accepted)
