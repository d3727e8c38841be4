"""The on-device runtime over a real published artifact: real MiniLM, real FAISS, a small hand-made shop."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from client.device import Device, Recommendation, read_history
from shared.artifact import write_artifact
from shared.model import ModelConfig, Recommender
from shared.schema import item_texts

ITEMS = {  # category -> (brand, titles)
    "Camping > Tents": (
        "TrailPeak",
        [
            "2-person backpacking tent",
            "4-person family dome tent",
            "ultralight 1-person trekking tent",
            "waterproof 3-season camping tent",
            "instant pop-up tent",
            "6-person cabin tent with porch",
            "tunnel tent for windy campsites",
            "bikepacking tent, freestanding",
        ],
    ),
    "Camping > Sleeping Bags": (
        "TrailPeak",
        [
            "down mummy sleeping bag, -5C",
            "synthetic rectangular sleeping bag",
            "kids camping sleeping bag",
            "summer sleeping bag liner",
            "double sleeping bag for couples",
        ],
    ),
    "Camping > Gear": (
        "NorthCamp",
        [
            "self-inflating sleeping pad",
            "camping stove with gas canister",
            "LED camping lantern",
            "rechargeable headlamp",
            "folding camp chair",
            "tent footprint groundsheet",
            "tent stakes, aluminium",
            "tarp shelter with guy lines",
            "camping cookware mess kit",
            "water filter for hiking",
        ],
    ),
    "Hiking > Backpacks": (
        "NorthCamp",
        [
            "65L trekking backpack",
            "40L hiking daypack",
            "hydration pack 2L",
            "rain cover for backpack",
        ],
    ),
    "Kitchen > Coffee": (
        "BaristaPro",
        [
            "burr coffee grinder for espresso",
            "manual hand coffee grinder",
            "espresso machine with milk frother",
            "pour-over coffee dripper",
            "french press coffee maker",
            "moka pot stovetop espresso maker",
            "coffee scale with timer",
            "gooseneck kettle for pour-over coffee",
        ],
    ),
    "Kitchen > Cookware": (
        "HomeChef",
        [
            "non-stick frying pan 28cm",
            "cast iron skillet",
            "stainless steel saucepan set",
            "dutch oven 5L",
            "wok with lid",
            "baking tray set",
            "pressure cooker 6L",
        ],
    ),
    "Kitchen > Knives": (
        "HomeChef",
        [
            "chef's knife 20cm",
            "santoku knife",
            "bread knife",
            "knife sharpening whetstone",
            "paring knife set",
            "magnetic knife strip",
        ],
    ),
    "Kitchen > Appliances": (
        "HomeChef",
        [
            "countertop blender",
            "electric kettle 1.7L",
            "toaster 2-slice",
            "stand mixer",
            "air fryer 5L",
            "rice cooker",
            "slow cooker",
            "food processor",
        ],
    ),
}
TENTS = ["i000", "i001", "i002", "i003"]


@pytest.fixture(scope="module")
def catalogue() -> pd.DataFrame:
    rows = [(category, brand, title) for category, (brand, titles) in ITEMS.items() for title in titles]
    return pd.DataFrame(
        {
            "item_id": [f"i{i:03d}" for i in range(len(rows))],
            "title": [title for _, _, title in rows],
            "brand": [brand for _, brand, _ in rows],
            "category": [category for category, _, _ in rows],
            "price": [float(19 + 7 * i % 300) for i in range(len(rows))],
            "description": "",
        }
    )


@pytest.fixture(scope="module")
def published(tmp_path_factory, catalogue):
    """A server-side model with a non-trivial adapter, publishing item vectors it computed itself."""
    model = Recommender(ModelConfig())
    generator = torch.Generator().manual_seed(0)
    state = {
        name: t + 0.02 * torch.randn(t.shape, generator=generator) if "lora_B" in name else t
        for name, t in model.trainable_state().items()
    }
    model.load_trainable_state(state)
    model.eval()
    root = tmp_path_factory.mktemp("artifacts")
    write_artifact(
        root,
        round=1,
        item_ids=catalogue["item_id"].tolist(),
        item_vectors=model.item_rows(model.encode_texts(item_texts(catalogue))),
        items=catalogue,
        trainable_state=state,
        model_config=model.config.to_dict(),
        info={"private": False},
    )
    return root


@pytest.fixture(scope="module")
def device(published) -> Device:
    return Device(published)  # the root: resolved through LATEST


def test_device_loads_the_latest_round_without_the_model(device, published):
    assert device.artifact.path == published / "v0001"
    assert device._model is None  # MiniLM loads on first use only


def test_recommend_excludes_history_and_purchases_and_returns_exactly_k(device, catalogue):
    history, purchased = TENTS, ["i004", "i005", "nonexistent-old-item"]
    for k in (1, 5, 10):
        recs = device.recommend(history, k=k, exclude=purchased)
        assert len(recs) == k
        assert not {r.item_id for r in recs} & (set(history) | set(purchased))
        assert all(isinstance(r, Recommendation) for r in recs)
        assert [r.score for r in recs] == sorted((r.score for r in recs), reverse=True)
    everything = device.recommend(history, k=len(catalogue), exclude=purchased)
    assert len(everything) == len(catalogue) - len(history) - 2  # as many as the catalogue allows


def test_tent_history_recommends_camping(device, catalogue):
    top = device.recommend(TENTS, k=5)
    assert top[0].category == "Camping > Tents", top
    assert all(r.category.startswith(("Camping", "Hiking")) for r in top), top
    first = catalogue.set_index("item_id").loc[top[0].item_id]
    assert (top[0].title, top[0].brand, top[0].price) == (first["title"], first["brand"], first["price"])


def test_search_finds_coffee(device):
    results = device.search("espresso coffee grinder", k=3)
    assert len(results) == 3
    assert results[0].category == "Kitchen > Coffee", results
    assert "grinder" in results[0].title


def test_search_uses_the_published_adapter(device, catalogue):
    """An item's own text must score ~1 against its published vector: the device runs the same item tower."""
    text = item_texts(catalogue.iloc[[20]])[0]
    best = device.search(text, k=1)[0]
    assert best.item_id == "i020" and best.score == pytest.approx(1.0, abs=1e-4)


