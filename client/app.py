"""Flower ClientApp: one partner or device.

It holds private behaviour logs, fine-tunes the shared adapters under DP-SGD each round, and answers
evaluation requests on its own held-out items. ClientApps are stateless between messages, so the DP
history that makes ε composable lives on disk, in the client's append-only privacy ledger: it
survives restarts, and the auditor reads the same file. Before training, the client projects its ε
after the round; if that would pass its cap, it does not train and tells the server why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client.mods import legacy_train_mod, secure_aggregation_mod, update_clipping_mod
from client.train import TrainSettings, poisson_rate, train_round, trainable_users
from shared.adapters import WEIGHT, from_record, shapes, to_record
from shared.config import RunConfig
from shared.data import load_party
from shared.evaluation import evaluate_split
from shared.item_cache import catalogue_vectors
from shared.ledger import LEDGER_NAME, Ledger
from shared.model import Recommender
from shared.privacy import PRIVACY_UNIT, calibrate_noise
from shared.schema import item_texts

BUDGET_EXHAUSTED = 451  # Error code of a reply that refuses to train: the privacy cap would be passed


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


def _load_data(context: Context, overrides: dict[str, Any]):
    """Config, who this client is, the public catalogue and its own users (cheap: no model yet)."""
    cfg = RunConfig.from_flower({**context.run_config, **overrides})
    party = locate_party(context, cfg)
    catalogue, _, users, _ = load_party(party.catalogue, party.events, party.work_dir / "quarantine")
    return cfg, party, catalogue, users


def _load_model(msg: Message, cfg: RunConfig, party: Party, catalogue):
    """The global model from the message, and the catalogue's vectors under it (cached per model)."""
    model = Recommender(cfg.model_config(len(catalogue)))
    model.load_trainable_state(from_record(msg.content["arrays"], shapes(model.trainable_state())))
    texts = item_texts(catalogue)
    return model, texts, catalogue_vectors(model, texts, party.cache_dir)


def train(msg: Message, context: Context, overrides: dict[str, Any]) -> Message:
    cfg, party, catalogue, users = _load_data(context, overrides)
    server_round = int(msg.content["config"]["server-round"])
    ledger = Ledger(party.work_dir / LEDGER_NAME)
    n_users = len(trainable_users(users.train))
    q = poisson_rate(n_users, cfg.batch_size)
    sigma = cfg.noise_multiplier
    if cfg.private and cfg.target_epsilon > 0:
        sigma = calibrate_noise(cfg.target_epsilon, cfg.delta, q, cfg.num_server_rounds * cfg.local_steps)
    cap = cfg.epsilon_cap if cfg.epsilon_cap > 0 else None
    if cfg.private and cap is not None:
        projected, _ = ledger.project(sigma, q, cfg.local_steps, cfg.delta)
        if projected > cap:
            reason = (
                f"{party.name}: privacy budget: ε would reach {projected:.3f} > cap {cap:g} "
                f"(δ={cfg.delta:g}) after round {server_round}; not training"
            )
            return Message(Error(code=BUDGET_EXHAUSTED, reason=reason), reply_to=msg)

    settings = TrainSettings.from_run_config(cfg, noise_multiplier=sigma)
    model, texts, vectors = _load_model(msg, cfg, party, catalogue)
    seed = cfg.seed * 1_000_003 + party.index * 1_009 + server_round
    result = train_round(model, users.train, vectors, model.tokenize(texts), settings, round_seed=seed)

    privacy: dict[str, Any] = {"client": party.name, "private": cfg.private, "unit": PRIVACY_UNIT}
    if cfg.private:
        # The release is recorded before the update leaves: no update without its ledger line.
        release = ledger.append(
            party.name,
            server_round,
            result.steps,
            sigma,
            result.sample_rate,
            cfg.max_grad_norm,
            cfg.delta,
            epsilon_cap=cap,
            run=str(context.run_id),
        )
        privacy.update(
            {
                "delta": cfg.delta,
                "epsilon-prv": release.epsilon_prv,
                "epsilon-rdp": release.epsilon_rdp,
                "noise-multiplier": sigma,
                "max-grad-norm": cfg.max_grad_norm,
                "sample-rate": result.sample_rate,
                "steps-this-round": result.steps,
                "history": json.dumps(ledger.history()),
                "ledger": str(party.work_dir / LEDGER_NAME),
            }
        )
    metrics = MetricRecord({"num-examples": result.users, "train-loss": result.mean_loss})
    _weigh_equally(cfg, metrics)
    content = RecordDict(
        {"arrays": to_record(model.trainable_state()), "metrics": metrics, "privacy": ConfigRecord(privacy)}
    )
    return Message(content, reply_to=msg)


def evaluate(msg: Message, context: Context, overrides: dict[str, Any]) -> Message:
    cfg, party, catalogue, users = _load_data(context, overrides)
    model, _, vectors = _load_model(msg, cfg, party, catalogue)
    metrics = MetricRecord({"num-examples": len(users.users)})
    for split in ("valid", "test"):
        metrics.update({f"{split}-{k}": v for k, v in evaluate_split(model, vectors, users, split).items()})
    _weigh_equally(cfg, metrics)
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)


def _weigh_equally(cfg: RunConfig, metrics: MetricRecord) -> None:
    """Equal client weights: what client-level DP's sensitivity (and the SecAgg+ mean) assume."""
    if cfg.client_level_dp or cfg.secure_aggregation:
        metrics[WEIGHT] = 1


def make_app(overrides: dict[str, Any] | None = None) -> ClientApp:
    """The ClientApp; `overrides` (dashed run-config keys) win over the run config (`fedrec simulate`)."""
    fixed = dict(overrides or {})
    client_app = ClientApp(mods=[secure_aggregation_mod, legacy_train_mod, update_clipping_mod])

    @client_app.train()
    def _train(msg: Message, context: Context) -> Message:
        return train(msg, context, fixed)

    @client_app.evaluate()
    def _evaluate(msg: Message, context: Context) -> Message:
        return evaluate(msg, context, fixed)

    return client_app


app = make_app()
