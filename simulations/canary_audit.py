"""`fedrec canary-audit`: an audit run of one partner's DP-SGD with gradient canaries planted in it.

Never part of a production run: it trains a partner of the embedded shop (or given data) exactly as
the ClientApp does (`client.train.train_round`, the run config's σ calibration, Poisson rate from the
declared population, fresh secret randomness per round, the rounds the config plans), with the
auditor's canaries planted through a `StepProbe`, and hands what was released to the auditor
(`audit/one_run.py`), which bounds ε from below. One partner is enough: without secure aggregation
the server sees each partner's update on its own, so each partner's DP-SGD is what must hold.

Builds: `correct` (the shipped code), and two planted bugs the audit must flag: `noise-off` (clipping
kept, σ = 0, the ledger's σ still claimed) and `seeded` (noise and sampling from the public seed of
`client.randomness.reproducible`, which is what the review found in the original code).
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from audit.one_run import CONFIDENCE, NoiseLayout, audit, replay_public_noise
from client import randomness
from client.train import TrainSettings, poisson_rate, train_round, trainable_users
from shared.config import RunConfig
from shared.data import load_party
from shared.durable import write_json
from shared.embedded import declared_population
from shared.item_cache import catalogue_vectors
from shared.model import Recommender
from shared.privacy import History, calibrate_noise, compact, epsilon
from shared.schema import item_texts, load_catalogue, load_events
from simulations.partition import partition_users, write_partitions
from simulations.shop import ShopConfig, write_shop

BUILDS = ("correct", "noise-off", "seeded")
# The claim an audit run tests: m = 2,000 canaries at δ = 1e-5 certify at most ≈ 4.8 even for a perfect
# attack, so a build that leaks is flagged only against a claim below that (the default run's ε = 8 is not).
AUDIT_TARGET_EPSILON = 2.0
BLOCK = "audit_canaries"  # the module the canaries live in: never used by the model's forward
CANARY_NORM = 1e3  # a canary's raw gradient norm, far above any C: Opacus clips it to exactly C


class CanaryProbe:
    """Plants the included canaries (each Poisson-sampled at q per step) and records the audit block."""

    def __init__(self, block: torch.nn.Parameter, included: np.ndarray, sample_rate: float) -> None:
        self.block, self.included, self.q = block, np.flatnonzero(included), sample_rate
        self.m = len(included)
        self.rng = np.random.default_rng(secrets.randbits(128))  # which canaries a step sees: secret
        self.released: list[np.ndarray] = []
        self.layout: tuple[list[tuple[int, ...]], int] | None = None

    def before_step(self, step: int, optimizer: torch.optim.Optimizer) -> None:
        params = optimizer.params  # Opacus' DPOptimizer: the audit needs a private round
        if self.layout is None:
            order = [i for i, p in enumerate(params) if p is self.block]
            self.layout = ([tuple(p.shape) for p in params], order[0])
        sampled = self.included[self.rng.random(len(self.included)) < self.q]
        real = next(len(p.grad_sample) for p in params if p.grad_sample is not None)
        for p in params:
            grads = p.grad_sample
            if p is self.block and grads is None:  # the model never touches it: real users add 0
                grads = torch.zeros((real, *p.shape), dtype=p.dtype)
            rows = torch.zeros((len(sampled), *p.shape), dtype=p.dtype)
            if p is self.block:
                rows.view(len(sampled), -1)[torch.arange(len(sampled)), torch.from_numpy(sampled)] = (
                    CANARY_NORM
                )
            p.grad_sample = torch.cat([grads, rows])

    def after_step(self, step: int, optimizer: torch.optim.Optimizer) -> None:
        scale = optimizer.expected_batch_size / optimizer.max_grad_norm  # back to canary units
        self.released.append(self.block.grad.detach().flatten().numpy() * scale)


def canary_audit(
    out: str | Path,
    build: str = "correct",
    canaries: int = 2000,
    guesses: int | None = None,
    overrides: dict[str, Any] | None = None,
    shop: ShopConfig | None = None,
    num_clients: int = 2,
    confidence: float = CONFIDENCE,
) -> dict[str, Any]:
    """Run the audit run for `build` and write `out/canary-audit-<build>.json`; returns its content."""
    if build not in BUILDS:
        raise ValueError(f"unknown build {build!r}; choose from {BUILDS}")
    started = time.time()
    out = Path(out).resolve()
    cfg = RunConfig.from_flower({**(overrides or {}), "run-dir": str(out)})
    if not cfg.private:
        raise ValueError("the canary audit audits DP-SGD: run it with private=true")
    shop = shop or ShopConfig()
    catalogue_path, events_path = write_shop(out / "data", shop)  # the demo's partner 0, partitioned alike
    whole = load_catalogue(catalogue_path)
    log, _ = load_events(events_path, whole, out / "quarantine")
    parts = partition_users(log, whole, num_clients, "iid", 0.5, seed=cfg.seed)
    write_partitions(log, parts, out / "partitions")
    catalogue, _, users, _ = load_party(
        catalogue_path, out / "partitions" / "client-0" / "events.csv", out / "quarantine"
    )
    population = declared_population(len(users.users))

    q = poisson_rate(population, cfg.batch_size)
    steps = cfg.num_server_rounds * cfg.local_steps
    sigma = cfg.noise_multiplier
    if cfg.target_epsilon > 0:
        sigma = calibrate_noise(cfg.target_epsilon, cfg.delta, q, steps)
    claimed: History = [(sigma, q, steps)]
    trained_sigma = 0.0 if build == "noise-off" else sigma
    settings = TrainSettings.from_run_config(cfg, noise_multiplier=trained_sigma)

    model = Recommender(cfg.model_config(len(catalogue)))
    model.add_module(BLOCK, nn.Linear(1, canaries, bias=False))  # unused coordinates, one per canary
    block = getattr(model, BLOCK).weight
    nn.init.zeros_(block)
    included = np.random.default_rng(secrets.randbits(128)).random(canaries) < 0.5  # the secret S
    probe = CanaryProbe(block, included, q)
    texts = item_texts(catalogue)
    tokens = model.tokenize(texts)
    histories: History = []
    seeds = [randomness.public_seed(cfg.seed, 0, r) for r in range(1, cfg.num_server_rounds + 1)]
    for server_round, seed in enumerate(seeds, start=1):
        streams = randomness.reproducible(seed) if build == "seeded" else randomness.secret()
        vectors = catalogue_vectors(model, texts, out / "cache")
        result = train_round(
            model,
            trainable_users(users.train),
            vectors,
            tokens,
            settings,
            population=population,
            randomness=streams,
            probe=probe,
        )
        histories += result.history
        print(f"canary audit ({build}): round {server_round}/{cfg.num_server_rounds} trained", flush=True)
    if build != "noise-off" and compact(histories) != compact(claimed):
        raise RuntimeError(f"Opacus accounted {histories}, the plan was {claimed}")

    released = np.stack(probe.released)
    shapes, position = probe.layout
    layout = NoiseLayout(
        shapes, position, sigma * cfg.max_grad_norm, cfg.max_grad_norm, [cfg.local_steps] * len(seeds)
    )
    claimed_eps = epsilon(claimed, cfg.delta)
    result = audit(
        released,
        included,
        replay_public_noise(layout, seeds),
        claimed_eps,
        cfg.delta,
        guesses or canaries // 4,
        confidence,
    )
    record = {
        "build": build,
        **result.to_dict(),
        "accountant": "prv",
        "noise_multiplier": sigma,
        "trained_noise_multiplier": trained_sigma,
        "sample_rate": q,
        "population": population,
        "users": len(users.users),
        "run_config": cfg.without_paths(),
        "shop": {"n_items": shop.n_items, "n_users": shop.n_users, "seed": shop.seed},
        "wall_time_s": round(time.time() - started, 1),
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / f"canary-audit-{build}.json", record)
    return record


def describe(record: dict[str, Any]) -> str:
    """One line per audit: the bound against the claim, and the verdict."""
    verdict = "FLAGGED: the build does not deliver its ε" if record["flagged"] else "consistent with its ε"
    attacks = ", ".join(
        f"{a['attack']} {a['correct']}/{a['guesses']} → ε ≥ {a['epsilon_lower_bound']:.2f}"
        for a in record["attacks"]
    )
    return (
        f"{record['build']:9s}: ε ≥ {record['epsilon_lower_bound']:.2f} ({record['confidence']:.0%})"
        f" against the accountant's ε = {record['claimed_epsilon']:.2f} (δ = {record['delta']:g}; {attacks}):"
        f" {verdict}"
    )
