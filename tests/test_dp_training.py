"""Privacy facts of local training: per-sample gradients, clipping, the update direction, accounting."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch
from opacus import GradSampleModule, PrivacyEngine
from torch.utils.data import DataLoader

from client.randomness import reproducible, secret
from client.train import TrainSettings, UserExamples, example_loss, train_round
from shared.privacy import epsilon

SETTINGS = TrainSettings(batch_size=4, num_negatives=2, hard_negatives=1, local_steps=2)


def _perturbed(model, scale: float):
    """A copy moved off the zero init, so that every trained tensor has a gradient."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(scale * torch.randn_like(p))
    return model


def _train(model, histories, vectors, tokens, settings, seed=None, population=None):
    """One round at the declared population (default: exactly the users); seeded only where a test says."""
    streams = secret() if seed is None else reproducible(seed)
    population = population or len(histories)
    return train_round(model, histories, vectors, tokens, settings, population=population, randomness=streams)


def _batch(model, histories, vectors, tokens, n=3, settings=SETTINGS):
    data = UserExamples(model, histories, vectors, tokens, settings, draws=np.random.SeedSequence(7))
    return next(iter(DataLoader(data, batch_size=n)))


@pytest.mark.parametrize(
    "which, positions",
    [("tiny_model", 1), ("tiny_id_model", 1), ("tiny_frozen_text_model", 1), ("tiny_id_model", 3)],
)
def test_per_sample_gradients_equal_one_user_at_a_time(which, positions, request, tiny_catalogue, histories):
    """Opacus' per-sample gradients (hooks mode, peft LoRA inside; the item ID table looked up twice
    per example; several positions of a user's sequence in one example) equal each user's own gradient."""
    vectors, tokens = tiny_catalogue
    model = _perturbed(request.getfixturevalue(which), 0.02)
    histories = histories[:1] + [histories[1][:2]] + histories[2:]  # user 1 has one position, not 3
    settings = replace(SETTINGS, positions_per_user=positions)
    batch = _batch(model, histories, vectors, tokens, settings=settings)
    assert (batch[3] >= 0).sum(dim=1).tolist() == ([positions, 1, positions] if positions > 1 else [1, 1, 1])
    catalogue = torch.from_numpy(vectors)
    wrapped = GradSampleModule(model)
    example_loss(wrapped, *batch, catalogue).backward()
    params = [(n, p) for n, p in wrapped.named_parameters() if p.requires_grad]
    per_sample = {n: p.grad_sample.clone() for n, p in params}
    wrapped._close()

    for i in range(len(batch[0])):
        model.zero_grad()
        one = [t[i : i + 1] for t in batch]
        example_loss(model, *one, catalogue).backward()
        for name, p in model.named_parameters():
            if p.requires_grad:
                key = f"_module.{name}" if f"_module.{name}" in per_sample else name
                torch.testing.assert_close(per_sample[key][i], p.grad, atol=2e-5, rtol=1e-3)


def test_dp_step_moves_lora_along_clipped_mean_gradient(tiny_model, tiny_catalogue, histories):
    """Guard against silent update loss (opacus#820): with σ=0 and SGD, Δθ = -lr · mean of clipped grads."""
    vectors, tokens = tiny_catalogue
    model = _perturbed(tiny_model, 0.02)
    batch = _batch(model, histories, vectors, tokens, n=4)
    catalogue = torch.from_numpy(vectors)
    clip, lr = 0.5, 0.1

    # reference: per-sample gradients -> clip each to `clip` -> mean
    ref = GradSampleModule(copy.deepcopy(model))
    example_loss(ref, *batch, catalogue).backward()
    grads = {n: p.grad_sample for n, p in ref.named_parameters() if p.requires_grad}
    norms = torch.sqrt(sum((g.flatten(1) ** 2).sum(1) for g in grads.values()))
    factor = (clip / (norms + 1e-6)).clamp(max=1.0)
    assert (norms > clip).any(), "the test must exercise clipping"
    expected = {
        n.removeprefix("_module."): torch.einsum("i,i...->...", factor, g) / len(norms)
        for n, g in grads.items()
    }

    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr)
    loader = DataLoader(list(zip(*batch, strict=True)), batch_size=4)
    engine = PrivacyEngine()
    net, optimizer, _ = engine.make_private(
        module=model,
        optimizer=optimizer,
        data_loader=loader,
        noise_multiplier=0.0,
        max_grad_norm=clip,
        poisson_sampling=False,
    )
    optimizer.expected_batch_size = 4
    example_loss(net, *batch, catalogue).backward()
    optimizer.step()
    moved_b = 0
    for name, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.detach() - before[name], -lr * expected[name], atol=1e-6, rtol=1e-3)
            if ".lora_B." in name:
                moved_b += int((p.detach() - before[name]).abs().max() > 0)
    assert moved_b > 0, "LoRA B matrices must move"
    net._close()


