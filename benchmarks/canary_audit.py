"""One-run canary audit of a partner's DP-SGD: the shipped build against two planted bugs, in numbers.

    python -m benchmarks.canary_audit [--quick] [--canaries 2000] [--out benchmarks/results]

Rows (the demo's run config and embedded shop, partner 0 of 2, m canaries, a quarter guessed):
  correct at the audit claim (target ε = 2), noise-off and seeded at the same claim (planted bugs the
  audit must flag), and correct at the default run's target ε = 8. `--quick` runs the same rows on a
  tiny shop with a frozen text tower (seconds, not tens of minutes). Results: canary_audit.{json,md}.

Reading it: "ε ≥ x" holds at 95 % confidence for the audited build; a correct build must stay below
its accountant's ε, a broken one is flagged when x exceeds it. With m = 2,000 at δ = 1e-5 nothing above
≈ 4.8 can be certified, so the ε = 8 row can only confirm, never flag.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from shared.durable import write_bytes, write_json
from simulations.canary_audit import AUDIT_TARGET_EPSILON, canary_audit, describe
from simulations.shop import ShopConfig

ROWS = [
    ("correct", AUDIT_TARGET_EPSILON),
    ("noise-off", AUDIT_TARGET_EPSILON),
    ("seeded", AUDIT_TARGET_EPSILON),
    ("correct", 8.0),
]
QUICK_SHOP = ShopConfig(n_items=120, n_users=200, seed=3)
QUICK_RUN = {"lora-rank": 0, "batch-size": 20, "local-steps": 15, "num-server-rounds": 2}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--canaries", type=int, default=2000)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--work", default="runs/bench-canary-audit")
    args = parser.parse_args(argv)

    shop, base = (QUICK_SHOP, QUICK_RUN) if args.quick else (ShopConfig(), {})
    records = []
    for build, target in ROWS:
        work = Path(args.work) / f"{build}-eps{target:g}"
        record = canary_audit(
            work, build, args.canaries, overrides={**base, "target-epsilon": target}, shop=shop
        )
        print(describe(record), f"[{record['wall_time_s']:.0f} s]", flush=True)
        records.append(record)

    out = Path(args.out)
    name = "canary_audit_quick" if args.quick else "canary_audit"
    payload = {
        "command": "python -m benchmarks.canary_audit" + (" --quick" if args.quick else ""),
        "date": time.strftime("%Y-%m-%d"),
        "rows": records,
    }
    write_json(out / f"{name}.json", payload)
    write_bytes(out / f"{name}.md", report(payload).encode("utf-8"))
    print(f"wrote {out / name}.md and .json")
    return 0


def report(payload: dict) -> str:
    rows = payload["rows"]
    first = rows[0]
    guesses = first["attacks"][0]["guesses"]
    lines = [
        "# One-run canary audit (Steinke, Nasr & Jagielski 2023)",
        "",
        f"`{payload['command']}` ({payload['date']}). Partner 0 of the embedded shop, {first['users']} users"
        f" (declared population {first['population']}, q = {first['sample_rate']:.4f}),"
        f" {first['steps']} DP-SGD steps, {first['canaries']} canaries ({guesses} guessed),"
        f" δ = {first['delta']:g}, 95 % confidence, PRV accountant.",
        "",
        f"Threat model: {first['threat_model']}.",
        "",
        "| build | σ claimed / trained | accountant ε | raw | replayed | ε lower bound | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        attacks = {a["attack"]: a for a in r["attacks"]}
        cells = [
            r["build"],
            f"{r['noise_multiplier']:.3f} / {r['trained_noise_multiplier']:.3f}",
            f"{r['claimed_epsilon']:.2f}",
            *(f"{attacks[k]['correct']}/{attacks[k]['guesses']}" for k in ("raw", "replayed")),
            f"**{r['epsilon_lower_bound']:.2f}**",
            "FLAGGED" if r["flagged"] else "consistent",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "- raw: scores are each canary's summed released gradient (finds missing noise).",
        "- replayed: the noise a build seeded from public values would draw is replayed and subtracted",
        "  (finds reproducible noise). Each attack's bound is at 97.5 %; the larger is reported (95 %).",
        "- A perfect attack on 500 guesses certifies at most ≈ 4.8 here: a claim of ε = 8 cannot be refuted",
        "  by this audit, which is why the planted bugs are audited against the ε = 2 claim.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
