"""`fedrec index add` (issue 15, part 4, new items): items from their text alone, published as the next
signed round; the device takes it (newer, not a rollback), finds a new item by its title, and refuses a
tampered copy. The base artifact is test_device.py's (its fixtures, imported)."""
# ruff: noqa: F811 (the imported fixtures are test arguments)

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_device import KEY, TENTS, catalogue, published  # noqa: F401 (fixtures)

from client.device import Device
from client.device.index_add import add_items
from fedrec.cli import main
from shared.artifact import ArtifactError, load_artifact, write_artifact
from shared.model import ModelConfig, Recommender
from shared.schema import SchemaError, item_texts
from shared.signing import generate_key, save_private_key

NEW = pd.DataFrame(
    {
        "item_id": ["n001", "n002", "n003"],
        "title": ["solar camping shower bag 20L", "titanium spork", "cold brew coffee maker"],
        "brand": ["NorthCamp", "", "BaristaPro"],
        "category": ["Camping > Gear", "Camping > Gear", "Kitchen > Coffee"],
        "price": [24.0, None, 39.5],
    }
)


@pytest.fixture
def root(published, tmp_path) -> Path:
    """A copy of the published root (round 1), so that each test adds to its own."""
    return Path(shutil.copytree(published, tmp_path / "index"))


@pytest.fixture
def key_file(tmp_path) -> Path:
    return save_private_key(KEY, tmp_path / "publisher.key")


def items_csv(path: Path, frame: pd.DataFrame = NEW) -> Path:
    frame.to_csv(path, index=False)
    return path


def test_new_items_are_the_next_signed_round_and_found_by_their_title(root, key_file, tmp_path, capsys):
    state = tmp_path / "state"
    before = Device(root, publisher_key=KEY.public_key(), state_dir=state)  # accepts round 1
    argv = ["index", "add", "--artifact", str(root), "--items", str(items_csv(tmp_path / "new.csv"))]
    assert main([*argv, "--key", str(key_file)]) == 0
    assert capsys.readouterr().out.startswith(f"published {root / 'v0002'} (r0002-")
    assert (root / "LATEST").read_text().strip() == "v0002"

    after = Device(root, publisher_key=KEY.public_key(), state_dir=state)  # newer: no rollback refusal
    art, base = after.artifact, before.artifact
    assert (art.round, art.item_ids) == (2, [*base.item_ids, *NEW["item_id"]])
    assert art.manifest["info"]["items_added"] == {
        "base_version": base.version,
        "count": 3,
        "from": "new.csv",
    }
    assert art.manifest["info"]["private"] is False  # the privacy summary carries over
    rows, old = art.item_rows(), base.item_rows()
    np.testing.assert_array_equal(rows[: len(old)], old)  # every published row bit for bit
    np.testing.assert_array_equal(rows[len(old) :, -1], 0.0)  # no learned popularity for a new item
    np.testing.assert_allclose(np.linalg.norm(rows[len(old) :, :-1], axis=1), 1.0, atol=1e-5)
    shown = art.items.set_index("item_id").loc["n002"]
    assert (shown["title"], shown["brand"], np.isnan(shown["price"])) == ("titanium spork", "", True)

    for item_id, title in zip(NEW["item_id"], NEW["title"], strict=True):
        assert after.search(title, k=1)[0].item_id == item_id
    text = item_texts(NEW.fillna(""))[2]  # the same item tower as the published rows: its text scores ~1
    assert after.search(text, k=1)[0].score == pytest.approx(1.0, abs=1e-4)
    assert after.similar("n003", k=3)[0].category == "Kitchen > Coffee"
    assert len(after.recommend(TENTS, k=5)) == 5


