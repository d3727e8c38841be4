"""Federation mode's server half: the mean of the clients' replies becomes one Adam step (DP-FedAvg).

Each client replies global − share_c (`client.train.federation_share`) with an equal weight, so Flower's
FedAvg gives global − (1/n)·Σ share_c and the noisy mean gradient is ĝ = Σ share_c = n·(global − mean)
(`shared/federation.py` for what each share holds). The server takes one step of Adam on ĝ, with the run
config's learning rate per group of tensors: DP-FedAvg with a server optimizer (FedAdam, Reddi et al.
2021). That is post-processing of a DP release and costs no privacy. So is what the server publishes and
evaluates: an exponential moving average of its steps' models (`model-average-decay`), which averages
out noise that the last step alone carries; clients always train from the last step.

A round with fewer than t = min-clients replies is not aggregated: a sum of fewer shares carries less
than the noise the accountant assumed, so the global model is kept and the round is recorded as
skipped. Each aggregated round is written to the server's privacy ledger
(`RUN_DIR/server/privacy-ledger.jsonl`, unit "user", σ of the view the run offers), which `fedrec audit`
verifies like any other. `FederationStep` wraps FedAvg on the message-API path; the SecAgg+ path calls
the same `ServerStep` (server/secure_aggregation.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from server.wrapper import StrategyWrapper
from shared.config import RunConfig
from shared.federation import FederationNoise, federation_noise
from shared.ledger import LEDGER_NAME, Ledger
from shared.model import param_group
from shared.privacy import NOISE_SECRET
from shared.run_record import FederationSummary
from shared.trending import CLIP, TRENDING_ROUND

SERVER_PARTY = "server"


def moving_average(average: np.ndarray, new: np.ndarray, decay: float) -> np.ndarray:
    """One step of an exponential moving average (float32): decay·average + (1 − decay)·new."""
    return (decay * average + (1.0 - decay) * new).astype(np.float32)


class TooFewShares(ValueError):
    """Fewer replies than the noise shares the accountant counts on."""


class ServerStep:
    """The server optimizer of a federation-mode run, and its privacy ledger."""

    def __init__(
        self,
        cfg: RunConfig,
        initial: dict[str, np.ndarray],
        ledger_dir: str | Path,
        run: str,
        attempt: str = "",
    ) -> None:
        """`run`: the training's name, the server ledger's key (server/checkpoint.py); `attempt`: this
        Flower run's id (a round trained again after a restart is ledgered under its retry key)."""
        self.noise: FederationNoise = federation_noise(cfg)
        self.private = cfg.private
        self.delta = cfg.delta
        self.max_grad_norm = cfg.max_grad_norm
        self.run = run
        self.attempt = attempt or run
        self.ledger = Ledger(Path(ledger_dir) / LEDGER_NAME)
        self.params = {
            name: torch.nn.Parameter(torch.tensor(a, dtype=torch.float32)) for name, a in initial.items()
        }
        rates = cfg.learning_rates()
        groups: dict[str, list[torch.nn.Parameter]] = {}
        for name, p in self.params.items():
            groups.setdefault(param_group(name), []).append(p)
        self.optimizer = torch.optim.Adam([{"params": ps, "lr": rates[g]} for g, ps in groups.items()])
        self.decay = cfg.model_average_decay
        self.average = {name: np.array(a, dtype=np.float32) for name, a in initial.items()}
        self.rounds = 0
        self.trending_released = False  # round 0's trending release (server/trending.py) was aggregated

    def step(self, server_round: int, current: dict[str, np.ndarray], mean: dict[str, np.ndarray], n: int):
        """The new global model from this round's mean reply over `n` clients: {name: float32 array}."""
        if n < self.noise.shares:
            raise TooFewShares(
                f"{n} replies < min-clients {self.noise.shares}: their sum carries less noise than accounted;"
                " not aggregated, global model kept"
            )
        with torch.no_grad():
            for name, p in self.params.items():
                p.copy_(torch.from_numpy(np.asarray(current[name], dtype=np.float32)))
                p.grad = n * (p.detach() - torch.from_numpy(np.asarray(mean[name], dtype=np.float32)))
        self.optimizer.step()
        self.rounds += 1
        for name, p in self.params.items():
            self.average[name] = moving_average(self.average[name], p.detach().numpy(), self.decay)
        if self.private:
            self.ledger.append(
                SERVER_PARTY,
                server_round,
                1,
                self.noise.view_sigma(self.noise.offered),
                self.noise.sample_rate,
                self.max_grad_norm,
                self.delta,
                run=self.ledger.run_key(self.run, self.attempt, server_round),
                noise=NOISE_SECRET,  # the clients' secret shares
            )
        return {name: p.detach().numpy().copy() for name, p in self.params.items()}

    def record_trending(self) -> None:
        """Round 0's trending release was aggregated: the server's ledger records it (σ_T, q 1, clip 1)."""
        self.trending_released = True
        if self.private:
            self.ledger.append(
                SERVER_PARTY,
                TRENDING_ROUND,
                1,
                self.noise.trending_view_sigma(self.noise.offered),
                1.0,
                CLIP,
                self.delta,
                run=self.ledger.run_key(self.run, self.attempt, TRENDING_ROUND),
                noise=NOISE_SECRET,
            )

    def published(self) -> dict[str, np.ndarray]:
        """The model to evaluate and publish: the moving average of the steps' models (the last step's
        model itself with `model-average-decay` 0)."""
        return {name: a.copy() for name, a in self.average.items()}

    def state(self) -> dict:
        """Adam's moments and step per tensor, the published average and the rounds aggregated: the
        checkpoint's `optimizer`."""
        state = {}
        for name, p in self.params.items():
            s = self.optimizer.state.get(p)
            if s:
                state[name] = {
                    "step": float(s["step"]),
                    "exp_avg": s["exp_avg"].numpy().copy(),
                    "exp_avg_sq": s["exp_avg_sq"].numpy().copy(),
                }
        return {"aggregated": self.rounds, "state": state, "average": self.published()}

    def restore(self, saved: dict, released: int | None = None) -> None:
        """Resume from a checkpoint's `optimizer`; `released`: the releases of this training in the
        server's ledger (a round interrupted after its release counts too), else the rounds aggregated."""
        for name, s in saved["state"].items():
            p = self.params[name]
            self.optimizer.state[p] = {
                "step": torch.tensor(float(s["step"])),
                "exp_avg": torch.tensor(s["exp_avg"]),
                "exp_avg_sq": torch.tensor(s["exp_avg_sq"]),
            }
        self.average = {name: np.array(a, dtype=np.float32) for name, a in saved["average"].items()}
        self.rounds = int(saved["aggregated"]) if released is None else released

    def summary(self) -> FederationSummary:
        """σ, the rounds released, and ε per view over all of them (before a restart too)."""
        trending = self.trending_released
        views = self.noise.epsilons(self.rounds, self.delta, trending=trending) if self.private else {}
        rdp = self.noise.epsilons(self.rounds, self.delta, "rdp", trending) if self.private else {}
        return FederationSummary(
            sigma=self.noise.sigma if self.private else 0.0,
            share_sigma=self.noise.share_sigma if self.private else 0.0,
            noise_shares=self.noise.shares,
            sample_rate=self.noise.sample_rate,
            population=self.noise.population,
            offered=self.noise.offered,
            rounds=self.rounds,
            epsilon=views,
            epsilon_rdp=rdp,
            delta=self.delta,
            ledger=str(self.ledger.path),
            trending_sigma=self.noise.trending_view_sigma(self.noise.offered) if self.private else 0.0,
            trending_released=trending,
        )


class FederationStep(StrategyWrapper):
    """Wraps FedAvg (equal weights): its mean of the replies goes through `ServerStep`."""

    def __init__(self, strategy: Strategy, step: ServerStep) -> None:
        super().__init__(strategy)
        self.server_step = step
        self.current: dict[str, np.ndarray] = {}
        self.skipped: dict[int, list[str]] = {}

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.current = {k: v.numpy() for k, v in arrays.items()}
        return self.strategy.configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        arrays, metrics = self.strategy.aggregate_train(server_round, replies)
        if arrays is None:
            return None, metrics
        try:
            new = self.server_step.step(
                server_round, self.current, {k: v.numpy() for k, v in arrays.items()}, len(replies)
            )
        except TooFewShares as err:
            self.skipped.setdefault(server_round, []).append(str(err))
            return None, metrics
        return ArrayRecord({k: Array(v) for k, v in new.items()}), metrics
