"""Shared fixtures: one real MiniLM-based model per test session (loading it takes seconds)."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.supercore.task_identity import TaskIdentity

from shared.model import ModelConfig, Recommender


def pytest_collection_modifyitems(config, items) -> None:
    """The deployment tests first (a stable sort: the rest keep their order): under `make test`'s two
    pytest-xdist workers one of them spends its ~6 minutes there, mostly waiting on Flower's heartbeats,
    while the other works through everything else, instead of starting them last."""
    items.sort(key=lambda item: item.get_closest_marker("deployment") is None)


# Partner mode (per-partner DP-SGD, no SecAgg+) with the settings it was measured at: the tests written for
# it pin these, since the defaults are federation mode's (pyproject `[tool.flwr.app.config]`).
PARTNER_MODE = {
    "dp-mode": "partner",
    "secure-aggregation": False,
    "num-server-rounds": 4,
    "lora-rank": 4,
    "item-id-rank": 0,
    "learning-rate": 0.001,
}

TEXTS = [
    "Northpeak Ultralight 2-Person Dome Tent. Northpeak. Tents",
    "Trailforge Backpacking Tent with Rainfly. Trailforge. Tents",
    "Wildmere Down Sleeping Bag -5C. Wildmere. Sleeping Bags",
    "Campvale Synthetic Sleeping Bag. Campvale. Sleeping Bags",
    "Cairnstone 400-Lumen Headlamp. Cairnstone. Headlamps",
    "Brewhaus Conical Burr Coffee Grinder. Brewhaus. Coffee Grinders",
    "Grindwell Hand Coffee Grinder. Grindwell. Coffee Grinders",
    "Cuisora Drip Coffee Maker with Timer. Cuisora. Coffee Makers",
    "Sonareo Noise-Cancelling Over-Ear Headphones. Sonareo. Headphones",
    "Voltis Wireless Earbuds. Voltis. Headphones",
    "Pixelcraft Mirrorless Camera Body. Pixelcraft. Cameras",
    "Lumetric 128GB SD Memory Card. Lumetric. Memory Cards",
]


@pytest.fixture(scope="session")
def tiny_model() -> Recommender:
    return Recommender(ModelConfig(n_items=len(TEXTS)))


@pytest.fixture(scope="session")
def tiny_id_model() -> Recommender:
    """The same with learned item ID residuals (rank 4)."""
    return Recommender(ModelConfig(n_items=len(TEXTS), item_id_rank=4))


@pytest.fixture(scope="session")
def tiny_frozen_text_model() -> Recommender:
    """A frozen text tower (no LoRA): only the head, the item bias and the ID rows train."""
    return Recommender(ModelConfig(n_items=len(TEXTS), item_id_rank=4, lora_rank=0))


@pytest.fixture(scope="session")
def tiny_catalogue(tiny_model):
    vectors = tiny_model.encode_texts(TEXTS)
    tokens = tiny_model.tokenize(TEXTS)
    return vectors, tokens


@pytest.fixture
def histories() -> list[list[int]]:
    rng = np.random.default_rng(0)
    return [list(rng.choice(len(TEXTS), 5, replace=False)) for _ in range(24)]


@pytest.fixture
def task_identity():
    """Messages are made inside a Flower task; outside one, give the process a task identity."""
    saved = (TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id)
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 1
    yield
    TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id = saved


def catalogue_frame():
    """TEXTS as a catalogue table ("title. brand. category"), item ids i0, i1, ...: what `publish` takes."""
    import pandas as pd

    names = [t.split(". ") for t in TEXTS]
    return pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(len(TEXTS))],
            "title": [n[0] for n in names],
            "brand": [n[1] for n in names],
            "category": [n[2] for n in names],
            "price": 1.0,
            "description": "",
        }
    )


def clipped_gradient_sum(model, examples, catalogue, max_grad_norm: float):
    """Σ over examples of each one's own autograd gradient (all trained tensors), clipped to
    `max_grad_norm` as Opacus clips: what a DP step's sum must be, computed the slow, obvious way.
    Returns (name -> summed tensor, how many examples the bound clipped)."""
    import math

    import torch

    from client.train import example_loss

    params = {k: p for k, p in model.named_parameters() if p.requires_grad}
    total = {k: torch.zeros_like(p) for k, p in params.items()}
    clipped = 0
    for example in examples:
        batch = [x[None] for x in example]
        grads = torch.autograd.grad(example_loss(model, *batch, catalogue), list(params.values()))
        norm = math.sqrt(sum(float(g.pow(2).sum()) for g in grads))
        clipped += norm > max_grad_norm
        factor = min(1.0, max_grad_norm / (norm + 1e-6))
        for k, g in zip(params, grads, strict=True):
            total[k] += factor * g
    return total, clipped