def test_round_history_and_epsilon_compose(tiny_model, tiny_catalogue, histories):
    vectors, tokens = tiny_catalogue
    model = copy.deepcopy(tiny_model)
    settings = TrainSettings(
        batch_size=6, local_steps=3, num_negatives=1, hard_negatives=1, noise_multiplier=1.1
    )
    first = _train(model, histories, vectors, tokens, settings)
    second = _train(model, histories, vectors, tokens, settings)
    q = 6 / len(histories)
    assert first.history == [(1.1, q, 3)] and second.history == [(1.1, q, 3)]
    assert first.sample_rate == pytest.approx(q)
    composed = epsilon(first.history + second.history, 1e-5)
    assert composed == pytest.approx(epsilon([(1.1, q, 6)], 1e-5), rel=1e-6)
    assert composed > epsilon(first.history, 1e-5)


def test_non_private_round_has_no_privacy_history(tiny_model, tiny_catalogue, histories):
    vectors, tokens = tiny_catalogue
    model = copy.deepcopy(tiny_model)
    result = _train(
        model,
        histories,
        vectors,
        tokens,
        TrainSettings(private=False, batch_size=6, local_steps=2, num_negatives=1, hard_negatives=1),
    )
    assert result.history == [] and result.steps == 2


def test_empty_poisson_batch_is_still_a_step(tiny_model, tiny_catalogue):
    """With a tiny sampling rate most batches are empty: every step is counted and accounted for."""
    vectors, tokens = tiny_catalogue
    model = copy.deepcopy(tiny_model)
    histories = [[0, 1, 2], [3, 4, 5]]
    settings = TrainSettings(batch_size=1, local_steps=6, num_negatives=1, hard_negatives=1)
    result = _train(model, histories, vectors, tokens, settings)
    assert result.steps == 6 and result.history == [(1.0, 0.5, 6)]
    assert result.examples < 12  # Poisson: batches vary in size, some empty with q = 0.5


def _update(model, histories, vectors, tokens, seed=None, settings=SETTINGS):
    model = copy.deepcopy(model)
    _train(model, histories, vectors, tokens, settings, seed=seed)
    state = model.trainable_state()
    assert any(np.abs(state[n].numpy()).max() > 0 for n in state if "user_head.1" in n)  # training moved it
    return state


def _same(a, b) -> bool:
    return all(torch.equal(a[name], b[name]) for name in a)


def test_noise_is_not_reproducible_from_public_values(tiny_model, tiny_catalogue, histories):
    """The attack of the review: re-run a round with everything the server knows (config seed, client
    index, round, global model, even the data). Secret randomness gives a different update every time;
    only the labelled test-only reproducible streams replay."""
    vectors, tokens = tiny_catalogue
    private_runs = [_update(tiny_model, histories, vectors, tokens) for _ in range(2)]
    assert not _same(*private_runs)
    seeded = [_update(tiny_model, histories, vectors, tokens, seed=5) for _ in range(2)]
    assert _same(*seeded)  # the planted bug the canary audit must catch, kept only behind its label
    assert not _same(private_runs[0], seeded[0])


def test_noise_alone_differs_between_rounds_with_the_same_sample(tiny_model, tiny_catalogue, histories):
    """σ > 0 with sampling rate 1 (every user, every step): only the noise is random, and it differs."""
    vectors, tokens = tiny_catalogue
    settings = replace(SETTINGS, batch_size=len(histories), noise_multiplier=2.0, positions_per_user=4)
    a, b = (_update(tiny_model, histories, vectors, tokens, settings=settings) for _ in range(2))
    assert not _same(a, b)


def test_population_fixes_the_sampling_rate_and_bounds_the_real_count(tiny_model, tiny_catalogue, histories):
    vectors, tokens = tiny_catalogue
    settings = replace(SETTINGS, batch_size=6, local_steps=1)
    result = _train(copy.deepcopy(tiny_model), histories, vectors, tokens, settings, population=60)
    assert result.sample_rate == 0.1 and result.history == [(1.0, 0.1, 1)]  # 1/⌈60/6⌉, not 6/24
    with pytest.raises(ValueError, match="declared population"):
        _train(copy.deepcopy(tiny_model), histories, vectors, tokens, settings, population=10)


def test_a_users_example_averages_its_positions(tiny_frozen_text_model, tiny_catalogue, histories):
    """With K positions, a user's one example has the mean of the K next-item losses, each position
    scored on the history before it only (what a one-position example at that target would score)."""
    vectors, tokens = tiny_catalogue
    model = _perturbed(tiny_frozen_text_model, 0.05)
    settings = replace(SETTINGS, positions_per_user=4)
    catalogue = torch.from_numpy(vectors)
    ids, mask, pooled, items, seen = _batch(model, histories, vectors, tokens, n=1, settings=settings)
    assert sorted(items[0].tolist()) == sorted(histories[0][1:])  # 4 positions: every target of a 5-item user
    with torch.no_grad():
        whole = example_loss(model, ids, mask, pooled, items, seen, catalogue)
        parts = [
            example_loss(
                model, ids, mask, pooled[:, k : k + 1], items[:, k : k + 1], seen[:, k : k + 1], catalogue
            )
            for k in range(4)
        ]
    for k in range(4):  # position k's history is exactly the user's items before its target
        target = histories[0].index(int(items[0, k]))
        assert [int(i) for i in seen[0, k] if i >= 0] == [int(i) for i in histories[0][:target]]
    torch.testing.assert_close(whole, torch.stack(parts).mean())
