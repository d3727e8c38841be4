"""The sequence residual: zero at start, order-aware once trained, exact per-user gradients under Opacus,
scored in training as the index and the device serve it, and published in an artifact that says so."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import TEXTS, catalogue_frame, clipped_gradient_sum  # tests/ is on sys.path under pytest

from client import randomness
from client.device.tower import ORDER, UserTower
from client.train import TrainSettings, UserExamples, catalogue_tokens, federation_share
from shared.model import ModelConfig, Recommender, param_group

SEQ = {"n_items": len(TEXTS), "item_id_rank": 4, "lora_rank": 0, "sequence_layers": 2, "sequence_dim": 16}


@pytest.fixture(scope="module")
def seq_model() -> Recommender:
    return Recommender(ModelConfig(**SEQ))


def _trained(model: Recommender, seed: int = 0) -> Recommender:
    """The model with every trained tensor moved off its start (as if trained), reproducibly."""
    out = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in out.parameters():
            if p.requires_grad:
                p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return out


def _seen(model: Recommender, users: list[list[int]]) -> torch.Tensor:
    return model.history_window(users)


def test_untrained_residual_is_zero_so_the_start_is_zero_shot(
    tiny_id_model, seq_model, tiny_catalogue, histories
):
    vectors, _ = tiny_catalogue
    users = [h[:4] for h in histories[:6]] + [[]]
    np.testing.assert_array_equal(
        seq_model.user_vectors(vectors, users), tiny_id_model.user_vectors(vectors, users)
    )
    groups = {param_group(n) for n, _ in seq_model.named_parameters() if n.startswith("sequence.")}
    assert groups == {"sequence"}  # its own learning rate
    sent = seq_model.trainable_state()
    assert "sequence.out.weight" in sent and float(sent["sequence.out.weight"].abs().max()) == 0.0


def test_trained_residual_sees_order_and_training_scores_what_the_index_serves(
    seq_model, tiny_catalogue, histories
):
    vectors, _ = tiny_catalogue
    model = _trained(seq_model)
    users = [h[:4] for h in histories[:5]] + [h[:1] for h in histories[5:7]]
    space = model.item_space(vectors)
    forward = model.user_vectors(space, users)
    backward = model.user_vectors(space, [u[::-1] for u in users])
    assert np.abs(forward[:5] - backward[:5]).max() > 0.05  # order moves the user vector...
    np.testing.assert_allclose(forward[5:], backward[5:], atol=1e-6)  # ...and one item has no order

    pooled = torch.from_numpy(model.pool_history(vectors, users))
    empty = torch.zeros(len(users), 0, 0, dtype=torch.long)
    with torch.no_grad():
        _, logits = model(empty, empty, pooled, torch.from_numpy(vectors), _seen(model, users))
    served = model.user_rows(forward) @ model.item_rows(space).T
    np.testing.assert_allclose(logits.numpy() * model.config.temperature, served, atol=1e-5)

    # the device builds the same user vector from the published tensors, with the order as its own part
    tower = UserTower(model.config, model.trainable_state())
    for row, history in enumerate(users):
        intent = tower.intent(space[history], [("item", str(i), "") for i in history])
        np.testing.assert_allclose(intent.row()[0, :-1], forward[row], atol=1e-5)
        assert intent.labels[-1] == ORDER and len(intent.parts) == len(history) + 1


def test_opacus_per_user_gradients_of_the_residual_are_exact(seq_model, tiny_catalogue, histories):
    """A share is Σ clip(per-user gradient) / scale: Opacus' hooks through attention, LayerNorm and the
    position table, checked against each user's own autograd gradient (a wrong per-sample gradient would
    clip the wrong thing: a privacy failure, not only a numerical one)."""
    vectors, _ = tiny_catalogue
    model = _trained(seq_model, seed=1)
    start = {k: v.clone() for k, v in model.trainable_state().items()}
    settings = TrainSettings(max_grad_norm=0.5, private=True, noise_multiplier=0.0, positions_per_user=3)
    users, scale = [h[:4] for h in histories[:8]], 11.0
    tokens = catalogue_tokens(model, TEXTS)
    # 4 items and 3 positions: every draw takes all three positions, so each user's example (a mean over
    # its positions) is the same whatever the secret draws
    federation_share(
        model, users, vectors, tokens, settings,
        sample_rate=1.0, share_noise=0.0, scale=scale, randomness=randomness.secret(),
    )  # fmt: skip
    share = {k: start[k] - v for k, v in model.trainable_state().items()}
    model.load_trainable_state(start)

    data = UserExamples(model, users, vectors, tokens, settings, draws=np.random.SeedSequence(0))
    examples = (data[i] for i in range(len(data)))
    total, clipped = clipped_gradient_sum(model, examples, torch.from_numpy(vectors), settings.max_grad_norm)
    assert clipped > 0
    assert float(total["sequence.blocks.0.qkv.weight"].abs().max()) > 0  # the attention really trains
    for k in total:
        torch.testing.assert_close(share[k], total[k] / scale, atol=2e-6, rtol=1e-4)


def test_published_sequence_model_ranks_on_the_device_as_the_model_does(tmp_path, seq_model, histories):
    from test_artifact import forge  # tests/ is on sys.path under pytest

    from client.device import Device
    from server.publish import publish
    from shared.artifact import FORMAT_VERSION, ArtifactError, load_artifact
    from shared.schema import item_texts
    from shared.signing import generate_key

    model = _trained(seq_model, seed=2).eval()
    catalogue = catalogue_frame()
    key = generate_key()
    root = publish(
        model, catalogue, tmp_path / "index", server_round=1, info={"private": False}, signing_key=key
    )
    device = Device(root, publisher_key=key.public_key(), state_dir=tmp_path / "device")
    assert device.artifact.manifest["format_version"] == FORMAT_VERSION == 4
    space = model.item_space(model.encode_texts(item_texts(catalogue)))
    history = histories[0][:4]
    expected = model.user_rows(model.user_vectors(space, [history])) @ model.item_rows(space).T
    recs = device.recommend([f"i{i}" for i in history], k=4)
    for rec in recs:
        assert rec.score == pytest.approx(float(expected[0, int(rec.item_id[1:])]), abs=1e-4)
        assert all(reason.key in {f"i{i}" for i in history} for reason in rec.reasons)  # order is never named
    assert [int(r.item_id[1:]) for r in recs] == [
        int(i) for i in np.argsort(-expected[0]) if i not in history
    ][:4]

    # format 2 has no sequence residual: a manifest that claims it while carrying one is refused
    forge(root, edit=lambda m: m.update(format_version=2), signing_key=key)
    with pytest.raises(ArtifactError, match="has a sequence residual, which format 2 cannot hold"):
        load_artifact(root, public_key=key.public_key())
