"""Publication: encode the public catalogue with the final global adapter and write a versioned index.

The artifact is computed from public item text and the aggregated (DP-trained) adapter only, so it
carries the same guarantee as the adapter: publishing it costs no extra privacy (post-processing).
Publishers into one root take turns under its publish lock (shared/artifact.py): a round is claimed
once, and LATEST never moves back to an older round. The trending list a new shopper sees
(shared/trending.py), when the training released one, is published beside it (`trending.json`): its DP
release is round 0 of the training's own accounting; ranking and publishing the noisy totals is
post-processing.
"""

from __future__ import annotations

from pathlib import Path

from shared.artifact import write_artifact
from shared.item_cache import catalogue_vectors
from shared.model import Recommender
from shared.schema import item_texts
from shared.signing import PrivateKeyLike
from shared.trending import Trending


def publish(
    model: Recommender,
    catalogue,
    root: str | Path,
    server_round: int,
    info: dict,
    cache_dir=None,
    *,
    signing_key: PrivateKeyLike,
    trending: Trending | None = None,
) -> Path:
    """Write `root/v<round>` (FAISS index, items, adapter, model config, manifest signed with
    `signing_key`, a key or a private key PEM path, so that devices can pin it; `trending`, the released
    trending list, if any) and return its path."""
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
        signing_key=signing_key,
        trending=trending,
    )
