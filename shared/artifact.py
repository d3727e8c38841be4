"""The published global item index: the only thing a device needs from the server, and the only contract.

One published round is one folder, `<root>/v<NNNN>`, written once and never changed (format 4; formats 2
and 3, the same files without a trending list (3) and without a sequence residual (2), are still read):

- `index.faiss`        item rows [v, τ·b] (unit item-tower vector v + scaled item bias) in an inner-product
                       FAISS index, row i = item i; a user row [u, 1] scores u·v + τ·b, as the model does
- `items.parquet`      item_id + display metadata (title, brand, category, price), row i = item i
- `adapter.safetensors` the trained tensors (LoRA + user head + sequence residual) a device needs for its
                       user tower
- `model.json`         model config, the encoder it adapts (name, weights sha256), pooling and score
- `manifest.json`      format version (4), version string, round, sizes, library versions, the publisher's
                       `info` (privacy summary) verbatim, `publisher_key_id` (sha256 of the raw Ed25519
                       public key, shared/signing.py) and sha256 + size of every other file
- `manifest.sig`       the 64 raw bytes of the publisher's Ed25519 signature over the exact bytes of
                       `manifest.json`: as the manifest lists every other file's hash, it covers them all
- `vectors.npy`        (format 3, only beside a compressed index) the exact item rows [v, τ·b], float32
                       little-endian, C order, shape [n_items, dimension]: a plain .npy (no pickle), listed
                       and hashed in the manifest like every other file
- `trending.json`      (format 4, optional) the trending list a new shopper sees before it has any history:
                       the top items by DP vote total, released once per training (shared/trending.py's
                       `Trending.to_json()`, canonical JSON), listed and hashed in the manifest like every
                       other file; every item it names is in `items.parquet`. Absent: no list was released
                       (partner mode, `trending-items` 0, or an older format)

The manifest's `index_type` names the index and `index_params` the parameters it was built and is
searched with: `IndexFlatIP` (exact, {}), `IndexHNSWFlat` ({M, efConstruction, efSearch}) or, format 3,
`IndexIVFPQ` ({nlist, M, nbits, nprobe, rerank}): an inverted file over product-quantised codes (55
sub-vectors of 7 dimensions, one byte each: 55 bytes an item instead of 1,540), searched for
k × rerank candidates that are then re-scored exactly from `vectors.npy`. Flat and HNSW store the rows
themselves, exactly, and have no `vectors.npy`; an artifact without the format-3 parts loads as before.

`<root>/LATEST` names the newest folder. Publishers into one root take turns: an exclusive lock on
`<root>/.publish.lock` (an empty file, `shared/durable.py`'s `exclusive_lock`) is held from the check that
the round is new, through the rename of the finished folder, to the rewrite of LATEST; so two publishers
never both claim one round, and LATEST never goes back to an older round. The files are built in a
private temp folder beforehand (outside the lock), each fsynced, then the folder, before the rename.

A device pins the publisher's public key (given out of band);
`latest` and `load_artifact` check, in this order, refusing with an ArtifactError naming the file at fault:

1. no symbolic link: not `LATEST`, not the folder, not any entry in it; only regular files;
2. `manifest.sig` exists (a format-1 artifact, which had none, is refused as unsigned) and verifies under
   the pinned key over the manifest's exact bytes; then the manifest's format (2 to 4), key id and fields;
3. the folder holds exactly the files the manifest lists (+ manifest and signature), which are the files
   of its index type, plus `trending.json` where listed (format 4 only);
4. each file is read into memory once, its size and sha256 checked on those bytes, and it is parsed
   from those very bytes (never re-read from disk, so a file swapped after hashing is never used);
5. `model.json`: the encoder and score this fedrec runs, and every model config field within its range
   (checked before any model is built; the same check refuses to publish such a config);
6. `index.faiss`: the FAISS type the manifest names (checked on the file's header before parsing),
   inner product, the manifest's dimension and item count; `vectors.npy` (compressed index only): its
   .npy header (float32, C order, [n_items, dimension]) before its data, which must be finite; then the
   items and the adapter;
7. `trending.json` (where listed): parsed strictly (shared/trending.py), and every item it names must be
   in the published catalogue.

Refusing a round older than one already accepted (a rolled-back `LATEST`) is the device's job, as only it
knows what it accepted (client/device/trust.py).

The choice (`choose_index_type`): exact search up to 50,000 items; above, the compressed IVF-PQ with
exact re-ranking. At 100k items (benchmarks/results/performance.md, section 7) it measured recommend
recall@10 0.964 against an exact scan (exact Flat itself: 0.970, through ties) at 0.96 ms p50, search
0.953, where the HNSW graph (efSearch 256) measured 0.906 / 0.904 at 1.5 ms, and a 168 MB artifact
instead of HNSW's 186 MB (Flat: 160 MB, 16 ms). HNSW stays available by name (`index_type`).
`Artifact.item_rows()` is `vectors.npy` where there is one, else the rows reconstructed from the
flat-storing index: one source of truth either way.
Nothing time-based is recorded: the same inputs and the same key give the same bytes, signature
included (Ed25519 is deterministic), and the same version string (the HNSW graph is built with FAISS'
threads, which FAISS does not promise to be order-independent).
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import math
import os
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pandas as pd
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save_file

from shared import signing
from shared.durable import exclusive_lock, fsync_folder, write_bytes
from shared.encoder import HIDDEN_SIZE, WEIGHTS_SHA256
from shared.model import MAX_HISTORY_LENGTH, ModelConfig
from shared.signing import SIGNATURE_BYTES, PrivateKeyLike, PublicKeyLike
from shared.trending import Trending, TrendingError

# 4: an optional trending list for new shoppers (trending.json); 3: the user tower may carry a sequence
# residual (model.json sequence_*); 2: manifest.sig + publisher_key_id, pooled user tower only; 2 and 3 are
# still served; 1 (unsigned) is refused
FORMAT_VERSION = 4
SUPPORTED_FORMATS = (2, 3, 4)
TRENDING_FORMAT = 4  # the first format that may hold TRENDING_FILE
UNSIGNED = "unsigned artifact (format 1): re-publish with a publisher key"
SYMLINK = "is a symbolic link (refused: it could point anywhere)"
FLAT_MAX_ITEMS = 50_000  # exact search up to here; the compressed index (IVF-PQ + exact re-ranking) above
# efSearch 256: recall@10 0.91-0.97 against an exact scan at 100k items, 0.5 ms p50 (was 64: 0.83-0.90);
# benchmarks/results/performance.md
HNSW_M, HNSW_EF_SEARCH, HNSW_EF_CONSTRUCTION = 32, 256, 40
ROW_SIZE = HIDDEN_SIZE + 1  # item-tower vector + item bias column
ENCODER = {"name": "all-MiniLM-L6-v2", "weights_sha256": WEIGHTS_SHA256, "pooling": "mean", "normalize": True}
SCORE = "dot"
DISPLAY_COLUMNS = ("title", "brand", "category", "price")
LIBRARIES = ("fedrec", "torch", "transformers", "peft", "faiss", "flwr")
DATA_FILES = ("index.faiss", "items.parquet", "adapter.safetensors", "model.json")
MANIFEST, SIGNATURE, LATEST_FILE = "manifest.json", "manifest.sig", "LATEST"
PUBLISH_LOCK = ".publish.lock"  # in the root: held while a round is claimed and LATEST rewritten
MAX_MANIFEST_BYTES = 16 << 20  # read before it is verified: bounded
# the 4 bytes FAISS starts each with; IVF-PQ (format 3) only ever beside its exact rows, ROWS_FILE
INDEX_HEADERS = {"IndexFlatIP": b"IxFI", "IndexHNSWFlat": b"IHNf", "IndexIVFPQ": b"IwPQ"}
INDEX_TYPES = tuple(INDEX_HEADERS)
COMPRESSED = ("IndexIVFPQ",)  # index types whose codes are approximate: searched, then re-ranked exactly
ROWS_FILE = "vectors.npy"
TRENDING_FILE = "trending.json"  # optional (format 4): shared/trending.py's Trending, as its to_json() bytes
ROWS_DTYPE = np.dtype("<f4")
# IVF-PQ at 100k items (a sweep on performance.md section 7's catalogue, 200 history-like queries): nlist
# 1024, M 55, nprobe 32, rerank 10: recall@10 0.977 at 0.33 ms p50; nprobe 16: 0.955; rerank 5: 0.955;
# M 35: 0.948. M 55: 385 = 55 x 7 dimensions.
IVF_M, IVF_NBITS, IVF_NPROBE, IVF_RERANK = 55, 8, 32, 10
IVF_MIN_ITEMS = 1_000  # fewer items: nothing to compress, and too few to train 256 codes per sub-vector
IVF_TRAIN_PER_LIST = 64  # k-means training rows per inverted list (FAISS asks for at least 39)
# Below this many items IVF-PQ is trained on one thread: 3,000 items took 4.6 s on one, 43 s on two
# threads of a busy 2-core machine (each k-means is too small to split; OpenMP threads wait on each other)
IVF_ONE_THREAD_BELOW = 20_000
_FOLDER = re.compile(r"^v(\d{4,})$")

# Model config bounds, inclusive: generous for all-MiniLM-L6-v2 (384 wide, 6 layers, 512 positions), but a
# config outside them is a forgery or a bug, refused before any model is built from it.
ENCODER_LAYERS, ENCODER_POSITIONS = 6, 512
LORA_TARGETS = ("query", "key", "value")
MODEL_INTS = {
    "lora_rank": (0, HIDDEN_SIZE),
    "lora_alpha": (0, 4 * HIDDEN_SIZE),
    "init_seed": (0, 2**63 - 1),
    "max_length": (1, ENCODER_POSITIONS),
    "history_length": (1, MAX_HISTORY_LENGTH),
    "head_rank": (1, HIDDEN_SIZE),
    "item_id_rank": (0, HIDDEN_SIZE),
    "sequence_layers": (0, 8),
    "sequence_dim": (2, HIDDEN_SIZE),
    "sequence_heads": (1, 16),
}
MODEL_FRACTIONS = {"recency": (0.0, 1.0), "temperature": (0.0, 100.0)}  # (low, high]


class ArtifactError(RuntimeError):
    """An artifact that cannot be published or used; names the folder and the file at fault."""

    def __init__(self, folder: str | Path, file: str | None, reason: str):
        self.folder, self.file, self.reason = str(folder), file, reason
        super().__init__(f"artifact {self.folder} refused: {file + ' ' if file else ''}{reason}")


@dataclass
class Artifact:
    path: Path
    manifest: dict
    index: faiss.Index
    item_ids: list[str]
    items: pd.DataFrame  # item_id + display metadata, row i = index row i
    trainable_state: dict[str, torch.Tensor]
    model_config: dict  # ModelConfig.to_dict() form
    encoder: dict  # name, weights_sha256, pooling, normalize
    rows: np.ndarray | None = None  # vectors.npy beside a compressed index (read-only); None: in the index
    trending: Trending | None = None  # trending.json: what a new shopper sees; None: none was published

    @property
    def version(self) -> str:
        return self.manifest["version"]

    @property
    def round(self) -> int:
        return self.manifest["round"]

    @property
    def publisher_key_id(self) -> str:
        return self.manifest["publisher_key_id"]

    @property
    def rerank(self) -> int:
        """Candidates fetched from the index per result wanted, then re-scored exactly (1: no re-ranking,
        the index's scores are exact)."""
        if self.rows is None:
            return 1
        return int(self.manifest["index_params"]["rerank"])

    def item_rows(self) -> np.ndarray:
        """The published item rows [v, τ·b], float32 [N, d + 1], exact: `vectors.npy` beside a compressed
        index (read-only, no copy), else reconstructed from the index (a copy)."""
        if self.rows is not None:
            return self.rows
        return self.index.reconstruct_n(0, self.index.ntotal)

    def item_vectors(self) -> np.ndarray:
        """The published item-tower vectors v, float32 [N, d] (the rows without the bias column)."""
        return np.ascontiguousarray(self.item_rows()[:, :HIDDEN_SIZE])


# ---------------------------------------------------------------------------------------------- writing
def choose_index_type(n_items: int, flat_max_items: int = FLAT_MAX_ITEMS) -> str:
    """Exact search while it is cheap; above `flat_max_items`, the compressed index with exact re-ranking,
    which measured both more accurate and faster than the HNSW graph at 100k items (module docstring)."""
    return "IndexFlatIP" if n_items <= flat_max_items else "IndexIVFPQ"


def ivf_lists(n_items: int) -> int:
    """Inverted lists for n items: the power of two nearest 4·√n (1,024 at 100k), with at least 39
    training rows per list (FAISS' minimum for k-means)."""
    lists = 2 ** round(math.log2(4 * math.sqrt(n_items)))
    while lists > 1 and lists * 39 > n_items:
        lists //= 2
    return lists


def build_index(vectors: np.ndarray, index_type: str) -> tuple[faiss.Index, dict[str, int]]:
    """An inner-product index over `vectors` (row i = item i) and the parameters it was built with."""
    d = vectors.shape[1]
    if index_type == "IndexIVFPQ":
        n = len(vectors)
        if n < IVF_MIN_ITEMS or d % IVF_M:
            raise ValueError(
                f"IndexIVFPQ needs at least {IVF_MIN_ITEMS} rows of a multiple of {IVF_M} (got {n} x {d})"
            )
        nlist = ivf_lists(n)
        index = faiss.IndexIVFPQ(faiss.IndexFlatIP(d), d, nlist, IVF_M, IVF_NBITS, faiss.METRIC_INNER_PRODUCT)
        sample = min(n, IVF_TRAIN_PER_LIST * nlist)  # a fixed sample: the same inputs give the same index
        rows = np.sort(np.random.default_rng(0).choice(n, size=sample, replace=False))
        index.cp.seed = 1234
        threads = faiss.omp_get_max_threads()
        if n < IVF_ONE_THREAD_BELOW:  # many tiny k-means: threads only wait on each other
            faiss.omp_set_num_threads(1)
        try:
            index.train(vectors[rows])
            index.add(vectors)
        finally:
            faiss.omp_set_num_threads(threads)
        index.nprobe = IVF_NPROBE
        params = {"nlist": nlist, "M": IVF_M, "nbits": IVF_NBITS, "nprobe": IVF_NPROBE, "rerank": IVF_RERANK}
        return index, params
    if index_type == "IndexFlatIP":
        index, params = faiss.IndexFlatIP(d), {}
    elif index_type == "IndexHNSWFlat":
        index = faiss.IndexHNSWFlat(d, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = HNSW_EF_SEARCH
        params = {"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION, "efSearch": HNSW_EF_SEARCH}
    else:
        raise ValueError(f"unknown index type {index_type!r}")
    index.add(vectors)
    return index, params


def write_artifact(
    root: str | Path,
    *,
    round: int,
    item_ids: list[str],
    item_vectors: np.ndarray,
    items: pd.DataFrame,
    trainable_state: dict[str, torch.Tensor],
    model_config: dict,
    info: dict,
    signing_key: PrivateKeyLike,
    flat_max_items: int = FLAT_MAX_ITEMS,
    index_type: str | None = None,
    trending: Trending | None = None,
) -> Path:
    """Publish round `round` as `<root>/v<NNNN>` (never overwriting), its manifest signed with
    `signing_key` (a key or a private key PEM path), and point LATEST at the newest round.

    `index_type` (one of INDEX_TYPES) overrides the choice by size (`choose_index_type`). `trending`: the
    trending list to publish beside it (`trending.json`); every item it names must be among `item_ids`."""
    root = Path(root)
    key = signing.private_key(signing_key)
    if isinstance(round, bool) or not isinstance(round, int) or round < 0:
        raise ValueError(f"round must be a non-negative int, got {round!r}")
    final = root / f"v{round:04d}"
    exists = "already exists; a published round is never overwritten"
    if final.exists():
        raise ArtifactError(final, None, exists)
    # item ID rows move items off the unit sphere (v + e·P); without them every row must be unit length
    unit = not check_model_config(model_config, len(item_ids)).item_id_rank
    vectors = _check_vectors(item_ids, item_vectors, unit)
    table = _display_table(item_ids, items)
    state = {name: t.detach().to("cpu").contiguous().clone() for name, t in trainable_state.items()}
    if not state:
        raise ValueError("trainable_state is empty")
    if index_type is None:
        index_type = choose_index_type(len(item_ids), flat_max_items)
    if index_type not in INDEX_TYPES:
        raise ValueError(f"index_type {index_type!r} is not one of {list(INDEX_TYPES)}")
    trending_bytes = _trending_bytes(trending, item_ids)
    index, index_params = build_index(vectors, index_type)
    data_files = artifact_files(index_type, trending=trending is not None)

    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=root))
    try:
        faiss.write_index(index, str(tmp / "index.faiss"))
        if ROWS_FILE in data_files:  # the exact rows a compressed index lacks: a plain .npy, no pickle
            np.save(tmp / ROWS_FILE, np.ascontiguousarray(vectors, dtype=ROWS_DTYPE), allow_pickle=False)
        table.to_parquet(tmp / "items.parquet", index=False)
        save_file(state, str(tmp / "adapter.safetensors"))
        model_json = {"model": dict(model_config), "encoder": ENCODER, "score": SCORE}
        (tmp / "model.json").write_bytes(_json_bytes("model.json", model_json))
        if trending_bytes is not None:
            (tmp / TRENDING_FILE).write_bytes(trending_bytes)
        files = {
            name: {"sha256": _sha256(tmp / name), "bytes": (tmp / name).stat().st_size} for name in data_files
        }
        manifest = {
            "format_version": FORMAT_VERSION,
            "version": _version_string(round, files),
            "round": round,
            "created_by": "fedrec",
            "publisher_key_id": signing.key_id(key),
            "dimension": int(vectors.shape[1]),
            "metric": "inner_product",
            "index_type": index_type,
            "index_params": index_params,
            "n_items": len(item_ids),
            "libraries": _library_versions(),
            "info": info,
            "files": files,
        }
        manifest_bytes = _json_bytes(MANIFEST, manifest)
        (tmp / MANIFEST).write_bytes(manifest_bytes)
        (tmp / SIGNATURE).write_bytes(signing.sign(key, manifest_bytes))  # over the very bytes a device reads
        for name in (*data_files, MANIFEST, SIGNATURE):
            _fsync_file(tmp / name)
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
        fsync_folder(tmp)
        with exclusive_lock(root / PUBLISH_LOCK):  # one publisher at a time claims a round and LATEST
            if final.exists():  # published by another publisher since the check above
                raise ArtifactError(final, None, exists)
            os.rename(tmp, final)
            fsync_folder(root)
            _update_latest(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def artifact_files(index_type: Any, trending: bool = False) -> tuple[str, ...]:
    """The data files an artifact of this index type holds: a compressed index keeps its exact rows beside;
    `trending`: with a trending list (format 4)."""
    files = (
        (*DATA_FILES, ROWS_FILE) if isinstance(index_type, str) and index_type in COMPRESSED else DATA_FILES
    )
    return (*files, TRENDING_FILE) if trending else files


def _trending_bytes(trending: Trending | None, item_ids: list[str]) -> bytes | None:
    """The bytes of `trending.json`, after the check a device makes (every item published); None: none."""
    if trending is None:
        return None
    if not isinstance(trending, Trending):
        raise ValueError(f"trending must be a shared.trending.Trending, got {type(trending).__name__}")
    unknown = trending.unpublished(item_ids)
    if unknown:
        raise ValueError(f"the trending list names {len(unknown)} unpublished item id(s), e.g. {unknown[:3]}")
    return trending.to_json()


def _check_vectors(item_ids: list[str], item_vectors: np.ndarray, unit: bool) -> np.ndarray:
    ids = list(item_ids)
    if not ids:
        raise ValueError("no items to publish")
    if any(not isinstance(i, str) or not i for i in ids) or len(set(ids)) != len(ids):
        raise ValueError("item_ids must be unique non-empty strings")
    vectors = np.ascontiguousarray(item_vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(ids):
        raise ValueError(f"item_vectors shape {vectors.shape} does not match {len(ids)} item ids")
    if not np.isfinite(vectors).all():
        raise ValueError("item_vectors hold NaN or inf")
    if vectors.shape[1] != ROW_SIZE:
        raise ValueError(f"item rows must be [v, τ·b] of {ROW_SIZE} columns, got {vectors.shape[1]}")
    norms = np.linalg.norm(vectors[:, :HIDDEN_SIZE], axis=1)
    if unit and not np.allclose(norms, 1.0, atol=1e-3):
        row = int(np.argmax(np.abs(norms - 1.0)))
        raise ValueError(
            f"item vectors must be unit length (the item tower normalises); "
            f"row {row} ({ids[row]!r}) has norm {norms[row]:.4f}"
        )
    return vectors


def _display_table(item_ids: list[str], items: pd.DataFrame) -> pd.DataFrame:
    """item_id + display columns, aligned to item_ids; absent brand/category are "", absent price NaN."""
    if "item_id" not in items.columns or "title" not in items.columns:
        raise ValueError(f"items needs item_id and title columns (found {list(items.columns)})")
    keyed = items.astype({"item_id": str}).drop_duplicates("item_id").set_index("item_id")
    missing = [i for i in item_ids if i not in keyed.index]
    if missing:
        raise ValueError(f"items has no row for {len(missing)} item ids, e.g. {missing[:3]}")
    keyed = keyed.loc[list(item_ids)]
    table = pd.DataFrame({"item_id": list(item_ids)})
    for column in ("title", "brand", "category"):
        values = keyed[column] if column in keyed.columns else pd.Series("", index=keyed.index)
        table[column] = ["" if pd.isna(v) else str(v) for v in values]
    prices = keyed["price"] if "price" in keyed.columns else pd.Series(np.nan, index=keyed.index)
    table["price"] = pd.to_numeric(prices, errors="coerce").to_numpy(dtype=np.float64)
    return table


def _version_string(round: int, files: dict[str, dict]) -> str:
    listing = "".join(f"{name}\t{files[name]['sha256']}\n" for name in sorted(files))
    return f"r{round:04d}-{hashlib.sha256(listing.encode()).hexdigest()[:12]}"


def _library_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in LIBRARIES:
        if name == "faiss":
            out[name] = faiss.__version__
            continue
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _update_latest(root: Path) -> None:
    """LATEST names the highest published round (so republishing an old round never rolls it back)."""
    write_bytes(root / LATEST_FILE, (_published(root)[-1][1].name + "\n").encode("utf-8"))


def next_round(root: str | Path) -> int:
    """The round after the highest one published in `root` (0 if none): the round of a new version that
    is no training round, e.g. items added by text (client/device/index_add.py), so it is never a
    rollback and never overwrites."""
    root = Path(root)
    rounds = _published(root) if root.is_dir() else []
    return rounds[-1][0] + 1 if rounds else 0


def _published(root: Path) -> list[tuple[int, Path]]:
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _FOLDER.match(p.name))]
    return sorted(found)


def _json_bytes(name: str, data: Any) -> bytes:
    try:
        text = json.dumps(data, indent=2, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: not JSON-serialisable without NaN/inf (use null): {err}") from None
    return (text + "\n").encode("utf-8")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------- model config
def check_model_config(config: Any, n_items: int) -> ModelConfig:
    """The ModelConfig `config` asks for, each field type- and range-checked (ValueError naming the field).

    Both sides run it: the server refuses to publish what a device would refuse to build.
    """
    if not isinstance(config, dict):
        raise ValueError(f"model config must be a JSON object, got {type(config).__name__}")
    model = ModelConfig.from_dict(config)  # unknown keys
    for name, (low, high) in MODEL_INTS.items():
        value = getattr(model, name)
        if not _is_int(value) or not low <= value <= high:
            raise ValueError(f"{name} = {value!r} is not an integer in [{low}, {high}]")
    for name, (low, high) in MODEL_FRACTIONS.items():
        value = getattr(model, name)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or not math.isfinite(value) or not low < value <= high:
            raise ValueError(f"{name} = {value!r} is not a number in ({low:g}, {high:g}]")
    if not isinstance(model.train_lora_a, bool):
        raise ValueError(f"train_lora_a = {model.train_lora_a!r} is not a boolean")
    targets, layers = model.lora_targets, model.lora_layers
    if len(set(targets)) != len(targets) or not set(targets) <= set(LORA_TARGETS) or not targets:
        raise ValueError(f"lora_targets = {list(targets)} must be distinct names among {list(LORA_TARGETS)}")
    if not all(_is_int(i) and 0 <= i < ENCODER_LAYERS for i in layers) or len(set(layers)) != len(layers):
        raise ValueError(f"lora_layers = {list(layers)} must be distinct layers in [0, {ENCODER_LAYERS - 1}]")
    if not _is_int(model.n_items) or model.n_items not in (0, n_items):
        raise ValueError(f"n_items = {model.n_items!r} is neither 0 nor the {n_items} published items")
    if model.sequence_dim % model.sequence_heads:
        raise ValueError(f"sequence_dim = {model.sequence_dim} is not a multiple of sequence_heads")
    if model.item_id_rank and not model.n_items:
        raise ValueError(f"item_id_rank = {model.item_id_rank} needs n_items (the catalogue size)")
    return model


# ---------------------------------------------------------------------------------------------- reading
def latest(root: str | Path) -> Path:
    """The folder LATEST names; without LATEST (a crash right after publishing), the highest round."""
    root = Path(root)
    if os.path.lexists(root / LATEST_FILE):
        name = _read(root, LATEST_FILE, 64).decode("utf-8", errors="replace").strip()
        if not _FOLDER.match(name) or not (root / name).is_dir():
            raise ArtifactError(root, LATEST_FILE, f"names {name!r}, which is not a published round here")
        return root / name
    rounds = _published(root) if root.is_dir() else []
    if not rounds:
        raise ArtifactError(root, None, "holds no published round (no LATEST, no v<NNNN> folder)")
    return rounds[-1][1]


def load_artifact(path: str | Path, *, public_key: PublicKeyLike) -> Artifact:
    """Load one published folder signed by the pinned `public_key` (a key or a PEM path), after every
    check of the module docstring, in its order; else ArtifactError naming the file at fault."""
    path = Path(path)
    pinned = signing.public_key(public_key)
    if path.is_symlink():
        raise ArtifactError(path, None, "is a symbolic link (a published round is a real folder)")
    try:
        folder = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        raise ArtifactError(path, None, "is not a folder") from None
    try:
        return _load(path, folder, pinned)
    finally:
        os.close(folder)


def _load(path: Path, folder: int, pinned: Ed25519PublicKey) -> Artifact:
    """load_artifact's checks on the folder opened as `folder` (a descriptor: it cannot be swapped)."""

    def refuse(file: str | None, reason: str) -> ArtifactError:
        return ArtifactError(path, file, reason)

    # 1. only regular files, no symbolic link
    names = set(os.listdir(folder))
    for name in sorted(names):
        mode = os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode
        if stat.S_ISLNK(mode):
            raise refuse(name, SYMLINK)
        if not stat.S_ISREG(mode):
            raise refuse(name, "is not a regular file")

    # 2. the signature over the manifest's exact bytes, under the pinned key
    manifest_bytes = _read(path, MANIFEST, MAX_MANIFEST_BYTES, folder)
    if len(manifest_bytes) > MAX_MANIFEST_BYTES:
        raise refuse(MANIFEST, f"is larger than {MAX_MANIFEST_BYTES >> 20} MiB")
    if SIGNATURE not in names:
        if _peek(manifest_bytes, "format_version") == 1:
            raise refuse(None, UNSIGNED)
        raise refuse(SIGNATURE, "is missing: the artifact is unsigned")
    signature = _read(path, SIGNATURE, SIGNATURE_BYTES, folder)
    pinned_id = signing.key_id(pinned)
    if len(signature) != SIGNATURE_BYTES or not signing.verify(pinned, signature, manifest_bytes):
        claimed = _peek(manifest_bytes, "publisher_key_id")
        raise refuse(
            SIGNATURE,
            f"does not verify under the pinned publisher key {pinned_id[:16]} (the manifest names key "
            f"{str(claimed)[:16]}): forged, modified after signing, or signed by another publisher",
        )
    manifest = _parse_json(path, MANIFEST, manifest_bytes)
    if manifest.get("format_version") == 1:
        raise refuse(None, UNSIGNED)
    if manifest.get("format_version") not in SUPPORTED_FORMATS:
        raise refuse(
            MANIFEST,
            f"format_version {manifest.get('format_version')!r} is not supported "
            f"(this fedrec reads {list(SUPPORTED_FORMATS)})",
        )
    if manifest.get("publisher_key_id") != pinned_id:
        raise refuse(MANIFEST, f"names publisher key {manifest.get('publisher_key_id')!r}, not {pinned_id}")
    required = ("version", "round", "dimension", "metric", "index_type", "n_items", "files")
    absent = [key for key in required if key not in manifest]
    if absent:
        raise refuse(MANIFEST, f"is incomplete (missing {absent})")
    files, n, d = manifest["files"], manifest["n_items"], manifest["dimension"]
    if (
        not all(_count(manifest[key]) for key in ("round", "n_items", "dimension"))
        or not isinstance(files, dict)
        or not all(_file_entry(entry) for entry in files.values())
    ):
        raise refuse(
            MANIFEST, "is malformed (round, n_items, dimension: counts; files: a table of {sha256, bytes})"
        )

    # 3. exactly the listed files
    unlisted = sorted(names - set(files) - {MANIFEST, SIGNATURE})
    if unlisted:
        raise refuse(unlisted[0], "is not listed in the manifest (added after publication?)")
    if TRENDING_FILE in files and manifest["format_version"] < TRENDING_FORMAT:
        raise refuse(
            TRENDING_FILE,
            f"is listed, but format {manifest['format_version']} holds no trending list "
            f"(format {TRENDING_FORMAT} does)",
        )
    expected = artifact_files(manifest["index_type"], trending=TRENDING_FILE in files)
    odd = sorted(set(files) ^ set(expected))
    if odd:
        raise refuse(
            odd[0],
            "is not listed in the manifest"
            if odd[0] in expected
            else f"is no file of an artifact with index type {manifest['index_type']!r}",
        )

    # 4. each file read once; hashed and parsed from those bytes
    data: dict[str, bytes] = {}
    for name in expected:
        entry = files[name]
        data[name] = _read(path, name, entry["bytes"], folder)
        if len(data[name]) != entry["bytes"] or hashlib.sha256(data[name]).hexdigest() != entry["sha256"]:
            raise refuse(name, "sha256 mismatch (modified after publication?)")
    if _version_string(manifest["round"], files) != manifest["version"]:
        raise refuse(MANIFEST, f"version {manifest['version']!r} does not match its file hashes")

    # 5. the model config, before anything is built from it
    model = _parse_json(path, "model.json", data["model.json"])
    encoder, config = model.get("encoder", {}), model.get("model", {})
    if encoder != ENCODER or model.get("score") != SCORE:
        raise refuse(
            "model.json",
            f"was built for encoder {encoder} scored by {model.get('score')!r}; "
            f"this fedrec runs {ENCODER} scored by {SCORE!r}",
        )
    try:
        built = check_model_config(config, n)
    except (TypeError, ValueError) as err:
        raise refuse("model.json", f"model config is not usable: {err}") from None
    if built.sequence_layers and manifest["format_version"] < 3:
        version = manifest["format_version"]
        raise refuse("model.json", f"has a sequence residual, which format {version} cannot hold")

    # 6. the index (its type first, on the header), the items, the adapter
    if d != ROW_SIZE:
        raise refuse(MANIFEST, f"dimension {d} is not the encoder's {HIDDEN_SIZE} + 1 bias column")
    index = _parse_index(path, data["index.faiss"], manifest["index_type"])
    if index.metric_type != faiss.METRIC_INNER_PRODUCT or index.d != d or index.ntotal != n:
        raise refuse(
            "index.faiss",
            f"holds {index.ntotal} x {index.d} (metric {index.metric_type}); "
            f"manifest says {n} x {d} inner product",
        )
    params = manifest.get("index_params")
    if isinstance(index, faiss.IndexHNSW):
        ef_search = params.get("efSearch") if isinstance(params, dict) else None
        index.hnsw.efSearch = ef_search if _count(ef_search) and ef_search > 0 else HNSW_EF_SEARCH
    rows = None
    if ROWS_FILE in expected:
        if manifest["format_version"] < 3:
            raise refuse(MANIFEST, f"names {manifest['index_type']}, which format 2 cannot hold")
        nprobe = params.get("nprobe") if isinstance(params, dict) else None
        rerank = params.get("rerank") if isinstance(params, dict) else None
        if not (_count(nprobe) and 1 <= nprobe <= index.nlist and _count(rerank) and 1 <= rerank <= 100):
            raise refuse(
                MANIFEST, f"index_params {params!r} need nprobe in [1, nlist] and rerank in [1, 100]"
            )
        index.nprobe = nprobe
        rows = _parse_rows(path, data[ROWS_FILE], n, d)

    try:
        items = pd.read_parquet(io.BytesIO(data["items.parquet"]))
    except Exception as err:  # pyarrow raises several types
        raise refuse("items.parquet", f"cannot be read: {err}") from None
    if "item_id" not in items.columns or len(items) != n or items["item_id"].duplicated().any():
        raise refuse("items.parquet", f"must hold {n} rows with unique item_id (holds {len(items)})")

    try:
        state = load_tensors(data["adapter.safetensors"])
    except (SafetensorError, ValueError) as err:
        raise refuse("adapter.safetensors", f"cannot be read: {err}") from None

    # 7. the trending list, if any: strictly parsed, every item published
    item_ids = items["item_id"].astype(str).tolist()
    trending = None
    if TRENDING_FILE in expected:
        trending = _parse_trending(path, data[TRENDING_FILE], item_ids)

    return Artifact(
        path=path,
        manifest=manifest,
        index=index,
        item_ids=item_ids,
        items=items,
        trainable_state=state,
        model_config=config,
        encoder=encoder,
        rows=rows,
        trending=trending,
    )


def _parse_trending(path: Path, data: bytes, item_ids: list[str]) -> Trending:
    """The trending list in `data` (the bytes hashed), whose items must all be in the catalogue."""
    try:
        trending = Trending.from_json(data, TRENDING_FILE)
    except TrendingError as err:  # its message starts with the file's name, which ArtifactError adds
        raise ArtifactError(path, TRENDING_FILE, str(err).removeprefix(f"{TRENDING_FILE}: ")) from None
    unknown = trending.unpublished(item_ids)
    if unknown:
        raise ArtifactError(
            path,
            TRENDING_FILE,
            f"names item {unknown[0]!r}, which is not in the published catalogue "
            f"({len(unknown)} unknown of {len(trending.item_ids)})",
        )
    return trending


def _parse_rows(path: Path, data: bytes, n: int, d: int) -> np.ndarray:
    """The exact rows in `data` (the bytes hashed), read-only without a copy: the .npy header must say
    float32 little-endian, C order, [n, d], checked before the data is touched; no pickle, ever."""
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f".npy version {version}")
    except ValueError as err:
        raise ArtifactError(path, ROWS_FILE, f"is not a .npy array: {err}") from None
    if dtype != ROWS_DTYPE or fortran or tuple(shape) != (n, d):
        raise ArtifactError(
            path,
            ROWS_FILE,
            f"holds {dtype} {tuple(shape)} (Fortran order {fortran}); manifest says <f4 {(n, d)}",
        )
    offset = stream.tell()
    if len(data) - offset != n * d * ROWS_DTYPE.itemsize:
        raise ArtifactError(path, ROWS_FILE, f"holds {len(data) - offset} data bytes, not {n * d * 4}")
    rows = np.frombuffer(data, dtype=ROWS_DTYPE, count=n * d, offset=offset).reshape(n, d)
    if not np.isfinite(rows).all():
        raise ArtifactError(path, ROWS_FILE, "holds NaN or inf")
    return rows


def _parse_index(path: Path, data: bytes, index_type: Any) -> faiss.Index:
    """The FAISS index in `data`, which must be the type the manifest names: checked on the header
    before FAISS parses anything, and again on what it built (any other type is refused, not run)."""
    if index_type not in INDEX_HEADERS:
        raise ArtifactError(
            path, MANIFEST, f"index_type {index_type!r} is not one this fedrec reads ({list(INDEX_HEADERS)})"
        )
    if data[:4] != INDEX_HEADERS[index_type]:
        raise ArtifactError(
            path, "index.faiss", f"is not an {index_type} (header {data[:4]!r}), the type the manifest names"
        )
    try:
        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    except RuntimeError as err:
        raise ArtifactError(path, "index.faiss", f"cannot be read: {str(err).splitlines()[0]}") from None
    if type(index).__name__ != index_type:
        built = type(index).__name__
        raise ArtifactError(path, "index.faiss", f"is a {built}; the manifest says {index_type}")
    return index


def _read(folder: Path, name: str, limit: int, dir_fd: int | None = None) -> bytes:
    """Up to `limit` + 1 bytes of `folder/name` (of the open `dir_fd` when given): one read, refusing a
    symbolic link or anything but a regular file (O_NONBLOCK: a FIFO cannot hang the device)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        fd = os.open(name, flags, dir_fd=dir_fd) if dir_fd is not None else os.open(folder / name, flags)
    except FileNotFoundError:
        raise ArtifactError(folder, name, "is missing") from None
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.EMLINK):
            raise ArtifactError(folder, name, SYMLINK) from None
        raise ArtifactError(folder, name, f"cannot be read: {err.strerror}") from None
    with open(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise ArtifactError(folder, name, "is not a regular file")
        return f.read(limit + 1)


def _parse_json(folder: Path, name: str, data: bytes) -> dict:
    try:
        parsed = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise ArtifactError(folder, name, f"is not valid JSON ({err})") from None
    if not isinstance(parsed, dict):
        raise ArtifactError(folder, name, "is not a JSON object")
    return parsed


def _peek(manifest_bytes: bytes, key: str) -> Any:
    """One field of a manifest not (yet) verified, only to word a refusal; None if unreadable."""
    try:
        parsed = json.loads(manifest_bytes.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return parsed.get(key) if isinstance(parsed, dict) else None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _count(value: Any) -> bool:
    return _is_int(value) and value >= 0


def _file_entry(entry: Any) -> bool:
    return isinstance(entry, dict) and _count(entry.get("bytes")) and isinstance(entry.get("sha256"), str)
