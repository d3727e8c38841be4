"""One round of local training on a client's private users, with Opacus DP-SGD (or without, labelled).

The privacy unit is the user. Each step, Opacus' Poisson loader samples every local user
independently with probability q, fixed from the partner's *declared* population bound (public), never
from its real user count (private); a sampled user contributes exactly one
example built from their own history: up to `positions_per_user` next-item predictions inside their
training part (positions drawn at random), whose losses are averaged into that one example's loss.
The loss of an example depends only on that user's data and on public data: the positive is the
user's own item, the negatives are drawn for that example from the public catalogue (hard ones: the
positive's nearest neighbours under the current global model; plus random ones). All candidates are
encoded with gradient, so the item tower cannot lower the loss by moving every item at once.
Per-example clipping bounds each user's influence, and Opacus' accountant gives user-level ε.
Noise, sampling and per-example draws come from `client/randomness.py`'s secret streams; the update's
scale (Opacus' expected batch size) is the public population × q, so nothing here depends on how many
users the partner really has except through the clipped, noised sum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from opacus import PrivacyEngine
from opacus.data_loader import DPDataLoader
from torch.utils.data import DataLoader, Dataset

from client.randomness import Randomness
from shared.config import RunConfig
from shared.model import Recommender, param_group
from shared.privacy import History

_RUN = RunConfig()  # every default lives in shared/config.py (tested equal to pyproject's)


@dataclass(frozen=True)
class TrainSettings:
    """The training knobs of one round, `from_run_config`; the defaults are the run config's."""

    local_steps: int = _RUN.local_steps
    batch_size: int = _RUN.batch_size
    learning_rate: float = _RUN.learning_rate  # user head
    bias_learning_rate: float = _RUN.bias_learning_rate  # item bias: a popularity prior, DP-robust
    item_id_learning_rate: float = _RUN.item_id_learning_rate  # item ID residuals (item_id_rank > 0)
    lora_learning_rate: float = _RUN.lora_learning_rate  # LoRA moves the item tower: smaller steps
    sequence_learning_rate: float = _RUN.sequence_learning_rate  # the sequence residual (sequence_layers > 0)
    private: bool = _RUN.private
    noise_multiplier: float = _RUN.noise_multiplier
    max_grad_norm: float = _RUN.max_grad_norm
    num_negatives: int = _RUN.num_negatives  # per example, encoded with gradient: one encoder pass each
    hard_negatives: int = _RUN.hard_negatives  # of which drawn from the positive's nearest neighbours
    # Next-item positions of a user's sequence averaged into its one example (its clipped gradient): more
    # of each user's signal per step at no privacy cost. Candidates are encoded for the first one only.
    positions_per_user: int = _RUN.positions_per_user

    @classmethod
    def from_run_config(cls, cfg: RunConfig, noise_multiplier: float) -> TrainSettings:
        """The training knobs of a run config (σ comes from the client's calibration, not the config)."""
        return cls(
            local_steps=cfg.local_steps,
            batch_size=cfg.batch_size,
            learning_rate=cfg.learning_rate,
            lora_learning_rate=cfg.lora_learning_rate,
            bias_learning_rate=cfg.bias_learning_rate,
            item_id_learning_rate=cfg.item_id_learning_rate,
            sequence_learning_rate=cfg.sequence_learning_rate,
            private=cfg.private,
            noise_multiplier=noise_multiplier,
            max_grad_norm=cfg.max_grad_norm,
            num_negatives=cfg.num_negatives,
            hard_negatives=cfg.hard_negatives,
            positions_per_user=cfg.positions_per_user,
        )


class StepProbe(Protocol):
    """An audit's view into DP-SGD, one call before and one after each optimizer step.

    `before_step` may add per-sample gradient rows (an audit's gradient canaries) to every trained
    parameter's `grad_sample`, which Opacus then clips and noises like any user's; `after_step` sees
    each parameter's `grad` as the optimizer used it: under DP, the clipped, noised and averaged sum.
    `optimizer` is Opacus' `DPOptimizer` in a private round (its `params` are in noise-draw order).
    """

    def before_step(self, step: int, optimizer: torch.optim.Optimizer) -> None: ...

    def after_step(self, step: int, optimizer: torch.optim.Optimizer) -> None: ...


