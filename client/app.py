"""Flower ClientApp: one partner or device.

It holds private behaviour logs and fine-tunes the shared adapters under DP-SGD each round, on the
terms it agrees to (`client/policy.py`: the run config can only tighten the partner's own floor).
ClientApps are stateless between messages, so the DP history that makes ε composable lives on disk,
in the client's append-only privacy ledger. Each round the client calibrates σ on its remaining
budget, then *reserves* the release in the ledger (the append itself refuses to pass the cap, under
the file lock), trains with secret randomness, and only then sends.

In a private run a reply carries only the DP-released adapter arrays, an equal weight and the
public privacy report (`shared/report.py`): no loss, no example or user count, and evaluation
requests are answered without metrics (per-client metrics would be an un-noised release).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client import randomness
from client.mods import legacy_train_mod, secure_aggregation_mod, update_clipping_mod
from client.policy import PartnerPolicy, Refusal, terms
from client.train import TrainSettings, poisson_rate, train_round, trainable_users
from shared.adapters import WEIGHT, from_record, shapes, to_record
from shared.config import RunConfig
from shared.data import load_party
from shared.evaluation import evaluate_split
from shared.item_cache import catalogue_vectors
from shared.ledger import LEDGER_NAME, BudgetExceeded, Ledger
from shared.model import Recommender
from shared.privacy import PRIVACY_UNIT, BudgetSpent, calibrate_noise, compact
from shared.report import NOISE_NONE, PrivacyReport
from shared.schema import item_texts

BUDGET_EXHAUSTED = 451  # Error code of a reply that refuses to train: the privacy cap would be passed
TERMS_REFUSED = 452  # the run config asks for less privacy than the partner's node config allows
NODE_CONFIG_FILE = "node-config.json"  # simulation: a partition's own node config, as a SuperNode's would be


@dataclass
class Party:
    """Where this client's data and working files are, and who it is."""

    name: str
    index: int
    events: Path
    catalogue: Path
    work_dir: Path  # quarantine reports, ledger
    cache_dir: Path  # catalogue vectors of global models (public)
    node_config: dict[str, Any]  # the partner's own settings (population, privacy floor)


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
            node_config=dict(node),
        )
    index = int(node["partition-id"])
    run_dir = Path(cfg.run_dir)
    partition = run_dir / "partitions" / f"client-{index}"
    declared = partition / NODE_CONFIG_FILE  # written by the simulation driver for this partner
    own = json.loads(declared.read_text()) if declared.exists() else {}
    return Party(
        name=f"client-{index}",
        index=index,
        events=partition / "events.csv",
        catalogue=Path(cfg.catalogue),
        work_dir=run_dir / "clients" / f"client-{index}",
        cache_dir=run_dir / "cache",
        node_config={**dict(node), **own},
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


def _refuse(msg: Message, code: int, reason: str) -> Message:
    print(reason, file=sys.stderr, flush=True)
    return Message(Error(code=code, reason=reason), reply_to=msg)


def train(msg: Message, context: Context, overrides: dict[str, Any]) -> Message:
    cfg, party, catalogue, users = _load_data(context, overrides)
    server_round, run = int(msg.content["config"]["server-round"]), str(context.run_id)
    try:
        agreed = terms(cfg, PartnerPolicy.from_node_config(party.node_config))
    except Refusal as err:
        return _refuse(msg, TERMS_REFUSED, f"{party.name}: not training: {err}")
    if len(users.train) > agreed.population:
        # one bit (count > declared bound) leaves with this refusal; the count itself stays here
        print(f"{party.name}: {len(users.train)} users > population {agreed.population}", file=sys.stderr)
        reason = f"{party.name}: more users than its declared population; not training"
        return _refuse(msg, TERMS_REFUSED, reason)
    if not trainable_users(users.train):
        reason = f"{party.name}: no user with two or more training items; not training"
        return _refuse(msg, TERMS_REFUSED, reason)

    q = poisson_rate(agreed.population, cfg.batch_size)
    sigma, cap = agreed.noise_floor, agreed.epsilon_cap
    ledger = Ledger(party.work_dir / LEDGER_NAME)
    streams = randomness.secret()
    # TEST ONLY, labelled everywhere: the noise derives from public values, exactly what an attacker knows.
    # A non-private round has no noise to hide, so it is seeded too: its runs are comparable.
    if agreed.reproducible or not agreed.private:
        streams = randomness.reproducible(randomness.public_seed(cfg.seed, party.index, server_round))
    if agreed.private:
        # this round and the ones still planned; a round past the plan still counts itself
        planned = max(cfg.num_server_rounds - server_round + 1, 1) * cfg.local_steps
        try:
            if agreed.target_epsilon > 0:
                found = calibrate_noise(agreed.target_epsilon, agreed.delta, q, planned, ledger.history())
                sigma = max(sigma, found)
            # reserve the release before training: the append enforces the cap under the ledger lock
            release = ledger.append(
                party.name,
                server_round,
                cfg.local_steps,
                sigma,
                q,
                cfg.max_grad_norm,
                agreed.delta,
                epsilon_cap=cap,
                run=run,
                noise=streams.source,
            )
        except (BudgetSpent, BudgetExceeded) as err:
            return _refuse(msg, BUDGET_EXHAUSTED, f"{party.name}: privacy budget: {err}")

    settings = TrainSettings.from_run_config(cfg, noise_multiplier=sigma)
    model, texts, vectors = _load_model(msg, cfg, party, catalogue)
    result = train_round(
        model,
        users.train,
        vectors,
        model.tokenize(texts),
        settings,
        population=agreed.population,
        randomness=streams,
    )
    metrics = MetricRecord({WEIGHT: 1})  # equal, public weights: a count would be an un-noised release
    if agreed.private:
        if compact(result.history) != [(sigma, q, cfg.local_steps)]:
            raise RuntimeError(
                f"{party.name}: Opacus accounted {result.history}, the ledger reserved"
                f" {(sigma, q, cfg.local_steps)}: not sending an unaccounted update"
            )
        seq, line = ledger.receipt(run, server_round)
        eps = (release.epsilon_prv, release.epsilon_rdp)
    else:
        seq, line, eps = -1, "", (float("inf"), float("inf"))
        metrics.update({"num-examples": result.users, "train-loss": result.mean_loss})  # labelled non-private
    report = PrivacyReport(
        client=party.name,
        round=server_round,
        run=run,
        private=agreed.private,
        noise=streams.source if agreed.private else NOISE_NONE,
        unit=PRIVACY_UNIT,
        delta=agreed.delta,
        epsilon_prv=eps[0],
        epsilon_rdp=eps[1],
        noise_multiplier=sigma if agreed.private else 0.0,
        sample_rate=q,
        steps=result.steps,
        max_grad_norm=cfg.max_grad_norm,
        target_epsilon=agreed.target_epsilon,
        epsilon_cap=cap or 0.0,
        ledger_seq=seq,
        ledger_hash=line,
    )
    content = RecordDict(
        {
            "arrays": to_record(model.trainable_state()),
            "metrics": metrics,
            "privacy": ConfigRecord(report.to_record()),
        }
    )
    return Message(content, reply_to=msg)


def evaluate(msg: Message, context: Context, overrides: dict[str, Any]) -> Message:
    """Non-private runs only: per-client metrics of a private run would be an un-noised release."""
    cfg, party, catalogue, users = _load_data(context, overrides)
    if cfg.private:
        return Message(RecordDict({"metrics": MetricRecord({WEIGHT: 1})}), reply_to=msg)
    model, _, vectors = _load_model(msg, cfg, party, catalogue)
    metrics = MetricRecord({WEIGHT: 1, "num-examples": len(users.users)})
    for split in ("valid", "test"):
        metrics.update({f"{split}-{k}": v for k, v in evaluate_split(model, vectors, users, split).items()})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)


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
