"""The run configuration, typed, read from Flower's run config (pyproject `[tool.flwr.app.config]`).

Flower passes a flat dict with dashed keys; this turns it into one typed object so that nothing else
reads raw keys. Defaults here equal pyproject's (a test checks), so `flwr run .` and `fedrec simulate`
agree. Every value is checked for its type and range when the config is built, on the server and on
every client alike, so a bad value fails at start-up with its key named, not rounds later (or never:
`epsilon-cap=nan` would silently turn the cap off).
"""

from __future__ import annotations

import contextlib
import math
import numbers
from dataclasses import asdict, dataclass, field, fields
from functools import cache
from typing import Any, get_type_hints

from shared.messages import shown
from shared.model import HIDDEN_SIZE, MAX_HISTORY_LENGTH, ModelConfig


@dataclass(frozen=True)
class Range:
    """The values a numeric field allows, from `low` up to `high` (None: unbounded). NaN and ±inf never."""

    low: float
    high: float | None = None
    open_low: bool = False  # True: `low` itself is excluded
    open_high: bool = False
    note: str = ""  # said in the error message: what a bound means

    def __contains__(self, value: float) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False  # (an int is always finite, and may be too large for math.isfinite)
        if value <= self.low if self.open_low else value < self.low:
            return False
        return self.high is None or (value < self.high if self.open_high else value <= self.high)

    def describe(self, kind: type) -> str:
        """E.g. 'an integer >= 1', 'a finite number > 0', 'a number in (0, 1]'."""
        if self.high is None:
            bounds = f"{'>' if self.open_low else '>='} {self.low}"
            number = "a finite number"
        else:
            left, right = "(" if self.open_low else "[", ")" if self.open_high else "]"
            bounds = f"in {left}{self.low}, {self.high}{right}"
            number = "a number"
        text = f"{'an integer' if kind is int else number} {bounds}"
        return f"{text} ({self.note})" if self.note else text


COUNT = Range(low=1)  # how many of something (rounds, steps, clients, positions): at least one
AT_LEAST_0 = Range(low=0)  # a rank or a number of negatives: 0 turns the feature off
POSITIVE = Range(low=0, open_low=True)  # a learning rate or a clipping norm
NOISE = Range(low=0, note="0 = no noise")
NO_CAP = Range(low=0, note="0 = no cap")


DP_MODES = ("partner", "federation")
ROBUST_AGGREGATIONS = ("none", "trimmed-mean", "krum")
LOCAL_PATH_KEYS = ("run-dir", "catalogue", "central-eval")  # where files are on one machine, not settings


def ranged(default: Any, allowed: Range) -> Any:
    """A field whose allowed range is declared with it; `RunConfig.__post_init__` checks it."""
    return field(default=default, metadata={"range": allowed})