def test_unknown_history_ids_are_named(device):
    with pytest.raises(ValueError, match=r"not in the published catalogue r0001-\w+: \['nope', 'B00X'\]"):
        device.recommend(["i000", "nope", "B00X"])
    with pytest.raises(ValueError, match="empty history"):
        device.recommend([])


def test_read_history_comma_list_and_plain_file(tmp_path):
    assert read_history("i003, i001,,i007") == (["i003", "i001", "i007"], set())
    listing = tmp_path / "history.txt"
    listing.write_text("# my basket\ni003\n\ni001\n")
    assert read_history(str(listing)) == (["i003", "i001"], set())
    with pytest.raises(FileNotFoundError):
        read_history(str(tmp_path / "absent.csv"))


def test_read_history_events_csv(tmp_path):
    events = tmp_path / "events.csv"
    events.write_text(
        "user_id,item_id,event,timestamp\n"
        "u1,i005,purchase,2024-01-03T10:00:00Z\n"
        "u1,i001,click,2024-01-01T10:00:00Z\n"
        "u1,i002,view,2024-01-02T10:00:00Z\n"  # views are not engagement, as in training
        "u1,i003,add_to_cart,1704189600\n"  # 2024-01-02T10:00Z in epoch seconds
        "u1,i001,purchase,2024-01-04T10:00:00Z\n"
    )
    assert read_history(str(events)) == (["i001", "i003", "i005"], {"i005", "i001"})

    plain = tmp_path / "ids.csv"
    plain.write_text("item_id\ni009\ni004\n")
    assert read_history(str(plain)) == (["i009", "i004"], set())

    shared = tmp_path / "two_users.csv"
    shared.write_text("user_id,item_id,event\nu1,i001,click\nu2,i002,click\n")
    with pytest.raises(ValueError, match="holds 2 users"):
        read_history(str(shared))


def test_recommend_from_a_read_history(device, tmp_path):
    events = tmp_path / "events.csv"
    events.write_text("item_id,event\ni027,click\ni028,purchase\ni029,click\n")
    history, purchased = read_history(str(events))
    recs = device.recommend(history, k=4, exclude=purchased)
    assert len(recs) == 4 and not {r.item_id for r in recs} & set(history)
    assert np.mean([r.category.startswith("Kitchen") for r in recs]) >= 0.75, recs
