"""The `fedrec` command: thin; it parses arguments and calls the packages."""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
from dataclasses import asdict, replace
from pathlib import Path

# client/device/query_encoder.py's QUERY_ENCODERS and shared/artifact.py's INDEX_TYPES, spelled out here so
# that building the parser imports no torch or FAISS (tests/test_compressed_index.py holds them equal)
QUERY_ENCODERS = ("fp32", "bf16", "int8")
INDEX_TYPES = ("IndexFlatIP", "IndexHNSWFlat", "IndexIVFPQ")


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
    from simulations.run import console, simulate

    with console(verbose=args.verbose):
        summary = simulate(
            args.out,
            num_clients=args.clients,
            partition=args.partition,
            sizes=args.sizes,
            alpha=args.alpha,
            catalogue=args.catalogue,
            events=args.events,
            shop_seed=args.shop_seed,
            overrides=_overrides(args.run_config),
            partition_by=args.partition_by,
            quiet=not args.verbose,
        )
        print_summary(summary, Path(args.out))
        if not args.no_demo:
            print_demo(summary)
    return 0


# Control characters (line breaks included): printed raw they could rewrite the terminal or split a line.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _printable(text: str) -> str:
    """Text with control characters escaped (\\n, \\x1b), so what is printed is one plain line."""
    return _CONTROL.sub(lambda match: repr(match.group())[1:-1], text)


def _show(recs, as_json: bool) -> None:
    if as_json:  # JSON escapes control characters itself
        print(json.dumps([asdict(r) for r in recs], indent=2))
        return
    for rank, r in enumerate(recs, 1):
        price = f"  ${r.price:.2f}" if r.price == r.price and r.price is not None else ""
        print(f"{rank:2d}. {r.score:6.3f}  {_printable(r.item_id)}  {_printable(r.title)}{price}")
        if r.reasons:  # --explain: what earned the score (history items or query words), largest first
            shares = ", ".join(
                _printable(x.text)  # a new shopper's result: trending, its one reason says why
                if x.kind == "trending"
                else f"{_printable(x.text if x.kind != 'item' else x.text or x.key)} +{x.weight:.3f}"
                for x in r.reasons
            )
            print(f"      because: {shares}")


def _filters(args: argparse.Namespace):
    """--category / --brand / --min-price / --max-price as client.device.Filters (None: no filter)."""
    from client.device import Filters

    filters = Filters(
        categories=tuple(args.category or ()),
        brands=tuple(args.brand or ()),
        min_price=args.min_price,
        max_price=args.max_price,
    )
    return filters or None


def _ids(item_ids: list[str], shown: int = 5) -> str:
    """A few ids for a message, each quoted and shortened: the rest is counted, not printed."""
    short = [repr(i) if len(i) <= 40 else repr(i[:37] + "...") for i in item_ids[:shown]]
    more = f" and {len(item_ids) - shown} more" if len(item_ids) > shown else ""
    return ", ".join(short) + more


def _pinned_key(args: argparse.Namespace) -> Path:
    """--publisher-key, else the run folder's own key; said on stderr (stdout may be --json)."""
    from client.device import publisher_key_file
    from shared.signing import key_id, load_public_key

    path = publisher_key_file(args.artifact, args.publisher_key)
    source = "" if args.publisher_key else ", the run folder's own: pass --publisher-key to pin another"
    print(f"pinned publisher key {path} (id {key_id(load_public_key(path))[:16]}{source})", file=sys.stderr)
    return path


