"""Flower ClientApp: one partner or device.

It holds private behaviour logs and fine-tunes the shared adapters under DP-SGD each round, on the
terms it agrees to (`client/policy.py`: the run config can only tighten the partner's own floor).
ClientApps are stateless between messages, so the DP history that makes ε composable lives on disk,
in the client's append-only privacy ledger. Each round the client calibrates σ on its remaining
budget, then *reserves* the release in the ledger (the append itself refuses to pass the cap, under
the file lock), trains with secret randomness, and only then sends. Releases are keyed by the training
the server names in the train config, which outlives a server restart (server/checkpoint.py), with the
absolute round: a resumed training continues one sequence of rounds in the ledger.

In a private run a reply carries only the DP-released adapter arrays, an equal weight and the
public privacy report (`shared/report.py`): no loss, no example or user count, and evaluation
requests are answered without metrics (per-client metrics would be an un-noised release).
"""

from __future__ import annotations

import functools
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client import randomness
from client.check import DATA_UNUSABLE, check_first_message
from client.mods import legacy_train_mod, secure_aggregation_mod, update_clipping_mod
from client.policy import PartnerPolicy, Refusal, Terms, federation_view, terms
from client.train import (
    TrainSettings,
    catalogue_tokens,
    federation_share,
    poisson_rate,
    train_round,
    trainable_users,
)
from client.trending import trending_share
from shared.adapters import WEIGHT, from_record, shapes, to_record
from shared.config import RunConfig
from shared.data import load_party
from shared.embedded import NODE_CONFIG_FILE, client_config
from shared.evaluation import evaluate_split
from shared.federation import FederationConfigError, FederationNoise, federation_noise
from shared.item_cache import catalogue_vectors
from shared.ledger import LEDGER_NAME, TRAINING_KEY, BudgetExceeded, Ledger, Release, epsilons
from shared.model import ModelConfig, Recommender
from shared.privacy import PRIVACY_UNIT, BudgetSpent, calibrate_noise, compact
from shared.report import NOISE_NONE, PrivacyReport
from shared.schema import item_texts
from shared.trending import CLIP, RELEASE_KEY, TRENDING_ARRAY, TRENDING_RELEASE, TRENDING_ROUND

BUDGET_EXHAUSTED = 451  # Error code of a reply that refuses to train: the privacy cap would be passed
TERMS_REFUSED = 452  # the run config asks for less privacy than the partner's node config allows


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
    cfg = _simulated(cfg, node)
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


def _simulated(cfg: RunConfig, node: dict[str, Any]) -> RunConfig:
    """A simulated partner's config: as it is, or, with no catalogue named, the embedded shop's (its
    partition derived on the way; `shared/embedded.py`)."""
    return client_config(cfg, int(node["partition-id"]), int(node.get("num-partitions", 0)))


def _load_data(context: Context, overrides: dict[str, Any]):
    """Config, who this client is, the public catalogue and its own users (cheap: no model yet)."""
    cfg = RunConfig.from_flower({**context.run_config, **overrides})
    if "data-path" not in context.node_config:
        cfg = _simulated(cfg, context.node_config)  # with the embedded shop's catalogue and population
    party = locate_party(context, cfg)
    catalogue, users = _party_data(party.catalogue, party.events, party.work_dir / "quarantine")
    return cfg, party, catalogue, users


def _party_data(catalogue: Path, events: Path, quarantine: Path):
    """The partner's catalogue and users, read once per process while the files stay as they were (a
    federation-mode round lasts seconds; parsing a partner's logs each round would cost more)."""
    stamp = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in (catalogue, events))
    return _read_party(stamp, str(quarantine))


@functools.lru_cache(maxsize=2)
def _read_party(stamp: tuple, quarantine: str):
    catalogue, _, users, _ = load_party(stamp[0][0], stamp[1][0], quarantine)
    return catalogue, users


