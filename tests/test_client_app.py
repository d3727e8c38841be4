"""What a real ClientApp (with its mods) sends, refuses and spends: privacy facts of the reply.

The reply inspection runs the same request against two partners with *different* private data (same
name, same declared population, same public inputs) and walks every record of every reply: anything
but the DP-released arrays must be byte-identical across the two, i.e. independent of the data, and
the arrays must sit behind a ledger line. Three paths: the plain message API; client-level DP with
client-side clipping (Flower's `fixedclipping_mod`); and the FitIns/FitRes carrier of SecAgg+ (whose
metrics travel in clear while `secaggplus_mod` masks only the parameters; the full protocol runs in
tests/test_secure_federation.py).
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import PARTNER_MODE  # tests/ is on sys.path under pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.common import FitIns, ndarrays_to_parameters
from flwr.compat.common.recorddict_compat import fitins_to_recorddict, recorddict_to_fitres
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

from client.app import BUDGET_EXHAUSTED, TERMS_REFUSED, make_app
from client.policy import PartnerPolicy, terms
from shared.adapters import ADAPTER_NAMES, WEIGHT, from_record, to_record
from shared.config import RunConfig
from shared.federation import federation_noise
from shared.ledger import TRAINING_KEY, Ledger
from shared.model import Recommender
from shared.privacy import epsilon
from shared.report import PrivacyReport
from shared.schema import load_catalogue
from shared.trending import RELEASE_KEY, TRENDING_ARRAY, TRENDING_RELEASE, TRENDING_ROUND, vote_totals
from simulations.shop import ShopConfig, write_shop

SMALL = {**PARTNER_MODE, "local-steps": 2, "batch-size": 8, "num-server-rounds": 3}


pytestmark = pytest.mark.usefixtures("task_identity")  # tests/conftest.py


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """Two disjoint halves of a tiny shop's users: two partners' different private logs."""
    root = tmp_path_factory.mktemp("client-app")
    catalogue, events = write_shop(root / "data", ShopConfig(n_items=120, n_users=80, seed=5))
    log = pd.read_csv(events)
    users = sorted(log["user_id"].astype(str).unique())
    halves = []
    for i, part in enumerate((users[::2], users[1::2])):
        path = root / f"half-{i}.csv"
        log[log["user_id"].astype(str).isin(part)].to_csv(path, index=False)
        halves.append(path)
    return catalogue, halves


def _context(shop, tmp_path, data: int, node: dict | None = None, **run) -> Context:
    catalogue, halves = shop
    cfg = RunConfig.from_flower({**SMALL, **run, "catalogue": str(catalogue), "run-dir": str(tmp_path)})
    node_config = {
        "data-path": str(halves[data]),
        "work-dir": str(tmp_path / f"partner-{data}"),
        "client-name": "client-0",
        "population": 50,
        **(node or {}),
    }
    return Context(7, 1, node_config, RecordDict(), cfg.to_flower())


def _initial(shop) -> dict:
    cfg = RunConfig.from_flower(SMALL)
    return Recommender(cfg.model_config(len(load_catalogue(shop[0])))).trainable_state()


def _ask(context: Context, initial: dict, server_round: int = 1, clipping: float | None = None) -> Message:
    config = {"server-round": server_round}
    if clipping is not None:
        config[KEY_CLIPPING_NORM] = clipping
    request = Message(
        RecordDict({"arrays": to_record(initial), "config": ConfigRecord(config)}),
        dst_node_id=1,
        message_type="train",
    )
    return make_app()(request, context)


def _ask_legacy(context: Context, initial: dict) -> Message:
    names = list(initial)
    fitins = FitIns(
        ndarrays_to_parameters([initial[k].numpy() for k in names]),
        {"server-round": 1, ADAPTER_NAMES: json.dumps(names)},
    )
    request = Message(fitins_to_recorddict(fitins, keep_input=True), dst_node_id=1, message_type="train")
    return make_app()(request, context)


def _clear_part(reply: Message) -> dict:
    """Every record of the reply except the DP-released tensors, as plain values."""
    assert not reply.has_error(), reply.error.reason
    out = {}
    for name, record in reply.content.items():
        if name == "arrays" or name.startswith("fitres.parameters"):
            continue
        out[name] = {k: (v if not isinstance(v, list) else tuple(v)) for k, v in dict(record).items()}
    return out


@pytest.mark.parametrize("path", ["plain", "client-level DP (client clipping)", "SecAgg+ carrier (FitRes)"])
def test_nothing_data_dependent_leaves_without_a_ledger_entry(shop, tmp_path, path):
    initial = _initial(shop)
    cleartext, reports = [], []
    for data in (0, 1):
        context = _context(shop, tmp_path / str(data), data)
        if path == "plain":
            reply = _ask(context, initial)
        elif path.startswith("client-level"):
            reply = _ask(context, initial, clipping=0.5)
        else:
            reply = _ask_legacy(context, initial)
        clear = _clear_part(reply)
        cleartext.append(clear)
        if path.startswith("SecAgg"):
            metrics = recorddict_to_fitres(reply.content, keep_input=True).metrics
            raw = {k.removeprefix("privacy:"): v for k, v in metrics.items() if k.startswith("privacy:")}
            assert set(metrics) - {f"privacy:{k}" for k in raw} == set()  # no loss, no count
        else:
            assert dict(reply.content["metrics"]) == {WEIGHT: 1}
            raw = dict(reply.content["privacy"])
        report = PrivacyReport.from_record(raw)
        ledger = Ledger(tmp_path / str(data) / f"partner-{data}" / "privacy-ledger.jsonl")
        assert ledger.receipt(report.run, 1) == (report.ledger_seq, report.ledger_hash)
        reports.append(report)
    assert cleartext[0] == cleartext[1], "a value in the reply depends on the partner's private data"
    assert reports[0].private and reports[0].noise == "secret" and reports[0].sample_rate == 1 / 7


def test_evaluation_of_a_private_run_releases_no_metrics(shop, tmp_path):
    context = _context(shop, tmp_path, 0)
    request = Message(
        RecordDict({"arrays": to_record(_initial(shop)), "config": ConfigRecord({"server-round": 1})}),
        dst_node_id=1,
        message_type="evaluate",
    )
    reply = make_app()(request, context)
    assert {name: dict(r) for name, r in reply.content.items()} == {"metrics": {WEIGHT: 1}}


@pytest.mark.parametrize(
    "node, run, why",
    [
        ({}, {"private": False}, "require-private"),
        ({}, {"reproducible-noise": True}, "reproducible noise"),
        ({"max-delta": 1e-6}, {}, "max-delta"),
        ({"population": 10}, {}, "more users than its declared population"),
        ({"population": None}, {}, "'population' is not set"),
    ],
)
def test_the_partner_refuses_weaker_terms_with_the_reason(shop, tmp_path, node, run, why):
    context = _context(shop, tmp_path, 0, node={k: v for k, v in node.items() if v is not None}, **run)
    if node.get("population", 0) is None:
        del context.node_config["population"]
    reply = _ask(context, _initial(shop))
    assert reply.has_error() and reply.error.code == TERMS_REFUSED and why in reply.error.reason
    assert not (tmp_path / "partner-0" / "privacy-ledger.jsonl").exists()  # nothing spent


def test_cap_refuses_the_round_that_would_pass_it_and_max_epsilon_tightens(shop, tmp_path):
    """Fixed σ (target 0): rounds 1-2 fit under the partner's own max-epsilon, round 3 does not."""
    q, sigma = 1 / 7, 1.2
    cap = (epsilon([(sigma, q, 4)], 1e-5) + epsilon([(sigma, q, 6)], 1e-5)) / 2
    context = _context(
        shop, tmp_path, 0, node={"max-epsilon": cap}, **{"target-epsilon": 0.0, "noise-multiplier": sigma}
    )
    initial = _initial(shop)
    for r in (1, 2):
        assert not _ask(context, initial, r).has_error()
    third = _ask(context, initial, 3)
    assert third.has_error() and third.error.code == BUDGET_EXHAUSTED and f"cap {cap:g}" in third.error.reason
    ledger = Ledger(tmp_path / "partner-0" / "privacy-ledger.jsonl")
    assert [r.round for r in ledger.releases()] == [1, 2] and ledger.epsilon(1e-5)[0] <= cap


