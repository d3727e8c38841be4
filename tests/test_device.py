"""The on-device runtime over a real published artifact: real MiniLM, real FAISS, a small hand-made shop;
the pinned publisher key, the rollback guard, and the command line's key lookup."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import pytest
import torch

from client.device import STATE_FILE, Device, Recommendation, publisher_key_file, read_history
from fedrec.cli import main
from shared.artifact import Artifact, ArtifactError, write_artifact
from shared.model import ModelConfig, Recommender
from shared.schema import item_texts
from shared.signing import generate_key, key_id, save_public_key

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
KEY = generate_key()  # the publisher's


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
    run = tmp_path_factory.mktemp("run")  # a run folder's layout: index/ + server/publisher.pub
    (run / "server").mkdir()
    save_public_key(KEY, run / "server" / "publisher.pub")
    root = run / "index"
    write_artifact(
        root,
        round=1,
        item_ids=catalogue["item_id"].tolist(),
        item_vectors=model.item_rows(model.encode_texts(item_texts(catalogue))),
        items=catalogue,
        trainable_state=state,
        model_config=model.config.to_dict(),
        info={"private": False},
        signing_key=KEY,
    )
    return root


@pytest.fixture(scope="module")
def device(published, tmp_path_factory) -> Device:
    state = tmp_path_factory.mktemp("device-state")
    return Device(published, publisher_key=KEY.public_key(), state_dir=state)  # the root: through LATEST


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


# ---------------------------------------------------------------------------------------------- trust
def republish(art: Artifact, root, rounds=(1,), key=KEY, **options) -> Path:
    """Publish an artifact's contents again as other rounds (signed by `key`, with write_artifact's
    `options`): no model needed. Returns the last folder published."""
    for r in rounds:
        folder = write_artifact(
            root,
            round=r,
            item_ids=art.item_ids,
            item_vectors=art.item_rows(),
            items=art.items,
            trainable_state=art.trainable_state,
            model_config=art.model_config,
            info={"private": False},
            signing_key=key,
            **options,
        )
    return folder


def test_a_rolled_back_latest_is_refused(device, tmp_path):
    root, state = tmp_path / "index", tmp_path / "state"
    republish(device.artifact, root, [1, 2, 3])
    pinned = KEY.public_key()
    assert Device(root, publisher_key=pinned, state_dir=state).artifact.round == 3
    accepted = json.loads((state / STATE_FILE).read_text())
    assert accepted == {key_id(KEY): {"round": 3, "version": accepted[key_id(KEY)]["version"]}}

    (root / "LATEST").write_text("v0001\n")  # whoever can write the folder serves an older, signed round
    with pytest.raises(ArtifactError, match="rollback refused: round 1 is older than round 3"):
        Device(root, publisher_key=pinned, state_dir=state)
    with pytest.raises(ArtifactError, match="rollback refused: round 2 is older than round 3"):
        Device(root / "v0002", publisher_key=pinned, state_dir=state)
    assert Device(root / "v0003", publisher_key=pinned, state_dir=state).artifact.round == 3  # same: fine
    assert Device(root, publisher_key=pinned, state_dir=tmp_path / "new").artifact.round == 1  # a new device

    other = generate_key()  # rounds are counted per publisher key
    republish(device.artifact, tmp_path / "other", [1], key=other)
    assert Device(tmp_path / "other", publisher_key=other.public_key(), state_dir=state).artifact.round == 1
    assert set(json.loads((state / STATE_FILE).read_text())) == {key_id(KEY), key_id(other)}


def test_an_unreadable_device_state_is_an_error_not_a_reset(device, published, tmp_path):
    (tmp_path / STATE_FILE).write_text("{broken")
    with pytest.raises(ValueError, match="device state is not valid JSON"):
        Device(published, publisher_key=KEY.public_key(), state_dir=tmp_path)


def test_a_forged_index_or_another_publisher_is_refused_on_the_device(device, tmp_path):
    root = tmp_path / "index"
    republish(device.artifact, root, [1])
    with pytest.raises(ArtifactError, match="manifest.sig does not verify"):
        Device(root, publisher_key=generate_key().public_key(), state_dir=tmp_path / "state")

    folder = root / "v0001"  # the reported attack: one item first for every user, sha256 list recomputed
    rows = device.artifact.item_rows()
    rows[5, -1] = 999_999.0
    forged = faiss.IndexFlatIP(rows.shape[1])
    forged.add(rows)
    (folder / "index.faiss").write_bytes(bytes(faiss.serialize_index(forged)))
    manifest = json.loads((folder / "manifest.json").read_text())
    data = (folder / "index.faiss").read_bytes()
    manifest["files"]["index.faiss"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    with pytest.raises(ArtifactError, match="manifest.sig does not verify under the pinned publisher key"):
        Device(root, publisher_key=KEY.public_key(), state_dir=tmp_path / "state")


def test_publisher_key_file_given_or_from_the_run_folder(published, tmp_path):
    run_key = published.parent / "server" / "publisher.pub"
    assert publisher_key_file(published / "v0001") == run_key
    assert publisher_key_file(published) == run_key
    mine = save_public_key(generate_key(), tmp_path / "mine.pub")
    assert publisher_key_file(published, mine) == mine  # given: wins over the run folder's
    with pytest.raises(FileNotFoundError, match="pass the publisher's public key"):
        publisher_key_file(tmp_path / "index" / "v0001")
    with pytest.raises(FileNotFoundError, match="absent.pub does not exist$"):
        publisher_key_file(published, tmp_path / "absent.pub")


def test_command_line_pins_the_run_key_or_the_given_one(device, published, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))  # the default device state: ~/.fedrec/device
    assert main(["search", "espresso coffee grinder", "--artifact", str(published), "-k", "2", "--json"]) == 0
    out = capsys.readouterr()
    assert [r["category"] for r in json.loads(out.out)][0] == "Kitchen > Coffee"
    run_key = published.parent / "server" / "publisher.pub"
    assert out.err.startswith(f"pinned publisher key {run_key} (id {key_id(KEY)[:16]}, the run folder's own")
    assert (tmp_path / ".fedrec" / "device" / STATE_FILE).exists()

    stranger = save_public_key(generate_key(), tmp_path / "stranger.pub")
    argv = ["recommend", "--artifact", str(published / "v0001"), "--history", "i000,i001"]
    assert main([*argv, "--publisher-key", str(stranger)]) == 2
    assert "manifest.sig does not verify under the pinned publisher key" in capsys.readouterr().err
