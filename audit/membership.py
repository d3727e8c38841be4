"""Empirical privacy audit: a membership-inference attack on a published fedrec model.

Threat model. The attacker holds the published artifact (adapter + item index: everything a device
downloads) and, for a candidate user, that user's full training history (the items of the training
part of their leave-one-out split, in order). It wants to tell whether the user was in training (a
*member*: their examples were in some client's DP-SGD) or not (a *non-member* drawn from the same
distribution, held out of every partition). It sees no gradients, no client updates and no other
user's data: this is the weakest attacker the DP guarantee covers, so the ε it implies is a lower bound
on the leakage of the published model, not an estimate of the accountant's ε.

Attack. The loss-threshold attack (Yeom et al. 2018): a model fits its training data better than
unseen data, so score each user by the model's own loss on their training pairs and call the users
above a threshold members. A user's score is the mean, over their (prefix -> next item) pairs
(`history[:t] -> history[t]`, t >= 1, exactly the pairs client/train.py samples from), of the
full-catalogue log-softmax of the true next item under the model's score u·v + τ·b (the training
logit is that score over τ), with the prefix's items masked out as in evaluation. Higher (lower loss)
= more member-like.

Reading the result.
- `attack_auc`: ROC AUC of the scores (0.5 = the attack cannot tell members from non-members).
- `epsilon_lower_bound`: the smallest ε an (ε, δ)-DP mechanism could have and still let this attack
  reach its best threshold's TPR/FPR (Jagielski et al. 2020, "Auditing differentially private
  machine learning"; Nasr et al. 2021, "Adversary instantiation"). It is an empirical LOWER bound from
  one attack: a small value does not show the model is private (a stronger attack may do better), a
  value above the accountant's ε would show a bug. The point estimate treats the empirical TPR/FPR
  as exact, which with a few hundred users they are not; `confidence=0.95` replaces them by
  Clopper-Pearson bounds (TPR from below, FPR from above, each at one-sided (1 - 0.95) / 2, so both
  hold together with 95% confidence): that corrected value is the one to report. Caveat: the
  threshold is chosen on the same scores it is evaluated on, which makes even the corrected bound
  slightly optimistic; for a strict audit choose it on half the users and evaluate on the other half.

Inputs. The auditor trusts no party: `run_attack` takes the artifact, the catalogue and δ explicitly.
The command line takes them from the options, and what is not given from the server's run record
(`RUN_DIR/run.json`, `shared/run_record.py`), whose claimed ε is copied next to the result for
comparison. Usage on a finished run folder (members: users of the training partitions; non-members: an
events file of held-out users from the same distribution, in the fedrec events schema):

    python -m audit.membership RUN_DIR --members RUN_DIR/partitions/client-0/events.csv \
        --nonmembers heldout_events.csv [--artifact DIR] [--catalogue FILE] [--delta 1e-5] [--max-users 500]

It writes RUN_DIR/attack.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

THREAT_MODEL = (
    "black-box on the published artifact (adapter + item index); the attacker knows the candidate user's "
    "training history and guesses member (trained on) vs non-member (held out, same distribution) by "
    "thresholding the model's mean log-likelihood of the user's own next items (loss-threshold attack, "
    "Yeom et al. 2018); epsilon bounds are empirical lower bounds from this one attack"
)
CONFIDENCE = 0.95
CHUNK = 1024  # (prefix, next item) pairs scored against the catalogue at once


# ---------------------------------------------------------------------------------------------- scores
def training_pairs(history: Sequence[int]) -> list[tuple[list[int], int]]:
    """A user's (prefix, next item) pairs: every history[:t] -> history[t], t >= 1 (as train.py samples)."""
    items = [int(i) for i in history]
    return [(items[:t], items[t]) for t in range(1, len(items))]