@dataclass(frozen=True)
class RunConfig:
    num_server_rounds: int = ranged(200, COUNT)
    fraction_train: float = ranged(1.0, Range(0, 1, open_low=True))
    min_clients: int = ranged(2, COUNT)  # wait until this many clients are connected before a round
    local_steps: int = ranged(15, COUNT)
    batch_size: int = ranged(200, COUNT)
    learning_rate: float = ranged(0.003, POSITIVE)  # user head
    bias_learning_rate: float = ranged(0.05, POSITIVE)  # item bias
    item_id_learning_rate: float = ranged(0.01, POSITIVE)  # item ID residuals (with item-id-rank > 0)
    lora_learning_rate: float = ranged(0.001, POSITIVE)
    sequence_learning_rate: float = ranged(0.001, POSITIVE)  # the sequence residual (sequence-layers > 0)
    private: bool = True
    noise_multiplier: float = ranged(1.0, NOISE)
    max_grad_norm: float = ranged(1.0, POSITIVE)
    # DP's failure probability: meaningful only well below 1/population (the declared users per client)
    delta: float = ranged(1e-5, Range(0, 1, open_low=True, open_high=True, note="well below 1/population"))
    # per client, at delta; 0 = no cap. A round that would pass it is not trained
    epsilon_cap: float = ranged(10.0, NO_CAP)
    # > 0: each client calibrates σ so that ε(its ledger + the rounds still planned) reaches this; 0: σ fixed
    target_epsilon: float = ranged(8.0, Range(low=0, note="0 = fixed noise-multiplier"))
    reproducible_noise: bool = False  # TEST ONLY: seeded DP noise, labelled "not private" everywhere
    # Client-level DP (Flower's fixed-clipping wrappers + Flower's RDP accountant, ledger kept by the server):
    # > 0 turns it on: noise std σ·C/n on the mean of n clipped updates
    client_noise_multiplier: float = ranged(0.0, Range(low=0, note="0 = off"))
    # C: the L2 bound on one client's adapter update (new - global)
    client_clipping_norm: float = ranged(1.0, POSITIVE)
    client_clipping: str = "server"  # "server" clips received updates; "client" clips before sending
    # client-level ε cap at delta; 0 = none. The run stops before passing it
    client_epsilon_cap: float = ranged(0.0, NO_CAP)
    # the server refuses a reply whose update ‖new - global‖₂ (all adapters together) is above this. Honest:
    # Adam moves a coordinate ≈ lr a step, so ≲ local-steps·√(Σ lr²·size), mostly the item bias: 0.75·√n_items
    # by default (measured 1.7-2.4 on 12 items). 1000 keeps catalogues up to ~1.7M items; raise with lr·steps
    max_update_norm: float = ranged(1000.0, POSITIVE)
    # seconds the server waits for a round's replies; who has not answered by then is a dropout (a round
    # still needs min-clients replies, and federation mode its noise shares)
    round_timeout: float = ranged(600.0, POSITIVE)
    secure_aggregation: bool = True  # Flower SecAgg+: the server only ever sees the sum of the updates
    # for federations that fear poisoning, where the server sees each update (partner mode, no SecAgg+, no
    # client-level DP): "trimmed-mean" (Flower's FedTrimmedAvg, `trim-fraction` cut at each end) or "krum"
    # (Flower's Krum, at most `malicious-clients` poisoners); "none" = FedAvg
    robust_aggregation: str = "none"
    trim_fraction: float = ranged(0.2, Range(0, 0.5, open_high=True))
    malicious_clients: int = ranged(1, AT_LEAST_0)
    # "partner": each partner runs DP-SGD over its own users (local steps, its own σ and q). "federation":
    # user-level DP-FedAvg: each round is one noisy step over users Poisson-sampled at one federation-wide
    # rate; each client adds a secret noise share σ·C/√min-clients, the server takes an Adam step
    # (shared/federation.py, server/federation.py)
    dp_mode: str = "federation"
    # federation mode: the Poisson rate every client samples its users at, each round (public)
    federation_sample_rate: float = ranged(0.1, Range(0, 1, open_low=True))
    # federation mode: the federation's declared user total (the sum of the partners' public population
    # bounds). It scales every share alike (sum / (rate · population)); 0 = not declared, refused
    federation_population: int = ranged(0, Range(0, note="0 = not declared"))
    # federation mode: round 0 releases the federation's most engaged items for new shoppers, with DP
    # (shared/trending.py): each user votes 1/√m for its m most recent items, each client adds a noise share
    # of σ_T/√min-clients; the training's σ is calibrated with it in the history. 0 items = no release
    trending_items: int = ranged(50, Range(0, 10_000, note="0 = no trending list"))
    trending_noise_multiplier: float = ranged(10.0, Range(0, 1_000, open_low=True))
    trending_items_per_user: int = ranged(5, Range(1, 100))
    # federation mode: the server publishes (and evaluates) an exponential moving average of its steps'
    # models, avg <- d·avg + (1 - d)·new from the initial model on, which averages out the noise the last
    # step alone carries (post-processing: no privacy cost). Clients always train from the last step
    model_average_decay: float = ranged(0.98, Range(0, 1, open_high=True, note="0 = publish the last step"))
    # upper bounds as the artifact's (shared/artifact.py): a run must not train what it cannot publish
    lora_rank: int = ranged(0, Range(0, HIDDEN_SIZE, note="0 = frozen text tower"))
    # > 0: learn an r-dim ID residual per catalogue item (see shared/model.py)
    item_id_rank: int = ranged(16, Range(0, HIDDEN_SIZE, note="0 = off"))
    # > 0: a causal-transformer residual over the history, zero at start (shared/model.py SequenceResidual)
    sequence_layers: int = ranged(0, Range(0, 8, note="0 = pooled history only"))
    sequence_dim: int = ranged(64, Range(2, HIDDEN_SIZE))
    # the logit scale 1/τ of the full-catalogue softmax; τ ≈ 0.12 minimises the zero-shot model's loss on
    # Amazon Scientific (stack facts, Spike 2), so training starts where the untrained ranking is best fit
    temperature: float = ranged(0.05, Range(0, 100, open_low=True))
    max_length: int = ranged(32, Range(1, 512, note="tokens of an item's text the item tower reads"))
    head_rank: int = ranged(16, Range(1, HIDDEN_SIZE))
    num_negatives: int = ranged(1, AT_LEAST_0)
    hard_negatives: int = ranged(1, AT_LEAST_0)  # some of the num-negatives: at most that many
    history_length: int = ranged(20, Range(1, MAX_HISTORY_LENGTH))
    # next-item positions of a user's sequence averaged into its one DP example
    positions_per_user: int = ranged(1, COUNT)
    # public randomness only; the bound keeps derived seeds (seed·10⁶ + …) inside torch's 64-bit seeds
    seed: int = ranged(0, Range(0, 2**32 - 1))
    run_dir: str = "runs/flwr"
    catalogue: str = ""  # public catalogue file (server: publication; clients: item texts)
    # simulation only: all users' splits, read by the driver's central evaluator (simulations/evaluation.py)
    central_eval: str = ""

    def __post_init__(self) -> None:
        # Direct construction (tests, benchmarks) is checked like Flower's dict; ints given for floats
        # become floats, so equal configs compare and serialise equal.
        kinds = _kinds()
        for f in fields(self):
            value = _parse(_key(f.name), getattr(self, f.name), kinds[f.name], f.metadata.get("range"))
            object.__setattr__(self, f.name, value)
        if self.dp_mode not in DP_MODES:
            raise ValueError(f"run-config 'dp-mode': one of {', '.join(DP_MODES)}, not {self.dp_mode!r}")
        if self.federation_dp and self.client_level_dp:
            raise ValueError(
                "run-config 'dp-mode' = federation with 'client-noise-multiplier' > 0: choose one;"
                " federation mode already adds its noise to the aggregate"
            )
        if self.robust_aggregation not in ROBUST_AGGREGATIONS:
            raise ValueError(
                f"run-config 'robust-aggregation': one of {', '.join(ROBUST_AGGREGATIONS)},"
                f" not {self.robust_aggregation!r}"
            )
        if self.robust_aggregation != "none" and (
            self.federation_dp or self.secure_aggregation or self.client_level_dp
        ):
            raise ValueError(
                "run-config 'robust-aggregation' needs dp-mode=partner, secure-aggregation=false and no"
                " client-level DP: it must see each update (SecAgg+ hides them), and a trimmed or selected"
                " aggregate would void the noise calibration of federation mode and of client-level DP"
            )
        if self.client_clipping not in ("server", "client"):
            raise ValueError(f"run-config 'client-clipping': server or client, not {self.client_clipping!r}")
        if self.hard_negatives > self.num_negatives:
            raise ValueError(
                f"run-config 'hard-negatives' ({self.hard_negatives}) must be <= 'num-negatives'"
                f" ({self.num_negatives}): the hard negatives are some of the negatives"
            )
        if self.secure_aggregation and self.client_noise_multiplier > 0 and self.client_clipping != "client":
            raise ValueError(
                "run-config 'secure-aggregation' with 'client-noise-multiplier' > 0: the server never sees"
                " one client's update, so it cannot clip it; set client-clipping=client"
            )

    @property
    def client_level_dp(self) -> bool:
        return self.client_noise_multiplier > 0

    @property
    def federation_dp(self) -> bool:
        """User-level DP-FedAvg (one noisy step a round, noise shared out among the clients)."""
        return self.dp_mode == "federation"

    @property
    def trending(self) -> bool:
        """Federation mode's round-0 DP release of the trending list (shared/trending.py)."""
        return self.federation_dp and self.trending_items > 0

    @classmethod
    def from_flower(cls, raw: dict[str, Any]) -> RunConfig:
        """Build from Flower's dashed keys; unknown keys are an error (a typo must not pass silently).

        Each value is parsed here too (not only in `__post_init__`) so that an error names the key as
        the user wrote it.
        """
        names = {f.name: f for f in fields(cls)}
        kinds = _kinds()
        values: dict[str, Any] = {}
        for key, value in raw.items():
            name = key.replace("-", "_")
            if name not in names:
                raise ValueError(f"unknown run-config key {key!r}; known: {sorted(_key(k) for k in names)}")
            values[name] = _parse(key, value, kinds[name], names[name].metadata.get("range"))
        return cls(**values)

    def to_flower(self) -> dict[str, Any]:
        return {_key(k): v for k, v in asdict(self).items()}

    def without_paths(self) -> dict[str, Any]:
        """`to_flower()` less this machine's file paths: what a published manifest or a result records."""
        return {k: v for k, v in self.to_flower().items() if k not in LOCAL_PATH_KEYS}

    def learning_rates(self) -> dict[str, float]:
        """Learning rate per group of trained tensors (`shared.model.param_group`)."""
        return {
            "lora": self.lora_learning_rate,
            "bias": self.bias_learning_rate,
            "ids": self.item_id_learning_rate,
            "sequence": self.sequence_learning_rate,
            "head": self.learning_rate,
        }

    def model_config(self, n_items: int) -> ModelConfig:
        return ModelConfig(
            lora_rank=self.lora_rank,
            lora_alpha=2 * self.lora_rank,
            history_length=self.history_length,
            n_items=n_items,
            item_id_rank=self.item_id_rank,
            sequence_layers=self.sequence_layers,
            sequence_dim=self.sequence_dim,
            temperature=self.temperature,
            max_length=self.max_length,
            head_rank=self.head_rank,
        )


