"""shared/model.py's user tower in NumPy, from the published tensors: no MiniLM, no torch per call.

The model pools a history's last `history_length` item vectors with weights recency**age (most recent
age 0), adds the low-rank user head and normalises: u = (p + p·A·B) / ‖p + p·A·B‖. Per item that is
linear, so the user vector is a sum of one part per history item (intent.py), which is what makes
explanations exact. A recommendation after an event then costs tens of microseconds here, instead of a
torch call (and, on first use, loading MiniLM: ~1 s). tests/test_device_session.py checks it against
`Recommender.user_vectors`.

A model with a sequence residual (shared/model.py `SequenceResidual`: order, which no per-item sum can
express) adds one more part, the residual itself, computed by the model's own module (torch, a few
hundred microseconds for 20 items, no MiniLM). It counts in every score and is never named as a reason:
what it adds belongs to the order of the history, not to one item.
"""

from __future__ import annotations

import numpy as np
import torch

from client.device.intent import Intent
from shared.model import ModelConfig, SequenceResidual

HEAD = ("user_head.0.weight", "user_head.1.weight")  # the published head: [r, d] then [d, r]
SEQUENCE = "sequence."  # the published sequence residual's tensors
ORDER = ("", "", "the order of your history")  # the sequence residual's part: counted, never a reason


class UserTower:
    def __init__(self, config: ModelConfig, state: dict[str, torch.Tensor]) -> None:
        missing = [name for name in HEAD if name not in state]
        if missing:
            raise ValueError(f"the published adapter holds no user head ({missing})")
        self.recency, self.length = config.recency, config.history_length
        self.down = state[HEAD[0]].float().numpy().T.copy()  # [d, r]
        self.up = state[HEAD[1]].float().numpy().T.copy()  # [r, d]
        self.sequence: SequenceResidual | None = None
        if config.sequence_layers:
            sequence = {k[len(SEQUENCE) :]: v for k, v in state.items() if k.startswith(SEQUENCE)}
            self.sequence = SequenceResidual(config).eval()
            self.sequence.load_state_dict(sequence)  # strict: a missing or extra tensor is an error

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
        labels = tuple(labels)
        if self.sequence is not None:
            with torch.no_grad():
                order = self.sequence(torch.from_numpy(vectors), torch.ones(len(vectors), dtype=torch.bool))
            parts, labels = np.vstack([parts, order.numpy()[None]]), labels + (ORDER,)
        norm = max(float(np.linalg.norm(parts.sum(axis=0))), 1e-12)
        return Intent(parts / norm, labels, 1.0)