def test_calibration_spends_the_target_over_the_planned_rounds_and_no_more(shop, tmp_path):
    """Default terms (target ε 8, cap 10): σ chosen on the remaining budget each round; after the last
    planned round ε is at most the target and close to it; a round past the plan fits in what is left
    of the target (much more noise), never in the slack up to the cap."""
    context = _context(shop, tmp_path, 0)
    initial = _initial(shop)
    sigmas = []
    for r in (1, 2, 3):
        reply = _ask(context, initial, r)
        sigmas.append(PrivacyReport.from_record(dict(reply.content["privacy"])).noise_multiplier)
    spent = Ledger(tmp_path / "partner-0" / "privacy-ledger.jsonl").epsilon(1e-5)[0]
    assert 7.5 < spent <= 8.0 and sigmas[0] == sigmas[1] == sigmas[2]
    extra = _ask(context, initial, 4)
    assert not extra.has_error()
    assert PrivacyReport.from_record(dict(extra.content["privacy"])).noise_multiplier > 3 * sigmas[0]
    after = Ledger(tmp_path / "partner-0" / "privacy-ledger.jsonl").epsilon(1e-5)[0]
    assert spent < after <= 8.0


def test_a_fifty_user_partner_at_default_settings_ends_within_the_default_target(shop, tmp_path):
    """The review's worst case: a partner of ~50 users at batch 200 has q = 1 (no amplification) and
    once ended at ε = 62. Now its σ is calibrated from its declared population to the default target
    over the planned rounds: after all four rounds its ε is at most 8, and close to it."""
    partner = RunConfig.from_flower(PARTNER_MODE)  # partner mode's settings, otherwise the defaults
    defaults = {k: v for k, v in partner.to_flower().items() if k in SMALL}
    run = {**defaults, "lora-rank": 0}  # a frozen text tower keeps the test fast; accounting is the same
    context = _context(shop, tmp_path, 0, **run)
    n_items = len(load_catalogue(shop[0]))
    initial = Recommender(replace(partner, lora_rank=0).model_config(n_items)).trainable_state()
    for r in range(1, partner.num_server_rounds + 1):
        report = PrivacyReport.from_record(dict(_ask(context, initial, r).content["privacy"]))
        assert report.sample_rate == 1.0 and report.target_epsilon == 8.0 and report.epsilon_cap == 10.0
    spent = Ledger(tmp_path / "partner-0" / "privacy-ledger.jsonl").epsilon(1e-5)[0]
    assert 7.5 < spent <= 8.0 and report.epsilon_prv == pytest.approx(spent)


