"""Federation mode on the real Flower simulation engine: 3 clients on a tiny shop, both aggregation paths.

With SecAgg+ the server sees only the mean of the replies; on the message-API path it sees each one.
Either way: every client's ledger holds round 0's trending release (σ_T under its view, q 1) and one
release per round at σ under its view and the federation's rate q; the server's ledger holds the same
rounds; the run record's federation summary gives ε per view, equal to the accountant's over all of
them; the audit passes; the index is published with its trending list.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from audit.ledgers import main as audit_main
from server.checkpoint import CHECKPOINT_NAME, Checkpoint
from shared.artifact import load_artifact
from shared.federation import AGGREGATE, SHARE
from shared.ledger import Ledger
from shared.privacy import epsilon
from shared.run_record import RUN_RECORD, RunRecord
from shared.signing import ensure_key_pair, run_public_key
from simulations.run import simulate
from simulations.shop import ShopConfig, write_shop

ROUNDS = 3
BASE = {"dp-mode": "federation", "num-server-rounds": ROUNDS, "lora-rank": 0, "target-epsilon": 4.0}


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    return write_shop(
        tmp_path_factory.mktemp("federation") / "data", ShopConfig(n_items=120, n_users=90, seed=5)
    )


@pytest.mark.parametrize(
    ("secure", "sequence_layers"),
    [(True, 0), (False, 0), (True, 1)],
    ids=["secagg", "message-api", "sequence"],
)
def test_federation_round_trip(shop, tmp_path, secure, sequence_layers, capsys):
    catalogue, events = shop
    summary = simulate(
        tmp_path, num_clients=3, catalogue=str(catalogue), events=str(events),
        overrides={**BASE, "secure-aggregation": secure, "sequence-layers": sequence_layers},
    )  # fmt: skip
    record = RunRecord.load(tmp_path / RUN_RECORD)
    fed = record.privacy.federation
    assert fed is not None and fed.rounds == ROUNDS and fed.noise_shares == 3
    view = AGGREGATE if secure else SHARE
    assert fed.offered == view
    assert fed.population == summary["config"]["federation-population"] == sum(summary["data"]["declared"])
    sigma = fed.sigma if secure else fed.share_sigma
    trending_sigma = 10.0 if secure else 10.0 / math.sqrt(3)  # σ_T of the sum; one share's without SecAgg+
    assert fed.trending_released and fed.trending_sigma == pytest.approx(trending_sigma)
    history = [(fed.trending_sigma, 1.0, 1), (sigma, fed.sample_rate, ROUNDS)]
    assert fed.epsilon[view] == pytest.approx(epsilon(history, 1e-5))
    assert fed.epsilon[view] <= 4.0
    server = Ledger(tmp_path / "server" / "privacy-ledger.jsonl").releases()
    assert [r.round for r in server] == list(range(0, ROUNDS + 1))
    for i in range(3):
        releases = Ledger(tmp_path / "clients" / f"client-{i}" / "privacy-ledger.jsonl").releases()
        assert [(r.round, r.steps) for r in releases] == [(k, 1) for k in range(0, ROUNDS + 1)]
        assert [r.noise_multiplier for r in releases] == pytest.approx(
            [fed.trending_sigma] + [sigma] * ROUNDS
        )
        assert [r.sample_rate for r in releases] == [1.0] + [fed.sample_rate] * ROUNDS
        assert summary["epsilon"][f"client-{i}"] == pytest.approx(fed.epsilon[view], rel=1e-6)
    assert all(not r.refused and not r.skipped for r in record.rounds)
    assert audit_main(tmp_path) == 0
    artifact = load_artifact(
        tmp_path / record.artifact, public_key=run_public_key(tmp_path / record.artifact)
    )
    moved = [
        k for k, v in artifact.trainable_state.items() if k.startswith("sequence.") and v.abs().max() > 0
    ]
    assert ("sequence.out.weight" in moved) == bool(sequence_layers)  # the residual trained and was published
    assert artifact.trending is not None and len(artifact.trending.item_ids) == 50
    assert 0 <= summary["baselines"]["trending"]["recall@10"] <= 1  # what a new shopper gets, scored
    assert artifact.trending.private and artifact.trending.noise_multiplier == pytest.approx(trending_sigma)
    # what is published is the server's moving average of its steps (`model-average-decay`), not the last step
    final = Checkpoint.load(tmp_path / "server" / CHECKPOINT_NAME, ensure_key_pair(tmp_path / "server"))
    average = final.optimizer["average"]
    for name, tensor in artifact.trainable_state.items():
        np.testing.assert_array_equal(tensor.numpy(), average[name])
    assert any(not np.array_equal(final.arrays[name], average[name]) for name in average)
    capsys.readouterr()
