"""A cheaper query encoder for device search, used only where it agrees with the full-precision one.

A search costs one MiniLM forward on the query; on a phone-class CPU that forward is most of it. Two
cheaper copies of the published item tower (MiniLM + the adapter, LoRA merged into the weights first):

- "bf16": weights and activations in bfloat16 (CPUs with AVX512-BF16 or AMX run it natively);
- "int8": torch's dynamic int8 quantization of every Linear layer (weights per output channel,
  activations per tensor, quantized as they come).

Neither is trusted blindly: `check_agreement` encodes a sample of the catalogue's own titles (the
published items' text, cut to query length) with both and requires cosine ≥ MIN_COSINE to full
precision for every query and a mean top-10 overlap ≥ MIN_OVERLAP over the catalogue. A copy that fails
is not used: the device falls back to fp32 and says why (`Device.query_encoder_note`). Measured on
all-MiniLM-L6-v2 (benchmarks/results/performance.md, section 7): bf16 keeps cosine ≈ 0.9999; int8
loses ~0.025 to activation outliers in the feed-forward layers, so it is refused on this model.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

QUERY_ENCODERS = ("fp32", "bf16", "int8")
MIN_COSINE, MIN_OVERLAP = 0.99, 0.95
SAMPLE_QUERIES = 24  # catalogue titles encoded by both at the first search (~1 s on two cores)
QUERY_WORDS = 6  # a title cut to its first words: the length of a shopper's query


@dataclass(frozen=True)
class Agreement:
    """How a cheaper encoder's query rows compare with full precision on a sample."""

    queries: int
    cosine_min: float
    cosine_mean: float
    overlap_at_10: float  # mean |top-10 ∩ top-10 of fp32| / 10 over the catalogue

    @property
    def holds(self) -> bool:
        return self.cosine_min >= MIN_COSINE and self.overlap_at_10 >= MIN_OVERLAP


class _Float32Out(nn.Module):
    """A bf16 encoder whose last hidden state comes back in float32, as the query path expects."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, **inputs: torch.Tensor):
        out = self.encoder(**inputs)
        out.last_hidden_state = out.last_hidden_state.float()
        return out


def compressed_encoder(encoder: nn.Module, kind: str) -> nn.Module:
    """A `kind` ("bf16" or "int8") copy of `encoder` (the published MiniLM + LoRA), in eval mode; the
    original is left as it is (it still serves fp32)."""
    if kind not in QUERY_ENCODERS[1:]:
        raise ValueError(f"query encoder {kind!r} is not one of {list(QUERY_ENCODERS)}")
    plain = copy.deepcopy(encoder).eval()
    if hasattr(plain, "merge_and_unload"):  # a PEFT model: fold the adapter into the weights
        plain = plain.merge_and_unload()
    if kind == "bf16":
        return _Float32Out(plain.to(torch.bfloat16)).eval()
    with warnings.catch_warnings():  # torch.ao.quantization is deprecated in favour of torchao: not installed
        warnings.simplefilter("ignore")
        config = torch.ao.quantization.per_channel_dynamic_qconfig
        return torch.ao.quantization.quantize_dynamic(plain, {nn.Linear: config}, dtype=torch.qint8).eval()


def sample_queries(titles: list[str], n: int = SAMPLE_QUERIES) -> list[str]:
    """`n` catalogue titles spread evenly over the catalogue, each cut to QUERY_WORDS words."""
    picked = [titles[int(i)] for i in np.linspace(0, len(titles) - 1, num=min(n, len(titles)))]
    return [" ".join(str(t).split()[:QUERY_WORDS]) for t in picked if str(t).strip()]


def agreement(full: np.ndarray, fast: np.ndarray, rows: np.ndarray, k: int = 10) -> Agreement:
    """Cosine of each pair of query vectors ([Q, d]) and the overlap of their exact top k over `rows`."""
    cosine = np.sum(full * fast, axis=1) / np.maximum(
        np.linalg.norm(full, axis=1) * np.linalg.norm(fast, axis=1), 1e-12
    )
    k = min(k, len(rows))
    overlaps = []
    for a, b in zip(full, fast, strict=True):
        top_a = np.argpartition(-(rows @ a), k - 1)[:k]
        top_b = np.argpartition(-(rows @ b), k - 1)[:k]
        overlaps.append(len(set(top_a.tolist()) & set(top_b.tolist())) / k)
    return Agreement(len(full), float(cosine.min()), float(cosine.mean()), float(np.mean(overlaps)))