@pytest.mark.parametrize(
    "run, node, target",
    [
        ({}, {}, 8.0),  # the defaults: target 8 under cap 10
        ({"epsilon-cap": 3.0}, {}, 3.0),  # a run-config cap below the target: calibrate to the cap
        ({}, {"max-epsilon": 2.5}, 2.5),  # the partner's own ceiling wins
        ({"target-epsilon": 0.0, "epsilon-cap": 3.0}, {}, 0.0),  # fixed σ stays fixed; the cap refuses
    ],
)
def test_calibration_aims_at_the_tightest_of_target_and_caps(run, node, target):
    cfg = RunConfig.from_flower(run)
    agreed = terms(cfg, PartnerPolicy.from_node_config({"population": 100, **node}))
    assert agreed.target_epsilon == target
    assert agreed.epsilon_cap == min(c for c in (cfg.epsilon_cap, node.get("max-epsilon", 99)) if c > 0)


FEDERATION = {
    "dp-mode": "federation",
    "secure-aggregation": False,
    "federation-population": 100,  # two partners declaring 50 each
    "min-clients": 3,
    "num-server-rounds": 3,
    "lora-rank": 0,
    "item-id-rank": 4,
}


def test_federation_mode_sends_a_noised_share_behind_a_ledger_line_and_nothing_else(shop, tmp_path):
    """Federation mode's reply, from two partners with different data: everything but the arrays is the
    same (public), the arrays moved, and the ledger holds one step at σ under the view the partner
    trusts (here the only one the run offers without SecAgg+: one share, σ/√t)."""
    cfg = RunConfig.from_flower({**SMALL, **FEDERATION})
    initial = Recommender(cfg.model_config(len(load_catalogue(shop[0])))).trainable_state()
    noise = federation_noise(cfg)
    cleartext = []
    for data in (0, 1):
        reply = _ask(_context(shop, tmp_path / str(data), data, **FEDERATION), initial)
        cleartext.append(_clear_part(reply))
        report = PrivacyReport.from_record(dict(reply.content["privacy"]))
        assert (report.mode, report.view, report.noise_shares, report.steps) == ("federation", "share", 3, 1)
        assert report.sample_rate == 0.1 and report.noise_multiplier == pytest.approx(noise.share_sigma)
        (release,) = Ledger(tmp_path / str(data) / f"partner-{data}" / "privacy-ledger.jsonl").releases()
        assert (release.noise_multiplier, release.sample_rate, release.steps) == (
            report.noise_multiplier,
            0.1,
            1,
        )
        moved = [k for k, v in from_record(reply.content["arrays"]).items() if not torch.equal(v, initial[k])]
        assert moved  # a share was applied (noise alone moves every tensor)
    assert cleartext[0] == cleartext[1], "a value in the reply depends on the partner's private data"


