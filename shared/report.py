"""What a client says about the release it sends: the one privacy contract between client and server.

Every value here is public before training: the partner's terms (σ from its declared population, q,
steps, δ, target, cap), ε composed from them, and where the release sits in the client's ledger
(seq, line hash), which the server keeps as a receipt so the ledger cannot later be rewritten
unnoticed. Nothing depends on the partner's data: no loss, no example count, no user count. It
travels in clear (also under SecAgg+, which masks only arrays), so it must stay that way.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

NOISE_NONE = "none"  # non-private participation: no noise, no guarantee


@dataclass(frozen=True)
class PrivacyReport:
    client: str
    round: int
    run: str
    private: bool
    noise: str  # shared.privacy.NOISE_SECRET / NOISE_REPRODUCIBLE, or NOISE_NONE
    unit: str
    delta: float
    epsilon_prv: float  # after this release, composed over the client's whole ledger (inf if non-private)
    epsilon_rdp: float
    noise_multiplier: float
    sample_rate: float
    steps: int
    max_grad_norm: float
    target_epsilon: float  # 0: σ was fixed, not calibrated
    epsilon_cap: float  # 0: no cap
    ledger_seq: int  # -1: not ledgered (non-private)
    ledger_hash: str
    mode: str = "partner"  # run config dp-mode: "partner" or "federation"
    view: str = ""  # federation mode: the view noise_multiplier holds against ("aggregate" or "share")
    noise_shares: int = 0  # federation mode: t, the shares that add up to the full noise

    def to_record(self) -> dict[str, Any]:
        """Flat dashed keys with scalar values: a Flower ConfigRecord's content."""
        return {k.replace("_", "-"): v for k, v in asdict(self).items()}

    @classmethod
    def from_record(cls, raw: dict[str, Any], where: str = "reply") -> PrivacyReport:
        """Strict: every field present with its type, nothing else (a stray data-dependent key is refused)."""
        names = {f.name: f for f in fields(cls)}
        given = {k.replace("-", "_"): v for k, v in raw.items()}
        if set(given) != set(names):
            raise ValueError(
                f"{where}: privacy report fields differ (missing {sorted(set(names) - set(given))},"
                f" unexpected {sorted(set(given) - set(names))})"
            )
        values: dict[str, Any] = {}
        for name, value in given.items():
            kind = type(getattr(_EXAMPLE, name))
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise ValueError(f"{where}: privacy report {name!r} must be {kind.__name__}, got {value!r}")
            if kind is float and math.isnan(value):
                raise ValueError(f"{where}: privacy report {name!r} is NaN")
            values[name] = value
        return cls(**values)


_EXAMPLE = PrivacyReport("", 0, "", True, "", "", 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0.0, 0.0, 0.0, 0, "", "", "", 0)
