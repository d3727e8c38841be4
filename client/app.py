"""Flower ClientApp: one partner or device.

It holds private behaviour logs, fine-tunes the shared adapters under DP-SGD each round, and answers
evaluation requests on its own held-out items. ClientApps are stateless between messages, so the
DP history that makes ε composable lives in `context.state` (and, for deployment, on disk).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client.train import TrainSettings, train_round
from shared.adapters import from_record, shapes, to_record
from shared.config import RunConfig
from shared.data import load_party
from shared.evaluation import evaluate_split
from shared.item_cache import catalogue_vectors
from shared.model import Recommender
from shared.privacy import PRIVACY_UNIT, History, compact, epsilon
from shared.schema import item_texts

PRIVACY_STATE = "fedrec-privacy"


@dataclass
class Party:
    """Where this client's data and working files are, and who it is."""

    name: str
    index: int
    events: Path
    catalogue: Path
    work_dir: Path  # quarantine reports, ledger
    cache_dir: Path  # catalogue vectors of global models (public)


def locate_party(context: Context, cfg: RunConfig) -> Party:
    """Deployment: the SuperNode's --node-config names the data. Simulation: the run folder's partition."""
    node = context.node_config
    if "data-path" in node:
        events = Path(str(node["data-path"]))
        work = Path(str(node.get("work-dir", events.parent / "fedrec-client")))
        index = int(node.get("client-index", 0))
        return Party(
            name=str(node.get("client-name", f"client-{index}")),
            index=index,
            events=events,
            catalogue=Path(str(node.get("catalogue", cfg.catalogue))),
            work_dir=work,
            cache_dir=work / "cache",
        )
    index = int(node["partition-id"])
    run_dir = Path(cfg.run_dir)
    return Party(
        name=f"client-{index}",
        index=index,
        events=run_dir / "partitions" / f"client-{index}" / "events.csv",
        catalogue=Path(cfg.catalogue),
        work_dir=run_dir / "clients" / f"client-{index}",
        cache_dir=run_dir / "cache",
    )


def _prepare(msg: Message, context: Context, overrides: dict[str, Any]):
    cfg = RunConfig.from_flower({**context.run_config, **overrides})
    party = locate_party(context, cfg)
    catalogue, _, users, _ = load_party(party.catalogue, party.events, party.work_dir / "quarantine")
    model = Recommender(cfg.model_config(len(catalogue)))
    model.load_trainable_state(from_record(msg.content["arrays"], shapes(model.trainable_state())))
    texts = item_texts(catalogue)
    vectors = catalogue_vectors(model, texts, party.cache_dir)
    return cfg, party, users, model, texts, vectors


def train(msg: Message, context: Context, overrides: dict[str, Any]) -> Message:
    cfg, party, users, model, texts, vectors = _prepare(msg, context, overrides)
    server_round = int(msg.content["config"]["server-round"])
    settings = TrainSettings(
        local_steps=cfg.local_steps,
        batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        lora_learning_rate=cfg.lora_learning_rate,
        private=cfg.private,
        noise_multiplier=cfg.noise_multiplier,
        max_grad_norm=cfg.max_grad_norm,
        num_negatives=cfg.num_negatives,
        hard_negatives=cfg.hard_negatives,
    )
    seed = cfg.seed * 1_000_003 + party.index * 1_009 + server_round
    result = train_round(model, users.train, vectors, model.tokenize(texts), settings, round_seed=seed)

    history = compact(load_history(context) + result.history)
    save_history(context, history)
    eps_prv = epsilon(history, cfg.delta, "prv") if cfg.private else float("inf")
    eps_rdp = epsilon(history, cfg.delta, "rdp") if cfg.private else float("inf")
    privacy = ConfigRecord(
        {
            "client": party.name,
            "private": cfg.private,
            "unit": PRIVACY_UNIT,
            "delta": cfg.delta,
            "epsilon-prv": eps_prv,
            "epsilon-rdp": eps_rdp,
            "noise-multiplier": cfg.noise_multiplier if cfg.private else 0.0,
            "max-grad-norm": cfg.max_grad_norm if cfg.private else 0.0,
            "sample-rate": result.sample_rate,
            "steps-this-round": result.steps,
            "history": json.dumps(history),
        }
    )
    metrics = MetricRecord({"num-examples": result.users, "train-loss": result.mean_loss})
    content = RecordDict({"arrays": to_record(model.trainable_state()), "metrics": metrics, "privacy": privacy})
    return Message(content, reply_to=msg)


def evaluate(msg: Message, context: Context, overrides: dict[str, Any]) -> Message:
    _, _, users, model, _, vectors = _prepare(msg, context, overrides)
    metrics: dict[str, float] = {"num-examples": len(users.users)}
    for split in ("valid", "test"):
        metrics.update({f"{split}-{k}": v for k, v in evaluate_split(model, vectors, users, split).items()})
    return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)


def load_history(context: Context) -> History:
    """This client's DP history over all earlier rounds of the run (Opacus' (σ, q, steps) entries)."""
    if PRIVACY_STATE not in context.state:
        return []
    return [tuple(entry) for entry in json.loads(str(context.state[PRIVACY_STATE]["history"]))]


def save_history(context: Context, history: History) -> None:
    context.state[PRIVACY_STATE] = ConfigRecord({"history": json.dumps(history)})


def make_app(overrides: dict[str, Any] | None = None) -> ClientApp:
    """The ClientApp; `overrides` (dashed run-config keys) win over the run config (used by `fedrec simulate`)."""
    fixed = dict(overrides or {})
    client_app = ClientApp()

    @client_app.train()
    def _train(msg: Message, context: Context) -> Message:
        return train(msg, context, fixed)

    @client_app.evaluate()
    def _evaluate(msg: Message, context: Context) -> Message:
        return evaluate(msg, context, fixed)

    return client_app


app = make_app()
