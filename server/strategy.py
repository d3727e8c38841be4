"""The server-side half of "only adapters leave a client", as a wrapper around any Flower strategy.

`AdapterGuard` wraps the strategy that aggregates: Flower's FedAvg, or FedAvg inside Flower's
client-level DP wrapper. It adds no arithmetic of its own. Replies carrying any tensor that is not an
expected adapter (name and shape) are refused before aggregation. Clients that declined to train
(their privacy cap or terms) are recorded and the others carry on. Each client's privacy report is
parsed strictly and receipted (`server/release_book.py`) before its update is used; a reply without a
valid report is refused. Every reply is also checked before aggregation: float32 only, finite values
only, and an update norm ‖new − global‖₂ (all adapter tensors together) at most `max_update_norm`, so
one broken or malicious client cannot poison the mean; the global it is measured against is the one
this round was configured with (`configure_train`). With client-level DP, every noised aggregate is
also written to the server's privacy ledger. When Flower's accountant says the next release would pass
the client-level cap, training stops there.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from logging import WARNING

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.exception import PrivacyBudgetExhausted
from flwr.serverapp.strategy import Strategy
from flwr.supercore import log

from server.client_privacy import ClientLevelDP
from server.release_book import ReleaseBook
from server.wrapper import StrategyWrapper
from shared.adapters import AdapterLeakError, from_record


class AdapterGuard(StrategyWrapper):
    def __init__(
        self,
        strategy: Strategy,
        expected: dict[str, tuple[int, ...]],
        book: ReleaseBook,
        client_dp: ClientLevelDP | None,
        max_update_norm: float,
    ) -> None:
        super().__init__(strategy)
        self.expected = expected
        self.book = book
        self.client_dp = client_dp
        self.max_update_norm = max_update_norm
        self.global_arrays: dict[str, np.ndarray] = {}  # the model this round was configured with
        self.global_round: int | None = None
        self.refused: dict[int, list[str]] = {}  # round -> reasons an update was refused
        self.skipped: dict[int, list[str]] = {}  # round -> reasons a client did not train (e.g. budget cap)
        self.stopped: dict[int, str] = {}  # round -> why no round was started (client-level budget)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.global_round = server_round
        self.global_arrays = {k: v.numpy().astype(np.float64) for k, v in arrays.items()}
        try:
            return self.strategy.configure_train(server_round, arrays, config, grid)
        except PrivacyBudgetExhausted as err:
            self.stopped[server_round] = f"client-level privacy budget: {err}"
            log(WARNING, "round %d not started: %s", server_round, self.stopped[server_round])
            return []

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        if server_round in self.stopped:
            return None, None
        accepted = []
        for msg in replies:
            if msg.has_error():
                self.skipped.setdefault(server_round, []).append(msg.error.reason)
                continue
            node = msg.metadata.src_node_id
            try:
                self.check_update(server_round, msg.content["arrays"])
                if "privacy" not in msg.content:
                    raise ValueError("no privacy report: an update without its accounting is not used")
                self.book.record(server_round, dict(msg.content["privacy"]), node)
            except (AdapterLeakError, KeyError, ValueError) as err:
                reason = f"node {node}: {err}"
                log(WARNING, "refused update: %s", reason)
                self.refused.setdefault(server_round, []).append(reason)
                continue
            accepted.append(msg)
        released = self.client_dp.releases() if self.client_dp else 0
        arrays, metrics = self.strategy.aggregate_train(server_round, accepted)
        if self.client_dp and self.client_dp.releases() > released:
            self.client_dp.record(server_round)
        return arrays, metrics

    def check_update(self, server_round: int, record: ArrayRecord) -> None:
        """Names and shapes (no tensor but the expected adapters), dtype, finiteness, then the update norm
        against this round's global: AdapterLeakError or ValueError with what failed."""
        tensors = from_record(record, self.expected)
        for name, array in record.items():  # the record's own dtype: from_record converts to float32
            if array.dtype != "float32":
                raise ValueError(f"{name}: dtype {array.dtype} != float32")
        values = {name: tensor.numpy() for name, tensor in tensors.items()}
        for name, value in values.items():
            if not np.isfinite(value).all():
                raise ValueError(f"{name}: non-finite values (NaN or inf)")
        if self.global_round != server_round:
            raise ValueError(f"no global model configured for round {server_round}: update norm unknown")
        squares = sum(
            float(np.sum((value.astype(np.float64) - self.global_arrays[name]) ** 2))
            for name, value in values.items()
        )
        norm = math.sqrt(squares)
        if not norm <= self.max_update_norm:
            raise ValueError(f"update norm {norm:.4g} > max-update-norm {self.max_update_norm:g}")