@dataclass
class TrainResult:
    steps: int
    examples: int  # examples processed, summed over steps (for logging, not a weight)
    users: int  # users able to train (at least two training items): private, never sent
    sample_rate: float  # public: from the declared population
    mean_loss: float
    history: History  # this round's DP steps as Opacus history entries; empty if non-private


class UserExamples(Dataset):
    """One example per user: K next items in their history, negatives, and the pooled history before each.

    Returns (token ids [C, L], masks [C, L], pooled histories [K, d], next item indices [K], history
    indices [K, H] padded with -1); K = `positions_per_user`, positions a user lacks have next item -1.
    Candidate 0 is the next item of position 0, a uniformly drawn one.
    """

    def __init__(
        self,
        model: Recommender,
        histories: list[list[int]],
        item_vectors: np.ndarray,
        tokens: tuple[torch.Tensor, torch.Tensor],
        settings: TrainSettings,
        draws: np.random.SeedSequence,
    ) -> None:
        if settings.positions_per_user < 1:
            raise ValueError(f"positions_per_user must be at least 1, not {settings.positions_per_user}")
        self.model, self.histories, self.item_vectors, self.tokens = model, histories, item_vectors, tokens
        self.settings = settings
        hard = settings.hard_negatives and model.config.lora_rank
        self.neighbours = nearest_items(item_vectors, NEIGHBOURS) if hard else None
        self.draws = draws

    def __len__(self) -> int:
        return len(self.histories)

    def __getitem__(self, index: int):
        # each drawn example gets its own child stream, so no user's draws shift with another user's data
        rng = np.random.default_rng(self.draws.spawn(1)[0])
        history, k = self.histories[index], self.settings.positions_per_user
        targets = [int(rng.integers(1, len(history)))]
        if k > 1:
            others = [t for t in range(1, len(history)) if t != targets[0]]
            targets += [int(t) for t in rng.choice(others, min(k - 1, len(others)), replace=False)]
        length = self.model.config.history_length
        pooled = np.zeros((k, self.item_vectors.shape[1]), dtype=np.float32)
        pooled[: len(targets)] = self.model.pool_history(self.item_vectors, [history[:t] for t in targets])
        items = torch.full((k,), -1, dtype=torch.long)
        seen = torch.full((k, length), -1, dtype=torch.long)
        for row, target in enumerate(targets):
            items[row] = history[target]
            recent = history[:target][-length:]
            seen[row, : len(recent)] = torch.tensor(recent)
        # a frozen text tower (lora_rank 0) trains on the catalogue logits alone: no candidates to encode
        first = history[targets[0]]
        candidates = [first] + self._negatives(first, rng) if self.model.config.lora_rank else []
        ids, mask = self.tokens[0][candidates], self.tokens[1][candidates]
        return ids, mask, torch.from_numpy(pooled), items, seen

    def _negatives(self, item: int, rng: np.random.Generator) -> list[int]:
        n_items, out = len(self.item_vectors), []
        if self.neighbours is not None:
            pool = [int(j) for j in self.neighbours[item] if j != item]
            out += [int(j) for j in rng.choice(pool, self.settings.hard_negatives, replace=False)]
        while len(out) < self.settings.num_negatives:
            j = int(rng.integers(n_items))
            if j != item and j not in out:
                out.append(j)
        return out


NEIGHBOURS = 50


def nearest_items(item_vectors: np.ndarray, k: int) -> np.ndarray:
    """Each item's k nearest catalogue items (itself included) by inner product, exact, with FAISS: [N, k]."""
    import faiss

    index = faiss.IndexFlatIP(item_vectors.shape[1])
    index.add(np.ascontiguousarray(item_vectors, dtype=np.float32))
    _, neighbours = index.search(
        np.ascontiguousarray(item_vectors, dtype=np.float32), min(k + 1, len(item_vectors))
    )
    return neighbours


