"""Publication: encode the public catalogue with the final global adapter and write a versioned index.

The artifact is computed from public item text and the aggregated (DP-trained) adapter only, so it
carries the same guarantee as the adapter: publishing it costs no extra privacy (post-processing).
"""

from __future__ import annotations

from pathlib import Path

from shared.artifact import write_artifact
from shared.item_cache import catalogue_vectors
from shared.model import Recommender
from shared.schema import item_texts


def publish(
    model: Recommender, catalogue, root: str | Path, server_round: int, info: dict, cache_dir=None
) -> Path:
    """Write `root/v<round>` (FAISS index, items, adapter, model config, manifest) and return its path."""
    vectors = catalogue_vectors(model, item_texts(catalogue), cache_dir)
    return write_artifact(
        root,
        round=server_round,
        item_ids=list(catalogue["item_id"]),
        item_vectors=model.item_rows(model.item_space(vectors)),
        items=catalogue[["item_id", "title", "brand", "category", "price"]],
        trainable_state=model.trainable_state(),
        model_config=model.config.to_dict(),
        info=info,
    )
