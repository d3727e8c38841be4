"""The server's checkpoint (server/checkpoint.py): what it holds, what it refuses, and a resumed training.

The fast tests check the file and its refusals one by one; the last one crashes a ServerApp on the
simulation engine between training round 2 and checkpointing it, and resumes it in a new run: the
deployment engine adds nothing to that (tests/test_deployment.py kills a real ServerApp process).
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from audit.ledgers import main as audit_main
from server import app as server_app
from server.checkpoint import CHECKPOINT_NAME, Checkpoint, CheckpointError
from server.federation import ServerStep
from shared.artifact import load_artifact
from shared.config import RunConfig
from shared.ledger import LEDGER_NAME, Ledger, LedgerError, retry_key
from shared.privacy import epsilon
from shared.run_record import RUN_RECORD, RunRecord
from shared.signing import ensure_key_pair, generate_key, run_public_key
from simulations.run import simulate
from simulations.shop import ShopConfig, write_shop

SHAPES = {"head": (3, 4), "bias": (5,)}
CFG = RunConfig(dp_mode="federation", federation_population=100, private=False, min_clients=2)


def _arrays(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.normal(size=shape).astype(np.float32) for name, shape in SHAPES.items()}


def _checkpoint(step: ServerStep | None = None, **fields) -> Checkpoint:
    values = dict(
        training="111",
        run="222",
        round=1,
        config=CFG.without_paths(),
        catalogue_sha256="ab" * 32,
        arrays=_arrays(0),
        optimizer=step.state() if step else None,
        history={1: dict.fromkeys(("train", "federated_eval", "central_eval", "stopped"), None)},
    )
    values["history"][1].update(refused=[], skipped=[])
    return Checkpoint(**{**values, **fields})


def test_a_resumed_server_step_continues_adam_exactly(tmp_path):
    """Adam's moments and step count survive the checkpoint: rounds 2-3 after a restart give the same
    global model as a server that never stopped (a lost step count would change the bias correction)."""
    means = [_arrays(10 + r) for r in range(3)]
    straight = ServerStep(CFG, _arrays(0), tmp_path / "a", run="t")
    current = _arrays(0)
    for r, mean in enumerate(means, start=1):
        current = straight.step(r, current, mean, 2)

    key = generate_key()
    first = ServerStep(CFG, _arrays(0), tmp_path / "b", run="t")
    after_one = first.step(1, _arrays(0), means[0], 2)
    _checkpoint(first, arrays=after_one).save(tmp_path / CHECKPOINT_NAME, key)
    loaded = Checkpoint.load(tmp_path / CHECKPOINT_NAME, key)
    resumed = ServerStep(CFG, loaded.arrays, tmp_path / "b", run="t", attempt="333")
    resumed.restore(loaded.optimizer)
    again = loaded.arrays
    for r, mean in enumerate(means[1:], start=2):
        again = resumed.step(r, again, mean, 2)
    assert resumed.rounds == 3
    for name in SHAPES:
        np.testing.assert_array_equal(again[name], current[name])
        # the published average too: a resume that restarted it from the resumed step would differ
        np.testing.assert_array_equal(resumed.published()[name], straight.published()[name])
    assert not np.allclose(straight.published()["head"], current["head"])  # (decay 0.98: they differ)


def test_a_tampered_checkpoint_is_refused_naming_the_field(tmp_path):
    key, path = generate_key(), tmp_path / CHECKPOINT_NAME
    _checkpoint().save(path, key)
    assert Checkpoint.load(path, key).round == 1
    raw = json.loads(path.read_text())
    raw["round"] = 0  # replay round 1: its budget would be spent twice
    path.write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match=rf"{path}: field 'signature'"):
        Checkpoint.load(path, key)
    _checkpoint().save(path, generate_key())  # signed by another server
    with pytest.raises(CheckpointError, match="signature"):
        Checkpoint.load(path, key)
    path.write_text(json.dumps({**raw, "extra": 1}))
    with pytest.raises(CheckpointError, match="unexpected \\['extra'\\]"):
        Checkpoint.load(path, key)


def test_another_config_catalogue_or_model_is_refused(tmp_path):
    saved = _checkpoint()
    path = tmp_path / CHECKPOINT_NAME
    saved.check_matches(path, CFG.without_paths(), "ab" * 32, SHAPES, None)  # the same: accepted
    other = replace(CFG, learning_rate=0.5).without_paths()
    with pytest.raises(CheckpointError, match="field 'config.learning-rate' is 0.003"):
        saved.check_matches(path, other, "ab" * 32, SHAPES, None)
    with pytest.raises(CheckpointError, match="field 'catalogue_sha256'"):
        saved.check_matches(path, CFG.without_paths(), "cd" * 32, SHAPES, None)
    with pytest.raises(CheckpointError, match="field 'arrays.bias'"):
        saved.check_matches(path, CFG.without_paths(), "ab" * 32, {**SHAPES, "bias": (6,)}, None)
    with pytest.raises(CheckpointError, match="field 'optimizer.aggregated' is 0, .* holds 1 releases"):
        saved.check_matches(path, CFG.without_paths(), "ab" * 32, SHAPES, 1)


def test_finished_or_published_run_folders_are_refused_before_round_1(tmp_path):
    key = generate_key()
    cfg = replace(CFG, run_dir=str(tmp_path), num_server_rounds=2)
    assert server_app._resume_point(tmp_path, cfg, key, SHAPES, "ab" * 32) is None  # a new training
    (tmp_path / "index" / "v0002").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="v0002: the publication slot of round 2 is already taken"):
        server_app._resume_point(tmp_path, cfg, key, SHAPES, "ab" * 32)
    (tmp_path / "index" / "v0002").rmdir()
    (tmp_path / RUN_RECORD).write_text("{}")
    with pytest.raises(CheckpointError, match="finished run and no checkpoint"):
        server_app._resume_point(tmp_path, cfg, key, SHAPES, "ab" * 32)
    (tmp_path / "server").mkdir()
    config = cfg.without_paths()
    _checkpoint(round=2, config=config, finished=True).save(tmp_path / "server" / CHECKPOINT_NAME, key)
    with pytest.raises(CheckpointError, match="field 'finished': training 111 finished"):
        server_app._resume_point(tmp_path, cfg, key, SHAPES, "ab" * 32)


def test_a_round_trained_again_after_a_restart_is_ledgered_under_its_retry_key(tmp_path):
    ledger = Ledger(tmp_path / LEDGER_NAME)
    ledger.append("c", 1, 1, 1.0, 0.1, 1.0, 1e-5, run="T")
    assert ledger.run_key("T", "T", 2) == "T"  # the next round of the first run
    assert ledger.run_key("T", "T", 1) == "T"  # the same run twice: refused by the append, as before
    with pytest.raises(LedgerError, match="already recorded"):
        ledger.append("c", 1, 1, 1.0, 0.1, 1.0, 1e-5, run="T")
    assert ledger.run_key("T", "R2", 1) == retry_key("T", "R2") == "T~R2"  # a new run retrying round 1
    ledger.append("c", 1, 1, 1.0, 0.1, 1.0, 1e-5, run="T~R2")
    assert len(ledger.history()) == 1 and ledger.history()[0][2] == 2  # both counted


def test_a_server_crashed_before_checkpointing_round_2_resumes_it_in_a_new_run(tmp_path, monkeypatch):
    """Federation mode on the message-API path, 3 rounds. The ServerApp dies after round 2 was trained
    (each party's release of it reserved) but before its checkpoint; a new run on the same folder resumes
    after round 1, trains round 2 again (ledgered under its retry key, both counted) and round 3."""
    catalogue, events = write_shop(tmp_path / "data", ShopConfig(n_items=60, n_users=40, seed=5))
    overrides = {
        "dp-mode": "federation",
        "secure-aggregation": False,
        "num-server-rounds": 3,
        "lora-rank": 0,
        "item-id-rank": 0,
        "target-epsilon": 4.0,
    }
    save = Checkpoint.save

    def crash_at_round_2(self, path, key):
        if self.round == 2:
            raise RuntimeError("server killed")
        save(self, path, key)

    monkeypatch.setattr(Checkpoint, "save", crash_at_round_2)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="server killed"):  # the ServerApp died, the driver with it
        simulate(out, num_clients=2, catalogue=str(catalogue), events=str(events), overrides=overrides)
    first = json.loads((out / "server" / CHECKPOINT_NAME).read_text())
    assert first["round"] == 1 and not first["finished"]
    training = first["training"]
    server = Ledger(out / "server" / LEDGER_NAME)
    assert [(r.run, r.round) for r in server.releases()] == [(training, 0), (training, 1), (training, 2)]
    trending = Checkpoint.load(out / "server" / CHECKPOINT_NAME, ensure_key_pair(out / "server")).trending
    assert trending is not None and trending.training == training  # round 0's list, kept for publication

    monkeypatch.setattr(Checkpoint, "save", save)
    simulate(out, num_clients=2, catalogue=str(catalogue), events=str(events), overrides=overrides)
    record = RunRecord.load(out / RUN_RECORD)
    assert [r.round for r in record.rounds] == [0, 1, 2, 3]
    assert all(r.central_eval for r in record.rounds)  # round 0 and 1 from the checkpoint
    last = json.loads((out / "server" / CHECKPOINT_NAME).read_text())
    assert (last["training"], last["round"], last["finished"]) == (training, 3, True)
    assert last["run"] != training  # written by the second run

    releases = server.releases()
    retry = releases[3].run
    assert retry.startswith(f"{training}~") and retry != f"{training}~{training}"
    # round 0's trending release once (the resumed run publishes the list it kept, never releases again)
    done = [(training, 0), (training, 1), (training, 2), (retry, 2), (training, 3)]
    assert [(r.run, r.round) for r in releases] == done
    fed = record.privacy.federation
    assert fed.rounds == 4 and fed.trending_released  # all four releases, before and after the restart
    history = [(fed.trending_sigma, 1.0, 1), (fed.share_sigma, fed.sample_rate, 4)]
    assert fed.epsilon["share"] == pytest.approx(epsilon(history, 1e-5))
    for i in range(2):
        client = Ledger(out / "clients" / f"client-{i}" / LEDGER_NAME).releases()
        assert [(r.run, r.round) for r in client] == done
        assert record.privacy.epsilon[f"client-{i}"] == pytest.approx(client[-1].epsilon_prv)
        assert record.rounds[0].epsilon[f"client-{i}"] == pytest.approx(client[0].epsilon_prv)
        assert record.rounds[1].epsilon[f"client-{i}"] == pytest.approx(client[1].epsilon_prv)
    published = load_artifact(out / record.artifact, public_key=run_public_key(out / record.artifact))
    assert published.trending == trending
    assert audit_main(out) == 0  # receipts of both runs match the ledgers
    with pytest.raises(CheckpointError, match="field 'finished'"):  # a finished training: not again
        simulate(out, num_clients=2, catalogue=str(catalogue), events=str(events), overrides=overrides)
    assert len(server.releases()) == 5
