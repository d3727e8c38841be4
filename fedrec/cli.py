"""The `fedrec` command: thin; it parses arguments and calls the packages."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _overrides(pairs: list[str]) -> dict[str, str]:
    """`--run-config "key=value key2=value2"` as Flower writes it (values parsed by RunConfig)."""
    out: dict[str, str] = {}
    for chunk in pairs:
        for pair in chunk.split():
            key, sep, value = pair.partition("=")
            if not sep:
                raise SystemExit(f"--run-config expects key=value pairs, got {pair!r}")
            out[key.strip()] = value.strip().strip("\"'")
    return out


def cmd_simulate(args: argparse.Namespace) -> int:
    from simulations.report import print_demo, print_summary
    from simulations.run import simulate

    summary = simulate(
        args.out,
        num_clients=args.clients,
        partition=args.partition,
        alpha=args.alpha,
        catalogue=args.catalogue,
        events=args.events,
        shop_seed=args.shop_seed,
        overrides=_overrides(args.run_config),
    )
    print_summary(summary, Path(args.out))
    if not args.no_demo:
        print_demo(summary)
    return 0


def _show(recs, as_json: bool) -> None:
    if as_json:
        print(json.dumps([r.__dict__ for r in recs], indent=2))
        return
    for rank, r in enumerate(recs, 1):
        price = f"  ${r.price:.2f}" if r.price == r.price and r.price is not None else ""
        print(f"{rank:2d}. {r.score:6.3f}  {r.item_id}  {r.title}{price}")


def cmd_recommend(args: argparse.Namespace) -> int:
    from client.device import Device, read_history

    history, purchased = read_history(args.history)
    device = Device(args.artifact)
    _show(device.recommend(history, k=args.k, exclude=purchased | set(args.exclude or [])), args.json)
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from client.device import Device

    _show(Device(args.artifact).search(args.query, k=args.k), args.json)
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from audit.ledgers import main as audit_main

    status = audit_main(args.run_dir, args.cap)
    if args.attack:
        from audit.membership import main as attack_main

        members = sorted(str(p) for p in Path(args.run_dir).glob("partitions/*/events.csv"))
        if not members:
            raise FileNotFoundError(f"{args.run_dir}: no partitions/*/events.csv (members) to attack with")
        attack = ["--members", *members, "--nonmembers", args.attack, "--max-users", str(args.max_users)]
        status = max(status, attack_main([args.run_dir, *attack]))
    return status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedrec", description="Federated, differentially private recommender"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser("simulate", help="run a federated simulation and publish the item index")
    sim.add_argument("--out", default="runs/demo", help="run folder (default: runs/demo)")
    sim.add_argument("--clients", type=int, default=2, help="number of simulated clients (SuperNodes)")
    sim.add_argument("--partition", default="iid", choices=["iid", "dirichlet", "user"])
    sim.add_argument(
        "--alpha", type=float, default=0.5, help="Dirichlet concentration for --partition dirichlet"
    )
    sim.add_argument("--catalogue", help="catalogue CSV/Parquet (default: the embedded shop)")
    sim.add_argument("--events", help="behaviour-log CSV/Parquet (default: the embedded shop)")
    sim.add_argument("--shop-seed", type=int, default=0, help="seed of the embedded shop generator")
    sim.add_argument(
        "--run-config", action="append", default=[], help='Flower run-config overrides, "k=v k2=v2"'
    )
    sim.add_argument("--no-demo", action="store_true", help="skip the example recommendations at the end")
    sim.set_defaults(func=cmd_simulate)

    rec = sub.add_parser("recommend", help="on-device recommendations from a published index")
    rec.add_argument("--artifact", required=True, help="published index folder (e.g. runs/demo/index/v0003)")
    rec.add_argument(
        "--history", required=True, help="comma-separated item ids, or a file of them / of events"
    )
    rec.add_argument("--exclude", nargs="*", help="item ids never to recommend (e.g. already purchased)")
    rec.add_argument("-k", type=int, default=10)
    rec.add_argument("--json", action="store_true")
    rec.set_defaults(func=cmd_recommend)

    search = sub.add_parser("search", help="on-device product search in a published index")
    search.add_argument("query")
    search.add_argument("--artifact", required=True)
    search.add_argument("-k", type=int, default=10)
    search.add_argument("--json", action="store_true")
    search.set_defaults(func=cmd_search)

    aud = sub.add_parser("audit", help="verify every privacy ledger of a run and report ε per client")
    aud.add_argument("run_dir")
    aud.add_argument("--cap", type=float, help="ε cap to check (default: the cap each ledger recorded)")
    aud.add_argument(
        "--attack",
        metavar="NONMEMBERS",
        help="also run the membership-inference attack: events file of users held out of training",
    )
    aud.add_argument("--max-users", type=int, default=600, help="attack: users scored per side")
    aud.set_defaults(func=cmd_audit)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, RuntimeError, FileNotFoundError) as err:
        print(f"fedrec {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
