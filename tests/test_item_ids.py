"""Item ID residuals: off they change nothing, on they are scored in training as the index serves them."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from shared.adapters import SHAREABLE


def test_untrained_id_rows_leave_the_zero_shot_model(tiny_model, tiny_id_model, tiny_catalogue, histories):
    vectors, tokens = tiny_catalogue
    np.testing.assert_array_equal(tiny_id_model.item_space(vectors), vectors)
    ids, mask = tokens[0][None, :2].expand(3, -1, -1), tokens[1][None, :2].expand(3, -1, -1)
    pooled = torch.from_numpy(tiny_model.pool_history(vectors, histories[:3]))
    seen = torch.tensor([h[-4:] for h in histories[:3]])
    with torch.no_grad():
        plain = tiny_model(ids, mask, pooled, torch.from_numpy(vectors))
        with_ids = tiny_id_model(ids, mask, pooled, torch.from_numpy(vectors), seen)
    for a, b in zip(plain, with_ids, strict=True):
        torch.testing.assert_close(a, b)


def test_training_logits_are_the_published_retrieval_scores(tiny_id_model, tiny_catalogue, histories):
    """What the loss ranks (text vectors + ID part with gradient) is what the index ranks (v + e·P rows)."""
    vectors, tokens = tiny_catalogue
    model = copy.deepcopy(tiny_id_model)
    with torch.no_grad():
        model.item_ids.weight.normal_(0, 0.3)
        model.item_bias.weight.normal_(0, 1.0)
        model.user_head[1].weight.normal_(0, 0.1)
    users = [h[:3] for h in histories[:4]] + [h[:1] for h in histories[4:6]]
    seen = torch.full((6, model.config.history_length), -1)
    for row, history in enumerate(users):
        seen[row, : len(history)] = torch.tensor(history)
    pooled = torch.from_numpy(model.pool_history(vectors, users))
    ids, mask = tokens[0][None, :1].expand(6, -1, -1), tokens[1][None, :1].expand(6, -1, -1)
    with torch.no_grad():
        _, logits = model(ids, mask, pooled, torch.from_numpy(vectors), seen)
    space = model.item_space(vectors)
    assert np.abs(space - vectors).max() > 0.05  # the ID rows really move the items
    served = model.user_rows(model.user_vectors(space, users)) @ model.item_rows(space).T
    np.testing.assert_allclose(logits.numpy() * model.config.temperature, served, atol=1e-5)


def test_id_rows_are_sent_and_the_basis_is_not(tiny_id_model):
    state = tiny_id_model.trainable_state()
    assert state["item_ids.weight"].shape == (tiny_id_model.config.n_items, 4)
    assert all(SHAREABLE.search(name) for name in state)
    assert "item_id_basis" not in state  # derived from the shared seed by every party


def test_frozen_text_tower_trains_head_bias_and_id_rows_under_dp(
    tiny_frozen_text_model, tiny_catalogue, histories
):
    """lora_rank=0: nothing of MiniLM trains or is sent; a DP round moves the ID rows and is accounted."""
    from client.randomness import secret
    from client.train import TrainSettings, train_round

    vectors, tokens = tiny_catalogue
    model = copy.deepcopy(tiny_frozen_text_model)
    state = model.trainable_state()
    assert set(state) == {"user_head.0.weight", "user_head.1.weight", "item_bias.weight", "item_ids.weight"}
    settings = TrainSettings(
        batch_size=8, local_steps=3, private=True, noise_multiplier=1.0, max_grad_norm=1.0
    )
    result = train_round(
        model, histories, vectors, tokens, settings, population=len(histories), randomness=secret()
    )
    assert len(result.history) == 1 and result.history[0][2] == 3  # (σ, q, steps) of exactly this round
    assert model.item_ids.weight.abs().max() > 0
    assert np.abs(model.item_space(vectors) - vectors).max() > 0


def test_published_index_and_device_rank_as_the_model_does(tmp_path, tiny_id_model, histories):
    """server.publish writes v + e·P rows; a device pooling its history from them scores as the model does."""

    from client.device import Device
    from server.publish import publish
    from shared.schema import item_texts
    from shared.signing import generate_key
    from tests.conftest import catalogue_frame

    model = copy.deepcopy(tiny_id_model)
    with torch.no_grad():
        model.item_ids.weight.normal_(0, 0.3)
        model.item_bias.weight.normal_(0, 1.0)
    model.eval()
    catalogue = catalogue_frame()
    key = generate_key()
    root = publish(
        model, catalogue, tmp_path / "index", server_round=1, info={"private": False}, signing_key=key
    )
    device = Device(root, publisher_key=key.public_key(), state_dir=tmp_path / "device")
    space = model.item_space(model.encode_texts(item_texts(catalogue)))
    np.testing.assert_allclose(device.artifact.item_vectors(), space, atol=1e-5)
    history = histories[0][:3]
    expected = model.user_rows(model.user_vectors(space, [history])) @ model.item_rows(space).T
    recs = device.recommend([f"i{i}" for i in history], k=3)
    for rec in recs:
        assert rec.score == pytest.approx(float(expected[0, int(rec.item_id[1:])]), abs=1e-4)
    best = [int(i) for i in np.argsort(-expected[0]) if int(i) not in history][:3]
    assert [int(r.item_id[1:]) for r in recs] == best
