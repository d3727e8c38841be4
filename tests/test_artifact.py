"""The published artifact: round trip, integrity, versioning, index choice (real FAISS, real tensors)."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pandas as pd
import pytest
import torch

from shared.artifact import (
    FORMAT_VERSION,
    ArtifactError,
    choose_index_type,
    latest,
    load_artifact,
    write_artifact,
)
from shared.encoder import WEIGHTS_SHA256
from shared.model import ModelConfig, Recommender

N_ITEMS, DIM = 60, 384
INFO = {
    "private": True,
    "epsilon_per_client": {"shop-0": 2.5, "shop-1": 3.1},
    "delta": 1e-5,
    "accountant": "prv",
    "unit": "user",
}


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    """A real trainable state (LoRA + user head names and shapes), perturbed so it is not the init."""
    generator = torch.Generator().manual_seed(0)
    tensors = Recommender(ModelConfig()).trainable_state()
    return {name: t + 0.01 * torch.randn(t.shape, generator=generator) for name, t in tensors.items()}


@pytest.fixture(scope="module")
def inputs(state) -> dict:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((N_ITEMS, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = np.hstack([vectors, rng.normal(0, 0.1, (N_ITEMS, 1)).astype(np.float32)])  # [v, τ·b] rows
    ids = [f"item-{i:03d}" for i in range(N_ITEMS)]
    items = pd.DataFrame(
        {
            "item_id": ids,
            "title": [f"Product {i}" for i in range(N_ITEMS)],
            "brand": [f"Brand {i % 5}" for i in range(N_ITEMS)],
            "category": ["Camping" if i % 2 else "Kitchen" for i in range(N_ITEMS)],
            "price": [float("nan") if i == 7 else 10.0 + i for i in range(N_ITEMS)],
            "description": ["not published"] * N_ITEMS,
        }
    )
    return {
        "item_ids": ids,
        "item_vectors": vectors,
        "items": items,
        "trainable_state": state,
        "model_config": ModelConfig().to_dict(),
        "info": INFO,
    }


def flip_byte(path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    at = len(data) // 2 if offset is None else offset
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def test_round_trip(tmp_path, inputs):
    folder = write_artifact(tmp_path, round=3, **inputs)
    assert folder == tmp_path / "v0003"
    art = load_artifact(folder)

    assert art.item_ids == inputs["item_ids"]
    np.testing.assert_array_equal(art.item_rows(), inputs["item_vectors"])
    np.testing.assert_array_equal(art.item_vectors(), inputs["item_vectors"][:, :DIM])
    expected = inputs["items"][["item_id", "title", "brand", "category", "price"]]
    pd.testing.assert_frame_equal(art.items, expected, check_dtype=False)
    assert set(art.trainable_state) == set(inputs["trainable_state"])
    for name, tensor in inputs["trainable_state"].items():
        assert torch.equal(art.trainable_state[name], tensor), name
    assert art.model_config == inputs["model_config"]
    assert ModelConfig.from_dict(art.model_config) == ModelConfig()
    assert art.encoder == {
        "name": "all-MiniLM-L6-v2",
        "weights_sha256": WEIGHTS_SHA256,
        "pooling": "mean",
        "normalize": True,
    }

    m = art.manifest
    assert m["format_version"] == FORMAT_VERSION and m["round"] == 3 and m["created_by"] == "fedrec"
    assert m["version"].startswith("r0003-") and len(m["version"]) == len("r0003-") + 12
    assert (m["dimension"], m["metric"], m["index_type"], m["n_items"]) == (
        DIM + 1,
        "inner_product",
        "IndexFlatIP",
        N_ITEMS,
    )
    assert m["info"] == INFO
    assert set(m["libraries"]) == {"fedrec", "torch", "transformers", "peft", "faiss", "flwr"}
    assert m["libraries"]["faiss"] == faiss.__version__
    assert set(m["files"]) == {"index.faiss", "items.parquet", "adapter.safetensors", "model.json"}
    for name, entry in m["files"].items():
        assert entry["bytes"] == (folder / name).stat().st_size and len(entry["sha256"]) == 64
    assert isinstance(art.index, faiss.IndexFlatIP) and art.index.metric_type == faiss.METRIC_INNER_PRODUCT
    assert (tmp_path / "LATEST").read_text().strip() == "v0003"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LATEST", "v0003"]  # no temp folder left


def test_same_inputs_give_same_bytes(tmp_path, inputs):
    a = write_artifact(tmp_path / "a", round=1, **inputs)
    b = write_artifact(tmp_path / "b", round=1, **inputs)
    for name in ("index.faiss", "items.parquet", "adapter.safetensors", "model.json", "manifest.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert "time" not in (a / "manifest.json").read_text().lower()


@pytest.mark.parametrize("name", ["adapter.safetensors", "index.faiss", "items.parquet", "model.json"])
def test_one_flipped_byte_is_refused_naming_the_file(tmp_path, inputs, name):
    folder = write_artifact(tmp_path, round=3, **inputs)
    flip_byte(folder / name)
    with pytest.raises(ArtifactError, match=rf"{folder}.*{name} sha256 mismatch"):
        load_artifact(folder)


def test_unlisted_extra_file_is_refused(tmp_path, inputs):
    folder = write_artifact(tmp_path, round=1, **inputs)
    (folder / "backdoor.safetensors").write_bytes(b"x")
    with pytest.raises(ArtifactError, match="backdoor.safetensors is not listed"):
        load_artifact(folder)


@pytest.mark.parametrize("name", ["items.parquet", "manifest.json"])
def test_missing_file_is_refused(tmp_path, inputs, name):
    folder = write_artifact(tmp_path, round=1, **inputs)
    (folder / name).unlink()
    with pytest.raises(ArtifactError, match=f"{name} is missing"):
        load_artifact(folder)


def test_manifest_problems_are_refused(tmp_path, inputs):
    folder = write_artifact(tmp_path, round=1, **inputs)
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text())

    manifest_path.write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(ArtifactError, match="manifest.json format_version 99 is not supported"):
        load_artifact(folder)
    manifest_path.write_text(json.dumps({**manifest, "n_items": N_ITEMS + 1}))
    with pytest.raises(ArtifactError, match="index.faiss holds 60 x 385"):
        load_artifact(folder)
    manifest_path.write_text("{not json")
    with pytest.raises(ArtifactError, match="manifest.json is not valid JSON"):
        load_artifact(folder)


def test_a_round_is_never_overwritten(tmp_path, inputs):
    folder = write_artifact(tmp_path, round=2, **inputs)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    changed = {**inputs, "info": {**INFO, "private": False}}
    with pytest.raises(ArtifactError, match="v0002 refused: already exists"):
        write_artifact(tmp_path, round=2, **changed)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LATEST", "v0002"]


def test_latest_points_to_the_newest_round(tmp_path, inputs):
    for r in (1, 3, 2):  # a late republish of round 2 must not roll LATEST back
        write_artifact(tmp_path, round=r, **inputs)
    assert (tmp_path / "LATEST").read_text().strip() == "v0003"
    assert latest(tmp_path) == tmp_path / "v0003"
    (tmp_path / "LATEST").unlink()  # crash between publishing and the pointer: highest round
    assert latest(tmp_path) == tmp_path / "v0003"
    with pytest.raises(ArtifactError, match="no published round"):
        latest(tmp_path / "empty")


def test_hnsw_above_the_threshold(tmp_path, inputs):
    assert choose_index_type(50_000) == "IndexFlatIP"
    assert choose_index_type(50_001) == "IndexHNSWFlat"
    assert choose_index_type(10, flat_max_items=10) == "IndexFlatIP"
    assert choose_index_type(11, flat_max_items=10) == "IndexHNSWFlat"

    folder = write_artifact(tmp_path, round=1, flat_max_items=10, **inputs)
    art = load_artifact(folder)
    assert art.manifest["index_type"] == "IndexHNSWFlat"
    assert art.manifest["index_params"] == {"M": 32, "efConstruction": 40, "efSearch": 256}
    assert isinstance(art.index, faiss.IndexHNSWFlat) and art.index.hnsw.efSearch == 256
    assert art.index.metric_type == faiss.METRIC_INNER_PRODUCT
    np.testing.assert_array_equal(art.item_rows(), inputs["item_vectors"])
    np.testing.assert_array_equal(art.item_vectors(), inputs["item_vectors"][:, :DIM])
    _, rows = art.index.search(inputs["item_vectors"][:5], 1)
    assert rows[:, 0].tolist() == [0, 1, 2, 3, 4]


def test_bad_inputs_are_rejected_before_writing(tmp_path, inputs):
    with pytest.raises(ValueError, match="unit length"):
        write_artifact(tmp_path, round=1, **{**inputs, "item_vectors": inputs["item_vectors"] * 2})
    with pytest.raises(ValueError, match="no row for 1 item ids"):
        write_artifact(tmp_path, round=1, **{**inputs, "items": inputs["items"].iloc[1:]})
    with pytest.raises(ValueError, match="NaN"):
        write_artifact(tmp_path, round=1, **{**inputs, "info": {"epsilon": float("inf")}})
    with pytest.raises(ValueError, match="unknown model config keys"):
        write_artifact(tmp_path, round=1, **{**inputs, "model_config": {"lora_rnak": 4}})
    assert not tmp_path.exists() or not any(tmp_path.iterdir())
