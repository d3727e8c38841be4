"""What `fedrec simulate` prints at the end: the summary table, then what a device would show."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from shared.data import user_data
from shared.run_record import RUN_RECORD
from shared.schema import load_catalogue, load_events

if TYPE_CHECKING:
    from client.device import Recommendation

DEMO_QUERIES = ("ultralight tent", "noise cancelling headphones", "coffee grinder")


def print_summary(summary: dict, out: Path) -> None:
    rows = [("fedrec (" + summary["label"] + ")", summary["recall@10"], summary["ndcg@10"])]
    for name, m in summary["baselines"].items():
        rows.append((name.replace("_", "-"), m["recall@10"], m["ndcg@10"]))
    print("\n== results (test: last item per user, full ranking, history excluded) ==")
    print(f"{'model':34s} {'Recall@10':>9s} {'NDCG@10':>9s}")
    for name, recall, ndcg in rows:
        print(f"{name:34s} {recall:9.4f} {ndcg:9.4f}")
    client_level = summary.get("client_level")
    federation = summary.get("federation")
    if summary["private"] and federation:
        views = ", ".join(f"{e:.2f} against the {v!r} view" for v, e in federation["epsilon"].items())
        print(
            f"privacy: user-level (ε, δ={summary['delta']:g})-DP across the federation (DP-FedAvg, noise"
            f" shared by {federation['noise_shares']} clients, σ = {federation['sigma']:.3f}, q ="
            f" {federation['sample_rate']:g}, PRV, {federation['rounds']} rounds): ε = {views}"
        )
        print("  ('aggregate': a server that sees only the SecAgg+ sum; 'share': one that sees one share)")
        if federation.get("trending_released"):
            print(
                f"  composed over round 0 too: the trending list for new shoppers (σ_T ="
                f" {federation['trending_sigma']:.3g} against the offered view, every user's votes, q = 1)"
            )
    elif summary["private"]:
        eps = ", ".join(f"{c}: {e:.2f}" for c, e in summary["epsilon"].items())
        print(
            f"privacy: user-level (ε, δ={summary['delta']:g})-DP per client, PRV accountant, composed over "
            "all "
            f"rounds: {eps}"
        )
    if client_level:
        print(
            f"privacy: client-level (ε, δ={client_level['delta']:g})-DP across clients, Flower RDP"
            " accountant,"
            f" {client_level['releases']} releases: ε = {client_level['epsilon']:.2f}"
            f" (σ = {client_level['noise_multiplier']:g}, C = {client_level['clipping_norm']:g})"
        )
    if not summary["private"] and not client_level:
        print("privacy: NONE — this run was NON-PRIVATE (no DP-SGD); no ε applies")
    if summary.get("secure_aggregation"):
        print("secure aggregation: SecAgg+ — the server saw only the sum of the clients' updates")
    print(f"published index: {summary['artifact']}")
    if summary["private"] or client_level:
        print(f"privacy audit:   fedrec audit {out}")
    print(f"summary: {out / 'summary.json'}   run record (per round): {out / RUN_RECORD}")
    print(f"wall time {summary['wall_time_s']:.0f} s")


def print_demo(summary: dict, n_users: int = 3, k: int = 5) -> None:
    """Example recommendations for a few users (their own history, on 'their device'), and a search."""
    from client.device import Device
    from shared.signing import run_public_key

    # the run's own key; the demo device keeps its state (newest accepted round) inside the run folder
    device = Device(
        summary["artifact"],
        publisher_key=run_public_key(summary["artifact"]),
        state_dir=Path(summary["config"]["run-dir"]) / "device",
    )
    data = summary["data"]
    catalogue = load_catalogue(data["catalogue"])
    events, _ = load_events(
        Path(summary["config"]["central-eval"]), catalogue, Path(summary["config"]["run-dir"]) / "quarantine"
    )
    index = {item: i for i, item in enumerate(catalogue["item_id"])}
    users = user_data(events, index)
    titles = pd.Series(catalogue["title"].values, index=catalogue["item_id"])
    ids = list(catalogue["item_id"])
    for user, train, valid in list(zip(users.users, users.train, users.valid, strict=True))[:n_users]:
        history = [ids[i] for i in train + [valid]]
        purchased = set(events[(events.user_id == user) & (events.event == "purchase")]["item_id"])
        print(f"\n-- user {user}: last items: " + " | ".join(titles[h] for h in history[-3:]))
        for rank, r in enumerate(device.recommend(history, k=k, exclude=purchased), 1):
            print(result_line(rank, r))
    for query in DEMO_QUERIES:
        print(f"\n-- search: {query!r}")
        for rank, r in enumerate(device.search(query, k=k), 1):
            print(result_line(rank, r))


def result_line(rank: int, r: Recommendation) -> str:
    """One demo result line; a price or category the catalogue lacks (None) is left out, not a crash."""
    price = "" if r.price is None or math.isnan(r.price) else f"${r.price:.2f}"
    about = ", ".join(part for part in (r.category, price) if part)
    return f"   {rank}. {r.title}  " + (f"({about})  " if about else "") + f"score {r.score:.3f}"
