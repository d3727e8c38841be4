"""One whole run on the real Flower simulation engine (Ray): 2 clients x 3 rounds on a tiny shop.

The ε cap is set between the ε after two rounds and after three: every client must train rounds 1 and
2, then decline round 3 (projected ε over the cap), and the server must carry on and report it.
"""

from __future__ import annotations

import json

import pytest
from conftest import PARTNER_MODE  # tests/ is on sys.path under pytest

from audit.ledgers import main as audit_main
from client.device import Device
from shared.artifact import load_artifact
from shared.ledger import Ledger
from shared.privacy import epsilon
from shared.run_record import RUN_RECORD, RunRecord
from shared.signing import run_public_key
from simulations.run import simulate
from simulations.shop import ShopConfig, write_shop


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    catalogue, events = write_shop(root / "data", ShopConfig(n_items=120, n_users=80, seed=5))
    q = 1 / 7  # 40 users per client declare a population of 50 (the driver's rounding): 1/⌈50/8⌉
    cap = (epsilon([(1.2, q, 4)], 1e-5) + epsilon([(1.2, q, 6)], 1e-5)) / 2
    summary = simulate(
        root / "run",
        num_clients=2,
        catalogue=str(catalogue),
        events=str(events),
        overrides={
            **PARTNER_MODE,
            "num-server-rounds": 3,
            "local-steps": 2,
            "batch-size": 8,
            "noise-multiplier": 1.2,
            "target-epsilon": 0.0,  # σ fixed, so the cap (not the calibration) decides round 3
            "epsilon-cap": cap,
        },
    )
    return root / "run", summary


def test_summary_has_metrics_baselines_and_composed_epsilon(run):
    out, summary = run
    assert json.loads((out / "summary.json").read_text()) == summary
    for key in ("recall@10", "ndcg@10"):
        assert 0.0 <= summary[key] <= 1.0
        assert set(summary["baselines"]) == {"popularity", "zero_shot"}
        assert key in summary["baselines"]["zero_shot"] and key in summary["baselines"]["popularity"]
    assert summary["private"] is True and summary["delta"] == 1e-5 and summary["privacy_unit"] == "user"
    assert set(summary["epsilon"]) == {"client-0", "client-1"}
    users = summary["data"]["users_per_client"]
    assert users == [40, 40]
    for i in range(len(users)):
        q = 1 / 7  # from the declared population, never the real count
        # ε is composed over BOTH rounds' steps, not the last round's
        expected = epsilon([(1.2, q, 4)], 1e-5)
        assert summary["epsilon"][f"client-{i}"] == pytest.approx(expected, rel=1e-6)
        assert summary["epsilon"][f"client-{i}"] > epsilon([(1.2, q, 2)], 1e-5)


def test_rounds_are_recorded(run):
    out, summary = run
    record = RunRecord.load(out / RUN_RECORD)
    assert not (out / "metrics.jsonl").exists() and not (out / "server.json").exists()
    assert str(record.artifact_path(out)) == summary["artifact"] and record.artifact == "index/v0003"
    assert record.privacy.epsilon == summary["epsilon"] and record.privacy.private is True
    rounds = record.rounds
    assert [r.round for r in rounds] == [0, 1, 2, 3]
    assert rounds[0].central_eval["test-recall@10"] == summary["baselines"]["zero_shot"]["recall@10"]
    assert rounds[3].central_eval["test-recall@10"] == summary["recall@10"]
    assert rounds[1].federated_eval is None  # a private run's clients release no per-client metrics
    assert set(rounds[2].epsilon) == {"client-0", "client-1"}
    assert rounds[2].skipped == [] and rounds[3].epsilon == {}
    assert len(rounds[3].skipped) == 2 and all("privacy budget" in r for r in rounds[3].skipped)


def test_ledgers_hold_two_releases_and_the_audit_passes(run, capsys):
    out, summary = run
    for i in range(2):
        ledger = Ledger(out / "clients" / f"client-{i}" / "privacy-ledger.jsonl")
        releases = ledger.releases()
        assert [r.round for r in releases] == [1, 2]
        assert releases[-1].epsilon_prv == pytest.approx(summary["epsilon"][f"client-{i}"])
        assert releases[-1].epsilon_prv <= releases[-1].epsilon_cap
    assert audit_main(out) == 0
    assert "client-0" in capsys.readouterr().out
    assert (out / "audit" / "audit.json").exists()


def test_published_index_verifies_and_serves_a_device(run):
    out, summary = run
    art = load_artifact(summary["artifact"], public_key=run_public_key(summary["artifact"]))
    assert art.manifest["round"] == 3 and art.manifest["info"]["privacy"]["private"] is True
    assert str(out) not in (art.path / "manifest.json").read_text()  # no server paths are published
    device = Device(
        summary["artifact"], publisher_key=run_public_key(summary["artifact"]), state_dir=out / "device"
    )
    history = list(art.item_ids[:3])
    recs = device.recommend(history, k=5, exclude=[art.item_ids[3]])
    assert len(recs) == 5 and not {r.item_id for r in recs} & set(art.item_ids[:4])


def test_partitions_are_disjoint_and_quarantine_counted(run):
    out, summary = run
    import pandas as pd

    parts = [set(pd.read_csv(out / "partitions" / f"client-{i}" / "events.csv")["user_id"]) for i in range(2)]
    assert not parts[0] & parts[1]
    report = summary["data"]["events"]
    assert report["read"] == report["kept"] + report["quarantined"]
