"""The published global item index: the only thing a device needs from the server, and the only contract.

One published round is one folder, `<root>/v<NNNN>`, written once and never changed (format 2):

- `index.faiss`        item rows [v, τ·b] (unit item-tower vector v + scaled item bias) in an inner-product
                       FAISS index, row i = item i; a user row [u, 1] scores u·v + τ·b, as the model does
- `items.parquet`      item_id + display metadata (title, brand, category, price), row i = item i
- `adapter.safetensors` the trained tensors (LoRA + user head) a device needs for its user tower
- `model.json`         model config, the encoder it adapts (name, weights sha256), pooling and score
- `manifest.json`      format version (2), version string, round, sizes, library versions, the publisher's
                       `info` (privacy summary) verbatim, `publisher_key_id` (sha256 of the raw Ed25519
                       public key, shared/signing.py) and sha256 + size of every other file
- `manifest.sig`       the 64 raw bytes of the publisher's Ed25519 signature over the exact bytes of
                       `manifest.json`: as the manifest lists every other file's hash, it covers them all

`<root>/LATEST` names the newest folder. Publishers into one root take turns: an exclusive lock on
`<root>/.publish.lock` (an empty file, `shared/durable.py`'s `exclusive_lock`) is held from the check that
the round is new, through the rename of the finished folder, to the rewrite of LATEST; so two publishers
never both claim one round, and LATEST never goes back to an older round. The files are built in a
private temp folder beforehand (outside the lock), each fsynced, then the folder, before the rename.

A device pins the publisher's public key (given out of band);
`latest` and `load_artifact` check, in this order, refusing with an ArtifactError naming the file at fault:

1. no symbolic link: not `LATEST`, not the folder, not any entry in it; only regular files;
2. `manifest.sig` exists (a format-1 artifact, which had none, is refused as unsigned) and verifies under
   the pinned key over the manifest's exact bytes; then the manifest's format (2), key id and fields;
3. the folder holds exactly the files the manifest lists (+ manifest and signature);
4. each file is read into memory once, its size and sha256 checked on those bytes, and it is parsed
   from those very bytes (never re-read from disk, so a file swapped after hashing is never used);
5. `model.json`: the encoder and score this fedrec runs, and every model config field within its range
   (checked before any model is built; the same check refuses to publish such a config);
6. `index.faiss`: the FAISS type the manifest names (checked on the file's header before parsing),
   inner product, the manifest's dimension and item count; then the items and the adapter.

Refusing a round older than one already accepted (a rolled-back `LATEST`) is the device's job, as only it
knows what it accepted (client/device/trust.py).

The vectors are not shipped a second time as .npy: both index types store them flat and exactly, so
`Artifact.item_vectors()` reconstructs them from the index, and there is a single source of truth.
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

FORMAT_VERSION = 2  # 2: manifest.sig + publisher_key_id; 1 (unsigned) is refused
SUPPORTED_FORMATS = (2,)
UNSIGNED = "unsigned artifact (format 1): re-publish with a publisher key"
SYMLINK = "is a symbolic link (refused: it could point anywhere)"
FLAT_MAX_ITEMS = 50_000  # exact search up to here; HNSW above
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
INDEX_HEADERS = {"IndexFlatIP": b"IxFI", "IndexHNSWFlat": b"IHNf"}  # the 4 bytes FAISS starts each with
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

    @property
    def version(self) -> str:
        return self.manifest["version"]

    @property
    def round(self) -> int:
        return self.manifest["round"]

    @property
    def publisher_key_id(self) -> str:
        return self.manifest["publisher_key_id"]

    def item_rows(self) -> np.ndarray:
        """The published item rows [v, τ·b], float32 [N, d + 1], reconstructed exactly from the index."""
        return self.index.reconstruct_n(0, self.index.ntotal)

    def item_vectors(self) -> np.ndarray:
        """The published item-tower vectors v, float32 [N, d] (the rows without the bias column)."""
        return np.ascontiguousarray(self.item_rows()[:, :HIDDEN_SIZE])


# ---------------------------------------------------------------------------------------------- writing
def choose_index_type(n_items: int, flat_max_items: int = FLAT_MAX_ITEMS) -> str:
    """Exact search while it is cheap; a graph index above `flat_max_items`."""
    return "IndexFlatIP" if n_items <= flat_max_items else "IndexHNSWFlat"


def build_index(vectors: np.ndarray, index_type: str) -> tuple[faiss.Index, dict[str, int]]:
    """An inner-product index over `vectors` (row i = item i) and the parameters it was built with."""
    d = vectors.shape[1]
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
) -> Path:
    """Publish round `round` as `<root>/v<NNNN>` (never overwriting), its manifest signed with
    `signing_key` (a key or a private key PEM path), and point LATEST at the newest round."""
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
    index_type = choose_index_type(len(item_ids), flat_max_items)
    index, index_params = build_index(vectors, index_type)

    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=root))
    try:
        faiss.write_index(index, str(tmp / "index.faiss"))
        table.to_parquet(tmp / "items.parquet", index=False)
        save_file(state, str(tmp / "adapter.safetensors"))
        model_json = {"model": dict(model_config), "encoder": ENCODER, "score": SCORE}
        (tmp / "model.json").write_bytes(_json_bytes("model.json", model_json))
        files = {
            name: {"sha256": _sha256(tmp / name), "bytes": (tmp / name).stat().st_size} for name in DATA_FILES
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
        for name in (*DATA_FILES, MANIFEST, SIGNATURE):
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
    odd = sorted(set(files) ^ set(DATA_FILES))
    if odd:
        raise refuse(
            odd[0], "is not listed in the manifest" if odd[0] in DATA_FILES else "is no artifact file"
        )

    # 4. each file read once; hashed and parsed from those bytes
    data: dict[str, bytes] = {}
    for name in DATA_FILES:
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
        check_model_config(config, n)
    except (TypeError, ValueError) as err:
        raise refuse("model.json", f"model config is not usable: {err}") from None

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

    return Artifact(
        path=path,
        manifest=manifest,
        index=index,
        item_ids=items["item_id"].astype(str).tolist(),
        items=items,
        trainable_state=state,
        model_config=config,
        encoder=encoder,
    )


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
