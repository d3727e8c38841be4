"""One configuration, two doors: pyproject's Flower run config and RunConfig must agree, and both
refuse a value of the wrong type or out of range, naming its key."""

from __future__ import annotations

import tomllib
from dataclasses import fields
from pathlib import Path
from typing import get_type_hints

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.config import RunConfig

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_run_config_equals_defaults():
    flwr = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    assert flwr["components"] == {"serverapp": "server.app:app", "clientapp": "client.app:app"}
    assert RunConfig.from_flower(flwr["config"]) == RunConfig()
    assert set(flwr["config"]) == set(RunConfig().to_flower())


def test_unknown_key_and_bad_value_are_errors():
    with pytest.raises(ValueError, match="unknown run-config key 'noise-multiplyer'"):
        RunConfig.from_flower({"noise-multiplyer": 1.0})
    with pytest.raises(ValueError, match="'private': must be true or false"):
        RunConfig.from_flower({"private": "maybe"})
    assert RunConfig.from_flower({"private": "false", "local-steps": "3"}).local_steps == 3


# ---------------------------------------------------------------- every value's type and range (issue 16)

NAN, INF = float("nan"), float("inf")
FLOAT_KEYS = [_key for _key, value in RunConfig().to_flower().items() if isinstance(value, float)]
INTEGER = "an integer >= 1"
FINITE_POSITIVE = "a finite number > 0"

BAD = [
    ("batch-size", 0, INTEGER),
    ("num-server-rounds", -3, INTEGER),
    ("noise-multiplier", -1, "a finite number >= 0 (0 = no noise)"),
    ("delta", 2, "a number in (0, 1) (well below 1/population)"),
    ("delta", 0, "a number in (0, 1)"),
    ("delta", 1.0, "a number in (0, 1)"),
    ("fraction-train", 7, "a number in (0, 1]"),
    ("fraction-train", 0.0, "a number in (0, 1]"),
    ("max-grad-norm", INF, FINITE_POSITIVE),
    ("max-grad-norm", "inf", FINITE_POSITIVE),
    ("client-clipping-norm", 0, FINITE_POSITIVE),
    ("learning-rate", 0.0, FINITE_POSITIVE),
    ("lora-learning-rate", -INF, FINITE_POSITIVE),
    ("history-length", -1, "an integer in [1, 1000]"),
    ("history-length", 1001, "an integer in [1, 1000]"),
    ("positions-per-user", 0, INTEGER),
    ("min-clients", 0, INTEGER),
    ("local-steps", 2.7, INTEGER),
    ("local-steps", "2.7", INTEGER),
    ("local-steps", True, INTEGER),
    ("local-steps", "ten", INTEGER),
    ("local-steps", None, INTEGER),
    ("lora-rank", -1, "an integer in [0, 384]"),
    ("lora-rank", 385, "an integer in [0, 384]"),
    ("item-id-rank", NAN, "an integer in [0, 384]"),
    ("seed", -1, "an integer in [0, 4294967295]"),
    ("seed", 2**32, "an integer in [0, 4294967295]"),
    ("epsilon-cap", NAN, "a finite number >= 0 (0 = no cap)"),
    ("epsilon-cap", "nan", "a finite number >= 0 (0 = no cap)"),
    ("target-epsilon", -0.5, "a finite number >= 0"),
    ("client-epsilon-cap", INF, "a finite number >= 0 (0 = no cap)"),
    ("client-noise-multiplier", False, "a finite number >= 0 (0 = off)"),
    ("learning-rate", 10**400, FINITE_POSITIVE),  # an int too large for a float
    ("max-update-norm", 0, FINITE_POSITIVE),  # 0 would refuse every update, not turn the bound off
    ("max-update-norm", -1, FINITE_POSITIVE),
    ("max-update-norm", NAN, FINITE_POSITIVE),
    ("max-update-norm", "inf", FINITE_POSITIVE),
    ("private", "maybe", "true or false (or yes/no, 1/0)"),
    ("private", 2, "true or false"),
    ("private", 1.0, "true or false"),
    ("secure-aggregation", None, "true or false"),
    *[(key, NAN, "number") for key in FLOAT_KEYS],
]


@pytest.mark.parametrize(("key", "value", "rule"), BAD, ids=[f"{k}={v!r}"[:40] for k, v, _ in BAD])
def test_bad_value_is_refused_with_its_key_and_range(key, value, rule):
    with pytest.raises(ValueError) as error:
        RunConfig.from_flower({key: value})
    message = str(error.value)
    assert message.startswith(f"run-config {key!r}: must be ") and ", got " in message, message
    assert rule in message