def cmd_recommend(args: argparse.Namespace) -> int:
    """Arguments and history are checked before the artifact loads, the artifact before the model does;
    ids the catalogue lacks are reported, and nothing left to recommend is exit 1, not empty output.
    No --history (a new shopper): the artifact's trending list, if it carries one."""
    from client.device import Device, check_k, read_history

    check_k(args.k)
    if args.history is None:
        return _recommend_trending(args)
    history, purchased = read_history(args.history)
    if not history:
        raise ValueError(
            f"history {args.history}: no item engaged with (views do not count); try search, or leave "
            "--history out for the trending list"
        )
    device = Device(args.artifact, publisher_key=_pinned_key(args))
    version, say = device.artifact.version, f"fedrec {args.command}:"
    unknown = device.unknown(history)
    known = [item_id for item_id in history if item_id in device.position]
    if not known:
        raise ValueError(f"no history item id is in the published catalogue {version}: {_ids(unknown)}")
    if unknown:
        print(
            f"{say} {len(unknown)} of {len(set(history))} history item ids are not in the published "
            f"catalogue {version}, skipped: {_ids(unknown)}",
            file=sys.stderr,
        )
    exclude = purchased | set(args.exclude or [])
    unknown = device.unknown(args.exclude or [])
    if unknown:
        print(f"{say} {len(unknown)} --exclude ids not in the catalogue: {_ids(unknown)}", file=sys.stderr)
    if device.left_to_recommend(known, exclude) == 0:
        print(
            f"{say} nothing to recommend: the history and exclusions cover all {len(device.position)} "
            f"items of the published catalogue {version}",
            file=sys.stderr,
        )
        return 1
    options = {"filters": _filters(args), "diversity": args.diversity, "explain": args.explain}
    _show(device.recommend(known, k=args.k, exclude=exclude, **options), args.json)
    return 0


def _recommend_trending(args: argparse.Namespace) -> int:
    """A new shopper's recommendations: the trending list less --exclude, said so on stderr (its reasons
    shown with --explain); exit 1 if nothing of it is left."""
    from client.device import Device

    filters = _filters(args)
    device = Device(args.artifact, publisher_key=_pinned_key(args))
    say = f"fedrec {args.command}:"
    options = {"exclude": args.exclude or [], "filters": filters, "diversity": args.diversity}
    recs = device.recommend([], k=args.k, **options)
    recs = recs if args.explain else [replace(r, reasons=()) for r in recs]
    listed = device.artifact.trending
    if not recs:
        print(
            f"{say} nothing to recommend: no item of the trending list ({len(listed.item_ids)} items) is "
            "left once exclusions and filters apply",
            file=sys.stderr,
        )
        return 1
    print(
        f"{say} no history: the trending list of {device.artifact.version} (a new shopper)", file=sys.stderr
    )
    _show(recs, args.json)
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    """k, the query and the filters are checked (a long query is cut, and said so) before anything loads."""
    from client.device import MAX_QUERY_CHARS, Device, check_k, clean_query, read_history

    check_k(args.k)
    query, cut = clean_query(args.query)
    filters = _filters(args)
    if (args.personalize > 0) != bool(args.history):
        raise ValueError("personalized search needs both --history and --personalize (a share in (0, 1])")
    history = read_history(args.history)[0] if args.history else None
    if cut:
        print(
            f"fedrec {args.command}: the query is {len(args.query.strip())} characters long; "
            f"only its first {MAX_QUERY_CHARS} are searched",
            file=sys.stderr,
        )
    device = Device(args.artifact, publisher_key=_pinned_key(args), query_encoder=args.query_encoder)
    options = {"filters": filters, "diversity": args.diversity, "explain": args.explain}
    if history is not None:
        options.update(history=[i for i in history if i in device.position], personalize=args.personalize)
    _show(device.search(query, k=args.k, **options), args.json)
    if args.query_encoder != "fp32":
        print(f"fedrec {args.command}: {device.query_encoder_note}", file=sys.stderr)
    return 0


