"""Catalogue vectors of a given global model, computed once and reused.

Every party that holds the same global adapter computes the same public vectors, so they are cached
on disk under a key of (the item tower's adapter, model config, catalogue texts). Only the LoRA
tensors move the text vectors: a round that trains the head, bias or ID rows (or a frozen text tower,
every round) reuses them. In a simulation the clients and the
server share one cache folder; in deployment each party has its own.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from shared.model import Recommender, param_group


def cache_key(model: Recommender, texts: list[str]) -> str:
    digest = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for name, tensor in sorted(model.trainable_state().items()):
        if param_group(name) != "lora":
            continue  # not part of the item tower
        digest.update(name.encode())
        digest.update(tensor.to(torch.float32).numpy().tobytes())
    digest.update("\n".join(texts).encode())
    return digest.hexdigest()[:24]


def catalogue_vectors(
    model: Recommender, texts: list[str], cache_dir: str | Path | None, progress=None
) -> np.ndarray:
    """Item-tower vectors of all catalogue texts under the model's current adapter: [N, d] float32."""
    if cache_dir is None:
        return model.encode_texts(texts, progress=progress)
    folder = Path(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"items-{cache_key(model, texts)}.npy"
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two parties asking at once: one encodes, the other waits and reads
        try:
            if path.exists():
                return np.load(path)
            vectors = model.encode_texts(texts, progress=progress)
            tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
            np.save(tmp, vectors)
            os.replace(tmp, path)
            return vectors
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
