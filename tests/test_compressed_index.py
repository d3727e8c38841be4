"""The compressed index (IVF-PQ + exact re-ranking from `vectors.npy`, issue 15 part 7) and the compressed
query encoder: a compressed artifact loads, searches near-exactly, returns exact scores, and refuses
tampered rows or a mislabelled index; a cheaper query encoder is used only where it agrees with fp32."""
# ruff: noqa: F811 (the imported fixtures are test arguments)

from __future__ import annotations

import io
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from test_artifact import forge
from test_device import KEY as DEVICE_KEY
from test_device import catalogue, published  # noqa: F401 (fixtures)

from client.device import Device
from client.device.intent import Intent
from client.device.query_encoder import MIN_COSINE, MIN_OVERLAP
from fedrec.cli import main
from shared.artifact import (
    ROWS_FILE,
    ArtifactError,
    artifact_files,
    choose_index_type,
    ivf_lists,
    load_artifact,
    write_artifact,
)
from shared.model import ModelConfig, Recommender
from shared.signing import generate_key

N, CLUSTERS, DIM = 2_000, 80, 384
KEY = generate_key()


def clustered_rows(n: int, seed: int = 0) -> np.ndarray:
    """[v, τ·b] rows around `CLUSTERS` centres, like a catalogue's categories and near-duplicates."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CLUSTERS, DIM)).astype(np.float32)
    vectors = centres[rng.integers(CLUSTERS, size=n)] + 0.6 * rng.standard_normal((n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.hstack([vectors, rng.normal(0, 0.1, (n, 1)).astype(np.float32)])


@pytest.fixture(scope="module")
def inputs() -> dict:
    ids = [f"p{i:05d}" for i in range(N)]
    items = pd.DataFrame({"item_id": ids, "title": [f"Product {i}" for i in range(N)]})
    state = Recommender(ModelConfig()).trainable_state()
    return {
        "item_ids": ids,
        "item_vectors": clustered_rows(N),
        "items": items,
        "trainable_state": state,
        "model_config": ModelConfig().to_dict(),
        "info": {"test": "compressed"},
        "signing_key": KEY,
    }


@pytest.fixture(scope="module")
def compressed(tmp_path_factory, inputs):
    """One compressed artifact per module (training IVF-PQ takes seconds); tests change copies of it."""
    return write_artifact(tmp_path_factory.mktemp("ivfpq"), round=0, index_type="IndexIVFPQ", **inputs)


@pytest.fixture
def copy(compressed, tmp_path):
    return shutil.copytree(compressed, tmp_path / compressed.name)


@pytest.fixture(scope="module")
def device(compressed, tmp_path_factory) -> Device:
    return Device(compressed, publisher_key=KEY.public_key(), state_dir=tmp_path_factory.mktemp("state"))


def test_large_catalogues_get_the_compressed_index():
    assert choose_index_type(50_000) == "IndexFlatIP"
    assert choose_index_type(50_001) == "IndexIVFPQ"
    assert ivf_lists(100_000) == 1024 and ivf_lists(2_000) == 32  # ≥ 39 training rows per list
    assert artifact_files("IndexIVFPQ")[-1] == ROWS_FILE and ROWS_FILE not in artifact_files("IndexFlatIP")


def test_a_compressed_artifact_loads_with_its_exact_rows(compressed, inputs):
    art = load_artifact(compressed, public_key=KEY.public_key())
    manifest = art.manifest
    assert manifest["index_type"] == "IndexIVFPQ" and manifest["format_version"] == 4
    assert manifest["index_params"] == {"nlist": 32, "M": 55, "nbits": 8, "nprobe": 32, "rerank": 10}
    assert ROWS_FILE in manifest["files"] and (compressed / ROWS_FILE).is_file()
    assert art.rerank == 10 and art.index.nprobe == 32
    rows = art.item_rows()
    assert rows.dtype == np.float32 and rows.shape == (N, DIM + 1) and not rows.flags.writeable
    np.testing.assert_array_equal(rows, inputs["item_vectors"])  # bit for bit, not decoded codes
    # the index holds 55-byte codes; the exact rows are beside it, not in it
    assert manifest["files"]["index.faiss"]["bytes"] < N * (DIM + 1)


def test_search_recall_vs_exact_and_scores_are_the_exact_rows(device, inputs):
    rows = inputs["item_vectors"]
    rng = np.random.default_rng(1)
    recalls = []
    for _ in range(40):
        user = rows[rng.integers(N, size=3), :DIM].mean(axis=0)  # a history's mean, like a profile
        intent = Intent(user[None] / np.linalg.norm(user), (("", "", ""),), 1.0)
        found = device.rank(intent, 10)
        query = intent.row()[0]
        exact = rows @ query
        truth = set(np.argsort(-exact)[:10].tolist())
        got = [device.position[r.item_id] for r in found]
        recalls.append(len(truth & set(got)) / 10)
        # every returned score is the exact row's score (re-ranked from vectors.npy, not the PQ estimate)
        np.testing.assert_allclose([r.score for r in found], exact[got], rtol=1e-5, atol=1e-6)
        assert [r.score for r in found] == sorted((r.score for r in found), reverse=True)
    assert np.mean(recalls) >= 0.95, np.mean(recalls)


def test_similar_and_filters_work_on_the_compressed_index(device):
    similar = device.similar("p00010", k=5)
    assert len(similar) == 5 and "p00010" not in {r.item_id for r in similar}
    banned = [f"p{i:05d}" for i in range(1_500)]  # many bans: the exact scan of what is left
    recs = device.recommend(["p01999"], k=10, exclude=banned)
    assert len(recs) == 10 and not {r.item_id for r in recs} & set(banned)


def test_tampered_rows_are_refused(copy, inputs):
    rows = inputs["item_vectors"].copy()
    rows[7, -1] = 999.0  # boost one item for every shopper
    buffer = io.BytesIO()
    np.save(buffer, rows)
    forge(copy, replace={ROWS_FILE: buffer.getvalue()})  # re-hashed, but not re-signed: no key
    with pytest.raises(ArtifactError, match="manifest.sig does not verify under the pinned publisher key"):
        load_artifact(copy, public_key=KEY.public_key())
    forge(copy, signing_key=generate_key())  # re-signed by someone else's key
    with pytest.raises(ArtifactError, match="does not verify under the pinned publisher key"):
        load_artifact(copy, public_key=KEY.public_key())


@pytest.mark.parametrize(
    "payload, reason",
    [
        (lambda rows: rows.astype(np.float64), "holds float64"),
        (lambda rows: rows[:-1], r"holds float32 \(1999, 385\)"),
        (lambda rows: np.asfortranarray(rows), r"holds float32 \(2000, 385\) \(Fortran order True\)"),
        (lambda rows: np.array([{"pickled": 1}], dtype=object), "holds object"),
    ],
)
def test_rows_of_the_wrong_shape_type_or_a_pickle_are_refused_even_if_signed(copy, inputs, payload, reason):
    buffer = io.BytesIO()
    np.save(buffer, payload(inputs["item_vectors"]), allow_pickle=True)
    forge(copy, replace={ROWS_FILE: buffer.getvalue()}, signing_key=KEY)  # a buggy publisher's, signed
    with pytest.raises(ArtifactError, match=f"{ROWS_FILE} {reason}"):
        load_artifact(copy, public_key=KEY.public_key())


def test_a_compressed_index_without_its_rows_is_refused(copy):
    (copy / ROWS_FILE).unlink()  # the signed manifest still lists it
    with pytest.raises(ArtifactError, match=f"{ROWS_FILE} is missing"):
        load_artifact(copy, public_key=KEY.public_key())


def test_a_manifest_index_type_not_matching_the_header_is_refused(copy, tmp_path, inputs):
    forge(copy, edit=lambda m: m.update(index_type="IndexHNSWFlat"), signing_key=KEY)
    with pytest.raises(
        ArtifactError, match="vectors.npy is no file of an artifact with index type 'IndexHNSW"
    ):
        load_artifact(copy, public_key=KEY.public_key())
    forge(copy, edit=lambda m: m["files"].pop(ROWS_FILE))
    (copy / ROWS_FILE).unlink()
    forge(copy, signing_key=KEY)  # version and signature over what is left
    with pytest.raises(ArtifactError, match=r"index.faiss is not an IndexHNSWFlat \(header b'IwPQ'\)"):
        load_artifact(copy, public_key=KEY.public_key())
    # the other way: a flat index, with rows beside it, labelled IVF-PQ
    flat = write_artifact(tmp_path / "flat", round=0, **inputs)
    np.save(flat / ROWS_FILE, inputs["item_vectors"])
    params = {"nlist": 32, "M": 55, "nbits": 8, "nprobe": 32, "rerank": 10}

    def relabel(manifest: dict) -> None:
        manifest.update(index_type="IndexIVFPQ", index_params=params)
        manifest["files"][ROWS_FILE] = {"sha256": "", "bytes": 0}

    forge(flat, edit=relabel)
    forge(flat, signing_key=KEY)  # now hashing the rows it lists, and signed
    with pytest.raises(ArtifactError, match=r"index.faiss is not an IndexIVFPQ \(header b'IxFI'\)"):
        load_artifact(flat, public_key=KEY.public_key())


def test_the_compressed_index_is_published_as_any_other_and_chosen_by_name(tmp_path, inputs):
    with pytest.raises(ValueError, match="index_type 'IndexLSH' is not one of"):
        write_artifact(tmp_path, round=0, index_type="IndexLSH", **inputs)
    small = {**inputs, "item_ids": inputs["item_ids"][:500], "item_vectors": inputs["item_vectors"][:500]}
    with pytest.raises(ValueError, match="IndexIVFPQ needs at least 1000 rows"):
        write_artifact(tmp_path, round=0, index_type="IndexIVFPQ", **small)
    hnsw = write_artifact(tmp_path, round=1, index_type="IndexHNSWFlat", **small)
    art = load_artifact(hnsw, public_key=KEY.public_key())
    assert art.rows is None and art.rerank == 1 and ROWS_FILE not in art.manifest["files"]


# ---------------------------------------------------------------------------------------------- encoder
@pytest.mark.parametrize("kind", ["bf16", "int8"])
def test_a_compressed_query_encoder_is_used_only_where_it_agrees(published, tmp_path, kind):
    device = Device(published, publisher_key=DEVICE_KEY.public_key(), state_dir=tmp_path, query_encoder=kind)
    torch.manual_seed(0)
    results = device.search("espresso coffee grinder", k=3)
    agreement = device.query_agreement
    assert agreement is not None and agreement.queries >= 20  # catalogue titles, encoded both ways
    holds = agreement.cosine_min >= MIN_COSINE and agreement.overlap_at_10 >= MIN_OVERLAP
    assert device.query_encoder_used == (kind if holds else "fp32"), device.query_encoder_note
    if kind == "bf16":  # measured: cosine ≈ 0.9999 on MiniLM; int8 loses ~0.02 and is refused
        assert holds, device.query_encoder_note
    assert results[0].category == "Kitchen > Coffee", results


def test_the_cli_offers_what_the_device_and_publisher_accept():
    from client.device.query_encoder import QUERY_ENCODERS
    from fedrec import cli
    from shared.artifact import INDEX_TYPES

    assert cli.QUERY_ENCODERS == QUERY_ENCODERS and cli.INDEX_TYPES == INDEX_TYPES


def test_an_unknown_query_encoder_is_refused_before_loading(published, tmp_path):
    with pytest.raises(ValueError, match="query_encoder must be one of"):
        Device(published, publisher_key=DEVICE_KEY.public_key(), state_dir=tmp_path, query_encoder="fp8")
    with pytest.raises(SystemExit):
        main(["search", "tent", "--artifact", str(published), "--query-encoder", "fp8"])
