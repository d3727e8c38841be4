"""Client-level DP and SecAgg+ on the real Flower simulation engine (2 clients on a tiny shop).

1. SecAgg+ alone: the published adapters equal the plain (equal-weight) FedAvg of the very updates the
   clients make, recomputed here in-process, up to SecAgg+'s quantization step.
2. Everything at once (the README's one command): user-level DP-SGD with a cap, client-level DP with
   client-side clipping, SecAgg+. The client-level cap stops the run before round 3; the server's ledger
   holds exactly the ε of Flower's accountant over the two releases; `fedrec audit` passes.
3. Client-level DP through Flower's message-API wrapper (server-side clipping): same accountant facts.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest
from conftest import PARTNER_MODE  # tests/ is on sys.path under pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import PrivacyConfig, RdpAccountant
from flwr.supercore.privacy_accounting import GaussianPrivacyEvent, NeighboringRelation, SamplingMethod

from audit.ledgers import main as audit_main
from client.app import train
from server.secure_aggregation import quantization_error
from shared.adapters import from_record, to_record
from shared.artifact import load_artifact
from shared.config import RunConfig
from shared.ledger import Ledger
from shared.model import Recommender
from shared.run_record import RUN_RECORD, RunRecord
from shared.schema import load_catalogue
from shared.signing import run_public_key
from simulations.run import simulate
from simulations.shop import ShopConfig, write_shop

BASE = {**PARTNER_MODE, "local-steps": 2, "batch-size": 8, "noise-multiplier": 1.2}


def flower_epsilon(sigma: float, releases: int, n: int = 2, delta: float = 1e-5) -> float:
    """ε of `releases` Gaussian releases by a fresh Flower accountant (what the run must report)."""
    acc = RdpAccountant(
        PrivacyConfig(delta, n, NeighboringRelation.ADD_OR_REMOVE_ONE, SamplingMethod.NO_AMPLIFICATION)
    )
    acc.compose(GaussianPrivacyEvent(sigma, n, n), releases)
    return acc.get_privacy_spent().epsilon


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    root = tmp_path_factory.mktemp("secure")
    return write_shop(root / "data", ShopConfig(n_items=120, n_users=80, seed=5))


def _simulate(shop, out, overrides):
    catalogue, events = shop
    return simulate(out, num_clients=2, catalogue=str(catalogue), events=str(events), overrides=overrides)


def test_secagg_aggregate_equals_plain_fedavg_up_to_quantization(shop, tmp_path, task_identity):
    summary = _simulate(
        shop, tmp_path / "run", {**BASE, "num-server-rounds": 1, "private": False, "secure-aggregation": True}
    )
    assert summary["secure_aggregation"] is True and summary["label"] == "NON-PRIVATE + SecAgg+"
    published = load_artifact(
        summary["artifact"], public_key=run_public_key(summary["artifact"])
    ).trainable_state

    # Recompute each client's round-1 update in this process, from the same global model and seeds.
    cfg = RunConfig.from_flower({k: v for k, v in summary["config"].items() if k != "num-clients"})
    model = Recommender(cfg.model_config(len(load_catalogue(cfg.catalogue))))
    initial = model.trainable_state()
    updates = []
    for i in range(2):
        request = Message(
            RecordDict({"arrays": to_record(initial), "config": ConfigRecord({"server-round": 1})}),
            dst_node_id=1,
            message_type="train",
        )
        context = Context(1, 1, {"partition-id": i}, RecordDict(), cfg.to_flower())
        reply = train(request, context, {"epsilon-cap": 0.0})
        updates.append(from_record(reply.content["arrays"]))
    error = quantization_error()
    moved = 0.0
    for name, value in published.items():
        plain = (updates[0][name].numpy() + updates[1][name].numpy()) / 2
        np.testing.assert_allclose(value.numpy(), plain, rtol=0, atol=error, err_msg=name)
        moved = max(moved, float(np.abs(plain - initial[name].numpy()).max()))
    assert moved > 100 * error  # the comparison is not vacuous: training moved the adapters far more


@pytest.fixture(scope="module")
def everything(shop, tmp_path_factory):
    """User-level DP + cap, client-level DP (client-side clipping) + cap, SecAgg+: 3 rounds planned."""
    sigma_c = 2.0
    client_cap = (flower_epsilon(sigma_c, 2) + flower_epsilon(sigma_c, 3)) / 2
    out = tmp_path_factory.mktemp("everything") / "run"
    summary = _simulate(
        shop,
        out,
        {
            **BASE,
            "num-server-rounds": 3,
            "epsilon-cap": 50.0,
            "client-noise-multiplier": sigma_c,
            "client-clipping-norm": 0.5,
            "client-clipping": "client",
            "client-epsilon-cap": client_cap,
            "secure-aggregation": True,
        },
    )
    return out, summary, sigma_c


def test_client_level_epsilon_is_flowers_accountant_over_the_releases(everything):
    out, summary, sigma_c = everything
    level = summary["client_level"]
    assert summary["label"] == "user-level DP + client-level DP + SecAgg+"
    assert level["unit"] == "client" and level["clipping"] == "client" and level["releases"] == 2
    assert level["epsilon"] == pytest.approx(flower_epsilon(sigma_c, 2), rel=1e-9)
    releases = Ledger(out / "server" / "privacy-ledger.jsonl").releases()
    assert [r.round for r in releases] == [1, 2]
    assert releases[-1].epsilon_rdp == pytest.approx(flower_epsilon(sigma_c, 2), rel=1e-9)
    assert releases[0].epsilon_rdp == pytest.approx(flower_epsilon(sigma_c, 1), rel=1e-9)


def test_client_level_cap_stops_before_round_three(everything):
    out, summary, _ = everything
    record = RunRecord.load(out / RUN_RECORD)
    rounds = record.rounds
    assert [r.stopped for r in rounds[1:3]] == [None, None]
    assert "client-level privacy budget" in rounds[3].stopped
    assert rounds[3].client_level_epsilon == rounds[2].client_level_epsilon
    assert asdict(record.privacy.client_level) == summary["client_level"]
    assert summary["client_level"]["epsilon"] <= summary["client_level"]["epsilon_cap"]
    for i in range(2):  # users' ledgers: two rounds each, composed as usual
        assert [
            r.round for r in Ledger(out / "clients" / f"client-{i}" / "privacy-ledger.jsonl").releases()
        ] == [
            1,
            2,
        ]


def test_audit_reports_both_guarantees(everything, capsys):
    out, summary, _ = everything
    assert audit_main(out) == 0
    printed = capsys.readouterr().out
    assert "Client-level DP (server ledger)" in printed
    audit = json.loads((out / "audit" / "audit.json").read_text())
    assert audit["client_level"]["rounds"] == 2
    assert "Client-level DP also holds" in audit["what_is_protected"]


def test_server_side_clipping_through_flowers_message_wrapper(shop, tmp_path):
    summary = _simulate(
        shop,
        tmp_path / "run",
        {**BASE, "num-server-rounds": 2, "private": False, "client-noise-multiplier": 1.5},
    )
    level = summary["client_level"]
    assert summary["label"] == "client-level DP" and level["clipping"] == "server"
    assert level["releases"] == 2
    assert level["epsilon"] == pytest.approx(flower_epsilon(1.5, 2), rel=1e-9)
    assert not (tmp_path / "run" / "clients" / "client-0" / "privacy-ledger.jsonl").exists()