def cmd_similar(args: argparse.Namespace) -> int:
    """Substitutes (nearest items) or, with --complements, items of other categories that go with it."""
    from client.device import Device, check_k

    check_k(args.k)
    filters = _filters(args)
    device = Device(args.artifact, publisher_key=_pinned_key(args))
    find = device.complements if args.complements else device.similar
    _show(find(args.item_id, k=args.k, filters=filters, diversity=args.diversity), args.json)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """The device as a local HTTP service and page (client/device/serve.py), until interrupted."""
    from client.device import Device
    from client.device.serve import LOCAL_HOSTS, serve

    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be between 0 and 65535, got {args.port}")
    device = Device(args.artifact, publisher_key=_pinned_key(args), query_encoder=args.query_encoder)
    if args.host not in LOCAL_HOSTS:
        print(
            f"fedrec serve: serving {args.host}, not only this machine: anyone who reaches it can use it",
            file=sys.stderr,
        )
    serve(device, args.host, args.port)
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    """`index add`: new items by their text, published as the next round, signed with --key."""
    from client.device.index_add import add_items

    index_type = None if args.index_type == "auto" else args.index_type
    folder = add_items(args.artifact, args.items, args.key, index_type=index_type)
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    added = manifest["info"]["items_added"]["count"]
    print(
        f"published {folder} ({manifest['version']}): {manifest['n_items']} items, {added} added by text, "
        f"index {manifest['index_type']}"
    )
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from audit.ledgers import main as audit_main

    status = audit_main(args.run_dir, args.cap)
    if args.attack:
        from audit.membership import inputs_from_record, print_attack, run_attack

        members = sorted(str(p) for p in Path(args.run_dir).glob("partitions/*/events.csv"))
        if not members:
            raise FileNotFoundError(f"{args.run_dir}: no partitions/*/events.csv (members) to attack with")
        # artifact, catalogue and δ as the server recorded them (RUN_DIR/run.json), passed explicitly
        inputs = inputs_from_record(args.run_dir)
        result = run_attack(args.run_dir, members, args.attack, max_users=args.max_users, **inputs)
        status = max(status, print_attack(result, args.run_dir))
    return status


def cmd_canary_audit(args: argparse.Namespace) -> int:
    """Exit 1 if the shipped build is flagged, or a planted bug is not (the audit would lack power)."""
    from simulations.canary_audit import AUDIT_TARGET_EPSILON, canary_audit, describe

    overrides = {"target-epsilon": AUDIT_TARGET_EPSILON, **_overrides(args.run_config)}
    status = 0
    for build in args.builds:
        record = canary_audit(Path(args.out), build, args.canaries, overrides=overrides)
        print(describe(record), flush=True)
        status = max(status, int(record["flagged"] != (build != "correct")))
    print(f"results: {Path(args.out).resolve()}/canary-audit-<build>.json")
    return status


def cmd_check(args: argparse.Namespace) -> int:
    """Exit 0 when the catalogue is usable (quarantined event rows are reported, not fatal), 1 when a file
    is unusable as it is."""
    from client.check import check_files, describe
    from shared.schema import SchemaError

    try:
        result = check_files(args.catalogue, args.events, args.quarantine)
    except SchemaError as err:
        print(f"fedrec check: unusable: {_printable(' '.join(str(err).split()))}", file=sys.stderr)
        return 1
    print("\n".join(_printable(line) for line in describe(result)))
    return 0


