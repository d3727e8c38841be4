"""Client-level DP: Flower's fixed-clipping DP wrappers and Flower's RDP accountant, ledgered by the server.

User-level DP-SGD (at each client) protects any one user of a partner. Client-level DP protects a
whole client: every client's adapter update is clipped to L2 norm C (at the server, or at the client
with Flower's `fixedclipping_mod`), the updates are averaged with equal weights, and Gaussian noise of
std σ·C/n is added to the mean of the n updates. Each round is one Gaussian release with noise
multiplier σ. Every client of the federation is asked each round, so there is no sampling
amplification. Flower's accountant composes the releases for adding or removing one client. The
server writes each release to its own privacy ledger (`RUN_DIR/server/privacy-ledger.jsonl`, unit
"client"), which `fedrec audit` verifies like any client's. A restarted server resumes composing from
that ledger. Opacus' RDP accountant with sample rate 1 gives the same ε as Flower's, exactly: that is
what the ledger records, with PRV alongside.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flwr.serverapp import PrivacyConfig, RdpAccountant
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideFixedClipping,
    Strategy,
)
from flwr.supercore.privacy_accounting import GaussianPrivacyEvent, NeighboringRelation, SamplingMethod

from shared.config import RunConfig
from shared.ledger import LEDGER_NAME, Ledger

SERVER_PARTY = "server"
ACCOUNTANT = "flower-rdp (dp-accounting), add-or-remove-one client, no sampling amplification"


class ClientLevelDP:
    """The client-level accountant of one federation of `num_clients` clients, and its ledger."""

    def __init__(
        self, cfg: RunConfig, num_clients: int, ledger_dir: str | Path, run: str = "", attempt: str = ""
    ) -> None:
        """`run`: the training's name (the ledger key); `attempt`: this Flower run's id (see
        server/checkpoint.py)."""
        self.run = run
        self.attempt = attempt or run
        self.sigma = cfg.client_noise_multiplier
        self.clipping_norm = cfg.client_clipping_norm
        self.clipping = cfg.client_clipping
        self.delta = cfg.delta
        self.cap = cfg.client_epsilon_cap or None
        self.num_clients = num_clients
        self.ledger = Ledger(Path(ledger_dir) / LEDGER_NAME)
        self.accountant = RdpAccountant(
            PrivacyConfig(
                target_delta=cfg.delta,
                population_size=num_clients,
                neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                sampling_method=SamplingMethod.NO_AMPLIFICATION,
                max_epsilon=self.cap,
            )
        )
        for release in self.ledger.releases():  # resume: never start again from zero
            self.accountant.compose(self._event(release.noise_multiplier))

    def _event(self, sigma: float) -> GaussianPrivacyEvent:
        return GaussianPrivacyEvent(sigma, sample_size=self.num_clients, population_size=self.num_clients)

    def wrap(self, strategy: Strategy) -> Strategy:
        """Flower's DP wrapper around `strategy` (a plain FedAvg), accounted by this object's accountant."""
        wrapper = (
            DifferentialPrivacyServerSideFixedClipping
            if self.clipping == "server"
            else DifferentialPrivacyClientSideFixedClipping
        )
        return wrapper(strategy, self.sigma, self.clipping_norm, self.num_clients, accountant=self.accountant)

    def releases(self) -> int:
        return self.accountant.num_releases

    def would_exceed(self) -> bool:
        """Whether one more release would pass the cap (for paths where no Flower wrapper checks it)."""
        return self.cap is not None and self.accountant.would_exceed(self._event(self.sigma))

    def compose(self, server_round: int) -> None:
        """Account one release made outside a Flower wrapper (the SecAgg+ path), then ledger it."""
        self.accountant.compose(self._event(self.sigma))
        self.record(server_round)

    def record(self, server_round: int) -> None:
        """Write the release of this round to the server's ledger (after Flower's accountant composed it)."""
        self.ledger.append(
            SERVER_PARTY,
            server_round,
            1,
            self.sigma,
            1.0,
            self.clipping_norm,
            self.delta,
            epsilon_cap=self.cap,
            accountant="rdp",
            unit="client",
            run=self.ledger.run_key(self.run, self.attempt, server_round),
        )

    def epsilon(self) -> float:
        return 0.0 if self.releases() == 0 else float(self.accountant.get_privacy_spent().epsilon)

    def summary(self) -> dict[str, Any]:
        spent = self.ledger.releases()
        return {
            "unit": "client",
            "accountant": ACCOUNTANT,
            "clipping": self.clipping,
            "clipping_norm": self.clipping_norm,
            "noise_multiplier": self.sigma,
            "num_clients": self.num_clients,
            "delta": self.delta,
            "releases": self.releases(),
            "epsilon": self.epsilon(),
            "epsilon_prv": spent[-1].epsilon_prv if spent else 0.0,
            "epsilon_cap": self.cap,
            "ledger": str(self.ledger.path),
        }
