"""The partner's own privacy terms, from its node config: the server's run config can only tighten them.

The server proposes (run config: private, σ or a target ε, cap, δ); the partner disposes. Node-config
keys, all optional except `population`:

    population            public upper bound on the partner's user count: it fixes the sampling rate
                          q = 1/⌈population/batch⌉ (a measured count would leak through q); training
                          refuses if the real count exceeds it
    require-private       default true: refuse non-private and reproducible-noise training
    min-noise-multiplier  σ never below this
    max-epsilon           target ε and cap never above this
    max-delta             refuse a run config whose δ is larger
    trust                 federation mode (`shared/federation.py`): whom the partner's ε must hold against.
                          "share" (default without SecAgg+, and the safe choice): a server that sees this
                          partner's noise share, or colludes with every other client; "aggregate" (default
                          with SecAgg+): a server that sees only the sum of the shares

`terms()` joins the two: it returns what this client will actually do, or raises `Refusal` with the
reason, which the client sends back instead of an update.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from shared.config import RunConfig
from shared.federation import AGGREGATE, VIEWS, FederationNoise


class Refusal(ValueError):
    """The run config asks for weaker privacy than the partner allows."""


@dataclass(frozen=True)
class PartnerPolicy:
    population: int | None = None
    require_private: bool = True
    min_noise_multiplier: float = 0.0
    max_epsilon: float = math.inf
    max_delta: float = 1.0
    trust: str | None = None  # federation mode: AGGREGATE or SHARE; None = the view the run offers

    @classmethod
    def from_node_config(cls, node: dict[str, Any]) -> PartnerPolicy:
        def number(key: str, default: float, low: float) -> float:
            if key not in node:
                return default
            try:
                value = float(node[key])
            except (TypeError, ValueError):
                raise Refusal(f"node-config {key!r}: expected a number, got {node[key]!r}") from None
            if not (math.isfinite(value) and value >= low):
                raise Refusal(f"node-config {key!r}: must be finite and >= {low:g}, got {node[key]!r}")
            return value

        population = None
        if "population" in node:
            population = int(number("population", 0, 1))
            if population != float(node["population"]):
                raise Refusal(f"node-config 'population': a whole number, got {node['population']!r}")
        require = str(node.get("require-private", "true")).lower()
        if require not in ("true", "false", "1", "0"):
            raise Refusal(f"node-config 'require-private': true or false, got {node['require-private']!r}")
        trust = node.get("trust")
        if trust is not None and str(trust) not in VIEWS:
            raise Refusal(f"node-config 'trust': one of {', '.join(VIEWS)}, got {trust!r}")
        return cls(
            trust=None if trust is None else str(trust),
            population=population,
            require_private=require in ("true", "1"),
            min_noise_multiplier=number("min-noise-multiplier", 0.0, 0.0),
            max_epsilon=number("max-epsilon", math.inf, 0.0) or math.inf,
            max_delta=number("max-delta", 1.0, 0.0),
        )


@dataclass(frozen=True)
class Terms:
    """What this client does this run: the stricter of server's proposal and partner's policy."""

    private: bool
    reproducible: bool
    delta: float
    target_epsilon: float  # 0: σ fixed (noise_floor below), not calibrated
    epsilon_cap: float | None
    noise_floor: float  # σ from the run config (fixed σ) or the partner's minimum
    population: int
    max_epsilon: float = math.inf  # the partner's own ceiling (federation mode: checked over the plan)
    min_noise_multiplier: float = 0.0  # the partner's own floor on σ
    trust: str | None = None


def terms(cfg: RunConfig, policy: PartnerPolicy) -> Terms:
    if policy.population is None:
        raise Refusal(
            "node-config 'population' is not set: declare a public upper bound on this partner's users"
            " (it fixes the DP sampling rate; a measured count would leak)"
        )
    if policy.require_private and not cfg.private:
        raise Refusal("require-private is set; the run config has private=false")
    if policy.require_private and cfg.reproducible_noise:
        raise Refusal("the partner requires private training but the run config asks for reproducible noise")
    if cfg.private and cfg.delta > policy.max_delta:
        raise Refusal(f"run config δ={cfg.delta:g} is above the partner's max-delta {policy.max_delta:g}")
    caps = [c for c in (cfg.epsilon_cap, policy.max_epsilon) if 0 < c < math.inf]
    # a calibrated σ aims at the tightest of target and caps: a cap below the target would otherwise
    # refuse every round (each one calibrated to spend more than the cap allows)
    target = min([cfg.target_epsilon, *caps]) if cfg.target_epsilon > 0 else 0.0
    return Terms(
        private=cfg.private,
        reproducible=cfg.reproducible_noise,
        delta=cfg.delta,
        target_epsilon=target,
        epsilon_cap=min(caps) if caps else None,
        noise_floor=max(policy.min_noise_multiplier, 0.0 if target > 0 else cfg.noise_multiplier),
        population=policy.population,
        max_epsilon=policy.max_epsilon,
        min_noise_multiplier=policy.min_noise_multiplier,
        trust=policy.trust,
    )


def federation_view(agreed: Terms, noise: FederationNoise) -> tuple[str, float]:
    """Federation mode: (the view this partner's ε is kept under, σ against it), or Refusal.

    The partner does not change the run's σ (every client must add the same share); it takes part only
    if σ under the trust model it states is at least its floor.
    """
    view = agreed.trust or noise.offered
    if view == AGGREGATE and noise.offered != AGGREGATE:
        raise Refusal(
            "node-config trust=aggregate needs secure aggregation; the run has secure-aggregation=false"
        )
    sigma = noise.view_sigma(view)
    if agreed.private and sigma < agreed.min_noise_multiplier:
        raise Refusal(
            f"σ against the {view!r} view is {sigma:.4g}, below the partner's min-noise-multiplier"
            f" {agreed.min_noise_multiplier:g}"
        )
    return view, sigma
