"""Empirical privacy audit: membership-inference AUC of a DP run vs a non-private run of the same config.

    python -m benchmarks.membership [--users 3000] [--out benchmarks/results]

The embedded shop (seeded) is generated, 20% of its users are held out of training (non-members, same
distribution), the rest are split over 2 clients, and two federations are trained with the same
config except `private`: user-level DP (the default config) and NON-PRIVATE. Each published artifact
is then attacked with audit/membership.py's loss-threshold attack (members: training users; non-members:
held-out users; at most `--max-users` of each). Results: `membership.md` and `membership.json`.

Reading it: AUC 0.5 means the attack cannot tell members from non-members. The ε lower bound
(Clopper-Pearson, 95%) is what this one attack proves about the published model. It must stay below
the accountant's ε for the DP run, and it says nothing about stronger attacks.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from audit.membership import inputs_from_record, run_attack
from shared.schema import load_catalogue, load_events
from simulations.run import simulate
from simulations.shop import ShopConfig, write_shop

ARMS = {"user-level DP": {}, "NON-PRIVATE": {"private": False}}


def split_members(events_path: Path, catalogue_path: Path, out: Path, holdout: float, seed: int):
    """Write members.csv / nonmembers.csv (whole users, raw rows) and return their paths and sizes."""
    catalogue = load_catalogue(catalogue_path)
    events, _ = load_events(events_path, catalogue, out / "quarantine")
    users = np.array(sorted(events["user_id"].unique()))
    rng = np.random.default_rng(seed)
    held = set(rng.choice(users, int(round(holdout * len(users))), replace=False))
    is_held = events["user_id"].isin(held)
    members, nonmembers = out / "members.csv", out / "nonmembers.csv"
    events[~is_held].to_csv(members, index=False)
    events[is_held].to_csv(nonmembers, index=False)
    return members, nonmembers, len(users) - len(held), len(held)


def run(out: Path, users: int, holdout: float, max_users: int, seed: int, overrides: dict) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    catalogue, events = write_shop(out / "data", ShopConfig(n_users=users, seed=seed))
    members, nonmembers, n_members, n_held = split_members(events, catalogue, out, holdout, seed)
    rows = []
    for label, arm in ARMS.items():
        started = time.time()
        run_dir = out / label.replace(" ", "-").lower()
        summary = simulate(
            run_dir,
            num_clients=2,
            catalogue=str(catalogue),
            events=str(members),
            overrides={**overrides, **arm},
        )
        inputs = inputs_from_record(run_dir)  # artifact, catalogue and δ as the server recorded them
        attack = run_attack(run_dir, members, nonmembers, max_users=max_users, seed=seed, **inputs)
        rows.append(
            {
                "run": label,
                "epsilon_accountant": max(summary["epsilon"].values()) if summary["epsilon"] else None,
                "delta": summary["delta"],
                "recall@10": summary["recall@10"],
                "auc": attack["auc"],
                "epsilon_lower_bound": attack["epsilon_lower_bound"],
                "epsilon_lower_bound_95": attack["epsilon_lower_bound_95"],
                "members_scored": attack["members"],
                "nonmembers_scored": attack["nonmembers"],
                "wall_time_s": round(time.time() - started, 1),
                "config": summary["config"],
            }
        )
    return {"users": users, "members": n_members, "nonmembers": n_held, "seed": seed, "rows": rows}


def write_report(result: dict, out: Path) -> Path:
    (out / "membership.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Membership inference: DP vs non-private (same config)",
        "",
        f"Embedded shop, {result['users']} users (seed {result['seed']}): {result['members']} trained on"
        f" (members), {result['nonmembers']} held out (non-members, same distribution). Loss-threshold"
        " attack on the published artifact (audit/membership.py)."
        " Command: `python -m benchmarks.membership`.",
        "",
        "| run | accountant ε (δ=1e-5, user-level) | test Recall@10 | attack AUC | ε lower bound (point) |"
        " ε lower bound (95%) | members / non-members scored | wall time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        eps = "none (non-private)" if r["epsilon_accountant"] is None else f"{r['epsilon_accountant']:.2f}"
        lines.append(
            f"| {r['run']} | {eps} | {r['recall@10']:.4f} | {r['auc']:.4f} | {r['epsilon_lower_bound']:.3f} |"
            f" {r['epsilon_lower_bound_95']:.3f} | {r['members_scored']} / {r['nonmembers_scored']} |"
            f" {r['wall_time_s']:.0f} s |"
        )
    lines += [
        "",
        "AUC 0.5: the attack cannot tell members from non-members. The 95% lower bound is what this one"
        " attack proves about the model; it must not exceed the accountant's ε for the DP run (it would"
        " mean a bug), and a small value does not prove privacy against stronger attackers.",
        "",
    ]
    path = out / "membership.md"
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.membership", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", default="benchmarks/results", help="where membership.md/json go")
    parser.add_argument("--work", default="runs/membership", help="run folders (not committed)")
    parser.add_argument("--users", type=int, default=3000, help="users of the embedded shop")
    parser.add_argument("--holdout", type=float, default=0.2, help="fraction of users held out")
    parser.add_argument("--max-users", type=int, default=600, help="users scored per side")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-config", default="", help='overrides for both runs, "k=v k2=v2"')
    args = parser.parse_args(argv)
    overrides = dict(pair.split("=", 1) for pair in args.run_config.split())
    result = run(Path(args.work), args.users, args.holdout, args.max_users, args.seed, overrides)
    print(f"written: {write_report(result, Path(args.out))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
