"""shared/model.py's user tower in NumPy, from the published tensors: no MiniLM, no torch per call.

The model pools a history's last `history_length` item vectors with weights recency**age (most recent
age 0), adds the low-rank user head and normalises: u = (p + p·A·B) / ‖p + p·A·B‖. Per item that is
linear, so the user vector is a sum of one part per history item (intent.py), which is what makes
explanations exact. A recommendation after an event then costs tens of microseconds here, instead of a
torch call (and, on first use, loading MiniLM: ~1 s). tests/test_device_session.py checks it against
`Recommender.user_vectors`.
"""

from __future__ import annotations

import numpy as np
import torch

from client.device.intent import Intent
from shared.model import ModelConfig

HEAD = ("user_head.0.weight", "user_head.1.weight")  # the published head: [r, d] then [d, r]


class UserTower:
    def __init__(self, config: ModelConfig, state: dict[str, torch.Tensor]) -> None:
        missing = [name for name in HEAD if name not in state]
        if missing:
            raise ValueError(f"the published adapter holds no user head ({missing})")
        self.recency, self.length = config.recency, config.history_length
        self.down = state[HEAD[0]].float().numpy().T.copy()  # [d, r]
        self.up = state[HEAD[1]].float().numpy().T.copy()  # [r, d]

    def intent(
        self,
        vectors: np.ndarray,
        labels: list[tuple[str, str, str]],
        strengths: np.ndarray | None = None,
    ) -> Intent:
        """The user vector of a history ([n, d] item vectors, oldest first), as one part per item among the
        last `history_length`; `strengths` scale items' weights (a session's views count less)."""
        if not len(vectors):
            raise ValueError("empty history: there is nothing to recommend from (try search instead)")
        keep = slice(max(len(vectors) - self.length, 0), len(vectors))
        vectors, labels = np.asarray(vectors[keep], dtype=np.float32), labels[keep]
        age = np.arange(len(vectors), dtype=np.float32)[::-1]
        weights = self.recency**age
        if strengths is not None:
            weights = weights * np.asarray(strengths, dtype=np.float32)[keep]
        weights = weights / weights.sum()
        parts = weights[:, None] * (vectors + (vectors @ self.down) @ self.up)
        norm = max(float(np.linalg.norm(parts.sum(axis=0))), 1e-12)
        return Intent(parts / norm, tuple(labels), 1.0)