def membership_scores(model, item_vectors: np.ndarray, histories: list[list[int]]) -> np.ndarray:
    """One score per user: mean over their training pairs of log p(next item | prefix), full catalogue.

    p is the softmax over every catalogue item of (u·v + τ·b) / τ, u the user tower on the prefix, the
    prefix's items excluded. Higher = better fit = more member-like. A user with fewer than two training
    items has no pair and gets NaN (callers drop them and say how many).
    """
    temperature = model.config.temperature
    rows = model.item_rows(np.ascontiguousarray(item_vectors, dtype=np.float32))  # [N, d + 1]
    owners, prefixes, targets = [], [], []
    for user, history in enumerate(histories):
        for prefix, target in training_pairs(history):
            owners.append(user)
            prefixes.append(prefix)
            targets.append(target)
    totals = np.zeros(len(histories), dtype=np.float64)
    counts = np.zeros(len(histories), dtype=np.int64)
    for start in range(0, len(prefixes), CHUNK):
        chunk = prefixes[start : start + CHUNK]
        users = model.user_rows(model.user_vectors(item_vectors, chunk))
        logits = (users @ rows.T).astype(np.float64) / temperature  # [P, N]
        for row, (prefix, target) in enumerate(zip(chunk, targets[start : start + CHUNK], strict=True)):
            logits[row, [i for i in prefix if i != target]] = -np.inf
        peak = logits.max(axis=1, keepdims=True)
        log_norm = peak[:, 0] + np.log(np.exp(logits - peak).sum(axis=1))
        chosen = np.asarray(targets[start : start + CHUNK])
        log_prob = logits[np.arange(len(chunk)), chosen] - log_norm
        who = np.asarray(owners[start : start + CHUNK])
        np.add.at(totals, who, log_prob)
        np.add.at(counts, who, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, totals / np.maximum(counts, 1), np.nan)


