"""The run configuration, typed, read from Flower's run config (pyproject `[tool.flwr.app.config]`).

Flower passes a flat dict with dashed keys; this turns it into one typed object so that nothing else
reads raw keys. Defaults here equal pyproject's (a test checks), so `flwr run .` and `fedrec simulate`
agree.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from shared.model import ModelConfig


@dataclass(frozen=True)
class RunConfig:
    num_server_rounds: int = 4
    fraction_train: float = 1.0
    min_clients: int = 2  # wait until this many clients are connected before a round
    local_steps: int = 15
    batch_size: int = 200
    learning_rate: float = 0.001  # user head
    bias_learning_rate: float = 0.05  # item bias
    item_id_learning_rate: float = 0.01  # item ID residuals (with item-id-rank > 0)
    lora_learning_rate: float = 0.001
    private: bool = True
    noise_multiplier: float = 1.0
    max_grad_norm: float = 1.0
    delta: float = 1e-5
    epsilon_cap: float = 10.0  # per client, at delta; 0 = no cap. A round that would pass it is not trained
    # > 0: each client calibrates σ so that ε(its ledger + the rounds still planned) reaches this; 0: σ fixed
    target_epsilon: float = 8.0
    reproducible_noise: bool = False  # TEST ONLY: seeded DP noise, labelled "not private" everywhere
    # Client-level DP (Flower's fixed-clipping wrappers + Flower's RDP accountant, ledger kept by the server):
    client_noise_multiplier: float = 0.0  # > 0 turns it on: noise std σ·C/n on the mean of n clipped updates
    client_clipping_norm: float = 1.0  # C: the L2 bound on one client's adapter update (new - global)
    client_clipping: str = "server"  # "server" clips received updates; "client" clips before sending
    client_epsilon_cap: float = 0.0  # client-level ε cap at delta; 0 = none. The run stops before passing it
    secure_aggregation: bool = False  # Flower SecAgg+: the server only ever sees the sum of the updates
    lora_rank: int = 4
    item_id_rank: int = 0  # > 0: learn an r-dim ID residual per catalogue item (see shared/model.py)
    num_negatives: int = 1
    hard_negatives: int = 1
    history_length: int = 20
    positions_per_user: int = 1  # next-item positions of a user's sequence averaged into its one DP example
    seed: int = 0
    run_dir: str = "runs/flwr"
    catalogue: str = ""  # public catalogue file (server: publication; clients: item texts)
    central_eval: str = ""  # simulation only: a file of all users' splits for centrally computed metrics

    def __post_init__(self) -> None:
        if self.client_clipping not in ("server", "client"):
            raise ValueError(f"run-config 'client-clipping': server or client, not {self.client_clipping!r}")
        if self.secure_aggregation and self.client_noise_multiplier > 0 and self.client_clipping != "client":
            raise ValueError(
                "run-config: with secure-aggregation the server never sees one client's update, so it cannot"
                " clip it; set client-clipping=client"
            )

    @property
    def client_level_dp(self) -> bool:
        return self.client_noise_multiplier > 0

    @classmethod
    def from_flower(cls, raw: dict[str, Any]) -> RunConfig:
        """Build from Flower's dashed keys; unknown keys are an error (a typo must not pass silently)."""
        names = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in raw.items():
            name = key.replace("-", "_")
            if name not in names:
                raise ValueError(
                    f"unknown run-config key {key!r}; known: {sorted(k.replace('_', '-') for k in names)}"
                )
            kind = type(getattr(cls(), name))
            values[name] = _coerce(key, value, kind)
        return cls(**values)

    def to_flower(self) -> dict[str, Any]:
        return {k.replace("_", "-"): v for k, v in asdict(self).items()}

    def model_config(self, n_items: int) -> ModelConfig:
        return ModelConfig(
            lora_rank=self.lora_rank,
            lora_alpha=2 * self.lora_rank,
            history_length=self.history_length,
            n_items=n_items,
            item_id_rank=self.item_id_rank,
        )


def _coerce(key: str, value: Any, kind: type) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "1", "yes"):
            return True
        if str(value).lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"run-config {key!r}: expected true/false, got {value!r}")
    try:
        return kind(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"run-config {key!r}: expected {kind.__name__}, got {value!r}") from err