@cache
def _kinds() -> dict[str, type]:
    """Each field's type (the annotations are strings under `from __future__ import annotations`)."""
    return get_type_hints(RunConfig)


def _key(name: str) -> str:
    return name.replace("_", "-")


TRUE, FALSE = ("true", "1", "yes"), ("false", "0", "no")
BOOL_RULE = "true or false (or yes/no, 1/0)"


def _parse(key: str, value: Any, kind: type, allowed: Range | None) -> Any:
    """`value` as `kind` and inside `allowed`, or a ValueError naming the key, the value and the rule."""
    if kind is str:
        return str(value)
    if kind is bool:
        flag = _as_bool(value)
        if flag is None:
            raise ValueError(f"run-config {key!r}: must be {BOOL_RULE}, got {shown(value)}")
        return flag
    assert allowed is not None, f"{key}: every numeric field declares its range"
    number = _as_number(value, kind)
    if number is None or number not in allowed:
        raise ValueError(f"run-config {key!r}: must be {allowed.describe(kind)}, got {shown(value)}")
    return number


def _as_bool(value: Any) -> bool | None:
    """A real bool, the int 1 or 0, or true/false/yes/no/1/0 as text in any case; None otherwise."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return value == 1
    text = value.strip().lower() if isinstance(value, str) else ""
    return True if text in TRUE else False if text in FALSE else None


def _as_number(value: Any, kind: type) -> int | float | None:
    """`value` read as an int or a float, None if it is not one: a bool is not a number here, and an
    int is refused a non-integral value rather than truncated (int(2.7) == 2)."""
    if isinstance(value, bool):
        return None
    if kind is int and isinstance(value, numbers.Integral):
        return int(value)
    if kind is int and isinstance(value, str):
        with contextlib.suppress(ValueError):
            return int(value)  # else perhaps "3.0" or "1e3": integral, read below
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int beyond float's range
        return None
    if kind is int:
        return int(number) if number.is_integer() else None  # nan and ±inf are not integral
    return number