# ---------------------------------------------------------------------------------------------- statistics
def _clean(scores: Any, name: str) -> np.ndarray:
    values = np.asarray(scores, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError(f"{name}: no scores")
    if np.isnan(values).any():
        raise ValueError(f"{name}: {int(np.isnan(values).sum())} NaN score(s); drop those users first")
    return values


def attack_auc(member_scores, nonmember_scores) -> float:
    """ROC AUC of 'higher score = member': P(member > non-member) + P(tie) / 2 (Mann-Whitney U / m n)."""
    members, nonmembers = _clean(member_scores, "members"), _clean(nonmember_scores, "nonmembers")
    combined = np.concatenate([members, nonmembers])
    _, inverse, counts = np.unique(combined, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)  # 1-based rank of each distinct value's last copy
    average_rank = last - (counts - 1) / 2.0  # ties share the mean of their ranks
    ranks = average_rank[inverse]
    m, n = len(members), len(nonmembers)
    u_statistic = ranks[:m].sum() - m * (m + 1) / 2.0
    return float(u_statistic / (m * n))


def _rates(members: np.ndarray, nonmembers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Members and non-members at or above each candidate threshold (every distinct score, and +inf)."""
    thresholds = np.append(np.unique(np.concatenate([members, nonmembers])), np.inf)
    above_m = len(members) - np.searchsorted(np.sort(members), thresholds, side="left")
    above_n = len(nonmembers) - np.searchsorted(np.sort(nonmembers), thresholds, side="left")
    return above_m, above_n


def _clopper_pearson(successes: np.ndarray, trials: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """One-sided (1 - alpha) Clopper-Pearson lower and upper bounds of a binomial proportion."""
    from scipy.stats import beta

    k = np.asarray(successes, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        lower = np.where(k > 0, beta.ppf(alpha, k, trials - k + 1), 0.0)
        upper = np.where(k < trials, beta.ppf(1 - alpha, k + 1, trials - k), 1.0)
    return lower, upper


def epsilon_lower_bound(
    member_scores, nonmember_scores, delta: float, confidence: float | None = None
) -> float:
    """Smallest ε of any (ε, δ)-DP mechanism that allows this attack's best threshold; 0 if none beats chance.

    For the test 'score >= t' with true/false positive rates TPR, FPR, (ε, δ)-DP requires
    TPR <= e^ε FPR + δ and 1 - FPR <= e^ε (1 - TPR) + δ, so
    ε >= max(log((TPR - δ) / FPR), log((1 - FPR - δ) / (1 - TPR))), terms with a zero or negative
    argument ignored; the bound is the max over thresholds. An empirical LOWER bound from one attack
    (Jagielski et al. 2020; Nasr et al. 2021).

    confidence=None: the point estimate (rates taken as exact; loose and optimistic with few users).
    confidence=0.95: TPR replaced by its Clopper-Pearson lower bound and FPR by its upper bound (each at
    one-sided (1 - confidence) / 2), evaluated on the same (threshold, inequality) terms the point
    estimate can evaluate, so it is never above it. Report this one.
    """
    if not 0 <= delta < 1:
        raise ValueError(f"delta must be in [0, 1), got {delta}")
    members, nonmembers = _clean(member_scores, "members"), _clean(nonmember_scores, "nonmembers")
    m, n = len(members), len(nonmembers)
    above_m, above_n = _rates(members, nonmembers)
    tpr, fpr = above_m / m, above_n / n
    # The terms the point estimate can evaluate (finite and defined).
    usable_1 = (fpr > 0) & (tpr - delta > 0)
    usable_2 = (tpr < 1) & (1 - fpr - delta > 0)
    if confidence is not None:
        if not 0 < confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {confidence}")
        alpha = (1 - confidence) / 2
        tpr, _ = _clopper_pearson(above_m, m, alpha)
        _, fpr = _clopper_pearson(above_n, n, alpha)
    bounds = [0.0]
    with np.errstate(divide="ignore", invalid="ignore"):
        first = np.log((tpr - delta) / fpr)
        second = np.log((1 - fpr - delta) / (1 - tpr))
    for usable, values in ((usable_1, first), (usable_2, second)):
        values = values[usable & np.isfinite(values)]
        if values.size:
            bounds.append(float(values.max()))
    return max(bounds)


# ---------------------------------------------------------------------------------------------- a run
def inputs_from_record(run_dir: str | Path) -> dict[str, Any]:
    """`run_attack`'s inputs as the server recorded them in `RUN_DIR/run.json`: the command line's defaults.

    Also the accountant's claims, only to be shown next to the result: `private` (DP-SGD noise was on)
    and `epsilon_accountant` (each client's ε; None for a run without DP-SGD).
    """
    from shared.run_record import RUN_RECORD, RunRecord

    run_dir = Path(run_dir)
    record = RunRecord.load(run_dir / RUN_RECORD)
    dp_sgd = record.privacy.noise != "none"
    return {
        "artifact": record.artifact_path(run_dir).resolve(),
        "catalogue": record.catalogue,
        "delta": record.privacy.delta,
        "private": dp_sgd,
        "epsilon_accountant": record.privacy.epsilon if dp_sgd else None,
    }


def run_attack(
    out_dir: str | Path,
    members_file: str | Path | Sequence[str | Path],
    nonmembers_file: str | Path | Sequence[str | Path],
    *,
    artifact: str | Path,
    catalogue: str | Path,
    delta: float,
    max_users: int | None = None,
    seed: int = 0,
    confidence: float = CONFIDENCE,
    private: bool | None = None,
    epsilon_accountant: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Attack the published `artifact` (a folder); writes and returns `out_dir/attack.json`.

    members_file / nonmembers_file: one or more events files (fedrec events schema) of users that were
    / were not in training (a user in both is an error). catalogue: the catalogue those events refer to,
    in the published index's order. delta: the δ of the bounds. max_users: score at most this many users
    of each side, drawn with `seed` (scoring is one user-tower pass and one catalogue matmul per training
    pair, so this only bounds the time). private / epsilon_accountant: the run's claims, copied into the
    result for comparison and used for nothing else.
    """
    from shared.artifact import load_artifact
    from shared.model import ModelConfig, Recommender
    from shared.signing import run_public_key

    out_dir = Path(out_dir)
    published = load_artifact(artifact, public_key=run_public_key(artifact))  # the run's own key
    delta = float(delta)

    rng = np.random.default_rng(seed)
    members = _histories(catalogue, members_file, published.item_ids, max_users, rng)
    nonmembers = _histories(catalogue, nonmembers_file, published.item_ids, max_users, rng)
    both = sorted(set(members["users"]) & set(nonmembers["users"]))
    if both:
        raise ValueError(f"{len(both)} user(s) are in both the member and non-member files, e.g. {both[:3]}")

    model = Recommender(ModelConfig.from_dict(published.model_config))
    model.load_trainable_state(published.trainable_state)
    model.eval()
    item_vectors = published.item_vectors()
    if not np.allclose(model.item_rows(item_vectors), published.item_rows(), atol=1e-5):
        raise ValueError(f"{published.path}: the adapter's item bias does not match the published index")

    member_scores = membership_scores(model, item_vectors, members["histories"])
    nonmember_scores = membership_scores(model, item_vectors, nonmembers["histories"])
    scored_m = member_scores[~np.isnan(member_scores)]
    scored_n = nonmember_scores[~np.isnan(nonmember_scores)]
    if not len(scored_m) or not len(scored_n):
        raise ValueError(
            f"nothing to attack: {len(scored_m)} member(s) and {len(scored_n)} non-member(s) "
            "have two or more training items"
        )
    result = {
        "auc": attack_auc(scored_m, scored_n),
        "epsilon_lower_bound": epsilon_lower_bound(scored_m, scored_n, delta),
        "epsilon_lower_bound_95": epsilon_lower_bound(scored_m, scored_n, delta, confidence=confidence),
        "members": len(scored_m),
        "nonmembers": len(scored_n),
        "threat_model": THREAT_MODEL,
        "delta": delta,
        "confidence": confidence,
        "epsilon_accountant": epsilon_accountant,
        "private": private,
        "artifact": str(published.path),
        "artifact_version": published.version,
        "members_files": members["files"],
        "nonmembers_files": nonmembers["files"],
        "members_unscored": int(np.isnan(member_scores).sum()) + members["too_short"],
        "nonmembers_unscored": int(np.isnan(nonmember_scores).sum()) + nonmembers["too_short"],
        "mean_score_members": float(scored_m.mean()),
        "mean_score_nonmembers": float(scored_n.mean()),
        "max_users": max_users,
        "seed": seed,
    }
    (out_dir / "attack.json").write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    return result


def _histories(catalogue_path, files, item_ids: list[str], max_users: int | None, rng) -> dict[str, Any]:
    """Training histories (catalogue rows) of the users in `files`, optionally subsampled."""
    from shared.data import load_party

    paths = [files] if isinstance(files, (str, Path)) else list(files)
    if not paths:
        raise ValueError("no events file given")
    users, histories, too_short = [], [], 0
    with tempfile.TemporaryDirectory(prefix="fedrec-attack-") as quarantine:
        for path in paths:
            catalogue, _, data, _ = load_party(catalogue_path, path, quarantine)
            if list(catalogue["item_id"].astype(str)) != list(item_ids):
                raise ValueError(f"{catalogue_path}: catalogue order differs from the published index")
            users += data.users
            histories += data.train
            too_short += len(data.too_short)
    if len(set(users)) != len(users):
        raise ValueError("a user appears in more than one events file of the same side")
    if max_users is not None and len(users) > max_users:
        keep = np.sort(rng.choice(len(users), max_users, replace=False))
        users, histories = [users[i] for i in keep], [histories[i] for i in keep]
    return {"users": users, "histories": histories, "too_short": too_short, "files": [str(p) for p in paths]}


def print_attack(result: dict[str, Any], out_dir: str | Path) -> int:
    """Print the headline numbers of an attack; the exit status (1: the AUC is not a number)."""
    shown = {k: result[k] for k in ("auc", "epsilon_lower_bound", "epsilon_lower_bound_95", "members")}
    shown |= {"nonmembers": result["nonmembers"], "epsilon_accountant": result["epsilon_accountant"]}
    print(json.dumps(shown, indent=2))
    print(f"written: {Path(out_dir) / 'attack.json'}")
    return 0 if math.isfinite(result["auc"]) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m audit.membership", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--members", nargs="+", required=True, help="events file(s) of training users")
    parser.add_argument("--nonmembers", nargs="+", required=True, help="events file(s) of held-out users")
    parser.add_argument("--artifact", default=None, help="published index folder (default: the run record's)")
    parser.add_argument("--catalogue", default=None, help="catalogue file (default: the run record's)")
    parser.add_argument("--delta", type=float, default=None, help="default: the run's delta")
    parser.add_argument("--max-users", type=int, default=None, help="score at most this many users a side")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    given = {"artifact": args.artifact, "catalogue": args.catalogue, "delta": args.delta}
    # with every input given, no run record is needed (nor read): its claims are then not shown
    inputs = {} if None not in given.values() else inputs_from_record(args.run_dir)
    inputs |= {k: v for k, v in given.items() if v is not None}
    result = run_attack(
        args.run_dir, args.members, args.nonmembers, max_users=args.max_users, seed=args.seed, **inputs
    )
    return print_attack(result, args.run_dir)


if __name__ == "__main__":
    sys.exit(main())