def _load_model(msg: Message, cfg: RunConfig, party: Party, catalogue):
    """The global model from the message, and the catalogue's vectors under it (cached per model)."""
    model = _model(cfg.model_config(len(catalogue)))
    for p in model.parameters():  # nothing of an earlier round's gradients is carried into this one
        p.grad = None
        for attr in ("grad_sample", "summed_grad"):
            if hasattr(p, attr):
                delattr(p, attr)
    model.load_trainable_state(from_record(msg.content["arrays"], shapes(model.trainable_state())))
    texts = item_texts(catalogue)
    return model, texts, catalogue_vectors(model, texts, party.cache_dir)


@functools.lru_cache(maxsize=1)
def _model(config: ModelConfig) -> Recommender:
    """One model per process and config: a client process serves many rounds (a simulation's actors,
    federation mode's many short rounds), and loading MiniLM costs seconds. Every trained tensor is
    overwritten from the server's message before use; the rest is the public pretrained model."""
    return Recommender(config)


def _refuse(msg: Message, code: int, reason: str) -> Message:
    print(reason, file=sys.stderr, flush=True)
    return Message(Error(code=code, reason=reason), reply_to=msg)


def train(msg: Message, context: Context, overrides: dict[str, Any]) -> Message:
    if reason := check_first_message(context, overrides, locate_party):  # once per run: `fedrec check`
        return _refuse(msg, DATA_UNUSABLE, reason)
    cfg, party, catalogue, users = _load_data(context, overrides)
    server_round = int(msg.content["config"]["server-round"])
    run = _ledger_key(msg, context, party, server_round)
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

    if str(msg.content["config"].get(RELEASE_KEY, "")) == TRENDING_RELEASE:
        return _release_trending(msg, cfg, party, catalogue, users, agreed, run)
    if cfg.federation_dp:
        return _train_federation(msg, cfg, party, catalogue, users, agreed, server_round, run)
    q = poisson_rate(agreed.population, cfg.batch_size)
    sigma = agreed.noise_floor
    ledger = Ledger(party.work_dir / LEDGER_NAME)
    streams = _streams(cfg, agreed, party, server_round)
    release = None
    if agreed.private:
        # this round and the ones still planned; a round past the plan still counts itself
        planned = max(cfg.num_server_rounds - server_round + 1, 1) * cfg.local_steps
        try:
            if agreed.target_epsilon > 0:
                found = calibrate_noise(agreed.target_epsilon, agreed.delta, q, planned, ledger.history())
                sigma = max(sigma, found)
            # reserve the release before training: the append enforces the cap under the ledger lock
            release = _reserve(
                ledger, party, server_round, run, cfg, agreed, streams, cfg.local_steps, sigma, q
            )
        except (BudgetSpent, BudgetExceeded) as err:
            return _refuse(msg, BUDGET_EXHAUSTED, f"{party.name}: privacy budget: {err}")

    settings = TrainSettings.from_run_config(cfg, noise_multiplier=sigma)
    model, texts, vectors = _load_model(msg, cfg, party, catalogue)
    result = train_round(
        model,
        users.train,
        vectors,
        catalogue_tokens(model, texts),
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
    else:
        metrics.update({"num-examples": result.users, "train-loss": result.mean_loss})  # labelled non-private
    report = _report(party, server_round, run, cfg, agreed, streams, ledger, release, sigma, q, result.steps)
    return _reply(msg, model, metrics, report)


def _ledger_key(msg: Message, context: Context, party: Party, server_round: int) -> str:
    """The key this round's release is ledgered (and reported) under: the training the server names in the
    train config, which outlives a server restart (server/checkpoint.py), else this Flower run's id; a
    round already reserved under it before a crash is trained again under its retry key."""
    run = str(context.run_id)
    training = str(msg.content["config"].get(TRAINING_KEY, run))
    return Ledger(party.work_dir / LEDGER_NAME).run_key(training, run, server_round)


def _reserve(
    ledger: Ledger,
    party: Party,
    server_round: int,
    run: str,
    cfg: RunConfig,
    agreed: Terms,
    streams: randomness.Randomness,
    steps: int,
    sigma: float,
    q: float,
) -> Release:
    """Record this round's release before anything is computed; BudgetExceeded past the cap."""
    return ledger.append(
        party.name,
        server_round,
        steps,
        sigma,
        q,
        cfg.max_grad_norm,
        agreed.delta,
        epsilon_cap=agreed.epsilon_cap,
        run=run,
        noise=streams.source,
    )


def _report(
    party: Party,
    server_round: int,
    run: str,
    cfg: RunConfig,
    agreed: Terms,
    streams: randomness.Randomness,
    ledger: Ledger,
    release: Release | None,
    sigma: float,
    q: float,
    steps: int,
    clip: float | None = None,
    **mode: Any,
) -> PrivacyReport:
    """The public report of this round's release, anchored to its ledger line when private."""
    seq, line, eps = -1, "", (float("inf"), float("inf"))
    if release is not None:
        seq, line = ledger.receipt(run, server_round)
        eps = (release.epsilon_prv, release.epsilon_rdp)
    return PrivacyReport(
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
        steps=steps,
        max_grad_norm=cfg.max_grad_norm if clip is None else clip,
        target_epsilon=agreed.target_epsilon,
        epsilon_cap=agreed.epsilon_cap or 0.0,
        ledger_seq=seq,
        ledger_hash=line,
        **mode,
    )


def _streams(cfg: RunConfig, agreed: Terms, party: Party, server_round: int) -> randomness.Randomness:
    """Secret streams; seeded ones only for a non-private round or a reproducible (TEST ONLY) run."""
    # TEST ONLY, labelled everywhere: the noise derives from public values, exactly what an attacker knows.
    # A non-private round has no noise to hide, so it is seeded too: its runs are comparable.
    if agreed.reproducible or not agreed.private:
        return randomness.reproducible(randomness.public_seed(cfg.seed, party.index, server_round))
    return randomness.secret()


def _reply(msg: Message, model: Recommender, metrics: MetricRecord, report: PrivacyReport) -> Message:
    content = RecordDict(
        {
            "arrays": to_record(model.trainable_state()),
            "metrics": metrics,
            "privacy": ConfigRecord(report.to_record()),
        }
    )
    return Message(content, reply_to=msg)


def _federation_terms(cfg: RunConfig, agreed: Terms) -> tuple[FederationNoise, str, float]:
    """The run's public noise, the view this partner keeps its ε under and σ against it; Refusal (or
    FederationConfigError) when the partner's terms or the run config do not allow taking part."""
    noise = federation_noise(cfg)
    view, sigma = federation_view(agreed, noise)
    if agreed.population > noise.population:
        raise Refusal(
            f"declared population {agreed.population} > federation-population {noise.population}:"
            " the run's scale would understate this partner's users"
        )
    return noise, view, sigma


def _train_federation(
    msg: Message, cfg: RunConfig, party: Party, catalogue, users, agreed: Terms, server_round: int, run: str
) -> Message:
    """Federation mode (`shared/federation.py`): this client's noise share of one DP-FedAvg step.

    The run's σ is public and the same everywhere; the partner takes part only if σ under the trust model
    it states is within its floor and ε over the whole plan stays within its own max-epsilon. The ledger
    records σ under that view, one step at the federation's rate q, before anything is computed.
    """
    try:
        noise, view, sigma = _federation_terms(cfg, agreed)
    except (FederationConfigError, Refusal) as err:
        return _refuse(msg, TERMS_REFUSED, f"{party.name}: not training: {err}")
    q = noise.sample_rate
    ledger = Ledger(party.work_dir / LEDGER_NAME)
    streams = _streams(cfg, agreed, party, server_round)
    release = None
    if agreed.private:
        planned = max(cfg.num_server_rounds - server_round + 1, 1)
        try:
            ceiling = ledger.project(sigma, q, planned, agreed.delta)[0]
            if ceiling > agreed.max_epsilon:
                raise Refusal(
                    f"ε over the planned rounds would reach {ceiling:.3f} against the {view!r} view, above"
                    f" the partner's max-epsilon {agreed.max_epsilon:g}"
                )
            release = _reserve(ledger, party, server_round, run, cfg, agreed, streams, 1, sigma, q)
        except Refusal as err:
            return _refuse(msg, TERMS_REFUSED, f"{party.name}: not training: {err}")
        except BudgetExceeded as err:
            return _refuse(msg, BUDGET_EXHAUSTED, f"{party.name}: privacy budget: {err}")
    share = noise.share_sigma if agreed.private else 0.0
    settings = TrainSettings.from_run_config(cfg, noise_multiplier=share)
    model, texts, vectors = _load_model(msg, cfg, party, catalogue)
    result = federation_share(
        model,
        users.train,
        vectors,
        catalogue_tokens(model, texts),
        settings,
        sample_rate=q,
        share_noise=share,
        scale=noise.scale,
        randomness=streams,
    )
    if agreed.private:
        if compact(result.history) != [(share, q, 1)]:
            raise RuntimeError(
                f"{party.name}: Opacus accounted {result.history}, expected one step at the share"
                f" {(share, q, 1)}: not sending an unaccounted update"
            )
    mode = {"mode": cfg.dp_mode, "view": view, "noise_shares": noise.shares}
    report = _report(party, server_round, run, cfg, agreed, streams, ledger, release, sigma, q, 1, **mode)
    return _reply(msg, model, MetricRecord({WEIGHT: 1}), report)


def _release_trending(
    msg: Message, cfg: RunConfig, party: Party, catalogue, users, agreed: Terms, run: str
) -> Message:
    """Round 0 of a federation-mode training: this client's share of the trending list's DP release.

    The partner's terms are those of the training that follows: it takes part only if ε over the release
    and every planned round, against the view it states, stays within its max-epsilon. The ledger records
    the release (σ_T under that view, q 1, one step, clip 1) before anything is computed.
    """
    try:
        if not cfg.trending:
            raise Refusal(
                "the run config asks for no trending release (dp-mode federation, trending-items > 0)"
            )
        noise, view, sigma = _federation_terms(cfg, agreed)
    except (FederationConfigError, Refusal) as err:
        return _refuse(msg, TERMS_REFUSED, f"{party.name}: not releasing trending counts: {err}")
    trending_sigma = noise.trending_view_sigma(view)
    ledger = Ledger(party.work_dir / LEDGER_NAME)
    streams = _streams(cfg, agreed, party, TRENDING_ROUND)
    release = None
    if agreed.private:
        planned = [(trending_sigma, 1.0, 1), (sigma, noise.sample_rate, cfg.num_server_rounds)]
        ceiling = epsilons(ledger.history() + planned, agreed.delta)[0]
        try:
            if ceiling > agreed.max_epsilon:
                raise Refusal(
                    f"ε over the trending release and the planned rounds would reach {ceiling:.3f} against"
                    f" the {view!r} view, above the partner's max-epsilon {agreed.max_epsilon:g}"
                )
            release = ledger.append(
                party.name,
                TRENDING_ROUND,
                1,
                trending_sigma,
                1.0,
                CLIP,
                agreed.delta,
                epsilon_cap=agreed.epsilon_cap,
                run=run,
                noise=streams.source,
            )
        except Refusal as err:
            return _refuse(msg, TERMS_REFUSED, f"{party.name}: not releasing trending counts: {err}")
        except BudgetExceeded as err:
            return _refuse(msg, BUDGET_EXHAUSTED, f"{party.name}: privacy budget: {err}")
    share = noise.trending_share_sigma if agreed.private else 0.0
    values = trending_share(
        users.train,
        len(catalogue),
        cfg.trending_items_per_user,
        share_sigma=share,
        population=noise.population,
        noise=streams.noise,
    )
    mode = {"mode": cfg.dp_mode, "view": view, "noise_shares": noise.shares}
    report = _report(
        party,
        TRENDING_ROUND,
        run,
        cfg,
        agreed,
        streams,
        ledger,
        release,
        trending_sigma,
        1.0,
        1,
        CLIP,
        **mode,
    )
    content = RecordDict(
        {
            "arrays": ArrayRecord({TRENDING_ARRAY: Array(values)}),
            "metrics": MetricRecord({WEIGHT: 1}),
            "privacy": ConfigRecord(report.to_record()),
        }
    )
    return Message(content, reply_to=msg)


def evaluate(msg: Message, context: Context, overrides: dict[str, Any]) -> Message:
    """Non-private runs only: per-client metrics of a private run would be an un-noised release."""
    if reason := check_first_message(context, overrides, locate_party):  # once per run: `fedrec check`
        return _refuse(msg, DATA_UNUSABLE, reason)
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
