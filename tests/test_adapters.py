"""Only adapter tensors leave a client, and the server refuses anything else."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord

from shared.adapters import SHAREABLE, AdapterLeakError, from_record, shapes, to_record


def test_trainable_state_is_exactly_the_shareable_adapters(tiny_model):
    state = tiny_model.trainable_state()
    assert state and all(SHAREABLE.search(name) for name in state)
    # FFA-LoRA: only B matrices train; A stays at the shared seeded init and is never sent
    assert not any(".lora_A." in name for name in state)
    assert sum(".lora_B." in name for name in state) == 2  # top layer x (query, value)
    assert all(".layer.5." in n for n in state if ".lora_" in n)
    frozen = [n for n, p in tiny_model.named_parameters() if not p.requires_grad]
    assert any("encoder.layer.5.attention.self.query.base_layer.weight" in n for n in frozen)
    assert any("encoder.layer.0.attention.self.query.weight" in n for n in frozen)
    size = sum(t.numel() for t in state.values())
    assert size < 0.01 * sum(p.numel() for p in tiny_model.parameters())


def test_client_refuses_to_send_base_weights(tiny_model):
    leaky = dict(tiny_model.trainable_state())
    leaky["encoder.base_model.model.embeddings.word_embeddings.weight"] = torch.zeros(3, 3)
    with pytest.raises(AdapterLeakError, match="word_embeddings"):
        to_record(leaky)


def test_round_trip_and_server_side_shape_check(tiny_model):
    state = tiny_model.trainable_state()
    back = from_record(to_record(state), shapes(state))
    assert set(back) == set(state)
    for name in state:
        torch.testing.assert_close(back[name], state[name])
    wrong = {k: v.numpy() for k, v in state.items()}
    name = next(iter(wrong))
    wrong[name] = np.zeros((1, 1), dtype=np.float32)
    with pytest.raises(AdapterLeakError, match="shape"):
        from_record(ArrayRecord({k: torch.from_numpy(v) for k, v in wrong.items()}), shapes(state))
    with pytest.raises(AdapterLeakError, match="missing"):
        from_record(to_record({k: v for k, v in state.items() if k != name}), shapes(state))


def test_same_init_on_every_party():
    """FFA-LoRA needs the frozen A matrices (and the head's A) identical everywhere: they are seeded."""
    from shared.model import ModelConfig, Recommender

    a, b = Recommender(ModelConfig(n_items=3)), Recommender(ModelConfig(n_items=3))
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(pa, pb), name
