"""`fedrec index add`: new items into a published index from their text alone, as a new signed version.

Cold start for items (issue 15, part 4). A new item has no engagement yet, so nothing was learned about
it: its row is what the published item tower (MiniLM + the published adapter, built from the artifact
exactly as the device builds it for search) makes of its text, with a zero item bias and a zero item ID
row. The existing rows are copied bit for bit, so every old item ranks as before; the new rows are
comparable with them (the same tower wrote both), which is why "retrievable by its title" holds.

The result is the next round of the same publication root (shared/artifact.py's `write_artifact`:
the same files, the same Ed25519 signature over the manifest, the same publish lock), so a device that
accepted the base round takes it as newer, never as a rollback. The base must verify under the key
that signs the new version: one cannot append to someone else's publication. Nothing private is read:
the catalogue is public and so is the artifact, so the privacy summary (`info`) carries over verbatim,
with a note of what was added, and so does the trending list (`trending.json`, format 4), unchanged: a
new item has no votes, and its items are all still published.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from shared import signing
from shared.artifact import LATEST_FILE, ArtifactError, latest, load_artifact, next_round, write_artifact
from shared.model import ModelConfig, Recommender
from shared.schema import SchemaError, item_texts, load_catalogue
from shared.signing import PrivateKeyLike

# Trained tensors with one row per catalogue item: a new item gets a zero row (no learned bias, no ID).
PER_ITEM = ("item_bias.weight", "item_ids.weight")


def add_items(
    index_dir: str | Path, items_file: str | Path, signing_key: PrivateKeyLike, index_type: str | None = None
) -> Path:
    """Publish the newest round of `index_dir` (a publication root, or its newest `v<NNNN>` folder) plus
    the items of `items_file` (a catalogue CSV/Parquet) as the next round, signed with `signing_key` (a
    key or a private key PEM path); returns the new folder. A new id already published is a SchemaError
    naming the file, row and column. `index_type`: the index to publish (None: chosen by size)."""
    key = signing.private_key(signing_key)
    root, base_folder = _root_and_base(Path(index_dir))
    new = load_catalogue(items_file)  # checked strictly: file, row and column on any defect
    base = load_artifact(base_folder, public_key=key.public_key())  # verified under the signer's own key
    published = set(base.item_ids)
    for row, item_id in enumerate(new["item_id"], start=1):
        if item_id in published:
            raise SchemaError(
                Path(items_file).name,
                f"item_id {item_id!r} is already in the published catalogue {base.version} (not a new item)",
                row=row,
                column="item_id",
            )

    n_old, n_new = len(base.item_ids), len(new)
    config = dict(base.model_config)
    if config.get("n_items"):  # the item bias (and ID rows) cover the whole catalogue: grow them with it
        config["n_items"] = n_old + n_new
    state = {name: _grown(name, tensor, n_old, n_new) for name, tensor in base.trainable_state.items()}
    model = Recommender(ModelConfig.from_dict(config))
    model.load_trainable_state(state)  # the published tower; shapes checked against the grown config
    vectors = model.eval().encode_texts(item_texts(new))  # unit item-tower vectors, no ID residual
    rows = np.hstack([vectors, np.zeros((n_new, 1), dtype=np.float32)])  # item bias 0

    columns = ["item_id", "title", "brand", "category", "price"]
    items = pd.concat([base.items[columns], new[columns]], ignore_index=True)
    info = dict(base.manifest.get("info") or {})
    info["items_added"] = {"base_version": base.version, "count": n_new, "from": Path(items_file).name}
    return write_artifact(
        root,
        round=next_round(root),
        item_ids=[*base.item_ids, *new["item_id"]],
        item_vectors=np.vstack([base.item_rows(), rows]),
        items=items,
        trainable_state=state,
        model_config=config,
        info=info,
        signing_key=key,
        index_type=index_type,
        trending=base.trending,
    )


def _root_and_base(path: Path) -> tuple[Path, Path]:
    """The publication root and its newest round: adding to an older round would drop the newer ones."""
    if os.path.lexists(path / LATEST_FILE) or next_round(path) > 0:  # a root: it holds rounds
        return path, latest(path)
    root = path.parent
    newest = latest(root)
    if newest.resolve() != path.resolve():
        raise ArtifactError(
            path, None, f"is not the newest round of {root} ({newest.name} is): add to the newest one"
        )
    return root, path


def _grown(name: str, tensor: torch.Tensor, n_old: int, n_new: int) -> torch.Tensor:
    """A per-item tensor with n_new zero rows appended; any other tensor as it is."""
    if name not in PER_ITEM:
        return tensor
    if tensor.shape[0] != n_old:
        raise ValueError(f"{name} has {tensor.shape[0]} rows for {n_old} published items")
    return torch.cat([tensor, tensor.new_zeros((n_new, *tensor.shape[1:]))])
