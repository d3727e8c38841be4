"""A device session (issue 15, part 1): events in, fresh recommendations out, nothing re-encoded; and the
NumPy user tower it runs on, checked against the model's own."""
# ruff: noqa: F811 (the imported fixtures are test arguments)

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_device import TENTS, catalogue, device, published  # noqa: F401 (fixtures)

from client.device import Session
from client.device.tower import UserTower
from shared.model import ModelConfig

COFFEE = ["i027", "i028", "i029", "i030"]  # Kitchen > Coffee in test_device's shop
KNIVES = ["i042", "i043", "i044"]


def share(recs, prefix: str) -> float:
    return float(np.mean([r.category.startswith(prefix) for r in recs]))


def test_the_numpy_tower_is_the_models_user_tower(device):
    model = device.model()
    state = dict(device.artifact.trainable_state)
    generator = torch.Generator().manual_seed(1)
    state["user_head.1.weight"] = 0.3 * torch.randn(state["user_head.1.weight"].shape, generator=generator)
    model.load_trainable_state(state)
    try:
        config = ModelConfig.from_dict(device.artifact.model_config)
        histories = [[0, 3, 7], list(range(30)), [12]]  # longer than history_length: the last 20 count
        expected = model.user_vectors(np.ascontiguousarray(device.vectors), histories)
        tower = UserTower(config, state)
        for history, want in zip(histories, expected, strict=True):
            labels = [("item", str(r), "") for r in history]
            got = tower.intent(device.vectors[history], labels).parts.sum(axis=0)
            np.testing.assert_allclose(got, want, atol=1e-5)
    finally:
        model.load_trainable_state(device.artifact.trainable_state)


def test_clicks_give_what_recommend_gives(device):
    session = device.session(TENTS, k=8)
    assert [r.item_id for r in session.recommend()] == [r.item_id for r in device.recommend(TENTS, k=8)]


def test_views_in_one_category_make_it_rise(device):
    session = device.session(TENTS, k=10)
    before = share(session.recommend(), "Kitchen > Coffee")
    for item_id in COFFEE:
        recs = session.add("view", item_id)
    after = share(recs, "Kitchen > Coffee")  # 4 coffee items are left unseen: at most 0.4
    assert before == 0.0 and after >= 0.3 and recs[0].category == "Kitchen > Coffee", (before, recs)


def test_recent_intent_weighs_more(device):
    coffee_last = device.session([*KNIVES, *COFFEE[:2]], k=5).recommend()
    knives_last = device.session([*COFFEE[:2], *KNIVES], k=5).recommend()
    assert share(coffee_last, "Kitchen > Coffee") > share(knives_last, "Kitchen > Coffee")
    assert share(knives_last, "Kitchen > Knives") > share(coffee_last, "Kitchen > Knives")


def test_purchased_and_seen_items_never_come_back(device, catalogue):
    session = device.session(TENTS, purchased=["i004", "gone-from-catalogue"], k=len(catalogue))
    session.add("purchase", "i010")
    session.add("view", "i011")
    every = {r.item_id for r in session.add("add_to_cart", "i012")}
    assert not every & {*TENTS, "i004", "i010", "i011", "i012"}
    assert len(every) == len(catalogue) - len(TENTS) - 4


def test_a_search_event_moves_recommendations_without_reencoding_items(device, monkeypatch):
    session = device.session(TENTS[:1], k=10)
    before = share(session.recommend(), "Kitchen > Coffee")
    after = session.add("search", query="espresso coffee grinder")
    assert before == 0.0 and share(after, "Kitchen > Coffee") >= 0.3, after
    assert session.history()[-1] == "query:espresso coffee grinder"

    def no_encoding(*args, **kwargs):
        raise AssertionError("an item event must not encode anything")

    monkeypatch.setattr(device.model(), "encode_texts", no_encoding)
    monkeypatch.setattr(device, "model", no_encoding)
    session.add("click", "i040")
    session.add("search", "i041")  # a search that led to an item: engagement, as in training


def test_session_errors_are_clear(device):
    session = Session(device)
    with pytest.raises(ValueError, match="empty session"):
        session.recommend()
    with pytest.raises(ValueError, match="unknown event 'like'"):
        session.add("like", "i000")
    with pytest.raises(ValueError, match="item id 'nope' is not in the published catalogue"):
        session.add("click", "nope")
    with pytest.raises(ValueError, match="a view event needs an item id"):
        session.add("view")
    with pytest.raises(ValueError, match="a search event needs a query"):
        session.add("search")
