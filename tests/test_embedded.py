"""The embedded shop each party derives when no catalogue is configured (`flwr run .` as shipped)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from client.app import NODE_CONFIG_FILE
from shared import embedded
from shared.config import RunConfig
from shared.shop import ShopConfig, generate_shop

SMALL = ShopConfig(n_items=60, n_users=30, seed=7)


@pytest.fixture(autouse=True)
def small_shop(monkeypatch):
    monkeypatch.setattr(embedded, "EMBEDDED_SHOP", SMALL)


def test_a_named_catalogue_is_left_alone(tmp_path):
    cfg = RunConfig(run_dir=str(tmp_path), catalogue="items.csv")
    assert embedded.server_config(cfg) is cfg and embedded.client_config(cfg, 0, 2) is cfg
    assert not any(tmp_path.iterdir())


def test_the_server_derives_the_catalogue_once(tmp_path):
    cfg = embedded.server_config(RunConfig(run_dir=str(tmp_path)))
    written = pd.read_csv(cfg.catalogue)
    assert list(written["item_id"]) == list(generate_shop(SMALL)[0]["item_id"])
    assert cfg.federation_population == embedded.declared_population(SMALL.n_users)  # public, as the shop
    stamp = (tmp_path / "data" / embedded.STAMP).stat().st_mtime_ns
    assert embedded.server_config(RunConfig(run_dir=str(tmp_path))).catalogue == cfg.catalogue
    assert (tmp_path / "data" / embedded.STAMP).stat().st_mtime_ns == stamp  # reused, not rewritten


def test_each_client_derives_only_its_own_users(tmp_path):
    users = sorted(generate_shop(SMALL)[1]["user_id"].unique())
    seen = []
    for index in range(3):
        cfg = embedded.client_config(RunConfig(run_dir=str(tmp_path), seed=1), index, 3)
        folder = tmp_path / "partitions" / f"client-{index}"
        own = sorted(pd.read_csv(folder / "events.csv")["user_id"].unique())
        assert own == embedded.iid_split(users, 3, seed=1)[index]
        node = json.loads((folder / NODE_CONFIG_FILE).read_text())
        assert node == {"population": embedded.declared_population(len(own)), "require-private": True}
        assert cfg.catalogue == str(tmp_path / "data" / "catalogue.csv")
        seen += own
    assert sorted(seen) == users


def test_a_stale_partition_from_another_split_is_derived_again(tmp_path):
    embedded.client_config(RunConfig(run_dir=str(tmp_path)), 0, 2)
    embedded.client_config(RunConfig(run_dir=str(tmp_path)), 0, 3)
    stamp = json.loads((tmp_path / "partitions" / "client-0" / embedded.STAMP).read_text())
    assert stamp["clients"] == 3


def test_one_client_is_no_federation(tmp_path):
    with pytest.raises(ValueError, match="at least 2 clients"):
        embedded.client_config(RunConfig(run_dir=str(tmp_path)), 0, 1)


def test_the_node_config_file_name_is_the_client_apps():
    assert embedded.NODE_CONFIG_FILE == NODE_CONFIG_FILE
