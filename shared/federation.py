"""User-level DP across the whole federation: the public arithmetic that server and clients compute alike.

Federation mode (run config `dp-mode = "federation"`) is DP-FedAvg with the user as the unit (McMahan et
al., ICLR 2018) with its Gaussian noise shared out among the clients (distributed DP):

- each round, every client Poisson-samples its users at one public rate q (`federation-sample-rate`);
- each sampled user's gradient at the global model is clipped to L2 norm C (`max-grad-norm`) and summed;
- each client adds a secret Gaussian share N(0, (σC)²/t) to its sum, t = `min-clients`, the fewest
  clients that must report for the server to aggregate;
- every client scales its sum by the same public 1/(q·N), N the federation's declared population
  (`federation-population`), so the shares add up to the noisy mean gradient that DP-SGD over all the
  federation's users at once would compute, with noise of std ≥ σC whenever ≥ t shares are in it.

Each round is one subsampled Gaussian (q, σ_view) for every user, composed over rounds by Opacus' PRV
accountant (RDP alongside). Who sees what decides σ_view:

- `AGGREGATE`: a server that runs SecAgg+ as configured sees only the sum of ≥ t shares: σ_view = σ.
  It holds against an honest-but-curious server and whoever holds the published model, if no t − 1
  other clients collude with the server.
- `SHARE`: a server that sees one client's share in clear (no SecAgg+), or that colludes with all the
  other clients (they subtract their own shares): σ_view = σ/√t. It holds against everyone but the
  client itself.

σ is fixed once for the run from the run config alone (its target ε, or the tighter ε cap, over the
planned rounds, at the view the run offers: AGGREGATE with SecAgg+, SHARE without), so every client adds
the same share and no client's data moves σ. With a trending list (`shared/trending.py`) round 0 is one
more Gaussian release, at q = 1 and σ_T (`trending-noise-multiplier`, of the sum, as σ), split into
shares alike; σ is calibrated with it in the history, so the target ε covers both. A partner's own
terms decide whether it takes part at that σ (`client/policy.py`): its ledger records σ_view under the
trust model it states.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

from shared.config import RunConfig
from shared.privacy import BudgetSpent, calibrate_after, epsilon

AGGREGATE = "aggregate"  # the server sees only the sum of the noise shares (SecAgg+)
SHARE = "share"  # the server sees one share: no SecAgg+, or collusion with every other client
VIEWS = (AGGREGATE, SHARE)


class FederationConfigError(ValueError):
    """Federation mode cannot run with this run config."""


@dataclass(frozen=True)
class FederationNoise:
    """The noise of one federation-mode run: public, the same at every party."""

    sigma: float  # σ of the sum of all shares (in units of C)
    shares: int  # t: the fewest clients whose shares are in a sum the server may aggregate
    sample_rate: float  # q
    population: int  # N: the federation's declared user total
    offered: str  # the view the run offers: AGGREGATE (SecAgg+ on) or SHARE
    trending_sigma: float = 0.0  # σ_T of the sum of round 0's trending shares; 0: no trending release

    @property
    def share_sigma(self) -> float:
        """σ of one client's share: t of them add up to σ."""
        return self.sigma / math.sqrt(self.shares)

    @property
    def scale(self) -> float:
        """The expected number of users in a round, q·N: every client divides its sum by it."""
        return self.sample_rate * self.population

    def view_sigma(self, view: str) -> float:
        """σ against an observer with this view (module docstring)."""
        if view not in VIEWS:
            raise ValueError(f"unknown view {view!r}; one of {', '.join(VIEWS)}")
        if view == AGGREGATE and self.offered != AGGREGATE:
            raise ValueError(
                "the aggregate view needs secure aggregation: without it, the server sees each share"
            )
        return self.sigma if view == AGGREGATE else self.share_sigma

    @property
    def trending_share_sigma(self) -> float:
        """σ_T of one client's trending share: t of them add up to σ_T."""
        return self.trending_sigma / math.sqrt(self.shares)

    def trending_view_sigma(self, view: str) -> float:
        """σ_T of the trending release against an observer with this view."""
        self.view_sigma(view)  # refuses what view_sigma refuses
        return self.trending_sigma if view == AGGREGATE else self.trending_share_sigma

    def history(self, view: str, rounds: int, trending: bool) -> list[tuple[float, float, int]]:
        """The DP history one user's data meets against `view`: round 0's trending release (if made),
        then `rounds` training rounds."""
        first = [(self.trending_view_sigma(view), 1.0, 1)] if trending and self.trending_sigma else []
        return first + ([(self.view_sigma(view), self.sample_rate, rounds)] if rounds else [])

    def epsilons(
        self, rounds: int, delta: float, accountant: str = "prv", trending: bool = False
    ) -> dict[str, float]:
        """ε after `rounds` training releases (and round 0's trending release if `trending`) of this run
        alone, per view the run can give (0 before any)."""
        views = VIEWS if self.offered == AGGREGATE else (SHARE,)
        return {v: epsilon(self.history(v, rounds, trending), delta, accountant) for v in views}


def federation_noise(cfg: RunConfig) -> FederationNoise:
    """The run's σ, from its config only: calibrated on min(target ε, cap) over its rounds, or fixed."""
    if not cfg.federation_dp:
        raise FederationConfigError("run-config 'dp-mode' is not 'federation'")
    if cfg.federation_population < 1:
        raise FederationConfigError(
            "run-config 'federation-population' is 0: declare the federation's user total (the sum of the"
            " partners' public population bounds); it scales every client's share alike"
        )
    offered = AGGREGATE if cfg.secure_aggregation else SHARE
    sigma = cfg.noise_multiplier
    trending = cfg.trending_noise_multiplier if cfg.trending else 0.0  # σ_T of the sum, like σ's
    if cfg.private and cfg.target_epsilon > 0:
        target = min(cfg.target_epsilon, cfg.epsilon_cap) if cfg.epsilon_cap > 0 else cfg.target_epsilon
        shares = math.sqrt(cfg.min_clients) if offered == SHARE else 1.0  # the target holds for one share
        try:
            sigma = shares * _calibrated(
                target, cfg.delta, cfg.federation_sample_rate, cfg.num_server_rounds, trending / shares
            )
        except BudgetSpent as err:
            raise FederationConfigError(
                f"run-config 'trending-noise-multiplier' {trending:g}: {err}"
            ) from None
    return FederationNoise(
        sigma=float(sigma),
        shares=cfg.min_clients,
        sample_rate=cfg.federation_sample_rate,
        population=cfg.federation_population,
        offered=offered,
        trending_sigma=float(trending),
    )


@cache
def _calibrated(target: float, delta: float, sample_rate: float, rounds: int, trending: float) -> float:
    """One PRV calibration per process and setting (a few seconds each; every round asks again)."""
    prior = [(trending, 1.0, 1)] if trending else []
    return calibrate_after(prior, target, delta, sample_rate, rounds)