def cmd_ledger(args: argparse.Namespace) -> int:
    """`ledger repair`: exit 0 when repaired or nothing to do, 1 when the chain is broken beyond a torn last
    line (a broken chain is evidence: never repaired)."""
    from shared.ledger import DEFAULT_REPAIR_REASON, Ledger, LedgerError

    path = Path(args.path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no ledger file")
    ledger = Ledger(path)
    try:
        repair = ledger.repair(args.reason or DEFAULT_REPAIR_REASON)
        lines, head = ledger.head()
    except LedgerError as err:
        message = _printable(" ".join(str(err).split()))
        print(f"fedrec ledger repair: not repaired: {message}", file=sys.stderr)
        return 1
    if repair is None:
        print(f"{_printable(str(path))}: nothing to repair (no torn last line)")
    else:
        print(
            f"moved a torn last line of {repair.torn_bytes} bytes (sha256 {repair.torn_sha256}) aside to"
            f" {_printable(str(path.parent / repair.moved_to))}; recorded as repair entry seq {lines - 1}"
        )
    print(f"head: {lines} line(s), last line sha256 {head}")
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    """certs / keys: files for the operator; run: `flwr run`, then a bounded wait on the run's status."""
    from fedrec import deploy

    if args.action == "certs":
        files = deploy.make_certs(args.out, tuple(args.host or deploy.LOOPBACK), days=args.days)
        secret = {
            deploy.CA_KEY: "private: the operator's, offline",
            deploy.SERVER_KEY: "private: the SuperLink's",
        }
        for name, path in files.items():
            print(f"{name}: {path}" + (f"  ({secret[name]})" if name in secret else ""))
        return 0
    if args.action == "keys":
        for private, public in deploy.make_keys(args.out, args.nodes):
            print(f"{private}  (private: give it to that SuperNode only)  {public}  (register it)")
        return 0
    env = deploy.flower_env(args.flwr_home)
    run_id = deploy.start_run(args.app, args.connection, args.run_config, env, args.federation_config)
    print(
        f"run {run_id} submitted; waiting at most {args.timeout:.0f} s ({args.pending_timeout:.0f} s pending)"
    )
    try:
        status = deploy.wait_for_run(run_id, args.connection, env, args.timeout, args.pending_timeout)
    except deploy.RunFailed as err:
        with contextlib.suppress(RuntimeError):
            print(deploy.run_logs(run_id, args.connection, env)[-6000:], file=sys.stderr)
        print(f"fedrec deploy run: {_printable(str(err))}", file=sys.stderr)
        return 1
    logs = deploy.run_logs(run_id, args.connection, env)
    for line in logs.splitlines():
        if "published global item index" in line or " ε = " in line or "NOT PRIVATE" in line:
            print(_printable(line))
    print(f"run {run_id}: {status}")
    return 0


def _publisher_key_option(parser: argparse.ArgumentParser) -> None:
    """--publisher-key, for the commands that load a published artifact."""
    parser.add_argument(
        "--publisher-key",
        metavar="FILE",
        help="the publisher's public key (PEM) to pin (default: the run folder's server/publisher.pub)",
    )


def _query_encoder_option(parser: argparse.ArgumentParser) -> None:
    """--query-encoder, for the commands that encode a text query on the device."""
    parser.add_argument(
        "--query-encoder",
        choices=QUERY_ENCODERS,
        default="fp32",
        help="precision of the query encoder: bf16 or int8 are checked against fp32 on catalogue titles at "
        "the first search and used only where they agree (cosine >= 0.99, top-10 overlap >= 0.95)",
    )


def _result_options(parser: argparse.ArgumentParser, explain: str | None) -> None:
    """Filters, diversity (and --explain) for the on-device commands."""
    parser.add_argument("--category", action="append", help="only this category or one below it (repeatable)")
    parser.add_argument("--brand", action="append", help="only this brand (repeatable)")
    parser.add_argument("--min-price", type=float, help="only items priced at least this")
    parser.add_argument("--max-price", type=float, help="only items priced at most this")
    parser.add_argument(
        "--diversity",
        type=float,
        default=0.0,
        help="MMR re-ranking for variety, 0 (off, default) to 1 (variety over relevance)",
    )
    if explain:
        parser.add_argument("--explain", action="store_true", help=f"show {explain}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedrec", description="Federated, differentially private recommender"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser("simulate", help="run a federated simulation and publish the item index")
    sim.add_argument("--out", default="runs/demo", help="run folder (default: runs/demo)")
    sim.add_argument(
        "--clients",
        type=int,
        default=3,
        help="number of simulated clients (SuperNodes); 3 by default, so that SecAgg+ hides one share",
    )
    sim.add_argument("--partition", default="iid", choices=["iid", "dirichlet", "user", "sizes"])
    sim.add_argument(
        "--sizes",
        type=lambda text: [int(n) for n in text.split(",")],
        help="--partition sizes: users of each client but the last, e.g. 50 (the last takes the rest)",
    )
    sim.add_argument(
        "--alpha", type=float, default=0.5, help="Dirichlet concentration for --partition dirichlet"
    )
    sim.add_argument(
        "--partition-by",
        metavar="COLUMN",
        help="natural partitions: one client per value of this column of the logs, e.g. shop or region"
        " (--clients and --partition are then not used)",
    )
    sim.add_argument("--catalogue", help="catalogue CSV/Parquet (default: the embedded shop)")
    sim.add_argument("--events", help="behaviour-log CSV/Parquet (default: the embedded shop)")
    sim.add_argument("--shop-seed", type=int, default=0, help="seed of the embedded shop generator")
    sim.add_argument(
        "--run-config", action="append", default=[], help='Flower run-config overrides, "k=v k2=v2"'
    )
    sim.add_argument("--no-demo", action="store_true", help="skip the example recommendations at the end")
    sim.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="Flower's and Ray's logs, and the simulated clients' output (quiet by default)",
    )
    sim.set_defaults(func=cmd_simulate)

    rec = sub.add_parser("recommend", help="on-device recommendations from a published index")
    rec.add_argument("--artifact", required=True, help="published index folder (e.g. runs/demo/index/v0003)")
    rec.add_argument(
        "--history",
        help="comma-separated item ids, or a file of them / of events; "
        "left out: a new shopper, who gets the index's trending list",
    )
    rec.add_argument("--exclude", nargs="*", help="item ids never to recommend (e.g. already purchased)")
    _publisher_key_option(rec)
    rec.add_argument("-k", type=int, default=10)
    rec.add_argument("--json", action="store_true")
    _result_options(rec, explain="the history items that added most to each score")
    rec.set_defaults(func=cmd_recommend)

    search = sub.add_parser("search", help="on-device product search in a published index")
    search.add_argument("query")
    search.add_argument("--artifact", required=True)
    _publisher_key_option(search)
    search.add_argument("-k", type=int, default=10)
    search.add_argument("--json", action="store_true")
    search.add_argument("--history", help="personalized search: the shopper's history (as for recommend)")
    search.add_argument(
        "--personalize",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="with --history: rank by (1 - SHARE) x query + SHARE x the shopper's profile (default 0)",
    )
    _result_options(search, explain="the query words (and history items) that added most to each score")
    _query_encoder_option(search)
    search.set_defaults(func=cmd_search)

    sim_items = sub.add_parser("similar", help="on-device: items like this one, or that go with it")
    sim_items.add_argument("item_id")
    sim_items.add_argument("--artifact", required=True)
    sim_items.add_argument(
        "--complements",
        action="store_true",
        help="items of other categories that go with it (the model's next-item prediction from it)",
    )
    _publisher_key_option(sim_items)
    sim_items.add_argument("-k", type=int, default=10)
    sim_items.add_argument("--json", action="store_true")
    _result_options(sim_items, explain=None)
    sim_items.set_defaults(func=cmd_similar)

    srv = sub.add_parser("serve", help="on-device: a local HTTP API and page over a published index")
    srv.add_argument("--artifact", required=True, help="published index folder, or its root (LATEST)")
    srv.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine)")
    srv.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    _query_encoder_option(srv)
    _publisher_key_option(srv)
    srv.set_defaults(func=cmd_serve)

    idx = sub.add_parser("index", help="publisher: change a published index")
    idx_actions = idx.add_subparsers(dest="action", required=True)
    add = idx_actions.add_parser(
        "add", help="append new items from their text alone as the next signed version (no retraining)"
    )
    add.add_argument("--artifact", required=True, help="the publication root (or its newest v<NNNN> folder)")
    add.add_argument("--items", required=True, help="catalogue CSV/Parquet of the new items only")
    add.add_argument("--key", required=True, help="the publisher's private key (publisher.key) to sign with")
    add.add_argument(
        "--index-type",
        choices=("auto", *INDEX_TYPES),
        default="auto",
        help="the published index: auto (default) is exact up to 50,000 items, IndexIVFPQ (compressed, "
        "re-ranked exactly) above",
    )
    add.set_defaults(func=cmd_index)

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

    can = sub.add_parser(
        "canary-audit",
        help="one-run privacy audit (canaries): a lower bound on ε of a partner's DP-SGD, in its own run",
    )
    can.add_argument("--out", default="runs/canary-audit", help="audit run folder")
    can.add_argument(
        "--builds",
        nargs="+",
        default=["correct"],
        choices=["correct", "noise-off", "seeded"],
        help="correct: the shipped code; noise-off / seeded: planted bugs the audit must flag",
    )
    can.add_argument("--canaries", type=int, default=2000, help="m (a quarter are guessed)")
    can.add_argument(
        "--run-config",
        action="append",
        default=[],
        help='run-config overrides, "k=v k2=v2" (default: the demo config at target-epsilon=2)',
    )
    can.set_defaults(func=cmd_canary_audit)

    chk = sub.add_parser("check", help="validate a partner's catalogue and events without training")
    chk.add_argument("--catalogue", required=True, help="item catalogue CSV/Parquet")
    chk.add_argument("--events", help="behaviour-log CSV/Parquet (optional: check the catalogue only)")
    chk.add_argument(
        "--quarantine",
        metavar="DIR",
        help="private folder for quarantined rows (default: quarantine/ next to the events file)",
    )
    chk.set_defaults(func=cmd_check)

    led = sub.add_parser("ledger", help="maintain a partner's privacy ledger")
    led_actions = led.add_subparsers(dest="action", required=True)
    rep = led_actions.add_parser(
        "repair", help="move a torn last line (an interrupted append) aside, recorded as a chained entry"
    )
    rep.add_argument("path", help="the privacy ledger (privacy-ledger.jsonl)")
    rep.add_argument("--reason", help="why, recorded in the repair entry (default: an interrupted append)")
    rep.set_defaults(func=cmd_ledger)

    dep = sub.add_parser("deploy", help="operator helpers for a deployment: TLS files, SuperNode keys, runs")
    dep_actions = dep.add_subparsers(dest="action", required=True)
    certs = dep_actions.add_parser("certs", help="a development CA and the SuperLink's TLS certificate")
    certs.add_argument("out", help="folder for ca.crt, ca.key, server.pem, server.key")
    certs.add_argument(
        "--host",
        action="append",
        help="a name or IP the certificate is for (repeat; default: 127.0.0.1 localhost)",
    )
    certs.add_argument("--days", type=int, default=365, help="validity (default: 365)")
    certs.set_defaults(func=cmd_deploy)
    keys = dep_actions.add_parser("keys", help="SuperNode authentication key pairs (OpenSSH, EC P-384)")
    keys.add_argument("out", help="folder for supernode-<i> (private) and supernode-<i>.pub")
    keys.add_argument("--nodes", type=int, required=True, help="how many SuperNodes")
    keys.set_defaults(func=cmd_deploy)
    drun = dep_actions.add_parser(
        "run", help="flwr run with no runtime installs, then wait (bounded) for the run to finish"
    )
    drun.add_argument("app", nargs="?", default=".", help="the Flower app folder (default: .)")
    drun.add_argument("connection", nargs="?", help="SuperLink connection in $FLWR_HOME/config.toml")
    drun.add_argument("--run-config", action="append", default=[], help='run-config overrides, "k=v k2=v2"')
    drun.add_argument(
        "--federation-config",
        action="append",
        default=[],
        help='a local simulation\'s settings, e.g. "num-supernodes=2 client-resources-num-cpus=1"',
    )
    drun.add_argument("--flwr-home", help="FLWR_HOME (default: the environment's, else ~/.flwr)")
    drun.add_argument("--timeout", type=float, default=3600, help="seconds before the run is stopped")
    drun.add_argument(
        "--pending-timeout",
        type=float,
        default=300,
        help="seconds a run may stay pending before it is stopped",
    )
    drun.set_defaults(func=cmd_deploy)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    # SchemaError is a ValueError, ArtifactError a RuntimeError; anything else is a bug, with its traceback
    except (ValueError, RuntimeError, OSError) as err:
        message = " ".join(str(err).split()) or type(err).__name__  # one line, whatever the library wrote
        print(f"fedrec {args.command}: error: {_printable(message)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
