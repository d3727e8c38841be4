"""Search on the device (issue 15, part 2): the fast query path is the same item tower, on one thread;
filters are respected whichever way the index is searched; personalized search blends in the profile."""
# ruff: noqa: F811 (the imported fixtures are test arguments)

from __future__ import annotations

import json

import faiss
import numpy as np
import pandas as pd
import pytest
import torch
from test_device import KEY, TENTS, catalogue, device, published  # noqa: F401 (fixtures)

from client.device import Device, Filters, ranking
from client.device.query import query_intent
from fedrec.cli import main
from shared.artifact import write_artifact


def test_the_query_path_is_the_item_tower(device):
    model = device.model()
    for query in ("espresso coffee grinder", "tent", "a b c d " * 40):  # the last one truncated
        got = query_intent(model, query).parts.sum(axis=0)
        np.testing.assert_allclose(got, model.encode_texts([query])[0], atol=1e-5)


def test_a_search_runs_on_one_thread_and_restores_the_settings(device, monkeypatch):
    """The fix for 515 ms: one query is too small for two threads (client/device/threads.py)."""
    seen = []
    encoder = device.model().encoder
    forward = encoder.forward
    monkeypatch.setattr(
        encoder, "forward", lambda *a, **kw: seen.append(torch.get_num_threads()) or forward(*a, **kw)
    )
    torch.set_num_threads(2)
    faiss.omp_set_num_threads(2)
    device.search("camping stove", k=3)
    assert seen == [1]
    assert torch.get_num_threads() == 2 and faiss.omp_get_max_threads() == 2


@pytest.mark.parametrize("exact_max", [0, 10_000])  # the filtered index search, and the exact scan
def test_filters_are_respected(device, monkeypatch, exact_max):
    monkeypatch.setattr(ranking, "EXACT_MAX", exact_max)
    kitchen = device.search("coffee", k=5, filters=Filters(categories=("kitchen",)))
    assert len(kitchen) == 5 and all(r.category.startswith("Kitchen > ") for r in kitchen)
    brand = device.recommend(TENTS, k=6, filters=Filters(brands=("homechef",)))
    assert len(brand) == 6 and {r.brand for r in brand} == {"HomeChef"}
    cheap = device.search("tent", k=50, filters=Filters(min_price=50, max_price=120))
    assert cheap and all(50 <= r.price <= 120 for r in cheap)
    everything = device.search("tent", k=1000, filters=Filters(categories=("Camping > Tents",)))
    assert {r.item_id for r in everything} == {f"i{i:03d}" for i in range(8)}  # all eight, no more


def test_filters_that_cannot_apply_are_errors(device, tmp_path):
    with pytest.raises(ValueError, match="no published item matches the filters \\(category garden\\)"):
        device.search("tent", filters=Filters(categories=("garden",)))
    with pytest.raises(ValueError, match="min_price 9 is above max_price 3"):
        Filters(min_price=9, max_price=3)
    art = device.artifact
    bare = art.items.drop(columns=["brand", "price"])
    write_artifact(
        tmp_path / "index",
        round=1,
        item_ids=art.item_ids,
        item_vectors=art.item_rows(),
        items=bare,
        trainable_state=art.trainable_state,
        model_config=art.model_config,
        info={},
        signing_key=KEY,
    )
    plain = Device(tmp_path / "index", publisher_key=KEY.public_key(), state_dir=tmp_path / "state")
    with pytest.raises(ValueError, match="carry no brand"):
        plain.recommend(TENTS, filters=Filters(brands=("TrailPeak",)))
    with pytest.raises(ValueError, match="carry no price"):
        plain.recommend(TENTS, filters=Filters(max_price=10))


def test_personalized_search_leans_towards_the_history(device):
    coffee_fan = ["i027", "i028", "i029"]
    plain = device.search("stainless steel", k=6)
    mine = device.search("stainless steel", k=6, history=coffee_fan, personalize=0.6)
    assert sum(r.category == "Kitchen > Coffee" for r in mine) > sum(
        r.category == "Kitchen > Coffee" for r in plain
    )
    only_profile = device.search("stainless steel", k=5, history=TENTS, personalize=1.0)
    assert [r.item_id for r in only_profile] == [r.item_id for r in device.rank(device.profile(TENTS), 5)]
    with pytest.raises(ValueError, match="personalized search needs a history"):
        device.search("tent", personalize=0.5)
    with pytest.raises(ValueError, match="personalize must be between 0 and 1"):
        device.search("tent", history=TENTS, personalize=1.5)


def test_search_command_filters_and_personalizes(published, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    argv = ["search", "stainless steel", "--artifact", str(published), "-k", "4", "--json"]
    assert main([*argv, "--category", "Kitchen > Cookware", "--max-price", "300"]) == 0
    found = pd.DataFrame(json.loads(capsys.readouterr().out))
    assert len(found) == 4 and set(found["category"]) == {"Kitchen > Cookware"}
    assert main([*argv, "--personalize", "0.5"]) == 2
    assert "needs both --history and --personalize" in capsys.readouterr().err
    assert main([*argv, "--history", "i027,i028", "--personalize", "0.5"]) == 0
