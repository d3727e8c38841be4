"""Federation mode (user-level DP-FedAvg with noise shares): privacy facts of each piece.

- a client's share is exactly Σ clip(per-user gradient) / (q·N) plus its noise, and the noise is
  secret and of std σ·C/√t (so t shares add up to σ·C);
- the server recovers the sum of the shares from the mean of the replies and takes one Adam step on it,
  refuses a round with fewer than t replies, and ledgers each aggregated round;
- σ is calibrated from the run config alone so that ε under the view the run offers meets the target;
- a partner takes part only under its own terms (trust model, noise floor, ε ceiling over the plan).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import TEXTS, clipped_gradient_sum  # tests/ is on sys.path under pytest

from client import randomness
from client.policy import PartnerPolicy, Refusal, federation_view, terms
from client.train import TrainSettings, UserExamples, catalogue_tokens, federation_share
from server.federation import ServerStep, TooFewShares
from shared.config import RunConfig
from shared.federation import AGGREGATE, SHARE, FederationConfigError, federation_noise
from shared.ledger import Ledger
from shared.privacy import epsilon

FED = {
    "dp-mode": "federation",
    "federation-population": 1000,
    "min-clients": 3,
    "num-server-rounds": 50,
    "secure-aggregation": False,
}


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.trainable_state().items()}


def _pairs(histories: list[list[int]]) -> list[list[int]]:
    """Histories of two items: each user has exactly one training position (no draw to differ)."""
    return [h[:2] for h in histories]


def test_share_is_the_clipped_per_user_sum_over_the_public_scale(
    tiny_frozen_text_model, tiny_catalogue, histories
):
    model, (vectors, _) = tiny_frozen_text_model, tiny_catalogue
    start = _state(model)
    settings = TrainSettings(max_grad_norm=0.05, private=True, noise_multiplier=0.0)
    users, scale = _pairs(histories), 37.0
    federation_share(
        model, users, vectors, catalogue_tokens(model, TEXTS), settings,
        sample_rate=1.0, share_noise=0.0, scale=scale, randomness=randomness.secret(),
    )  # fmt: skip
    share = {k: start[k] - v for k, v in model.trainable_state().items()}
    model.load_trainable_state(start)

    # the same by hand: each user's own gradient, clipped to C over all trained tensors, summed, scaled
    data = UserExamples(model, users, vectors, catalogue_tokens(model, TEXTS), settings,
                        draws=np.random.SeedSequence(0))  # fmt: skip
    examples = (data[i] for i in range(len(data)))
    total, clipped = clipped_gradient_sum(model, examples, torch.from_numpy(vectors), settings.max_grad_norm)
    assert clipped > 0  # the bound binds: clipping is really tested
    for k in total:
        torch.testing.assert_close(share[k], total[k] / scale, atol=2e-6, rtol=1e-4)


def test_noise_share_is_secret_and_has_std_sigma_c_over_sqrt_t(
    tiny_frozen_text_model, tiny_catalogue, histories
):
    model, (vectors, _) = tiny_frozen_text_model, tiny_catalogue
    start = _state(model)
    settings = TrainSettings(max_grad_norm=0.5)
    noise = federation_noise(RunConfig.from_flower({**FED, "target-epsilon": 0, "noise-multiplier": 2.0}))
    assert noise.share_sigma == pytest.approx(2.0 / math.sqrt(3))

    def reply(share_noise: float) -> np.ndarray:
        model.load_trainable_state(start)
        federation_share(
            model, _pairs(histories), vectors, catalogue_tokens(model, TEXTS), settings,
            sample_rate=1.0, share_noise=share_noise, scale=noise.scale, randomness=randomness.secret(),
        )  # fmt: skip
        return np.concatenate([v.numpy().ravel() for v in model.trainable_state().values()])

    clean, a, b = reply(0.0), reply(noise.share_sigma), reply(noise.share_sigma)
    model.load_trainable_state(start)
    assert not np.allclose(a, b)  # fresh secret noise each round: nothing to replay
    expected = noise.share_sigma * settings.max_grad_norm / noise.scale
    for noisy in (a, b):
        assert np.std(noisy - clean) == pytest.approx(expected, rel=0.1)


def test_server_steps_on_the_sum_of_the_shares_and_refuses_too_few(tmp_path):
    cfg = RunConfig.from_flower({**FED, "learning-rate": 0.01})
    current = {"user_head.1.weight": np.zeros((4, 3), dtype=np.float32)}
    step = ServerStep(cfg, current, tmp_path, run="r")
    rng = np.random.default_rng(0)
    shares = [rng.normal(size=(4, 3)).astype(np.float32) for _ in range(3)]
    mean = {"user_head.1.weight": np.mean([current["user_head.1.weight"] - s for s in shares], axis=0)}
    with pytest.raises(TooFewShares):
        step.step(1, current, mean, 2)  # two replies: less noise than the accountant counted
    new = step.step(1, current, mean, 3)
    # Adam's first step moves every coordinate by lr against the sign of its gradient, Σ shares
    np.testing.assert_allclose(new["user_head.1.weight"], -0.01 * np.sign(sum(shares)), atol=1e-6)
    (release,) = Ledger(tmp_path / "privacy-ledger.jsonl").releases()
    noise = federation_noise(cfg)
    assert (release.round, release.steps, release.sample_rate) == (1, 1, cfg.federation_sample_rate)
    assert release.noise_multiplier == pytest.approx(noise.share_sigma)  # no SecAgg+: the share view
    summary = step.summary()
    assert summary.rounds == 1 and set(summary.epsilon) == {SHARE}
    assert summary.epsilon[SHARE] == pytest.approx(epsilon([(noise.share_sigma, 0.1, 1)], cfg.delta))


def test_the_server_publishes_the_moving_average_of_its_steps_and_clients_train_from_the_last(tmp_path):
    """`model-average-decay` d: published = d·published + (1 − d)·step after each step, from the initial
    model; the steps themselves (what clients train from) and the ledger do not depend on d."""
    rng = np.random.default_rng(1)
    initial = {"user_head.1.weight": rng.normal(size=(4, 3)).astype(np.float32)}
    means = [{"user_head.1.weight": rng.normal(size=(4, 3)).astype(np.float32)} for _ in range(4)]
    steps, published = {}, {}
    for decay in (0.0, 0.9):
        cfg = RunConfig.from_flower({**FED, "model-average-decay": decay, "private": True})
        server = ServerStep(cfg, initial, tmp_path / str(decay), run="r")
        current, expected, steps[decay] = initial, initial["user_head.1.weight"], []
        for r, mean in enumerate(means, start=1):
            current = server.step(r, current, mean, 3)
            steps[decay].append(current["user_head.1.weight"])
            expected = decay * expected + (1 - decay) * current["user_head.1.weight"]
        published[decay] = server.published()["user_head.1.weight"]
        np.testing.assert_allclose(published[decay], expected, rtol=1e-6)
        assert len(server.ledger.releases()) == len(means)  # averaging releases nothing more
    np.testing.assert_array_equal(np.array(steps[0.0]), np.array(steps[0.9]))
    np.testing.assert_array_equal(published[0.0], steps[0.0][-1])  # decay 0: the last step itself
    assert not np.allclose(published[0.9], steps[0.9][-1])


@pytest.mark.parametrize("secure", [True, False])
def test_sigma_meets_the_target_under_the_view_the_run_offers(secure):
    cfg = RunConfig.from_flower({**FED, "secure-aggregation": secure, "target-epsilon": 4.0})
    noise = federation_noise(cfg)
    assert noise.offered == (AGGREGATE if secure else SHARE)
    eps = noise.epsilons(cfg.num_server_rounds, cfg.delta, trending=True)  # round 0's release counted too
    assert 0.97 * 4.0 <= eps[noise.offered] <= 4.0
    alone = federation_noise(
        RunConfig.from_flower({**FED, "secure-aggregation": secure, "trending-items": 0})
    )
    assert noise.sigma > alone.sigma  # the trending release leaves less budget for the rounds
    assert noise.epsilons(cfg.num_server_rounds, cfg.delta)[noise.offered] < eps[noise.offered]
    if secure:  # one share alone carries σ/√t: the server colluding with the others learns more
        assert noise.share_sigma == pytest.approx(noise.sigma / math.sqrt(3))
        assert eps[SHARE] > eps[AGGREGATE]


def test_run_config_refuses_what_federation_mode_cannot_do():
    with pytest.raises(ValueError, match="dp-mode"):
        RunConfig.from_flower({"dp-mode": "everyone"})
    with pytest.raises(ValueError, match="choose one"):
        RunConfig.from_flower({**FED, "client-noise-multiplier": 1.0})
    with pytest.raises(FederationConfigError, match="federation-population"):
        federation_noise(RunConfig.from_flower({**FED, "federation-population": 0}))


def test_partner_takes_part_only_under_its_own_trust_model_and_floor():
    plain = RunConfig.from_flower(FED)
    secure = RunConfig.from_flower({**FED, "secure-aggregation": True})
    noise = federation_noise(secure)
    agreed = terms(secure, PartnerPolicy.from_node_config({"population": 100}))
    assert federation_view(agreed, noise) == (AGGREGATE, noise.sigma)
    wary = terms(secure, PartnerPolicy.from_node_config({"population": 100, "trust": "share"}))
    assert federation_view(wary, noise) == (SHARE, noise.share_sigma)
    with pytest.raises(Refusal, match="needs secure aggregation"):
        federation_view(terms(plain, PartnerPolicy(population=100, trust=AGGREGATE)), federation_noise(plain))
    strict = terms(secure, PartnerPolicy(population=100, min_noise_multiplier=noise.sigma * 1.01))
    with pytest.raises(Refusal, match="min-noise-multiplier"):
        federation_view(strict, noise)
    with pytest.raises(Refusal, match="trust"):
        PartnerPolicy.from_node_config({"population": 100, "trust": "everyone"})
