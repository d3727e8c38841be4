"""The published artifact: round trip, integrity, signature, versioning, index choice (real FAISS, real
tensors), and the attacks a signed manifest must refuse."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import pytest
import torch

from shared import artifact
from shared.artifact import (
    FORMAT_VERSION,
    PUBLISH_LOCK,
    ArtifactError,
    _version_string,
    choose_index_type,
    latest,
    load_artifact,
    write_artifact,
)
from shared.durable import exclusive_lock
from shared.encoder import WEIGHTS_SHA256
from shared.model import ModelConfig, Recommender
from shared.signing import generate_key, key_id, save_private_key, sign, verify

N_ITEMS, DIM = 60, 384
INFO = {
    "private": True,
    "epsilon_per_client": {"shop-0": 2.5, "shop-1": 3.1},
    "delta": 1e-5,
    "accountant": "prv",
    "unit": "user",
}
KEY = generate_key()  # the publisher's; devices pin KEY.public_key()
PINNED = KEY.public_key()


def load(folder: Path):
    return load_artifact(folder, public_key=PINNED)


def forge(folder: Path, replace: dict[str, bytes] | None = None, edit=None, signing_key=None) -> None:
    """What whoever can write the folder can do: replace files, recompute the manifest's sha256 list and
    version, edit the manifest, and re-sign it with `signing_key` if they hold one (else keep the old
    signature)."""
    for name, data in (replace or {}).items():
        (folder / name).write_bytes(data)
    manifest = json.loads((folder / "manifest.json").read_bytes())
    for name in manifest["files"]:
        data = (folder / name).read_bytes()
        manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    manifest["version"] = _version_string(manifest["round"], manifest["files"])
    if edit:
        edit(manifest)
    data = (json.dumps(manifest, indent=2) + "\n").encode()
    (folder / "manifest.json").write_bytes(data)
    if signing_key is not None:
        (folder / "manifest.sig").write_bytes(sign(signing_key, data))


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
        "signing_key": KEY,
    }


def flip_byte(path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    at = len(data) // 2 if offset is None else offset
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def test_round_trip(tmp_path, inputs):
    folder = write_artifact(tmp_path, round=3, **inputs)
    assert folder == tmp_path / "v0003"
    art = load(folder)

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
    # signed: the 64 raw signature bytes over the manifest's exact bytes, and the publisher's key id
    assert m["publisher_key_id"] == art.publisher_key_id == key_id(PINNED) and art.round == 3
    signature = (folder / "manifest.sig").read_bytes()
    assert len(signature) == 64 and verify(PINNED, signature, (folder / "manifest.json").read_bytes())
    assert sorted(p.name for p in folder.iterdir()) == [
        "adapter.safetensors",
        "index.faiss",
        "items.parquet",
        "manifest.json",
        "manifest.sig",
        "model.json",
    ]
    assert (tmp_path / "LATEST").read_text().strip() == "v0003"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".publish.lock",
        "LATEST",
        "v0003",
    ]  # no temp folder


def test_same_inputs_give_same_bytes(tmp_path, inputs):
    a = write_artifact(tmp_path / "a", round=1, **inputs)
    b = write_artifact(tmp_path / "b", round=1, **inputs)
    for name in ("index.faiss", "items.parquet", "adapter.safetensors", "model.json", "manifest.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "manifest.sig").read_bytes() == (b / "manifest.sig").read_bytes()  # Ed25519: deterministic
    assert "time" not in (a / "manifest.json").read_text().lower()


@pytest.mark.parametrize("name", ["adapter.safetensors", "index.faiss", "items.parquet", "model.json"])
def test_one_flipped_byte_is_refused_naming_the_file(tmp_path, inputs, name):
    folder = write_artifact(tmp_path, round=3, **inputs)
    flip_byte(folder / name)
    with pytest.raises(ArtifactError, match=rf"{folder}.*{name} sha256 mismatch"):
        load(folder)


def test_unlisted_extra_file_is_refused(tmp_path, inputs):
    folder = write_artifact(tmp_path, round=1, **inputs)
    (folder / "backdoor.safetensors").write_bytes(b"x")
    with pytest.raises(ArtifactError, match="backdoor.safetensors is not listed"):
        load(folder)


@pytest.mark.parametrize("name", ["items.parquet", "manifest.json"])
def test_missing_file_is_refused(tmp_path, inputs, name):
    folder = write_artifact(tmp_path, round=1, **inputs)
    (folder / name).unlink()
    with pytest.raises(ArtifactError, match=f"{name} is missing"):
        load(folder)


def test_manifest_problems_are_refused_even_when_signed(tmp_path, inputs):
    """The checks behind the signature, as if the publisher itself had signed a bad manifest."""
    folder = write_artifact(tmp_path, round=1, **inputs)

    forge(folder, edit=lambda m: m.update(format_version=99), signing_key=KEY)
    with pytest.raises(ArtifactError, match="manifest.json format_version 99 is not supported"):
        load(folder)
    forge(folder, edit=lambda m: m.update(format_version=2, n_items=N_ITEMS + 1), signing_key=KEY)
    with pytest.raises(ArtifactError, match="index.faiss holds 60 x 385"):
        load(folder)
    forge(folder, edit=lambda m: m.update(n_items=N_ITEMS, publisher_key_id="0" * 64), signing_key=KEY)
    with pytest.raises(ArtifactError, match="manifest.json names publisher key '0000"):
        load(folder)
    (folder / "manifest.json").write_text("{not json")
    (folder / "manifest.sig").write_bytes(sign(KEY, b"{not json"))
    with pytest.raises(ArtifactError, match="manifest.json is not valid JSON"):
        load(folder)


def test_a_round_is_never_overwritten(tmp_path, inputs):
    folder = write_artifact(tmp_path, round=2, **inputs)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    changed = {**inputs, "info": {**INFO, "private": False}}
    with pytest.raises(ArtifactError, match="v0002 refused: already exists"):
        write_artifact(tmp_path, round=2, **changed)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".publish.lock", "LATEST", "v0002"]


def test_latest_points_to_the_newest_round(tmp_path, inputs):
    for r in (1, 3, 2):  # a late republish of round 2 must not roll LATEST back
        write_artifact(tmp_path, round=r, **inputs)
    assert (tmp_path / "LATEST").read_text().strip() == "v0003"
    assert latest(tmp_path) == tmp_path / "v0003"
    (tmp_path / "LATEST").unlink()  # crash between publishing and the pointer: highest round
    assert latest(tmp_path) == tmp_path / "v0003"
    with pytest.raises(ArtifactError, match="no published round"):
        latest(tmp_path / "empty")


# ---------------------------------------------------------------------------------------------- publish lock
def test_a_publisher_waits_while_another_holds_the_publish_lock(tmp_path, inputs):
    done = threading.Event()
    publisher = threading.Thread(target=lambda: (write_artifact(tmp_path, round=1, **inputs), done.set()))
    with exclusive_lock(tmp_path / PUBLISH_LOCK):  # another publisher between its claim and LATEST
        publisher.start()
        deadline = time.monotonic() + 30
        while not list(tmp_path.glob(".v0001.tmp-*/manifest.sig")) and time.monotonic() < deadline:
            assert not (tmp_path / "v0001").exists(), "published while another publisher held the lock"
            time.sleep(0.01)
        time.sleep(0.3)  # the files are written: only the lock keeps it from publishing
        assert not (tmp_path / "v0001").exists() and not (tmp_path / "LATEST").exists()
        assert not done.is_set()
    publisher.join(30)
    assert done.is_set() and latest(tmp_path) == tmp_path / "v0001"
    load(tmp_path / "v0001")


def test_a_stale_publisher_cannot_roll_latest_back(tmp_path, inputs, monkeypatch):
    """Round 1 lists the published rounds, then is held up until round 2 has set LATEST (or 2 s pass):
    unlocked, it would then point LATEST back at v0001; under the lock, round 2 waits its turn."""
    listed, listing = threading.Event(), artifact._published

    def slow_listing(root):
        found = listing(root)
        if threading.current_thread().name == "round-1":
            listed.set()
            deadline, pointer = time.monotonic() + 2, root / "LATEST"
            while time.monotonic() < deadline:
                if pointer.exists() and pointer.read_text().strip() == "v0002":
                    break
                time.sleep(0.01)
        return found

    monkeypatch.setattr(artifact, "_published", slow_listing)
    errors = []

    def publish(r):
        try:
            write_artifact(tmp_path, round=r, **inputs)
        except Exception as err:  # reported below
            errors.append(err)

    first = threading.Thread(target=publish, args=(1,), name="round-1")
    first.start()
    assert listed.wait(30)
    second = threading.Thread(target=publish, args=(2,), name="round-2")
    second.start()
    first.join(30), second.join(30)
    assert not errors
    assert (tmp_path / "LATEST").read_text() == "v0002\n"
    assert [load(tmp_path / f"v000{r}").round for r in (1, 2)] == [1, 2]


PUBLISHER = """
import pickle, sys
from shared.artifact import ArtifactError, write_artifact
inputs = pickle.loads(open(sys.argv[1], "rb").read())
try:
    print(write_artifact(sys.argv[2], round=int(sys.argv[3]), signing_key=sys.argv[4], **inputs).name)