def poisson_rate(population: int, batch_size: int) -> float:
    """The Poisson rate for a declared population bound: 1 / ⌈population / batch⌉, public before training.

    Its inverse is an integer, so Opacus' accountant (which records 1 / len(loader)) sees exactly q.
    """
    if population < 1 or batch_size < 1:
        raise ValueError(f"population and batch size must be positive, not {population} and {batch_size}")
    return 1.0 / math.ceil(population / min(batch_size, population))


def catalogue_tokens(model: Recommender, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The catalogue's token ids and masks, for candidate encoding; empty for a frozen text tower
    (lora_rank 0), which encodes no candidates and need not tokenize anything."""
    if model.config.lora_rank:
        return model.tokenize(texts)
    return torch.zeros(0, 0, dtype=torch.long), torch.zeros(0, 0, dtype=torch.long)


def trainable_users(histories: list[list[int]]) -> list[list[int]]:
    """Users with at least one (history, next item) pair in their training part."""
    return [h for h in histories if len(h) >= 2]


def train_round(
    model: Recommender,
    histories: list[list[int]],
    item_vectors: np.ndarray,
    tokens: tuple[torch.Tensor, torch.Tensor],
    settings: TrainSettings,
    *,
    population: int,
    randomness: Randomness,
    probe: StepProbe | None = None,
) -> TrainResult:
    """Run `local_steps` optimizer steps; returns the DP history of exactly those steps.

    `probe` (audit runs only, never a production round) is called around each optimizer step; see
    `StepProbe`.

    `population` is the partner's declared bound on its user count (public): it fixes q and the update's
    scale. Training refuses if the real count exceeds it, since q would then understate each user's risk.
    """
    users = trainable_users(histories)
    if not users:
        raise ValueError("no local user has two or more training items: nothing to train on")
    if len(histories) > population:
        raise ValueError(
            f"the partner has {len(histories)} users, more than its declared population {population}:"
            " raise `population` in its node config (a public bound) before training"
        )
    data = UserExamples(model, users, item_vectors, tokens, settings, draws=randomness.examples)
    q = poisson_rate(population, settings.batch_size)
    if settings.private:
        loader: DataLoader = DPDataLoader(data, sample_rate=q, generator=randomness.sampling)
    else:
        batch = min(settings.batch_size, len(users))
        loader = DataLoader(data, batch_size=batch, shuffle=True, generator=randomness.sampling)
    params = [p for p in model.parameters() if p.requires_grad]
    groups: dict[str, list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault(param_group(name), []).append(p)
    rates = {
        "lora": settings.lora_learning_rate,
        "bias": settings.bias_learning_rate,
        "ids": settings.item_id_learning_rate,
        "sequence": settings.sequence_learning_rate,
        "head": settings.learning_rate,
    }
    optimizer = torch.optim.Adam([{"params": ps, "lr": rates[g]} for g, ps in groups.items() if ps])
    model.train()
    engine = None
    net: torch.nn.Module = model
    if settings.private:
        engine = PrivacyEngine(accountant="prv")
        net, optimizer, loader = engine.make_private(
            module=model,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=settings.noise_multiplier,
            max_grad_norm=settings.max_grad_norm,
            poisson_sampling=False,  # the loader above already samples, at the public rate q
            noise_generator=randomness.noise,
        )
        # Opacus divides the noised sum by len(dataset) * q: make that the public population * q instead
        optimizer.expected_batch_size = max(1, round(population * q))
    sample_rate = q if settings.private else loader.batch_size / len(users)
    catalogue = torch.from_numpy(item_vectors)
    losses, examples, steps = [], 0, 0
    while steps < settings.local_steps:
        for ids, mask, pooled, items, seen in loader:
            optimizer.zero_grad(set_to_none=True)
            if len(ids) == 0:
                _empty_batch(params)
            else:
                loss = example_loss(net, ids, mask, pooled, items, seen, catalogue)
                loss.backward()
                losses.append(loss.item())
            if probe is not None:
                probe.before_step(steps, optimizer)
            optimizer.step()
            if probe is not None:
                probe.after_step(steps, optimizer)
            examples += len(ids)
            steps += 1
            if steps >= settings.local_steps:
                break
    history: History = list(engine.accountant.history) if engine else []
    if engine is not None:
        net._close()  # remove Opacus hooks so the model can be reused or wrapped again
    return TrainResult(
        steps=steps,
        examples=examples,
        users=len(users),
        sample_rate=float(sample_rate),
        mean_loss=float(np.mean(losses)) if losses else float("nan"),
        history=history,
    )


def example_loss(net, ids, mask, pooled, items, seen, catalogue) -> torch.Tensor:
    """Mean over the batch of each example's candidate loss + full-catalogue loss (history masked out).

    An example's catalogue loss is the mean over its positions (next item -1: a position it lacks).
    """
    candidate_logits, catalogue_logits = net(ids, mask, pooled, catalogue, seen)  # [B, C], [B, K, N]
    valid = seen >= 0
    batch, position, _ = valid.nonzero(as_tuple=True)
    catalogue_logits = catalogue_logits.index_put((batch, position, seen[valid]), torch.tensor(float("-inf")))
    cross_entropy = torch.nn.functional.cross_entropy
    per_position = cross_entropy(
        catalogue_logits.flatten(0, 1), items.flatten(), ignore_index=-1, reduction="none"
    ).view(items.shape)
    loss = (per_position.sum(dim=1) / (items >= 0).sum(dim=1)).mean()
    if candidate_logits.shape[1]:
        loss = loss + cross_entropy(candidate_logits, torch.zeros(len(ids), dtype=torch.long))
    return loss


def federation_share(
    model: Recommender,
    histories: list[list[int]],
    item_vectors: np.ndarray,
    tokens: tuple[torch.Tensor, torch.Tensor],
    settings: TrainSettings,
    *,
    sample_rate: float,
    share_noise: float,
    scale: float,
    randomness: Randomness,
) -> TrainResult:
    """This client's share of a federation-mode round (`shared/federation.py`), applied to `model`.

    One Opacus DP-SGD step: the local users are Poisson-sampled at the federation's rate q, each sampled
    user's gradient at the global model is clipped to C, N(0, (share_noise·C)²) is added to the sum, and
    the sum is divided by the public `scale` (q·N, the same at every client). Plain SGD with learning
    rate 1 applies it, so `model` ends at global − share: a reply of the same form as a partner-mode one
    (the new adapters), from which the server recovers the share. The server, not the client, steps.
    """
    users = trainable_users(histories)
    if not users:
        raise ValueError("no local user has two or more training items: nothing to train on")
    data = UserExamples(model, users, item_vectors, tokens, settings, draws=randomness.examples)
    loader = DPDataLoader(data, sample_rate=sample_rate, generator=randomness.sampling)
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    engine = PrivacyEngine(accountant="prv")
    net, optimizer, loader = engine.make_private(
        module=model,
        optimizer=torch.optim.SGD(params, lr=1.0),
        data_loader=loader,
        noise_multiplier=share_noise,
        max_grad_norm=settings.max_grad_norm,
        poisson_sampling=False,  # the loader above already samples, at the federation's rate
        noise_generator=randomness.noise,
    )
    optimizer.expected_batch_size = scale  # Opacus divides the noised sum by this: q·N, public
    ids, mask, pooled, items, seen = next(iter(loader))
    optimizer.zero_grad(set_to_none=True)
    loss = float("nan")
    if len(ids) == 0:
        _empty_batch(params)
    else:
        batch_loss = example_loss(net, ids, mask, pooled, items, seen, torch.from_numpy(item_vectors))
        batch_loss.backward()
        loss = batch_loss.item()
    optimizer.step()
    history: History = list(engine.accountant.history)
    net._close()
    return TrainResult(
        steps=1, examples=len(ids), users=len(users), sample_rate=sample_rate, mean_loss=loss, history=history
    )


def _empty_batch(params: list[torch.nn.Parameter]) -> None:
    """A Poisson batch can be empty; the step still happens (pure noise) and is still accounted for."""
    for p in params:
        p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype)
