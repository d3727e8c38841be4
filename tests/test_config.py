"""One configuration, two doors: pyproject's Flower run config and RunConfig must agree."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

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
    with pytest.raises(ValueError, match="'private': expected true/false"):
        RunConfig.from_flower({"private": "maybe"})
    assert RunConfig.from_flower({"private": "false", "local-steps": "3"}).local_steps == 3