def test_a_model_with_item_bias_and_id_rows_grows_them_with_zeros(tmp_path, catalogue):
    """With per-item tensors (item bias, ID rows) the config's n_items and those tensors grow; the old
    items keep their learned rows, the new ones get zeros, and the device builds the grown model."""
    config = ModelConfig(n_items=len(catalogue), item_id_rank=4)
    model = Recommender(config).eval()
    generator = torch.Generator().manual_seed(0)
    state = {
        n: t + 0.05 * torch.randn(t.shape, generator=generator) for n, t in model.trainable_state().items()
    }
    model.load_trainable_state(state)
    vectors = model.encode_texts(item_texts(catalogue))
    write_artifact(
        tmp_path / "index",
        round=7,
        item_ids=catalogue["item_id"].tolist(),
        item_vectors=model.item_rows(model.item_space(vectors)),
        items=catalogue,
        trainable_state=state,
        model_config=config.to_dict(),
        info={"private": True},
        signing_key=KEY,
    )
    folder = add_items(tmp_path / "index" / "v0007", items_csv(tmp_path / "new.csv"), KEY)
    assert folder.name == "v0008"
    art = load_artifact(folder, public_key=KEY.public_key())
    n = len(catalogue)
    assert art.model_config["n_items"] == n + 3
    for name in ("item_bias.weight", "item_ids.weight"):
        assert torch.equal(art.trainable_state[name][:n], state[name])
        assert not art.trainable_state[name][n:].any()
    device = Device(tmp_path / "index", publisher_key=KEY.public_key(), state_dir=tmp_path / "state")
    assert device.search("titanium spork", k=1)[0].item_id == "n002"


def test_a_new_item_with_a_published_id_is_an_error_naming_file_row_and_field(
    root, key_file, tmp_path, capsys
):
    duplicate = pd.concat([NEW.iloc[:1], pd.DataFrame({"item_id": ["i003"], "title": ["a tent again"]})])
    argv = [
        "index",
        "add",
        "--artifact",
        str(root),
        "--items",
        str(items_csv(tmp_path / "dup.csv", duplicate)),
    ]
    assert main([*argv, "--key", str(key_file)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "fedrec index: error: dup.csv, row 2, column 'item_id': item_id 'i003' is already in"
    )
    assert "Traceback" not in err and not (root / "v0002").exists()

    twice = pd.concat([NEW, NEW.iloc[[1]]])  # a duplicate within the new file: the catalogue's own rule
    with pytest.raises(SchemaError, match=r"twice.csv, row 4, column 'item_id': duplicate item_id 'n002'"):
        add_items(root, items_csv(tmp_path / "twice.csv", twice), KEY)


def test_a_tampered_added_round_is_refused_and_so_is_another_publishers_key(root, key_file, tmp_path):
    with pytest.raises(ArtifactError, match="manifest.sig does not verify"):  # not this signer's base
        add_items(root, items_csv(tmp_path / "new.csv"), generate_key())
    assert not (root / "v0002").exists()

    folder = add_items(root, tmp_path / "new.csv", key_file)
    items = pd.read_parquet(folder / "items.parquet")
    items.loc[items["item_id"] == "n001", "title"] = "free money"
    items.to_parquet(folder / "items.parquet", index=False)
    with pytest.raises(ArtifactError, match="items.parquet sha256 mismatch"):
        Device(root, publisher_key=KEY.public_key(), state_dir=tmp_path / "state")

    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["n_items"] += 1
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="manifest.sig does not verify under the pinned publisher key"):
        Device(root, publisher_key=KEY.public_key(), state_dir=tmp_path / "state")


def test_adding_to_an_older_round_is_refused(root, tmp_path):
    add_items(root, items_csv(tmp_path / "new.csv"), KEY)
    more = pd.DataFrame({"item_id": ["n100"], "title": ["camping hammock"]})
    with pytest.raises(ArtifactError, match=r"v0001 refused: is not the newest round .* \(v0002 is\)"):
        add_items(root / "v0001", items_csv(tmp_path / "more.csv", more), KEY)
    assert add_items(root / "v0002", tmp_path / "more.csv", KEY).name == "v0003"
