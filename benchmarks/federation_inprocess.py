"""Federation mode on a RecBole dataset in one process: the same client and server code, without Flower.

    python -m benchmarks.federation_inprocess --data ../shared/datasets/amazon-scientific \\
        --label lr-1e-3 \\
        --run-config "learning-rate=0.001 bias-learning-rate=0.001 item-id-learning-rate=0.001"

Each round, every virtual client runs `client.train.federation_share` on its third of the users (secret
noise share, Poisson sampling at the federation-wide rate), and `server.federation.ServerStep` takes the
server's Adam step on the sum: exactly the arithmetic of a federation-mode round, minus SecAgg+ and
Flower's messaging, so a learning-rate or model change can be tried in minutes. Validation Recall@10 /
NDCG@10 every `--every` rounds; test once at the end, of the model the server publishes (the moving
average of its steps' models, `model-average-decay`; runs before that knob published the last step, = 0).
Writes `results/quality/inprocess/<label>.json`.
Choose settings on validation, and on data whose users' privacy is not at stake (a subsample, the shop).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks._quality_data import prepare
from client import randomness
from client.train import TrainSettings, catalogue_tokens, federation_share
from server.federation import ServerStep, moving_average
from shared.config import RunConfig
from shared.evaluation import evaluate_split
from shared.federation import federation_noise
from shared.item_cache import catalogue_vectors
from shared.model import Recommender

RESULTS = Path(__file__).resolve().parent / "results" / "quality" / "inprocess"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="RecBole atomic folder")
    parser.add_argument("--work", default="runs/quality/full", help="work folder (encoding cache)")
    parser.add_argument("--label", required=True, help="name of the result file")
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--every", type=int, default=50, help="validate every N rounds")
    parser.add_argument("--run-config", default="", help='overrides, "k=v k2=v2"')
    parser.add_argument(
        "--ema", default="", help="also validate exponential moving averages of the iterates, e.g. 0.9,0.98"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    bench = prepare(args.data, args.work, None, 0)
    users = bench.train_view
    overrides = dict(pair.split("=", 1) for pair in args.run_config.split())
    cfg = RunConfig.from_flower(
        # the training alone: no trending release here, so σ is calibrated on the rounds only
        {
            "federation-population": len(users.train),
            "min-clients": args.clients,
            "trending-items": 0,
            **overrides,
        }
    )
    noise = federation_noise(cfg)
    model = Recommender(cfg.model_config(bench.n_items))
    vectors = catalogue_vectors(model, bench.texts, Path(args.work) / "cache")
    parts = np.array_split(np.random.default_rng(cfg.seed).permutation(len(users.train)), args.clients)
    histories = [[users.train[i] for i in part] for part in parts]
    state = {k: v.numpy().copy() for k, v in model.trainable_state().items()}
    server = ServerStep(cfg, state, tempfile.mkdtemp(), run="inprocess")
    settings = TrainSettings.from_run_config(cfg, noise.share_sigma)
    share = noise.share_sigma if cfg.private else 0.0
    tokens = catalogue_tokens(model, bench.texts)

    def metrics(arrays: dict[str, np.ndarray], split: str) -> dict[str, float]:
        model.load_trainable_state({k: torch.from_numpy(v) for k, v in arrays.items()})
        return evaluate_split(model, vectors, bench.dataset.users, split)

    # what the server publishes (`model-average-decay`'s average), the last step's model, and averages at
    # other decays (`--ema`, an exploration: post-processing of the same steps)
    decays = [float(d) for d in args.ema.split(",") if d]
    averages = {d: {k: v.copy() for k, v in state.items()} for d in decays}

    def evaluated(split: str) -> dict[str, dict[str, float]]:
        out = {"published": metrics(server.published(), split)}
        if server.decay:  # (at decay 0 the published model is the last step's)
            out["last_step"] = metrics(state, split)
        return out | {f"ema-{d}": metrics(avg, split) for d, avg in averages.items()}

    def validate(server_round: int) -> None:
        valid = evaluated("valid")
        curve.append({"round": server_round, **{f"valid-{k}": v for k, v in valid["published"].items()}})
        curve[-1]["valid-recall@10-of"] = {name: m["recall@10"] for name, m in valid.items()}
        print(f"round {server_round}: valid recall@10 {curve[-1]['valid-recall@10-of']}", flush=True)

    curve: list[dict] = []
    validate(0)
    started = time.time()
    for server_round in range(1, cfg.num_server_rounds + 1):
        replies = []
        for client in histories:
            model.load_trainable_state({k: torch.from_numpy(v) for k, v in state.items()})
            federation_share(
                model, client, vectors, tokens, settings, sample_rate=noise.sample_rate,
                share_noise=share, scale=noise.scale, randomness=randomness.secret(),
            )  # fmt: skip
            replies.append({k: v.numpy() for k, v in model.trainable_state().items()})
        mean = {k: np.mean([reply[k] for reply in replies], axis=0) for k in state}
        state = server.step(server_round, state, mean, len(replies))
        for d, avg in averages.items():
            for k in avg:
                avg[k] = moving_average(avg[k], state[k], d)
        if server_round % args.every == 0 or server_round == cfg.num_server_rounds:
            validate(server_round)
    valid, test = evaluated("valid"), evaluated("test")
    out = {
        "label": args.label,
        "command": "python -m benchmarks.federation_inprocess "
        + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "run_config": cfg.without_paths(),
        "clients": args.clients,
        "valid": valid.pop("published"),  # the published model, as a federation-mode server publishes
        "test": test.pop("published"),
        "other_models": {"valid": valid, "test": test},  # the last step's model, other averages
        "curve": curve,
        "federation": {"sigma": noise.sigma, "share_sigma": noise.share_sigma, **server.summary().epsilon},
        "wall_time_s": round(time.time() - started, 1),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.label}.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"test recall@10 {out['test']['recall@10']:.4f} ndcg@10 {out['test']['ndcg@10']:.4f}")


if __name__ == "__main__":
    main()