GOOD = [
    ({"batch-size": 1, "num-server-rounds": 1, "min-clients": 1, "history-length": 1}, {"batch_size": 1}),
    ({"local-steps": "3"}, {"local_steps": 3}),
    ({"local-steps": "3.0", "batch-size": 8.0}, {"local_steps": 3, "batch_size": 8}),  # integral: no loss
    ({"batch-size": "1e3"}, {"batch_size": 1000}),
    ({"fraction-train": 1, "delta": 1e-12}, {"fraction_train": 1.0, "delta": 1e-12}),
    ({"fraction-train": 1e-9, "delta": "0.999"}, {"fraction_train": 1e-9, "delta": 0.999}),
    ({"noise-multiplier": 0, "epsilon-cap": 0, "target-epsilon": "0"}, {"noise_multiplier": 0.0}),
    ({"client-noise-multiplier": 0.0, "client-epsilon-cap": 0.0}, {"client_level_dp": False}),
    ({"max-grad-norm": 1e-6, "learning-rate": "5e-4"}, {"max_grad_norm": 1e-6, "learning_rate": 5e-4}),
    ({"max-update-norm": "250"}, {"max_update_norm": 250.0}),
    ({"lora-rank": 0, "item-id-rank": 0}, {"lora_rank": 0}),
    ({"num-negatives": 0, "hard-negatives": 0}, {"num_negatives": 0, "hard_negatives": 0}),
    ({"num-negatives": 5, "hard-negatives": 5}, {"hard_negatives": 5}),
    ({"seed": 0}, {"seed": 0}),
    ({"seed": 2**32 - 1}, {"seed": 2**32 - 1}),
    ({"private": "YES", "secure-aggregation": " no "}, {"private": True, "secure_aggregation": False}),
    ({"private": 0, "reproducible-noise": 1}, {"private": False, "reproducible_noise": True}),
    ({"private": "False", "reproducible-noise": "1"}, {"private": False, "reproducible_noise": True}),
]


@pytest.mark.parametrize(("raw", "expected"), GOOD)
def test_edge_values_are_accepted(raw, expected):
    cfg = RunConfig.from_flower(raw)
    for name, value in expected.items():
        assert getattr(cfg, name) == value and type(getattr(cfg, name)) is type(value)
    assert RunConfig.from_flower(cfg.to_flower()) == cfg


def test_cross_field_rules_name_both_keys():
    with pytest.raises(ValueError, match=r"'hard-negatives' \(2\) must be <= 'num-negatives' \(1\)"):
        RunConfig.from_flower({"hard-negatives": 2})
    with pytest.raises(ValueError, match=r"'hard-negatives' \(1\) must be <= 'num-negatives' \(0\)"):
        RunConfig.from_flower({"num-negatives": 0})
    with pytest.raises(ValueError, match="'secure-aggregation' with 'client-noise-multiplier'"):
        RunConfig.from_flower(
            {"dp-mode": "partner", "secure-aggregation": "true", "client-noise-multiplier": 1}
        )


def test_direct_construction_is_checked_too():
    with pytest.raises(ValueError, match=r"run-config 'batch-size': must be an integer >= 1, got 0"):
        RunConfig(batch_size=0)
    with pytest.raises(ValueError, match="'epsilon-cap'"):
        RunConfig(epsilon_cap=NAN)
    with pytest.raises(ValueError, match="'local-steps'"):
        RunConfig(local_steps=2.7)
    cfg = RunConfig(epsilon_cap=10)  # an int for a float field is stored as the float, so configs compare
    assert cfg.epsilon_cap == 10.0 and isinstance(cfg.epsilon_cap, float) and cfg == RunConfig()


def test_every_numeric_field_declares_its_range():
    hints = get_type_hints(RunConfig)
    for f in fields(RunConfig):
        assert (hints[f.name] in (int, float)) == ("range" in f.metadata), f.name
        if "range" in f.metadata:
            assert f.default in f.metadata["range"], f.name


# ---------------------------------------------------------------- property: parse or refuse, by key

KEYS = sorted(RunConfig().to_flower())
ANY_VALUE = st.one_of(
    st.text(max_size=12),
    st.integers(),
    st.integers(-3, 300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=0, max_value=2),
    st.booleans(),
    st.none(),
    st.sampled_from(["true", "No", "1", "0", "3.0", "2.7", "1e-5", "nan", "-inf", "server", "client"]),
    st.one_of(st.integers(-3, 300), st.floats(-1, 2)).map(str),
)


def _in_range(cfg: RunConfig) -> None:
    hints = get_type_hints(RunConfig)
    for f in fields(RunConfig):
        value = getattr(cfg, f.name)
        assert type(value) is hints[f.name], f.name
        if "range" in f.metadata:
            assert value in f.metadata["range"], f.name
    assert cfg.client_clipping in ("server", "client") and cfg.hard_negatives <= cfg.num_negatives


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(KEYS), ANY_VALUE, max_size=6))
def test_from_flower_returns_a_config_in_range_or_refuses_naming_a_given_key(raw):
    try:
        cfg = RunConfig.from_flower(raw)
    except ValueError as error:
        assert any(repr(key) in str(error) for key in raw), str(error)
        return
    _in_range(cfg)
    assert RunConfig.from_flower(cfg.to_flower()) == cfg


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(KEYS), ANY_VALUE)
def test_one_value_parses_in_range_or_is_refused_by_its_key(key, value):
    try:
        cfg = RunConfig.from_flower({key: value})
    except ValueError as error:
        assert repr(key) in str(error), str(error)
        return
    _in_range(cfg)
