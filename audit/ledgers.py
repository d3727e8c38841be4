"""`fedrec audit RUN_DIR`: verify every client's privacy ledger and state what ε the run actually spent.

The auditor trusts neither side. It verifies each ledger's hash chain, rebuilds the DP history from
the ledger's releases, recomputes ε after every release with the same accountants
(`shared.privacy.epsilon`: PRV, with RDP alongside) and compares them with the ε each line records.
Then it checks every ledger against the server's receipts (`shared/receipts.py`), kept by the other
party: a receipt whose client has no ledger (missing), whose line is gone (truncated) or differs
(rewritten), or that records non-private or reproducible-noise participation is a failure. A broken
chain is reported as TAMPERED and its numbers are not used. A repair record (a torn last line moved
aside, `Ledger.repair`) is reported as a notice, not a failure: it spends nothing, and a ledger cut
short by whole lines before a "repair" still fails, because its receipts no longer match (the seq of a
removed release now holds another line, or is gone). Inputs are explicit (`ledgers`,
`receipts`); by default they are found under the run folder. Writes RUN_DIR/audit/{audit.json,
report.md, epsilon.png}; exit status 1 on any failure.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from shared.ledger import LEDGER_NAME, Ledger, LedgerError, epsilons, history_of, is_release, line_hash
from shared.privacy import NOISE_REPRODUCIBLE, NOT_PRIVATE_LABEL
from shared.receipts import RECEIPTS_NAME, Receipt, Receipts

AUDIT_DIR = "audit"
# Recorded and recomputed ε must agree to this (they come from the same deterministic accountant; the
# slack only absorbs float noise across machines and is far below any ε difference that matters).
EPS_ABS_TOL = 1e-6
EPS_REL_TOL = 1e-6


def find_ledgers(run_dir: str | Path) -> list[Path]:
    """Every `**/privacy-ledger.jsonl` under the run folder, sorted."""
    return sorted(p for p in Path(run_dir).rglob(LEDGER_NAME) if p.is_file())


def _close(a: float, b: float) -> bool:
    if math.isinf(a) or math.isinf(b):
        return a == b
    return math.isclose(a, b, rel_tol=EPS_REL_TOL, abs_tol=EPS_ABS_TOL)


def _client_name(path: Path, run_dir: Path) -> str:
    rel = path.relative_to(run_dir)
    return rel.parent.name if rel.parent.name else str(rel)


def audit_ledger(path: Path, run_dir: Path, cap: float | None = None) -> dict[str, Any]:
    """The audit of one ledger (one entry of audit.json's `clients`)."""
    entry: dict[str, Any] = {
        "client": _client_name(path, run_dir),
        "ledger": str(path.relative_to(run_dir)),
        "chain_ok": False,
        "message": "",
        "errors": [],
        "rounds": 0,
        "round_numbers": [],
        "steps": 0,
        "noise_multiplier": None,
        "sample_rate": None,
        "max_grad_norm": None,
        "delta": None,
        "unit": None,
        "accountant": None,
        "epsilon_prv": None,
        "epsilon_rdp": None,
        "recorded_epsilon_prv": None,
        "recorded_epsilon_rdp": None,
        "epsilon_per_round": [],
        "cap": cap,
        "cap_respected": None,
        "repairs": [],
    }
    try:
        lines = Ledger(path).records()
    except LedgerError as exc:
        entry["message"] = f"TAMPERED: {exc}"
        entry["errors"].append(str(exc))
        return entry
    records = [r for r in lines if is_release(r)]  # repair records spend nothing
    entry["repairs"] = [
        {k: r[k] for k in ("seq", "torn_sha256", "torn_bytes", "moved_to", "reason")}
        for r in lines
        if not is_release(r)
    ]
    entry["chain_ok"] = True
    entry["message"] = f"chain of {len(records)} releases verified"
    if entry["repairs"]:
        entry["message"] += f" ({len(entry['repairs'])} repair(s) of a torn last line)"
    if not records:
        entry.update(epsilon_prv=0.0, epsilon_rdp=0.0)
        return entry

    last = records[-1]
    entry.update(
        client=last["client"],
        rounds=len(records),
        round_numbers=[r["round"] for r in records],
        steps=sum(r["steps"] for r in records),
        noise_multiplier=last["noise_multiplier"],
        sample_rate=last["sample_rate"],
        max_grad_norm=last["max_grad_norm"],
        delta=last["delta"],
        unit=last["unit"],
        accountant=last["accountant"],
        recorded_epsilon_prv=last["epsilon_prv"],
        recorded_epsilon_rdp=last["epsilon_rdp"],
    )
    seeded = [r["round"] for r in records if r["noise"] == NOISE_REPRODUCIBLE]
    if seeded:
        entry["errors"].append(f"{NOT_PRIVATE_LABEL} (rounds {seeded}): whoever knows the seed can remove it")
    if len({r["unit"] for r in records}) > 1:
        entry["errors"].append(
            f"privacy unit changes within the ledger: {sorted({r['unit'] for r in records})}"
        )
    for i, rec in enumerate(records):
        # ε after release i, at the δ that release was recorded with, over all releases up to it.
        eps_prv, eps_rdp = epsilons(history_of(records[: i + 1]), rec["delta"])
        entry["epsilon_per_round"].append(
            {"round": rec["round"], "steps": rec["steps"], "epsilon_prv": eps_prv, "epsilon_rdp": eps_rdp}
        )
        for name, value in (("epsilon_prv", eps_prv), ("epsilon_rdp", eps_rdp)):
            if not _close(rec[name], value):
                entry["errors"].append(
                    f"line {rec['seq'] + 1} (round {rec['round']}): recorded {name} {rec[name]:.6g}"
                    f" but the ledger's history gives {value:.6g}"
                )
    entry["epsilon_prv"] = entry["epsilon_per_round"][-1]["epsilon_prv"]
    entry["epsilon_rdp"] = entry["epsilon_per_round"][-1]["epsilon_rdp"]

    if cap is None:
        cap = next((r["epsilon_cap"] for r in reversed(records) if r["epsilon_cap"] is not None), None)
    entry["cap"] = cap
    if cap is not None:
        spent = entry["epsilon_rdp"] if entry["accountant"] == "rdp" else entry["epsilon_prv"]
        entry["cap_respected"] = bool(spent <= cap)
    if entry["errors"]:
        entry["message"] += f"; {len(entry['errors'])} error(s): " + "; ".join(entry["errors"])
    return entry


FEDERATION_PARTY = "server"  # server.federation.SERVER_PARTY: the server's own ledger in federation mode


def _what_is_protected(clients: list[dict[str, Any]]) -> str:
    valid = [c for c in clients if c["chain_ok"] and c["rounds"]]
    text = (
        "User-level (ε, δ)-DP per client, against the server, the other clients and whoever holds the"
        " published index: everything a client sends in a private run is either its DP-SGD update"
        " (noise from the OS's secure source, never derived from anything the server knows) or a public"
        " value (σ, q from its declared population, steps, ε, the ledger anchor); so every output is"
        " (ε, δ)-DP with respect to adding or removing any one of *that client's* users (all of that"
        " user's events), with ε from the PRV accountant (RDP alongside), composed over every round the"
        " client released. It does not protect a user from the partner holding their logs. A shopper who"
        " is a customer of several partners is several users, one per partner: their total is at most"
        " the sum of those partners' ε (basic composition)."
    )
    federation = [c for c in valid if c["unit"] != "client" and c.get("client") == FEDERATION_PARTY]
    if federation:
        fed = federation[0]
        text += (
            " This run is in federation mode (user-level DP-FedAvg, shared/federation.py): each round, every"
            " client Poisson-samples its users at one federation-wide rate, clips each user's gradient and"
            " adds a secret share of the noise; each client's ledger records σ against the view its partner"
            " trusts ('aggregate': a server that sees only the SecAgg+ sum of at least min-clients shares;"
            " 'share': a server that sees one share, or colludes with every other client, which is σ/√t)."
            f" The server's ledger ({fed['ledger']}) records the view the run offers:"
            f" ε = {fed['epsilon_prv']:.3f} (PRV) at δ = {fed['delta']:g} over its aggregated rounds"
            " (round 0, where a ledger has one, is the trending list's release: every user's votes, no"
            " sampling, composed like any other). A"
            " shopper who is a customer of k partners is k users of the federation: group privacy bounds"
            " them at k·ε (with δ growing accordingly)."
        )
    servers = [c for c in valid if c["unit"] == "client"]
    if servers:
        worst = max(servers, key=lambda c: c["epsilon_rdp"])
        text += (
            f" Client-level DP also holds, from the server's ledger ({worst['ledger']}):"
            f" ε = {worst['epsilon_rdp']:.3f} at δ = {worst['delta']:g} under RDP (the accountant Flower's"
            f" DP wrapper uses; PRV gives {worst['epsilon_prv']:.3f}) for adding or removing a whole client,"
            " composed over every noised aggregate. The server adds that noise after it has seen the exact"
            " sum, so it protects a client against whoever sees the published model, not against the server."
        )
    else:
        text += " Client-level DP (hiding a whole client's participation) is not claimed."
    text += (
        " SecAgg+ (when on) hides each update from the server, which sees only the sum; with two clients"
        " each can subtract its own update from the published sum and learn the other's exactly, so"
        " there only user-level DP protects."
    )
    if any(NOT_PRIVATE_LABEL in e for c in clients for e in c["errors"]):
        text = f"{NOT_PRIVATE_LABEL.upper()}: this run's noise is seeded from public values; no guarantee."
    if not all(c["chain_ok"] for c in clients):
        text += " Ledgers that failed verification give no guarantee at all and are excluded."
    return text


def cross_check(receipts: list[Receipt], ledgers: list[Path]) -> list[str]:
    """Every receipt the server holds must match a line of that client's intact ledger."""
    lines: dict[str, list[dict[str, Any]]] = {}  # indexed by seq: repair records included
    for path in ledgers:
        try:
            records = Ledger(path).records()
        except LedgerError:
            continue  # reported as TAMPERED by audit_ledger
        first = next((r for r in records if is_release(r)), None)
        if first is not None and first["unit"] != "client":
            lines[first["client"]] = records
    problems = []
    for receipt in receipts:
        r = receipt.report
        what = f"{r.client} round {r.round} (server receipt {receipt.seq})"
        if not r.private:
            problems.append(f"{what}: non-private participation: an update without DP noise was sent")
            continue
        if r.noise == NOISE_REPRODUCIBLE:
            problems.append(f"{what}: {NOT_PRIVATE_LABEL}")
        records = lines.get(r.client)
        if records is None:
            problems.append(f"{what}: MISSING ledger: the server received a release this client never shows")
        elif r.ledger_seq >= len(records):
            problems.append(
                f"{what}: TRUNCATED ledger: release #{r.ledger_seq} was received,"
                f" the ledger holds {len(records)}"
            )
        elif line_hash(records[r.ledger_seq]) != r.ledger_hash:
            line = r.ledger_seq + 1
            problems.append(f"{what}: REWRITTEN ledger: line {line} is not the one the server received")
        elif (records[r.ledger_seq].get("round"), records[r.ledger_seq].get("run")) != (r.round, r.run):
            problems.append(f"{what}: ledger line {r.ledger_seq + 1} is another round's release")
    return problems


def audit(
    run_dir: str | Path,
    cap: float | None = None,
    ledgers: list[Path] | None = None,
    receipts: Path | None = None,
) -> dict[str, Any]:
    """Verify the ledgers (default: every one under the run folder), recompute ε, cross-check the
    server's receipts (default: RUN_DIR/server/receipts.jsonl); the content of audit.json."""
    run_dir = Path(run_dir)
    ledgers = find_ledgers(run_dir) if ledgers is None else ledgers
    receipts = run_dir / "server" / RECEIPTS_NAME if receipts is None else receipts
    clients = [audit_ledger(path, run_dir, cap) for path in ledgers]
    receipt_problems: list[str] = []
    received: list[Receipt] = []
    if not receipts.is_file():
        receipt_problems.append(
            f"{receipts}: no server receipts: the ledgers cannot be checked for truncation or rewriting"
        )
    else:
        try:
            received = Receipts(receipts).read()
            receipt_problems += cross_check(received, ledgers)
        except LedgerError as exc:
            receipt_problems.append(f"server receipts TAMPERED: {exc}")
    valid = [c for c in clients if c["chain_ok"] and c["unit"] != "client"]
    worst = max((c for c in valid if c["rounds"]), key=lambda c: c["epsilon_prv"], default=None)
    deltas = sorted({c["delta"] for c in valid if c["delta"] is not None})
    return {
        "run_dir": str(run_dir),
        "ledgers_found": len(ledgers),
        "clients": clients,
        "worst_client": None
        if worst is None
        else {k: worst[k] for k in ("client", "epsilon_prv", "epsilon_rdp", "delta", "rounds", "steps")},
        "all_chains_ok": all(c["chain_ok"] for c in clients),
        "all_epsilons_recompute": all(not c["errors"] for c in clients if c["chain_ok"]),
        "caps_respected": all(c["cap_respected"] is not False for c in clients),
        "receipts": {"path": str(receipts), "count": len(received), "problems": receipt_problems},
        "delta": deltas[0] if len(deltas) == 1 else (deltas or None),
        "client_level": next(
            (
                {
                    k: c[k]
                    for k in ("client", "epsilon_rdp", "epsilon_prv", "delta", "rounds", "noise_multiplier")
                }
                for c in clients
                if c["chain_ok"] and c["unit"] == "client" and c["rounds"]
            ),
            None,
        ),
        "what_is_protected": _what_is_protected(clients),
    }


def passed(result: dict[str, Any]) -> bool:
    """The audit's verdict: some ledger found, every chain intact, every ε recomputes, every cap respected."""
    return bool(
        result["ledgers_found"]
        and not result["receipts"]["problems"]
        and result["all_chains_ok"]
        and result["all_epsilons_recompute"]
        and result["caps_respected"]
    )


def _fmt(value: Any, spec: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return format(value, spec)


COLUMNS = ("client", "ε PRV", "ε RDP", "δ", "σ", "q", "steps", "rounds", "unit", "cap", "respected", "chain")


def table_rows(result: dict[str, Any]) -> list[list[str]]:
    rows = []
    for c in result["clients"]:
        if not c["chain_ok"]:
            rows.append([c["client"], "TAMPERED", *["-"] * 9, "TAMPERED"])
            continue
        rows.append(
            [
                c["client"],
                _fmt(c["epsilon_prv"], ".3f"),
                _fmt(c["epsilon_rdp"], ".3f"),
                _fmt(c["delta"], "g"),
                _fmt(c["noise_multiplier"], ".3g"),
                _fmt(c["sample_rate"], ".4g"),
                str(c["steps"]),
                str(c["rounds"]),
                _fmt(c["unit"]),
                _fmt(c["cap"], "g"),
                _fmt(c["cap_respected"]),
                ("ok" if not c["errors"] else "ε MISMATCH") + (" (repaired)" if c["repairs"] else ""),
            ]
        )
    return rows


def format_table(result: dict[str, Any]) -> str:
    rows = [list(COLUMNS), *table_rows(result)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _problems(result: dict[str, Any]) -> list[str]:
    out = []
    if not result["ledgers_found"]:
        out.append(f"no {LEDGER_NAME} found under {result['run_dir']}: nothing to audit, no guarantee shown")
    for c in result["clients"]:
        if not c["chain_ok"]:
            out.append(f"{c['client']}: {c['message']}")
        elif c["errors"]:
            out.extend(f"{c['client']}: {e}" for e in c["errors"])
        if c["cap_respected"] is False:
            out.append(f"{c['client']}: ε = {c['epsilon_prv']:.3f} exceeds the cap {c['cap']:g}")
    out.extend(result["receipts"]["problems"])
    return out


def _notices(result: dict[str, Any]) -> list[str]:
    """Repairs: worth a reader's attention, not failures (the receipts still anchor every release)."""
    return [
        f"{c['client']}: ledger repaired at line {r['seq'] + 1}: a torn last line of {r['torn_bytes']} bytes"
        f" (sha256 {r['torn_sha256']}) was moved aside to {r['moved_to']}; reason: {json.dumps(r['reason'])}"
        for c in result["clients"]
        for r in c.get("repairs", [])
    ]


def _worst_line(result: dict[str, Any]) -> str:
    w = result["worst_client"]
    if w is None:
        return "Worst-case client: none (no valid ledger with releases)"
    return (
        f"Worst-case client: {w['client']}: ε = {_fmt(w['epsilon_prv'], '.3f')} (PRV),"
        f" {_fmt(w['epsilon_rdp'], '.3f')} (RDP) at δ = {w['delta']:g} after {w['rounds']} rounds"
        f" ({w['steps']} DP-SGD steps)"
    )


def _plot(result: dict[str, Any], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg, without touching pyplot's backend
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(7, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    caps = set()
    for c in result["clients"]:
        if not (c["chain_ok"] and c["epsilon_per_round"]):
            continue
        rounds = [p["round"] for p in c["epsilon_per_round"]]
        (line,) = ax.plot(
            rounds, [p["epsilon_prv"] for p in c["epsilon_per_round"]], marker="o", label=c["client"]
        )
        ax.plot(
            rounds,
            [p["epsilon_rdp"] for p in c["epsilon_per_round"]],
            linestyle=":",
            color=line.get_color(),
            alpha=0.7,
        )
        if c["cap"] is not None:
            caps.add(c["cap"])
    for cap in sorted(caps):
        ax.axhline(cap, color="crimson", linestyle="--", linewidth=1)
        ax.annotate(
            f"cap ε = {cap:g}", (0.01, cap), xycoords=("axes fraction", "data"), color="crimson", va="bottom"
        )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel(f"ε at δ = {result['delta']:g}" if isinstance(result["delta"], float) else "ε")
    ax.set_title("Composed ε per client (solid: PRV, dotted: RDP)")
    ax.grid(alpha=0.3)
    if ax.get_lines():
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, format="png")


def _json_safe(value: Any) -> Any:
    """Strict JSON: non-finite floats (a release without noise) become the string "inf"."""
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def write_report(run_dir: str | Path, audit: dict[str, Any]) -> Path:
    """Write RUN_DIR/audit/{audit.json, report.md, epsilon.png}; returns report.md's path."""
    out = Path(run_dir) / AUDIT_DIR
    out.mkdir(parents=True, exist_ok=True)
    (out / "audit.json").write_text(json.dumps(_json_safe(audit), indent=2, allow_nan=False) + "\n")
    _plot(audit, out / "epsilon.png")

    rows = table_rows(audit)
    md = [
        f"# Privacy audit of `{audit['run_dir']}`",
        "",
        f"**Verdict: {'PASSED' if passed(audit) else 'FAILED'}**"
        f" ({audit['ledgers_found']} ledger(s); chains {'intact' if audit['all_chains_ok'] else 'BROKEN'};"
        f" ε {'recomputes' if audit['all_epsilons_recompute'] else 'DOES NOT recompute'};"
        f" caps {'respected' if audit['caps_respected'] else 'EXCEEDED'};"
        f" {audit['receipts']['count']} server receipt(s),"
        f" {'all matched' if not audit['receipts']['problems'] else 'PROBLEMS'})",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
        *("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows),
        "",
        f"**{_worst_line(audit)}**",
        "",
        "## What is protected",
        "",
        audit["what_is_protected"],
        "",
        "## ε over rounds",
        "",
        "![ε per round per client](epsilon.png)",
        "",
    ]
    problems = _problems(audit)
    if problems:
        md += ["## Problems", "", *(f"- {p}" for p in problems), ""]
    notices = _notices(audit)
    if notices:
        md += [
            "## Notices",
            "",
            "Repairs of a torn last line (an append interrupted before its round was trained or sent):"
            " not failures by themselves; every release the server received is still checked.",
            "",
            *(f"- {n}" for n in notices),
            "",
        ]
    md += [
        "## Method",
        "",
        "Each ledger's hash chain is verified line by line; the DP history (noise multiplier σ,"
        " sample rate q, steps) of its releases is rebuilt and ε after every release is recomputed"
        " with Opacus' PRV and RDP accountants and compared with the ε the client recorded."
        " Every receipt the server wrote when it received an update (client, round, ε, the ledger line's"
        " position and sha256) is matched against the client's ledger, so a ledger cut short, rebuilt"
        " with fewer rounds or deleted is caught by a record the client does not control."
        " Full numbers: `audit.json`.",
        "",
    ]
    report = out / "report.md"
    report.write_text("\n".join(md))
    return report


def main(run_dir: str | Path, cap: float | None = None) -> int:
    """Audit, print the table, write the report; 0 if it passed, 1 if a ledger is broken or a cap exceeded."""
    result = audit(run_dir, cap)
    print(format_table(result))
    print()
    print(_worst_line(result))
    if result["client_level"]:
        c = result["client_level"]
        print(
            f"Client-level DP ({c['client']} ledger): ε = {c['epsilon_rdp']:.3f} (RDP, Flower's accountant),"
            f" {c['epsilon_prv']:.3f} (PRV) at δ = {c['delta']:g} after {c['rounds']} noised aggregates"
        )
    for notice in _notices(result):
        print(f"NOTICE {notice}")
    for problem in _problems(result):
        print(f"ERROR {problem}")
    report = write_report(run_dir, result)
    print(f"report: {report}")
    return 0 if passed(result) else 1


def _cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fedrec audit", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="run folder holding the clients' privacy ledgers")
    parser.add_argument(
        "--cap", type=float, default=None, help="ε cap to check (default: the cap each client recorded)"
    )
    args = parser.parse_args(argv)
    return main(args.run_dir, args.cap)


if __name__ == "__main__":
    sys.exit(_cli())