@pytest.mark.parametrize(
    "node, why",
    [({"max-epsilon": 1.0}, "max-epsilon"), ({"trust": "aggregate"}, "needs secure aggregation")],
)
def test_federation_mode_partner_refuses_before_spending(shop, tmp_path, node, why):
    cfg = RunConfig.from_flower({**SMALL, **FEDERATION})
    initial = Recommender(cfg.model_config(len(load_catalogue(shop[0])))).trainable_state()
    reply = _ask(_context(shop, tmp_path, 0, node=node, **FEDERATION), initial)
    assert reply.has_error() and reply.error.code == TERMS_REFUSED and why in reply.error.reason
    assert not (tmp_path / "partner-0" / "privacy-ledger.jsonl").exists()  # nothing spent


def _ask_trending(context: Context, n_items: int) -> Message:
    config = {"server-round": TRENDING_ROUND, RELEASE_KEY: TRENDING_RELEASE, TRAINING_KEY: "training-1"}
    arrays = ArrayRecord({TRENDING_ARRAY: Array(np.zeros(n_items, dtype=np.float32))})
    request = Message(
        RecordDict({"arrays": arrays, "config": ConfigRecord(config)}), dst_node_id=1, message_type="train"
    )
    return make_app()(request, context)


def test_trending_release_is_a_noised_share_behind_a_round_0_ledger_line(shop, tmp_path):
    """Round 0's reply (shared/trending.py) from two partners with different data: its clear part is the
    same (public); its one array is (the partner's vote totals + a secret share of σ_T/√t) / N, ledgered
    as round 0 at σ_T under the partner's view, q 1, clip 1, before it left."""
    cfg = RunConfig.from_flower({**SMALL, **FEDERATION})
    noise = federation_noise(cfg)
    catalogue = load_catalogue(shop[0])
    cleartext = []
    for data in (0, 1):
        context = _context(shop, tmp_path / str(data), data, **FEDERATION)
        replies = [_ask_trending(context, len(catalogue)) for _ in range(2)]
        cleartext.append(_clear_part(replies[0]))
        assert list(replies[0].content["arrays"].keys()) == [TRENDING_ARRAY]  # nothing else leaves
        report = PrivacyReport.from_record(dict(replies[0].content["privacy"]))
        assert (report.round, report.sample_rate, report.steps, report.max_grad_norm) == (0, 1.0, 1, 1.0)
        assert report.noise_multiplier == pytest.approx(noise.trending_share_sigma)  # no SecAgg+: one share
        releases = Ledger(tmp_path / str(data) / f"partner-{data}" / "privacy-ledger.jsonl").releases()
        assert [(r.round, r.sample_rate, r.max_grad_norm) for r in releases] == [(0, 1.0, 1.0)] * 2
        assert releases[1].run != releases[0].run  # asked again (a restarted server): a retry, counted again
        log = pd.read_csv(shop[1][data])
        position = {item: row for row, item in enumerate(catalogue["item_id"].astype(str))}
        histories = [
            [position[str(i)] for i in g.sort_values("timestamp")["item_id"]][:-2]  # the training split
            for _, g in log.groupby("user_id")
        ]
        exact = vote_totals(histories, len(catalogue), cfg.trending_items_per_user)
        got = [
            r.content["arrays"][TRENDING_ARRAY].numpy().astype(np.float64) * noise.population for r in replies
        ]
        assert not np.allclose(got[0], got[1])  # fresh secret noise each time
        for values in got:  # the partner's own totals, under noise of std σ_T/√t (float32 transport)
            assert np.std(values - exact) == pytest.approx(noise.trending_share_sigma, rel=0.25)
            assert abs(np.mean(values - exact)) < 4 * noise.trending_share_sigma / np.sqrt(len(exact))
    assert cleartext[0] == cleartext[1], "a value in the reply depends on the partner's private data"


def test_a_partner_refuses_the_trending_release_when_release_and_plan_pass_its_ceiling(shop, tmp_path):
    cfg = RunConfig.from_flower({**SMALL, **FEDERATION})
    noise = federation_noise(cfg)
    plan = [(noise.trending_share_sigma, 1.0, 1), (noise.share_sigma, 0.1, cfg.num_server_rounds)]
    ceiling = epsilon(plan, cfg.delta)
    below = _context(shop, tmp_path, 0, node={"max-epsilon": ceiling * 0.99}, **FEDERATION)
    reply = _ask_trending(below, len(load_catalogue(shop[0])))
    assert reply.has_error() and reply.error.code == TERMS_REFUSED and "max-epsilon" in reply.error.reason
    assert not (tmp_path / "partner-0" / "privacy-ledger.jsonl").exists()  # refused before spending
    above = _context(shop, tmp_path, 0, node={"max-epsilon": ceiling * 1.01}, **FEDERATION)
    assert not _ask_trending(above, len(load_catalogue(shop[0]))).has_error()
