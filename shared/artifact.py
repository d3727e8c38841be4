"""The published global item index: the only thing a device needs from the server, and the only contract.

One published round is one folder, `<root>/v<NNNN>`, written once and never changed:

- `index.faiss`        item rows [v, τ·b] (unit item-tower vector v + scaled item bias) in an inner-product
                       FAISS index, row i = item i; a user row [u, 1] scores u·v + τ·b, as the model does
- `items.parquet`      item_id + display metadata (title, brand, category, price), row i = item i
- `adapter.safetensors` the trained tensors (LoRA + user head) a device needs for its user tower
- `model.json`         model config, the encoder it adapts (name, weights sha256), pooling and score
- `manifest.json`      format version, version string, round, sizes, library versions, the publisher's
                       `info` (privacy summary) verbatim, and sha256 + size of every other file

`<root>/LATEST` names the newest folder. Loading verifies every checksum and refuses anything else in the
folder, so a device either ranks with exactly what was published or refuses with the file at fault.

The vectors are not shipped a second time as .npy: both index types store them flat and exactly, so
`Artifact.item_vectors()` reconstructs them from the index, and there is a single source of truth.
Nothing time-based is recorded: the same inputs give the same bytes and the same version string (the
HNSW graph is built with FAISS' threads, which FAISS does not promise to be order-independent).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from shared.encoder import HIDDEN_SIZE, WEIGHTS_SHA256
from shared.model import ModelConfig

FORMAT_VERSION = 1
SUPPORTED_FORMATS = (1,)
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
MANIFEST, LATEST_FILE = "manifest.json", "LATEST"
_FOLDER = re.compile(r"^v(\d{4,})$")


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
    flat_max_items: int = FLAT_MAX_ITEMS,
) -> Path:
    """Publish round `round` as `<root>/v<NNNN>` (never overwriting) and point LATEST at the newest round."""
    root = Path(root)
    if isinstance(round, bool) or not isinstance(round, int) or round < 0:
        raise ValueError(f"round must be a non-negative int, got {round!r}")
    final = root / f"v{round:04d}"
    exists = "already exists; a published round is never overwritten"
    if final.exists():
        raise ArtifactError(final, None, exists)
    # item ID rows move items off the unit sphere (v + e·P); without them every row must be unit length
    unit = not ModelConfig.from_dict(model_config).item_id_rank
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
        _write_json(tmp / "model.json", {"model": dict(model_config), "encoder": ENCODER, "score": SCORE})
        files = {
            name: {"sha256": _sha256(tmp / name), "bytes": (tmp / name).stat().st_size} for name in DATA_FILES
        }
        manifest = {
            "format_version": FORMAT_VERSION,
            "version": _version_string(round, files),
            "round": round,
            "created_by": "fedrec",
            "dimension": int(vectors.shape[1]),
            "metric": "inner_product",
            "index_type": index_type,
            "index_params": index_params,
            "n_items": len(item_ids),
            "libraries": _library_versions(),
            "info": info,
            "files": files,
        }
        _write_json(tmp / MANIFEST, manifest)
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
        try:
            os.rename(tmp, final)
        except OSError as err:  # published concurrently
            raise ArtifactError(final, None, exists) from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _update_latest(root)
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
    rounds = _published(root)
    tmp = root / f".{LATEST_FILE}.tmp-{os.getpid()}"
    tmp.write_text(rounds[-1][1].name + "\n")
    os.replace(tmp, root / LATEST_FILE)


def _published(root: Path) -> list[tuple[int, Path]]:
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _FOLDER.match(p.name))]
    return sorted(found)


def _write_json(path: Path, data: Any) -> None:
    try:
        text = json.dumps(data, indent=2, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path.name}: not JSON-serialisable without NaN/inf (use null): {err}") from None
    path.write_text(text + "\n", encoding="utf-8")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------- reading
def latest(root: str | Path) -> Path:
    """The folder LATEST names; without LATEST (a crash right after publishing), the highest round."""
    root = Path(root)
    pointer = root / LATEST_FILE
    if pointer.exists():
        name = pointer.read_text(encoding="utf-8").strip()
        if not _FOLDER.match(name) or not (root / name).is_dir():
            raise ArtifactError(root, LATEST_FILE, f"names {name!r}, which is not a published round here")
        return root / name
    rounds = _published(root) if root.is_dir() else []
    if not rounds:
        raise ArtifactError(root, None, "holds no published round (no LATEST, no v<NNNN> folder)")
    return rounds[-1][1]


def load_artifact(path: str | Path) -> Artifact:
    """Load one published folder, verifying manifest, every checksum and the shapes; else ArtifactError."""
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(path, None, "is not a folder")

    def refuse(file: str | None, reason: str) -> ArtifactError:
        return ArtifactError(path, file, reason)

    manifest = _read_json(path, MANIFEST)
    if manifest.get("format_version") not in SUPPORTED_FORMATS:
        raise refuse(
            MANIFEST,
            f"format_version {manifest.get('format_version')!r} is not supported "
            f"(this fedrec reads {list(SUPPORTED_FORMATS)})",
        )
    required = ("version", "round", "dimension", "metric", "index_type", "n_items", "files")
    absent = [key for key in required if key not in manifest]
    if absent:
        raise refuse(MANIFEST, f"is incomplete (missing {absent})")
    files = manifest["files"]
    if (
        not isinstance(manifest["round"], int)
        or not isinstance(files, dict)
        or not all(isinstance(entry, dict) for entry in files.values())
    ):
        raise refuse(MANIFEST, "is malformed (round must be an int, files a table of {sha256, bytes})")
    unlisted = sorted(set(os.listdir(path)) - set(files) - {MANIFEST})
    if unlisted:
        raise refuse(unlisted[0], "is not listed in the manifest (added after publication?)")
    for name in DATA_FILES:
        if name not in files:
            raise refuse(name, "is not listed in the manifest")
    for name, entry in sorted(files.items()):
        target = path / name
        if name != Path(name).name or not target.is_file():
            raise refuse(name, "is missing")
        if target.stat().st_size != entry.get("bytes") or _sha256(target) != entry.get("sha256"):
            raise refuse(name, "sha256 mismatch (modified after publication?)")
    if _version_string(manifest["round"], files) != manifest["version"]:
        raise refuse(MANIFEST, f"version {manifest['version']!r} does not match its file hashes")

    model = _read_json(path, "model.json")
    encoder, config = model.get("encoder", {}), model.get("model", {})
    if encoder != ENCODER or model.get("score") != SCORE:
        raise refuse(
            "model.json",
            f"was built for encoder {encoder} scored by {model.get('score')!r}; "
            f"this fedrec runs {ENCODER} scored by {SCORE!r}",
        )
    try:
        ModelConfig.from_dict(config)
    except (TypeError, ValueError) as err:
        raise refuse("model.json", f"model config is not usable: {err}") from None

    try:
        index = faiss.read_index(str(path / "index.faiss"))
    except RuntimeError as err:
        raise refuse("index.faiss", f"cannot be read: {str(err).splitlines()[0]}") from None
    n, d = manifest["n_items"], manifest["dimension"]
    if d != ROW_SIZE:
        raise refuse(MANIFEST, f"dimension {d} is not the encoder's {HIDDEN_SIZE} + 1 bias column")
    if index.metric_type != faiss.METRIC_INNER_PRODUCT or index.d != d or index.ntotal != n:
        raise refuse(
            "index.faiss",
            f"holds {index.ntotal} x {index.d} (metric {index.metric_type}); "
            f"manifest says {n} x {d} inner product",
        )
    if isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = int(manifest.get("index_params", {}).get("efSearch", HNSW_EF_SEARCH))

    try:
        items = pd.read_parquet(path / "items.parquet")
    except Exception as err:  # pyarrow raises several types
        raise refuse("items.parquet", f"cannot be read: {err}") from None
    if "item_id" not in items.columns or len(items) != n or items["item_id"].duplicated().any():
        raise refuse("items.parquet", f"must hold {n} rows with unique item_id (holds {len(items)})")

    try:
        state = load_file(str(path / "adapter.safetensors"))
    except (SafetensorError, OSError) as err:
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


def _read_json(folder: Path, name: str) -> dict:
    try:
        data = json.loads((folder / name).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(folder, name, "is missing") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise ArtifactError(folder, name, f"is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ArtifactError(folder, name, "is not a JSON object")
    return data
