"""The recommender: two towers over one LoRA-adapted MiniLM, scored by a dot product.

- Item tower: MiniLM (+ LoRA) over the item's public text, mean-pooled, L2-normalised.
- User tower: a recency-weighted mean of the item-tower vectors of the user's last `history_length`
  items (most recent first, weight `recency**age`), through a small linear head (initialised to the
  identity, so the untrained model *is* the zero-shot baseline), L2-normalised.
- Sequence residual (optional, `sequence_layers` > 0): a small causal transformer (SASRec-style, pre-LN)
  over the history's retrieval-space item vectors through an adaptor (a projection to `sequence_dim` and
  a LayerNorm, as UniSRec's whitening), plus a learned position per recency; its reading at the most
  recent item is projected back and *added* to the pooled vector. The projection starts at zero, so the
  untrained model is still exactly zero-shot: DP noise then moves a good solution rather than building
  one from a random start (stack facts, "Spike 2026-12-03": a random start under DP fell below zero-shot).
  Pooling cannot see order; this can (what followed what, what the last item implies).
- Item bias: one learned value per catalogue item (a DP-learned popularity prior; the signal that
  survives DP noise best, since every user's example pushes its own next item up).
- Item ID residual (optional, `item_id_rank` r > 0): each item's vector becomes v + e·P, with e a
  learned r-dim row per catalogue item (zero at start) and P a fixed seeded [r, d] basis (as FFA-LoRA's
  A: every party derives it, nobody sends it). Text alone cannot say which items are bought together;
  these rows can. They enter both the user's pooled history and the item side, so the published
  index holds v + e·P and a device needs nothing new.
- Score: u·v + τ·b, i.e. the training logit times τ. As an inner product in d+1 dimensions:
  [u, 1] · [v, τ·b]; the published FAISS index holds those item rows, so a device ranks exactly as
  the model does, building its user row from its own history with no text encoding needed.

Why this user tower: it needs one text encoding per item, shared by all users, instead of one per
user and step, so a DP-SGD step costs one forward/backward of the positive items only; and pooling
item vectors is already a strong zero-shot recommender (stack facts: 0.106 Recall@10 on Amazon
Scientific, vs 0.101 for the last item alone).

Training objective (see client/train.py and `forward`): for each user, (1) a softmax over its own
next item and a few negatives drawn from the public catalogue (mostly the positive's nearest
neighbours), all encoded with gradient, and (2) a full softmax over the public catalogue vectors of
the current global model. Each example's loss depends only on that user's data and public data,
which is what user-level DP-SGD needs (no in-batch negatives).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import nn

from shared.encoder import HIDDEN_SIZE, load_encoder, load_tokenizer, mean_pool

MAX_HISTORY_LENGTH = 1000  # items a user tower pools; the run config and a published model are held to it


def param_group(name: str) -> str:
    """Which learning rate a trained tensor gets: "lora", "bias" (item bias), "ids" (item IDs), "sequence"
    (the sequence residual) or "head"."""
    if "lora_" in name:
        return "lora"
    if name.startswith("item_bias"):
        return "bias"
    if name.startswith("sequence."):
        return "sequence"
    return "ids" if name.startswith("item_ids") else "head"


@dataclass(frozen=True)
class ModelConfig:
    lora_rank: int = 4  # 0: frozen text tower (no LoRA, no candidate encoding in training)
    lora_alpha: int = 8
    train_lora_a: bool = False  # False: FFA-LoRA (A fixed at a seeded init, only B trains)
    init_seed: int = 0  # seeds LoRA A and the head's A: every party must start from the same values
    lora_targets: tuple[str, ...] = ("query", "value")
    lora_layers: tuple[int, ...] = (
        5,
    )  # top layer only: backward stops there (2.2 s -> 1.0 s a step at B=100)
    max_length: int = 32
    history_length: int = 20
    recency: float = 0.7
    temperature: float = 0.05
    head_rank: int = 16
    n_items: int = 0  # size of the catalogue the item bias covers; 0 = no item bias
    item_id_rank: int = 0  # > 0 (needs n_items): a learned r-dim ID residual per item; 0 = text only
    sequence_layers: int = 0  # > 0: the causal-transformer residual over the history (SequenceResidual)
    sequence_dim: int = 64
    sequence_heads: int = 2

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["lora_targets"] = list(self.lora_targets)
        out["lora_layers"] = list(self.lora_layers)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        values = dict(data)
        for key in ("lora_targets", "lora_layers"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)


class CausalBlock(nn.Module):
    """One pre-LN transformer block with causal self-attention, written out so that every trained tensor
    sits in an nn.Linear or nn.LayerNorm: Opacus computes their per-user gradients with its own hooks."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"sequence_dim {width} is not a multiple of sequence_heads {heads}")
        self.heads = heads
        self.attention_norm = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """x [..., H, w]; allowed [..., H, H], True where a position may attend to another."""
        *lead, length, width = x.shape
        heads = self.qkv(self.attention_norm(x)).view(*lead, length, 3, self.heads, width // self.heads)
        q, k, v = heads.movedim(-3, 0).transpose(-3, -2)  # each [..., heads, H, w / heads]
        scores = q @ k.transpose(-1, -2) / (width // self.heads) ** 0.5
        scores = scores.masked_fill(~allowed[..., None, :, :], float("-inf"))
        mixed = (scores.softmax(dim=-1) @ v).transpose(-3, -2).reshape(*lead, length, width)
        x = x + self.proj(mixed)
        return x + self.mlp(self.mlp_norm(x))


class SequenceResidual(nn.Module):
    """History item vectors [..., H, d] (oldest first, left-aligned, `valid` marks real items) -> [..., d]:
    what order adds to the pooled history; zero for an untrained model and for an empty history."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        width = config.sequence_dim
        self.adaptor, self.adaptor_norm = nn.Linear(HIDDEN_SIZE, width, bias=False), nn.LayerNorm(width)
        self.position = nn.Embedding(config.history_length, width)  # by recency: 0 = the most recent item
        nn.init.normal_(self.position.weight, std=0.02)
        self.blocks = nn.ModuleList(
            CausalBlock(width, config.sequence_heads) for _ in range(config.sequence_layers)
        )
        self.out_norm, self.out = nn.LayerNorm(width), nn.Linear(width, HIDDEN_SIZE, bias=False)
        nn.init.zeros_(self.out.weight)

    def forward(self, vectors: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        length = valid.shape[-1]
        count = valid.sum(dim=-1, keepdim=True)  # [..., 1]
        age = (count - 1 - torch.arange(length)).clamp(min=0, max=self.position.num_embeddings - 1)
        x = self.adaptor_norm(self.adaptor(vectors)) + self.position(age)
        # causal over real items; every position may see itself, so no row of a padded history is empty
        allowed = torch.tril(torch.ones(length, length, dtype=torch.bool)) & valid[..., None, :]
        allowed = allowed | torch.eye(length, dtype=torch.bool)
        for block in self.blocks:
            x = block(x, allowed)
        last = (count - 1).clamp(min=0)[..., None].expand(*x.shape[:-2], 1, x.shape[-1])
        reading = self.out(self.out_norm(x.gather(-2, last).squeeze(-2)))
        return reading * (count > 0)


class Recommender(nn.Module):
    def __init__(self, config: ModelConfig = ModelConfig()) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = load_tokenizer()
        self.encoder = load_encoder(
            config.lora_rank,
            config.lora_alpha,
            config.lora_targets,
            config.lora_layers,
            config.train_lora_a,
            config.init_seed,
        )
        self.user_head = nn.Sequential(
            nn.Linear(HIDDEN_SIZE, config.head_rank, bias=False),
            nn.Linear(config.head_rank, HIDDEN_SIZE, bias=False),
        )
        with torch.random.fork_rng():
            torch.manual_seed(config.init_seed)
            nn.init.normal_(self.user_head[0].weight, std=HIDDEN_SIZE**-0.5)
            self.sequence = SequenceResidual(config) if config.sequence_layers else None
        nn.init.zeros_(self.user_head[1].weight)
        # A Linear on a constant 1 (not a bare Parameter) so that Opacus computes its per-sample gradients.
        self.item_bias = nn.Linear(1, config.n_items, bias=False) if config.n_items else None
        if self.item_bias is not None:
            nn.init.zeros_(self.item_bias.weight)
        self.item_ids = None
        if config.item_id_rank:
            if not config.n_items:
                raise ValueError("item_id_rank needs n_items (the catalogue size)")
            self.item_ids = nn.Embedding(config.n_items, config.item_id_rank)
            nn.init.zeros_(self.item_ids.weight)
            basis = torch.randn(
                config.item_id_rank, HIDDEN_SIZE, generator=torch.Generator().manual_seed(config.init_seed)
            )
            self.register_buffer("item_id_basis", basis / HIDDEN_SIZE**0.5)  # rows of about unit length

    # ------------------------------------------------------------------ towers
    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.tokenizer(
            texts,
            padding="max_length",
            truncation=True,
            max_length=self.config.max_length,
            return_tensors="pt",
        )
        return batch["input_ids"], batch["attention_mask"]

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Item tower on token ids: [B, L] -> [B, d], unit length."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return nn.functional.normalize(mean_pool(hidden, attention_mask), dim=-1)

    def user_tower(
        self,
        pooled_history: torch.Tensor,
        history_vectors: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """[..., d] pooled history (+ with a sequence residual: the history's vectors [..., H, d] and its
        valid mask [..., H]) -> [..., d] user vector, unit length."""
        user = pooled_history + self.user_head(pooled_history)
        if self.sequence is not None:
            if history_vectors is None or valid is None:
                raise ValueError("a model with a sequence residual needs each history's item vectors")
            user = user + self.sequence(history_vectors, valid)
        return nn.functional.normalize(user, dim=-1)

    def history_ids(self, history: torch.Tensor) -> torch.Tensor:
        """The ID part of pooled histories (with gradient): [..., H] indices (-1 pads) -> [..., d].

        Same recency weights as `pool_history`, so pooled text + this = pooling the ID-residual vectors.
        """
        valid = history >= 0
        age = valid.sum(dim=-1, keepdim=True) - 1 - torch.arange(history.shape[-1])
        weights = torch.where(valid, self.config.recency ** age.clamp(min=0).float(), 0.0)
        weights = weights / weights.sum(dim=-1, keepdim=True).clamp(min=1e-12)
        rows = self.item_ids(history.clamp(min=0))  # [..., H, r]
        return (weights[..., None] * rows).sum(dim=-2) @ self.item_id_basis

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pooled_history: torch.Tensor,
        catalogue: torch.Tensor,
        history: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Two views of each user's next item, both depending on that user and public data only.

        - candidate logits [B, C]: the user against its own C candidates ([B, C, L] token ids; column 0
          is its next item, the rest negatives drawn from the public catalogue), all encoded with
          gradient. Each column is encoded in its own call: Opacus sees batch-sized activations and
          sums the calls' per-sample gradients. This trains the item tower (LoRA).
        - catalogue logits [B, N]: the user against every item's *current public vector* ([N, d], no
          gradient): the ranking task itself, full softmax, at the cost of one matmul. This trains the
          user tower on every item at once.
        - several positions per user: `pooled_history` [B, K, d] (and `history` [B, K, H]) gives
          catalogue logits [B, K, N], one row per position of that user's sequence; the candidates
          belong to position 0.
        - with item IDs, `history` ([B, H] indices, oldest first, -1 pads) adds the ID part of the
          pooled history, and the catalogue logits gain u·(e·P) for every item. Each example looks up
          all N rows itself ([B, N, r]), so Opacus gets per-example gradients of the ID table.
        """
        single = pooled_history.dim() == 2
        if single:  # one position per user: the same computation with K = 1
            pooled_history = pooled_history[:, None]
            history = None if history is None else history[:, None]
        if (self.item_ids is not None or self.sequence is not None) and history is None:
            raise ValueError(
                "a model with item IDs or a sequence residual needs each example's history indices"
            )
        if self.item_ids is not None:
            pooled_history = pooled_history + self.history_ids(history)
        vectors = None
        if self.sequence is not None:  # the history in the retrieval space: public vectors + ID rows
            vectors = catalogue[history.clamp(min=0)]
            if self.item_ids is not None:
                vectors = vectors + self.item_ids(history.clamp(min=0)) @ self.item_id_basis
        users = self.user_tower(
            pooled_history, vectors, None if history is None else history >= 0
        )  # [B, K, d]
        temperature = self.config.temperature
        if input_ids.shape[1]:
            length = max(int(attention_mask.sum(dim=-1).max()), 1)  # trim padding shared by the batch
            input_ids, attention_mask = input_ids[..., :length], attention_mask[..., :length]
            columns = [self.encode(input_ids[:, c], attention_mask[:, c]) for c in range(input_ids.shape[1])]
            items = torch.stack(columns, dim=1)  # [B, C, d]
        else:  # a frozen text tower: nothing to train there, so no candidates are encoded
            items = users.new_zeros((len(users), 0, users.shape[-1]))
        catalogue_logits = users @ catalogue.T / temperature
        if self.item_bias is not None:
            catalogue_logits = catalogue_logits + self.item_bias(torch.ones(len(users), 1))[:, None]
        if self.item_ids is not None:
            every_item = torch.arange(len(catalogue)).expand(len(users), -1)
            user_ids = users @ self.item_id_basis.T  # [B, K, r]: u·(e·P) = (u·Pᵀ)·e
            id_logits = user_ids @ self.item_ids(every_item).transpose(1, 2)  # [B, K, N]
            catalogue_logits = catalogue_logits + id_logits / temperature
        candidate_logits = (items * users[:, :1]).sum(dim=-1) / temperature
        return candidate_logits, catalogue_logits[:, 0] if single else catalogue_logits

    # ------------------------------------------------------------------ inference helpers
    @torch.no_grad()
    def encode_texts(self, texts: list[str], batch_size: int = 64, progress: Any = None) -> np.ndarray:
        """Item tower on raw texts, in batches, without gradients: float32 [N, d]."""
        out = np.empty((len(texts), HIDDEN_SIZE), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            ids, mask = self.tokenize(texts[start : start + batch_size])
            length = max(int(mask.sum(dim=-1).max()), 1)
            ids, mask = ids[:, :length], mask[:, :length]
            out[start : start + len(ids)] = self.encode(ids, mask).numpy()
            if progress is not None:
                progress(min(start + batch_size, len(texts)), len(texts))
        return out

    def pool_history(self, item_vectors: np.ndarray, histories: list[list[int]]) -> np.ndarray:
        """Recency-weighted mean of each history's last `history_length` item vectors: [U, d]."""
        cfg = self.config
        out = np.zeros((len(histories), item_vectors.shape[1]), dtype=np.float32)
        for row, history in enumerate(histories):
            recent = history[-cfg.history_length :][::-1]  # most recent first
            if not recent:
                continue
            weights = cfg.recency ** np.arange(len(recent), dtype=np.float32)
            out[row] = weights @ item_vectors[recent] / weights.sum()
        return out

    def history_window(self, histories: list[list[int]]) -> torch.Tensor:
        """Each history's last `history_length` item indices, oldest first, padded with -1: [U, H]."""
        length = self.config.history_length
        out = torch.full((len(histories), length), -1, dtype=torch.long)
        for row, history in enumerate(histories):
            recent = history[-length:]
            out[row, : len(recent)] = torch.as_tensor(recent, dtype=torch.long)
        return out

    @torch.no_grad()
    def user_vectors(
        self, item_vectors: np.ndarray, histories: list[list[int]], chunk: int = 4096
    ) -> np.ndarray:
        """User tower for many users at once (`item_vectors` in the retrieval space): float32 [U, d]."""
        out = np.empty((len(histories), item_vectors.shape[1]), dtype=np.float32)
        table = torch.from_numpy(np.ascontiguousarray(item_vectors, dtype=np.float32))
        for start in range(0, len(histories), chunk):
            part = histories[start : start + chunk]
            pooled = torch.from_numpy(self.pool_history(item_vectors, part))
            vectors = valid = None
            if self.sequence is not None:
                window = self.history_window(part)
                vectors, valid = table[window.clamp(min=0)], window >= 0
            out[start : start + len(part)] = self.user_tower(pooled, vectors, valid).numpy()
        return out

    # ------------------------------------------------------------------ the retrieval space (d + 1)
    def item_space(self, text_vectors: np.ndarray) -> np.ndarray:
        """Item-tower vectors -> the vectors items have in the retrieval space: v + e·P (v without IDs)."""
        if self.item_ids is None:
            return text_vectors
        residual = (self.item_ids.weight.detach() @ self.item_id_basis).numpy()
        return (text_vectors + residual).astype(np.float32)

    def item_rows(self, item_vectors: np.ndarray) -> np.ndarray:
        """[v, τ·b] per item, v from `item_space`: what the published index holds (b = 0 without a bias)."""
        bias = np.zeros((len(item_vectors), 1), dtype=np.float32)
        if self.item_bias is not None:
            if len(item_vectors) != self.config.n_items:
                raise ValueError(
                    f"{len(item_vectors)} item vectors for a model of {self.config.n_items} items"
                )
            bias = self.config.temperature * self.item_bias.weight.detach().numpy().astype(np.float32)
        return np.hstack([item_vectors.astype(np.float32), bias])

    @staticmethod
    def user_rows(user_vectors: np.ndarray) -> np.ndarray:
        """[u, 1] per user: scored against item rows this gives u·v + τ·b."""
        return np.hstack([user_vectors, np.ones((len(user_vectors), 1), dtype=np.float32)])

    @staticmethod
    def query_rows(query_vectors: np.ndarray) -> np.ndarray:
        """[q, 0] per text query: product search ranks by text match alone, no popularity."""
        return np.hstack([query_vectors, np.zeros((len(query_vectors), 1), dtype=np.float32)])

    # ------------------------------------------------------------------ what is trained and shared
    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The tensors that are trained, and the only ones a client may send: LoRA matrices + user head."""
        return {name: p.detach().clone() for name, p in self.named_parameters() if p.requires_grad}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load adapter + head tensors; names and shapes must match exactly."""
        params = {name: p for name, p in self.named_parameters() if p.requires_grad}
        if set(state) != set(params):
            missing, extra = sorted(set(params) - set(state)), sorted(set(state) - set(params))
            raise ValueError(f"trainable state mismatch: missing {missing[:3]}, unexpected {extra[:3]}")
        with torch.no_grad():
            for name, tensor in state.items():
                if tuple(tensor.shape) != tuple(params[name].shape):
                    raise ValueError(f"{name}: shape {tuple(tensor.shape)} != {tuple(params[name].shape)}")
                params[name].copy_(torch.as_tensor(tensor))
