"""A text query through the item tower (MiniLM + the published adapter), kept as one part per word.

The item tower mean-pools MiniLM's token states and normalises: q = Σ_t h_t / (T·‖mean h‖). Grouping
the terms by word (the tokenizer's word ids) gives parts that sum to q exactly (intent.py): the words
that added most to a result's score are its explanation. The query is tokenized alone (no padding to
max_length) and encoded on one thread (threads.py): that, not the model, is what a search cost. A
device may run a cheaper copy of the same encoder (query_encoder.py: bf16 or int8) where it agrees.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from client.device.intent import TERM, Intent
from client.device.threads import one_thread
from shared.model import Recommender


def query_intent(model: Recommender, query: str, encoder: nn.Module | None = None) -> Intent:
    """The query's vector as parts: one per word (kind "term"), plus one unlabelled part for the
    [CLS]/[SEP] tokens, which count in the score but explain nothing. `encoder`: a compressed copy of
    `model.encoder` to run instead (query_encoder.py); None: the model's own, fp32."""
    batch = model.tokenizer([query], truncation=True, max_length=model.config.max_length, return_tensors="pt")
    with one_thread(), torch.no_grad():
        hidden = (encoder or model.encoder)(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).last_hidden_state[0]
    states = hidden.numpy().astype(np.float64)
    scale = len(states) * max(float(np.linalg.norm(states.mean(axis=0))), 1e-12)
    words = batch.word_ids(0)
    offsets = batch.encodings[0].offsets if batch.encodings else None
    parts, labels = [], []
    for word in dict.fromkeys(w for w in words if w is not None):
        tokens = [t for t, w in enumerate(words) if w == word]
        parts.append(states[tokens].sum(axis=0) / scale)
        text = query[offsets[tokens[0]][0] : offsets[tokens[-1]][1]] if offsets else str(word)
        labels.append((TERM, text, text))
    special = [t for t, w in enumerate(words) if w is None]
    parts.append(states[special].sum(axis=0) / scale)
    labels.append(("", "", ""))
    return Intent(np.asarray(parts, dtype=np.float32), tuple(labels), 0.0)