except ArtifactError as err:
    print(err)
"""


def test_concurrent_publisher_processes_get_distinct_rounds_and_latest_the_newest(tmp_path, inputs):
    """Three processes at once, two of them claiming round 2: rounds 1 and 2 are published and verify,
    one claim of round 2 is refused, and LATEST names v0002."""
    pickled = tmp_path / "inputs.pickle"
    pickled.write_bytes(pickle.dumps({k: v for k, v in inputs.items() if k != "signing_key"}))
    pem = save_private_key(KEY, tmp_path / "publisher.pem")
    root = tmp_path / "index"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", PUBLISHER, str(pickled), str(root), str(r), str(pem)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for r in (2, 1, 2)
    ]
    outputs = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        outputs.append(out.strip())
    refused = [out for out in outputs if not out.startswith("v")]
    assert sorted(out for out in outputs if out.startswith("v")) == ["v0001", "v0002"]
    assert len(refused) == 1 and "v0002 refused: already exists" in refused[0]
    assert (root / "LATEST").read_text() == "v0002\n"
    assert sorted(p.name for p in root.iterdir()) == [PUBLISH_LOCK, "LATEST", "v0001", "v0002"]
    assert [load(root / name).round for name in ("v0001", "v0002")] == [1, 2]


def test_compressed_above_the_threshold_and_hnsw_by_name(tmp_path, inputs):
    assert choose_index_type(50_000) == "IndexFlatIP"
    assert choose_index_type(50_001) == "IndexIVFPQ"  # tests/test_compressed_index.py
    assert choose_index_type(10, flat_max_items=10) == "IndexFlatIP"
    assert choose_index_type(11, flat_max_items=10) == "IndexIVFPQ"

    folder = write_artifact(tmp_path, round=1, index_type="IndexHNSWFlat", **inputs)
    art = load(folder)
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


# ---------------------------------------------------------------------------------------------- attacks
def forged_index(rows: np.ndarray, boosted: int) -> bytes:
    """The reported attack: item `boosted` first for every user, its bias column set to 999,999."""
    rows = rows.copy()
    rows[boosted, -1] = 999_999.0
    index = faiss.IndexFlatIP(rows.shape[1])
    index.add(rows)
    return bytes(faiss.serialize_index(index))


def test_forged_rechecksummed_index_is_refused(tmp_path, inputs):
    folder = write_artifact(tmp_path, round=1, **inputs)
    forge(folder, replace={"index.faiss": forged_index(inputs["item_vectors"], boosted=59)})
    # what the forgery would do: sha256 list consistent, item 59 first for any user row [u, 1]
    manifest = json.loads((folder / "manifest.json").read_bytes())
    entry = manifest["files"]["index.faiss"]
    assert entry["sha256"] == hashlib.sha256((folder / "index.faiss").read_bytes()).hexdigest()
    with pytest.raises(ArtifactError, match="manifest.sig does not verify under the pinned publisher key"):
        load(folder)
    (folder / "manifest.sig").unlink()  # and without any signature at all
    with pytest.raises(ArtifactError, match="manifest.sig is missing: the artifact is unsigned"):
        load(folder)


def test_a_manifest_resigned_with_another_key_is_refused(tmp_path, inputs):
    folder = write_artifact(tmp_path, round=1, **inputs)
    attacker = generate_key()
    forge(
        folder,
        replace={"index.faiss": forged_index(inputs["item_vectors"], boosted=0)},
        edit=lambda m: m.update(publisher_key_id=key_id(attacker)),
        signing_key=attacker,
    )
    claimed = key_id(attacker)[:16]
    with pytest.raises(ArtifactError, match=rf"manifest.sig does not verify.*names key {claimed}"):
        load(folder)
    assert load_artifact(folder, public_key=attacker.public_key()).round == 1  # valid, for its own key only


def test_an_edited_privacy_summary_is_refused(tmp_path, inputs):
    """`info` is covered by no file hash: only the signature over the manifest protects it."""
    folder = write_artifact(tmp_path, round=1, **inputs)
    forge(folder, edit=lambda m: m["info"].update(epsilon_per_client={"shop-0": 0.1, "shop-1": 0.1}))
    with pytest.raises(ArtifactError, match="manifest.sig does not verify"):
        load(folder)
    manifest = folder / "manifest.json"  # one byte of whitespace is an edit too: the exact bytes are signed
    manifest.write_bytes(manifest.read_bytes() + b" ")
    with pytest.raises(ArtifactError, match="manifest.sig does not verify"):
        load(folder)


def test_an_unsigned_format_1_artifact_is_refused(tmp_path, inputs):
    folder = write_artifact(tmp_path, round=1, **inputs)
    (folder / "manifest.sig").unlink()
    forge(folder, edit=lambda m: (m.update(format_version=1), m.pop("publisher_key_id")))
    unsigned = r"refused: unsigned artifact \(format 1\): re-publish with a publisher key"
    with pytest.raises(ArtifactError, match=unsigned):
        load(folder)


def test_a_truncated_signature_is_refused(tmp_path, inputs):
    folder = write_artifact(tmp_path, round=1, **inputs)
    signature = folder / "manifest.sig"
    signature.write_bytes(signature.read_bytes()[:63])
    with pytest.raises(ArtifactError, match="manifest.sig does not verify"):
        load(folder)


@pytest.mark.parametrize("name", ["index.faiss", "manifest.json", "manifest.sig"])
def test_a_symlinked_file_is_refused(tmp_path, inputs, name):
    """Even a link to identical bytes: it could be repointed between checking and reading."""
    folder = write_artifact(tmp_path / "index", round=1, **inputs)
    elsewhere = tmp_path / f"copy-{name}"
    elsewhere.write_bytes((folder / name).read_bytes())
    (folder / name).unlink()
    (folder / name).symlink_to(elsewhere)
    with pytest.raises(ArtifactError, match=f"{name} is a symbolic link"):
        load(folder)


def test_a_symlinked_folder_or_latest_is_refused(tmp_path, inputs):
    root = tmp_path / "index"
    folder = write_artifact(root, round=1, **inputs)
    (tmp_path / "linked").symlink_to(folder, target_is_directory=True)
    with pytest.raises(ArtifactError, match="linked refused: is a symbolic link"):
        load(tmp_path / "linked")
    (tmp_path / "pointer").write_text("v0001\n")
    (root / "LATEST").unlink()
    (root / "LATEST").symlink_to(tmp_path / "pointer")
    with pytest.raises(ArtifactError, match="LATEST is a symbolic link"):
        latest(root)


def test_a_fifo_in_the_folder_is_refused_without_blocking(tmp_path, inputs):
    folder = write_artifact(tmp_path, round=1, **inputs)
    (folder / "index.faiss").unlink()
    os.mkfifo(folder / "index.faiss")
    with pytest.raises(ArtifactError, match="index.faiss is not a regular file"):
        load(folder)


def test_each_file_is_opened_once_and_parsed_from_the_hashed_bytes(tmp_path, inputs, monkeypatch):
    """Nothing is re-read from disk after hashing (no FAISS/parquet/safetensors reader gets a path)."""
    folder = write_artifact(tmp_path, round=1, **inputs)
    opened: Counter[str] = Counter()
    real_open = os.open

    def counting_open(path, flags, *args, **kwargs):
        opened[Path(path).name] += 1
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", counting_open)
    real_read_index = faiss.read_index

    def read_index(source, *args):
        assert not isinstance(source, str), f"index re-read from the path {source}"
        return real_read_index(source, *args)

    monkeypatch.setattr(faiss, "read_index", read_index)
    art = load(folder)
    assert art.index.ntotal == N_ITEMS
    assert {name: opened[name] for name in sorted(p.name for p in folder.iterdir())} == {
        "adapter.safetensors": 1,
        "index.faiss": 1,
        "items.parquet": 1,
        "manifest.json": 1,
        "manifest.sig": 1,
        "model.json": 1,
    }


def test_an_index_of_another_type_is_refused_without_crashing(tmp_path, inputs):
    """Even validly signed (a publisher bug or a stolen key): only the type the manifest names is parsed."""
    folder = write_artifact(tmp_path, round=1, **inputs)
    hnsw = faiss.IndexHNSWFlat(DIM + 1, 8, faiss.METRIC_INNER_PRODUCT)
    hnsw.add(inputs["item_vectors"])
    forge(folder, replace={"index.faiss": bytes(faiss.serialize_index(hnsw))}, signing_key=KEY)
    with pytest.raises(ArtifactError, match=r"index.faiss is not an IndexFlatIP \(header b'IHNf'\)"):
        load(folder)
    lsh = faiss.IndexLSH(DIM + 1, 16)
    forge(folder, replace={"index.faiss": bytes(faiss.serialize_index(lsh))}, signing_key=KEY)
    with pytest.raises(ArtifactError, match=r"index.faiss is not an IndexFlatIP \(header b'IxHe'\)"):
        load(folder)
    forge(folder, edit=lambda m: m.update(index_type="IndexLSH"), signing_key=KEY)
    with pytest.raises(ArtifactError, match="index_type 'IndexLSH' is not one this fedrec reads"):
        load(folder)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("lora_rank", 100_000),
        ("history_length", 10**9),
        ("head_rank", 0),
        ("max_length", 4096),
        ("n_items", 7),  # neither 0 nor the 60 published rows
        ("lora_layers", [9]),
        ("lora_targets", ["query", "output.dense"]),
        ("temperature", -1.0),
        ("recency", 2.0),
        ("init_seed", -1),
        ("train_lora_a", "yes"),
    ],
)
def test_an_out_of_range_model_config_is_refused_naming_the_field(tmp_path, inputs, field, value):
    folder = write_artifact(tmp_path, round=1, **inputs)
    model = json.loads((folder / "model.json").read_bytes())
    model["model"][field] = value
    forge(folder, replace={"model.json": json.dumps(model).encode()}, signing_key=KEY)
    with pytest.raises(ArtifactError, match=rf"model.json model config is not usable: {field} = "):
        load(folder)
    with pytest.raises(ValueError, match=rf"{field} = "):  # and the server would not publish it
        write_artifact(tmp_path / "again", round=1, **{**inputs, "model_config": model["model"]})
