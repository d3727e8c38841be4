"""The embedded default shop when no catalogue is configured: what `flwr run .` trains on as shipped.

Why each party derives it itself: the shop generator is public and seeded (`shared/shop.py`), so
nothing has to travel and no party receives another's data. The ServerApp derives the catalogue (all it
needs to publish); each simulated ClientApp derives the same shop and keeps only its own share of the
users: the IID split `fedrec simulate` makes (this very function, same seed), with the public population
bound it would declare (and the federation's total, when federation-wide DP needs it, is the shop's
public user count). The files land where a `fedrec simulate` run keeps them (RUN_DIR/data,
RUN_DIR/partitions/client-i), stamped with what they were derived from, so later rounds reuse them and
a stale folder from another run is never mistaken for them.

A deployment's SuperNodes never come here: their --node-config names their partner's own files.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd

from shared.config import RunConfig
from shared.durable import write_bytes, write_json
from shared.shop import ShopConfig, generate_shop

EMBEDDED_SHOP = ShopConfig()  # the default shop of `fedrec simulate` (--shop-seed 0)
POPULATION_STEP = 50  # simulated partners declare their user count rounded up to this (a public bound)
STAMP = "embedded.json"  # what a derived folder was derived from
NODE_CONFIG_FILE = "node-config.json"  # the name client/app.py reads a simulated partner's node config from


def declared_population(users: int) -> int:
    """The public bound a simulated partner declares: its user count rounded up to POPULATION_STEP."""
    return max(POPULATION_STEP, -(-users // POPULATION_STEP) * POPULATION_STEP)


def iid_split(users: list[str], num_clients: int, seed: int) -> list[list[str]]:
    """Users shuffled with `seed` and dealt out evenly: one sorted list per client."""
    order = np.random.default_rng(seed).permutation(len(users))
    return [sorted(users[i] for i in chunk) for chunk in np.array_split(order, num_clients)]


def server_config(cfg: RunConfig) -> RunConfig:
    """`cfg` as it is, or naming the embedded shop's catalogue (in RUN_DIR/data) when none is named."""
    if cfg.catalogue:
        return cfg
    folder = Path(cfg.run_dir) / "data"
    stamp = {"shop": asdict(EMBEDDED_SHOP)}
    if not _fresh(folder, stamp, "catalogue.csv"):
        catalogue, _ = generate_shop(EMBEDDED_SHOP)
        _write(folder, stamp, {"catalogue.csv": catalogue})
    # federation-wide DP scales every share by the federation's declared user total: here it is public
    population = cfg.federation_population or declared_population(EMBEDDED_SHOP.n_users)
    return replace(cfg, catalogue=str(folder / "catalogue.csv"), federation_population=population)


def client_config(cfg: RunConfig, index: int, num_clients: int) -> RunConfig:
    """`cfg` as it is, or naming the embedded catalogue after deriving this client's partition.

    The partition is written as a simulation's would be (RUN_DIR/partitions/client-i: events.csv and the
    node config with the declared population), so the ClientApp then reads it like any other.
    """
    if cfg.catalogue:
        return cfg
    if not 0 <= index < num_clients or num_clients < 2:
        raise ValueError(
            f"embedded shop: client {index} of {num_clients}: a federation needs at least 2 clients;"
            " or name a catalogue (run config) and each client's data (node config)"
        )
    folder = Path(cfg.run_dir) / "partitions" / f"client-{index}"
    stamp = {"shop": asdict(EMBEDDED_SHOP), "clients": num_clients, "seed": cfg.seed}
    if not _fresh(folder, stamp, "events.csv", NODE_CONFIG_FILE):
        catalogue, events = generate_shop(EMBEDDED_SHOP)
        users = iid_split(sorted(events["user_id"].unique()), num_clients, cfg.seed)[index]
        write_node_config(folder, len(users), cfg)
        _write(folder, stamp, {"events.csv": events[events["user_id"].isin(set(users))]})
    return server_config(cfg)


def write_node_config(folder: Path, users: int, cfg: RunConfig) -> int:
    """A simulated partner's own node config (what a SuperNode's --node-config would hold): the public
    population bound it declares, and whether it requires private training. Returns the bound."""
    population = declared_population(users)
    node = {"population": population, "require-private": cfg.private and not cfg.reproducible_noise}
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / NODE_CONFIG_FILE, node)
    return population


def _fresh(folder: Path, stamp: dict, *names: str) -> bool:
    """Whether `folder` holds `names`, derived from exactly `stamp`."""
    try:
        same = json.loads((folder / STAMP).read_text()) == stamp
    except (OSError, ValueError):
        return False
    return same and all((folder / name).is_file() for name in names)


def _write(folder: Path, stamp: dict, frames: dict[str, pd.DataFrame]) -> None:
    """Each frame as CSV, durably (processes deriving the same files at once each replace them whole), then
    the stamp: a folder is fresh only once everything in it is written."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in frames.items():
        text = io.StringIO()
        frame.to_csv(text, index=False, float_format="%.2f")
        write_bytes(folder / name, text.getvalue().encode("utf-8"))
    write_json(folder / STAMP, stamp)
