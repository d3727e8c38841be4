"""results.md and the plots of the quality benchmark, rebuilt from whatever row JSONs exist.

Rows that have no JSON are listed as "not run" with an estimated cost; no number is ever filled in
for them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

LABELS = {
    "popularity": "popularity",
    "zero-shot": "zero-shot MiniLM (untrained towers)",
    "centralized": "centralized, non-private (one party, all users)",
    "federated": "federated, non-private (partner mode: local steps per client)",
    "dp-eps8": "federated, per-partner DP-SGD, target ε=8",
    "dp-eps3": "federated, per-partner DP-SGD, target ε=3",
    "dp-eps1": "federated, per-partner DP-SGD, target ε=1",
    "local-only": "local-only (each client alone, non-private; mean over clients)",
    "client-dp": "federated, client-level DP (fixed clipping)",
    "fed-nonprivate": "federation mode (one step a round, SecAgg+), non-private",
    "fed-dp-eps8": "federation mode, user-level DP-FedAvg + SecAgg+, target ε=8",
    "fed-dp-eps3": "federation mode, user-level DP-FedAvg + SecAgg+, target ε=3",
    "fed-dp-eps1": "federation mode, user-level DP-FedAvg + SecAgg+, target ε=1",
}
ORDER = list(LABELS)
# Recformer paper (KDD 2023), Table 2, Amazon Scientific: centralized, non-private, on Recformer's OWN split
# (its finetune_data/process.py keeps a random fifth of the users): not comparable with this split.
PUBLISHED = {
    "SASRec": (0.1305, 0.0797),
    "UniSRec": (0.1255, 0.0862),
    "Recformer": (0.1448, 0.1027),
}
PUBLISHED_SOURCE = "Recformer paper, Table 2; different split (Recformer's own)"
# Published on THE SAME split (UniSRec's processed Amazon Scientific: 8,442 users, 4,385 items), non-private:
SAME_SPLIT = {
    "VQ-Rec": (0.1211, 0.0643, "RUCAIBox/VQ-Rec README"),
    "VQ-Rec (re-pretrained)": (0.1238, 0.0645, "RUCAIBox/VQ-Rec README, re-pretrained checkpoint"),
    "MISSRec (text+image+ID)": (0.1282, 0.0711, "gimpong/MM23-MISSRec README, no pretraining"),
    "MISSRec (pretrained)": (0.1360, 0.0753, "gimpong/MM23-MISSRec README"),
}
PROTOCOL = (
    "Protocol: the dataset's own leave-one-out split (UniSRec's .valid/.test.inter files), ranking over "
    "all 4,385 items, history excluded, Recall/NDCG @10/@50 (`shared/metrics.py`). Federated rows run "
    "through Flower's simulation engine; their metrics come from the server's central evaluator reading "
    "the same RecBole folder (so the same split). ε is at δ = 1e-5, from the run's record (run.json). "
    "Per-partner DP-SGD rows (partner mode): each client runs its own DP-SGD over its own users, ε per "
    "client (PRV, composed over all rounds). Federation-mode rows (user-level DP-FedAvg): one "
    "federation-wide Poisson rate q over all users, each round one noisy step whose Gaussian is shared out "
    "among the t = min-clients clients; ε per view: 'aggregate' (SecAgg+ on: the server sees only the sum "
    "of the shares) and 'share' (a server that sees one client's share in clear, or colludes with all "
    "other clients: σ/√t). "
    "Model selection: every row reports its LAST round (no selection on test); the column 'at the "
    "best-valid round' shows what selecting the round on the validation split would have given. "
    "'Share of the learnable gain kept' = (row − zero-shot) / (non-private reference − zero-shot) in "
    "Recall@10, on test and on valid; the reference is the federation-mode non-private row for "
    "federation-mode rows and the partner-mode non-private federated row for the others; zero-shot is the "
    "reference's round-0 evaluation (the same model untrained; the federation rows' model, frozen text tower "
    "and ID rows at zero, does not score exactly as the zero-shot row's untrained LoRA model)."
)
USER_LEVEL = "user-level DP"
FEDERATION_LEVEL = "federation user-level DP"
PRIVACY = {
    "dp-eps8": USER_LEVEL,
    "dp-eps3": USER_LEVEL,
    "dp-eps1": USER_LEVEL,
    "client-dp": "client-level DP",
    "fed-dp-eps8": FEDERATION_LEVEL,
    "fed-dp-eps3": FEDERATION_LEVEL,
    "fed-dp-eps1": FEDERATION_LEVEL,
}
FEDERATION_ROWS = ("fed-nonprivate", "fed-dp-eps8", "fed-dp-eps3", "fed-dp-eps1")
REFERENCE = {  # the non-private row each DP row's "share of the learnable gain" is measured against
    **{name: "federated" for name in ("dp-eps8", "dp-eps3", "dp-eps1", "client-dp")},
    **{name: "fed-nonprivate" for name in ("fed-dp-eps8", "fed-dp-eps3", "fed-dp-eps1")},
}

# Cost model for rows not run (seconds on 2 CPU cores), from measurements on Amazon Scientific:
ENCODE_S = 50.0  # one catalogue encoding, 4,385 items (measured 48 s)
MESSAGE_S = 6.0  # a ClientApp message: load MiniLM + data + tokenize the catalogue
SIMULATION_START_S = 60.0  # Ray + Flower start, partitions, server model


def step_seconds(batch: int) -> float:
    """One local DP-SGD or plain step at this batch size (3.7 s at 200 measured; linear in batch)."""
    return 0.4 + 0.0165 * batch


FEDERATION_ROUND_S = 10.0  # a federation-mode round (one DP step per client, SecAgg+), until measured
FEDERATION_EVAL_S = 15.0  # one central evaluation (about 20 a run)


def estimate_seconds(row: str, plan: dict, measured_round_s: float | None = None) -> float:
    """Rough cost of one row at `plan`; federated rows use a measured round time when one exists (of the
    same mode: `measured_round_s` must come from rows of the same mode, see `_measured_round_seconds`)."""
    clients, rounds, steps, batch = plan["clients"], plan["rounds"], plan["local_steps"], plan["batch_size"]
    if row == "popularity":
        return 5.0
    if row == "zero-shot":
        return ENCODE_S + 10
    if row == "centralized":
        return rounds * (clients * steps * step_seconds(batch) + ENCODE_S) + 15
    if row == "local-only":
        return clients * (rounds * steps * step_seconds(batch) + ENCODE_S + 5)
    if row in FEDERATION_ROWS:
        fed_rounds = plan.get("federation_rounds") or rounds
        per_round = measured_round_s or FEDERATION_ROUND_S + 20 * FEDERATION_EVAL_S / fed_rounds
        return SIMULATION_START_S + ENCODE_S + fed_rounds * per_round
    per_round = measured_round_s or (clients * steps * step_seconds(batch) + ENCODE_S + clients * MESSAGE_S)
    return SIMULATION_START_S + rounds * per_round


def load_rows(folder: Path) -> dict[str, dict]:
    rows = {}
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text())
        rows[data["row"]] = data
    return rows


def epsilon_text(row: dict) -> str:
    federation = row.get("federation") or {}
    if federation.get("epsilon"):
        views = federation["epsilon"]
        return "; ".join(f"{eps:.2f} ({view} view)" for view, eps in views.items())
    eps = row.get("epsilon")
    if eps:
        values = sorted(eps.values())
        return f"{values[-1]:.2f} (max of {len(values)} clients; min {values[0]:.2f})"
    client_level = row.get("client_level") or {}
    if isinstance(client_level.get("epsilon"), int | float):
        return f"{client_level['epsilon']:.2f} client-level (Flower RDP; no user-level DP)"
    if row["row"] in PRIVACY:
        return "see JSON"
    return "∞ (non-private)" if row["row"] not in ("popularity", "zero-shot") else "— (no training)"


def max_epsilon(row: dict) -> float | None:
    """The ε a row is plotted at: the aggregate view for federation mode, else the largest client's."""
    federation = row.get("federation") or {}
    views = federation.get("epsilon") or {}
    if views:
        return views.get("aggregate", max(views.values()))
    eps = row.get("epsilon")
    if eps:
        return max(eps.values())
    client_level = row.get("client_level") or {}
    value = client_level.get("epsilon")
    return float(value) if isinstance(value, int | float) else None


def zero_shot_recall(rows: dict[str, dict], reference: str, split: str) -> float | None:
    """Recall@10 of the untrained model of the reference's mode: round 0 of its curve (the same towers,
    untrained), else the zero-shot row. Federation rows' model (frozen text tower, ID rows at zero) scores
    a little differently untrained from the partner rows' LoRA model."""
    curve = (rows.get(reference) or {}).get("curve") or []
    start = next((p for p in curve if p["round"] == 0), None)
    if start is not None:
        return start[f"{split}-recall@10"]
    base = rows.get("zero-shot")
    return base[split]["recall@10"] if base else None


def gain_kept(rows: dict[str, dict], name: str, split: str) -> float | None:
    """(row − zero-shot) / (non-private reference − zero-shot), Recall@10 on `split`; None if unmeasurable."""
    reference = REFERENCE.get(name, "")
    ref, row = rows.get(reference), rows.get(name)
    zero = zero_shot_recall(rows, reference, split)
    if not (ref and row) or zero is None:
        return None
    gain = ref[split]["recall@10"] - zero
    if gain <= 0:
        return None
    return (row[split]["recall@10"] - zero) / gain


def gain_text(rows: dict[str, dict], name: str) -> str:
    reference = REFERENCE.get(name)
    if reference is None:
        return ""
    if reference not in rows or zero_shot_recall(rows, reference, "test") is None:
        return f"— (needs the {reference} row)"
    parts = []
    for split in ("test", "valid"):
        share = gain_kept(rows, name, split)
        parts.append(
            f"{split} {share:.0%}" if share is not None else f"{split} n/a ({reference} ≤ zero-shot)"
        )
    return " / ".join(parts)


def config_text(row: dict) -> str:
    plan = row["plan"]
    users = f"{row['data']['users']:,} users" if "data" in row else ""
    if row["row"] in ("popularity", "zero-shot"):
        return users
    rc = row.get("run_config", {})
    steps = rc.get("local-steps", plan["local_steps"])
    rounds = rc.get("num-server-rounds", plan["rounds"])
    if row["row"] == "local-only":
        same = row.get("same_users") or {}
        refs = ", ".join(f"{name} {m['recall@10']:.4f}" for name, m in same.items())
        return (
            f"{users}; {plan['clients']} clients alone, 1 round × {steps} steps, batch {plan['batch_size']}"
            + (f"; on the same users' test Recall@10: {refs}" if refs else "")
        )
    if row["row"] == "centralized":
        return f"{users}; 1 party, {rounds} rounds × {steps} steps, batch {plan['batch_size']}"
    if row["row"] in FEDERATION_ROWS:
        fed = row.get("federation") or {}
        noise = ""
        if fed.get("sigma"):
            noise = f", σ {fed['sigma']:.2f} (share σ {fed['share_sigma']:.2f} for t={fed['noise_shares']})"
        population = sum(row.get("declared_populations") or []) or fed.get("population", "?")
        return (
            f"{users}; {plan['clients']} clients (Dirichlet α={plan['alpha']}), {rounds} rounds × 1 step, "
            f"q={rc.get('federation-sample-rate')} over N={population} declared{noise}; SecAgg+ "
            f"{'on' if rc.get('secure-aggregation') else 'off'}; lora-rank {rc.get('lora-rank')}, "
            f"item-id-rank {rc.get('item-id-rank')}, server Adam lr {rc.get('learning-rate')} (head) / "
            f"{rc.get('bias-learning-rate')} (item bias) / {rc.get('item-id-learning-rate')} (ID rows)"
        )
    extra = ""
    if row["row"] in PRIVACY and row["row"] != "client-dp":
        sigmas = sorted((row.get("noise_multipliers") or {}).values())
        if sigmas:
            extra = f"; σ {sigmas[0]:.2f}–{sigmas[-1]:.2f}"
    if row["row"] == "client-dp":
        extra = f"; client σ {rc.get('client-noise-multiplier')}, C {rc.get('client-clipping-norm')}"
    return (
        f"{users}; {plan['clients']} clients (Dirichlet α={plan['alpha']}), {rounds} rounds × {steps} steps, "
        f"batch {plan['batch_size']}{extra}"
    )


def best_valid_text(row: dict) -> str:
    """Model selection on the valid split: the round of highest valid Recall@10 (earliest on a tie)."""
    curve = row.get("curve") or []
    if len(curve) < 2:
        return ""
    best = max(curve, key=lambda p: (p["valid-recall@10"], -p["round"]))
    return f"{best['test-recall@10']:.4f} / {best['test-ndcg@10']:.4f} (round {best['round']})"


def table(rows: dict[str, dict], plan: dict | None, quick: bool) -> list[str]:
    lines = [
        "| row | ε (δ=1e-5) | test Recall@10 | test NDCG@10 | test Recall@50 | test NDCG@50 "
        "| valid Recall@10 | valid NDCG@10 | share of the learnable gain kept (Recall@10) "
        "| test R@10 / N@10 at the best-valid round | wall time | config | command |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in ORDER:
        row = rows.get(name)
        if row is None:
            measured = _measured_round_seconds(rows, federation=name in FEDERATION_ROWS)
            cost = f"est. {estimate_seconds(name, plan, measured) / 60:.0f} min" if plan else "?"
            flag = " --quick" if quick else ""
            lines.append(
                f"| {LABELS[name]} | not run | not run | not run | not run | not run | not run | | | "
                f"| {cost} | | "
                f"`python -m benchmarks.quality --data DIR --rows {name}{flag}` |"
            )
            continue
        t, v = row["test"], row["valid"]
        lines.append(
            f"| {LABELS[name]} | {epsilon_text(row)} | **{t['recall@10']:.4f}** | **{t['ndcg@10']:.4f}** | "
            f"{t['recall@50']:.4f} | {t['ndcg@50']:.4f} | {v['recall@10']:.4f} | {v['ndcg@10']:.4f} | "
            f"{gain_text(rows, name)} | {best_valid_text(row)} | {row['wall_time_s'] / 60:.1f} min | "
            f"{config_text(row)} | `{row['command']}` |"
        )
    for model, (recall, ndcg, source) in SAME_SPLIT.items():
        lines.append(
            f"| {model} (published, same split; centralized, non-private) | ∞ | {recall:.4f} | {ndcg:.4f} "
            f"| | | | | | | | {source} | |"
        )
    for model, (recall, ndcg) in PUBLISHED.items():
        lines.append(
            f"| {model} (published, different split (Recformer's own); centralized, non-private) | ∞ "
            f"| {recall:.4f} | {ndcg:.4f} | | | | | | | | {PUBLISHED_SOURCE} | |"
        )
    return lines


def variants_table(default: dict[str, dict], folder: Path) -> list[str]:
    """One line per tried model change (`--variant`): its row against the default row it changes."""
    found = [(v.name, row) for v in sorted(folder.glob("*/")) for row in load_rows(v).values()]
    if not found:
        return []
    lines = [
        "| variant | row | change (vs the default plan and pyproject config) | ε | test Recall@10 (Δ) "
        "| test NDCG@10 (Δ) | test R@10 / N@10 at the best-valid round | wall time | command |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in found:
        base, t = default.get(row["row"]), row["test"]
        recall, ndcg = (
            f"**{t[m]:.4f}** ({t[m] - base['test'][m]:+.4f})" if base else f"**{t[m]:.4f}** (no default row)"
            for m in ("recall@10", "ndcg@10")
        )
        lines.append(
            f"| {name} | {LABELS[row['row']]} | {change_text(row)} | {epsilon_text(row)} "
            f"| {recall} | {ndcg} | "
            f"{best_valid_text(row)} | {row['wall_time_s'] / 60:.1f} min | `{row['command']}` |"
        )
    return lines


def change_text(row: dict) -> str:
    """What a variant changed: its plan overrides and extra run-config knobs."""
    from benchmarks.quality import FULL, QUICK

    default = _plan_dict(QUICK if row["quick"] else FULL)
    plan = row["plan"]
    # a key the row's plan lacks predates it (e.g. federation_rounds): that row ran with no change to it
    changes = [
        f"{k}={plan[k]}" for k in default if k not in ("run_config",) and k in plan and plan[k] != default[k]
    ]
    changes += [f"{k}={v}" for k, v in (plan.get("run_config") or {}).items()]
    return ", ".join(changes) or "none"


def write_report(results: Path) -> Path:
    """Rebuild results.md, privacy_utility.png and learning_curves.png from the row JSONs."""
    from benchmarks.quality import FULL, QUICK  # the plans, for cost estimates of rows not run

    full = load_rows(results / "quality")
    quick = load_rows(results / "quality" / "quick")
    lines = [
        "# Quality benchmark: Amazon Scientific, privacy–utility frontier",
        "",
        "Generated by `python -m benchmarks.quality --report` from `benchmarks/results/quality/*.json` "
        "(full scale) and `quality/quick/*.json` (`--quick`). Do not edit by hand.",
        "",
        PROTOCOL,
        "",
        "## Full scale",
        "",
        *table(full, _plan_dict(FULL), quick=False),
        "",
        "## Quick scale (`--quick`: a seeded subsample of users, fewer clients, rounds and steps)",
        "",
        *table(quick, _plan_dict(QUICK), quick=True),
        "",
    ]
    tried = variants_table(full, results / "quality" / "variants")
    if tried:
        lines += [
            "## Model changes tried (full scale): what each bought",
            "",
            "Each is one default row re-run with the run-config changes listed (`--variant`);"
            " Δ is against that default row.",
            "",
            *tried,
            "",
        ]
    inprocess = load_inprocess(results / "quality" / "inprocess")
    runs = inprocess_table(inprocess)
    if runs:
        lines += [
            "## Federation mode in one process: the model's pieces and DP (full scale)",
            "",
            "`python -m benchmarks.federation_inprocess` (each run's command is in its JSON under"
            " `quality/inprocess/`): the clients' `federation_share` and the server's `ServerStep`, exactly"
            " a federation-mode round's arithmetic without SecAgg+ masks and Flower messaging, 3 virtual"
            " clients. Validation Recall@10 at round 0 (zero-shot) and at the end; test once, at the last"
            " round (no selection). Gain kept = (valid − zero-shot) / (best non-private valid − zero-shot),"
            " against the best validation point of the non-private run of the same design.",
            "",
            *runs,
            "",
            "Mean ± std over noise draws (population std), per what the server published and its learning"
            " rate; gain kept against the best validation point of any non-private run of the same model:",
            "",
            *inprocess_summary(inprocess),
            "",
        ]
    for title, rows in (("full", full), ("quick", quick)):
        times = {name: row["round_times_s"] for name, row in rows.items() if row.get("round_times_s")}
        if times:
            lines.append(
                f"Per-round wall time ({title}, seconds, measured between central evaluations; federation "
                "mode evaluates every k rounds: the mean round over each interval, its evaluation included):"
            )
            lines.append("")
            lines += [f"- {LABELS[name]}: {round_times_text(ts)}" for name, ts in times.items()]
            lines.append("")
    for title, rows in (("full", full), ("quick", quick)):
        if rows:
            total = sum(row["wall_time_s"] for row in rows.values())
            loads = [row["load_average_at_end"][0] for row in rows.values() if "load_average_at_end" in row]
            load = f"; 1-min load average at row ends {min(loads):.1f}–{max(loads):.1f}" if loads else ""
            lines.append(
                f"Measured ({title}): the {len(rows)} rows run took {total / 60:.0f} min in all (row wall "
                f"times, process starts excluded; 2 CPU cores shared with other jobs{load})."
            )
            lines.append("")
    total_full = sum(
        estimate_seconds(name, _plan_dict(FULL), _measured_round_seconds(full, name in FEDERATION_ROWS))
        for name in ORDER
    )
    lines.append(
        f"Estimated cost of every full-scale row (cost model in `benchmarks/_quality_report.py`, "
        f"calibrated by measured round times where present): {total_full / 3600:.1f} h on 2 CPU cores."
    )
    lines.append("")
    plot_rows, scale = (full, "full") if _has_federated(full) else (quick, "quick")
    frontiers = {} if scale == "quick" else variant_frontiers(results / "quality" / "variants")
    points = {} if scale == "quick" else inprocess_points(inprocess)
    privacy_utility_plot(plot_rows, results / "privacy_utility.png", scale, frontiers, points)
    learning_curves_plot(plot_rows, results / "learning_curves.png", scale)
    lines.append(f"Plots (`privacy_utility.png`, `learning_curves.png`) show the {scale}-scale rows.")
    notes = results / "quality" / "notes.md"  # hand-written findings, kept apart from generated numbers
    if notes.exists():
        lines += ["", "## Notes (hand-written: `benchmarks/results/quality/notes.md`)", "", notes.read_text()]
    out = results / "results.md"
    out.write_text("\n".join(lines) + "\n")
    return out


INPROCESS_KNOBS = ("sequence-layers", "sequence-learning-rate", "item-id-rank", "temperature", "max-length")
# how the model was trained and what was published: shown, but the same model's non-private run is the
# reference whatever they are (runs before `model-average-decay` existed published the last step: 0)
INPROCESS_SHOWN = {"learning-rate": None, "model-average-decay": 0.0}


def _design(run: dict) -> tuple:
    """The model an in-process run trains (a pooled tower has no sequence learning rate to tell apart)."""
    cfg = run["run_config"]
    return tuple(
        cfg.get(k) if cfg["sequence-layers"] or k != "sequence-learning-rate" else 0 for k in INPROCESS_KNOBS
    )


def _best_valid(run: dict) -> float:
    return max(c["valid-recall@10"] for c in run["curve"])


def _references(runs: dict[str, dict]) -> dict[tuple, dict]:
    """The non-private run of each design with the best validation point (what validation would select)."""
    reference: dict[tuple, dict] = {}
    for run in (r for r in runs.values() if not r["run_config"]["private"]):
        if _design(run) not in reference or _best_valid(run) > _best_valid(reference[_design(run)]):
            reference[_design(run)] = run
    return reference


def load_inprocess(folder: Path) -> dict[str, dict]:
    """The in-process runs (`benchmarks/federation_inprocess.py`), by label, in label order."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def inprocess_table(runs: dict[str, dict]) -> list[str]:
    """One line per in-process federation-mode run, with its design knobs and the gain it kept under DP."""
    if not runs:
        return []
    reference = _references(runs)
    lines = [
        "| run | ε (PRV, aggregate view) | rounds | "
        + " | ".join((*INPROCESS_KNOBS, *INPROCESS_SHOWN))
        + " | valid R@10 round 0 → end"
        " | test R@10 | test N@10 | gain kept (valid) | wall |",
        "|---|---|---|" + "---|" * (len(INPROCESS_KNOBS) + len(INPROCESS_SHOWN)) + "---|---|---|---|---|",
    ]
    for name, run in runs.items():
        cfg, curve = run["run_config"], run["curve"]
        start, end = curve[0]["valid-recall@10"], run["valid"]["recall@10"]
        eps = run["federation"].get("aggregate") if cfg["private"] else None
        base = reference.get(_design(run))
        kept = "–"
        peak = _best_valid(base) if base else start  # the non-private best, as validation would select
        if cfg["private"] and peak > start:
            kept = f"{(end - start) / (peak - start):.0%}"
        lines.append(
            f"| {name} | {'non-private' if eps is None else f'{eps:.2f}'} | {cfg['num-server-rounds']} | "
            + " | ".join(str(cfg.get(k)) for k in INPROCESS_KNOBS)
            + "".join(f" | {cfg.get(k, default)}" for k, default in INPROCESS_SHOWN.items())
            + f" | {start:.4f} → {end:.4f} | {run['test']['recall@10']:.4f} | {run['test']['ndcg@10']:.4f}"
            f" | {kept} | {run['wall_time_s'] / 60:.0f} min |"
        )
    return lines


def inprocess_groups(runs: dict[str, dict]) -> dict[str, dict[float, list[dict]]]:
    """The in-process DP runs of the pooled tower at τ 0.12 (the notes' Amazon settings), by series
    (what was published, the learning rate, the rounds) and target ε: one run per noise draw in each list."""
    series: dict[str, dict[float, list[dict]]] = {}
    for run in runs.values():
        cfg = run["run_config"]
        if cfg["private"] and not cfg["sequence-layers"] and cfg.get("temperature") == 0.12:
            decay = cfg.get("model-average-decay", 0.0)
            published = f"average of the steps ({decay})" if decay else "last step"
            key = f"{published}, Adam {cfg['learning-rate']:g}, {cfg['num-server-rounds']} rounds"
            series.setdefault(key, {}).setdefault(round(run["federation"]["aggregate"], 1), []).append(run)
    return dict(sorted(series.items()))


def inprocess_points(runs: dict[str, dict]) -> dict[str, list[tuple[float, float, float]]]:
    """(ε, mean test Recall@10, std over noise draws) per series of `inprocess_groups`, one point per ε."""
    return {
        key: [
            (eps, float(np.mean(r)), float(np.std(r)))
            for eps, runs in sorted(by_eps.items())
            for r in [[run["test"]["recall@10"] for run in runs]]
        ]
        for key, by_eps in inprocess_groups(runs).items()
    }


def inprocess_summary(runs: dict[str, dict]) -> list[str]:
    """Mean ± std over noise draws per series and ε: test Recall/NDCG@10 and the share of the gain kept."""
    reference = _references(runs)
    lines = [
        "| published model, server Adam lr, rounds | ε | draws | test R@10 | test N@10 | valid R@10"
        " | gain kept (valid, mean) |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, by_eps in inprocess_groups(runs).items():
        for eps, group in sorted(by_eps.items()):
            test = {m: [r["test"][m] for r in group] for m in ("recall@10", "ndcg@10")}
            valid = [r["valid"]["recall@10"] for r in group]
            start = group[0]["curve"][0]["valid-recall@10"]
            base = reference.get(_design(group[0]))
            kept = f"{(np.mean(valid) - start) / (_best_valid(base) - start):.0%}" if base else "–"
            lines.append(
                f"| {key} | {eps:g} | {len(group)} | {np.mean(test['recall@10']):.4f} ±"
                f" {np.std(test['recall@10']):.4f} | {np.mean(test['ndcg@10']):.4f} ±"
                f" {np.std(test['ndcg@10']):.4f} | {np.mean(valid):.4f} | {kept} |"
            )
    return lines


def variant_frontiers(folder: Path) -> dict[str, dict[str, dict]]:
    """Variants measured at two or more user-level ε: a tuned frontier worth drawing beside the default."""
    out = {}
    for variant in sorted(folder.glob("*/")):
        rows = load_rows(variant)
        if sum(PRIVACY.get(name) == USER_LEVEL for name in rows) >= 2:
            out[variant.name] = rows
    return out


def _user_level_points(rows: dict[str, dict], kind: str = USER_LEVEL) -> list[tuple[float, float]]:
    """(ε, test Recall@10) of the DP rows of one kind (partner mode: USER_LEVEL; FEDERATION_LEVEL), by ε."""
    points = [(max_epsilon(r), r["test"]["recall@10"]) for n, r in rows.items() if PRIVACY.get(n) == kind]
    return sorted((eps, recall) for eps, recall in points if eps is not None)


def privacy_utility_plot(
    rows: dict[str, dict],
    path: Path,
    scale: str,
    frontiers: dict[str, dict[str, dict]] | None = None,
    inprocess: dict[str, list[tuple[float, float, float]]] | None = None,
) -> None:
    """ε vs test Recall@10: both frontiers, every variant measured at several ε, the published lines."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11.5, 5.2))
    user_level = _user_level_points(rows)
    federation = _user_level_points(rows, FEDERATION_LEVEL)
    for points, style, colour, label in (
        (user_level, "o-", "C0", "fedrec, per-partner DP-SGD (max ε over clients)"),
        (federation, "D-", "C1", "fedrec, federation mode DP-FedAvg + SecAgg+ (ε, aggregate view)"),
    ):
        if not points:
            continue
        ax.plot(*zip(*points, strict=True), style, color=colour, label=label)
        for eps, recall in points:
            ax.annotate(
                f"{recall:.4f}", (eps, recall), textcoords="offset points", xytext=(4, -11), fontsize=7
            )
    for i, (series, points) in enumerate((inprocess or {}).items()):
        eps, recall, spread = zip(*points, strict=True)
        label = f"fedrec federation mode, in-process, τ 0.12, C 0.5; published: {series}"
        colour, marker = ("C9", "C8", "C6", "C5")[i % 4], "PXsd"[i % 4]
        ax.errorbar(eps, recall, yerr=spread, fmt=f"{marker}-", color=colour, capsize=3, label=label)
        for e, r in zip(eps, recall, strict=True):
            ax.annotate(f"{r:.4f}", (e, r), textcoords="offset points", xytext=(4, 5 - 9 * i), fontsize=7)
    tuned_points = {variant: _user_level_points(v) for variant, v in (frontiers or {}).items()}
    for i, (variant, tuned) in enumerate(tuned_points.items()):
        colour = f"C{5 + i % 5}"
        variant_rows = frontiers[variant]
        values = ", ".join(f"{recall:.4f}" for _, recall in tuned)
        ax.plot(
            *zip(*tuned, strict=True),
            "^-",
            color=colour,
            alpha=0.6,
            label=f"fedrec {variant}, per-partner DP-SGD ({values})",
        )
        if "federated" in variant_rows:
            recall = variant_rows["federated"]["test"]["recall@10"]
            label = f"fedrec {variant}, federated non-private ({recall:.4f})"
            ax.axhline(recall, color=colour, linestyle=":", linewidth=1.2, alpha=0.6, label=label)
    # The y axis spans the frontiers and the published lines; a row far below (client-level DP) is drawn
    # on the bottom edge with its value, so that the frontiers' differences stay readable.
    shown = [r for points in (user_level, federation, *tuned_points.values()) for _, r in points]
    shown += [r for points in (inprocess or {}).values() for _, r, _ in points]
    shown += [rows[n]["test"]["recall@10"] for n in ("federated", "fed-nonprivate", "zero-shot") if n in rows]
    bottom = min(shown, default=0.0) - 0.01
    top = max([r for r, _ in PUBLISHED.values()] + [r for r, _, _ in SAME_SPLIT.values()] + shown)
    ax.set_ylim(bottom, top + 0.01)
    if "client-dp" in rows and max_epsilon(rows["client-dp"]) is not None:
        eps, recall = max_epsilon(rows["client-dp"]), rows["client-dp"]["test"]["recall@10"]
        label = f"fedrec, client-level DP ({recall:.4f}{', below the axis' if recall < bottom else ''})"
        ax.plot([eps], [max(recall, bottom)], "v" if recall < bottom else "s", color="grey", label=label)
    same = {"VQ-Rec": "C2", "VQ-Rec (re-pretrained)": "C2", "MISSRec (text+image+ID)": "C4"}
    for model, (recall, _, _) in SAME_SPLIT.items():
        ax.axhline(
            recall,
            color=same.get(model, "C3"),
            linestyle="-" if "re-pretrained" not in model else "-.",
            linewidth=1.2,
            label=f"{model} (published, same split, non-private: {recall:.4f})",
        )
    for model, (recall, _) in PUBLISHED.items():
        ax.axhline(
            recall,
            color="black",
            linestyle="--",
            linewidth=0.8,
            alpha=0.35,
            label=f"{model} (published, different split (Recformer's own): {recall:.4f})",
        )
    for name, style, label in (
        ("federated", "C0", "fedrec federated non-private, partner mode"),
        ("fed-nonprivate", "C1", "fedrec federation mode, non-private"),
        ("zero-shot", "grey", "zero-shot"),
    ):
        if name in rows:
            recall = rows[name]["test"]["recall@10"]
            label = f"{label} ({recall:.4f})"
            ax.axhline(recall, color=style, linestyle=":", linewidth=1.5, label=label)
    ax.set_xscale("log")
    ax.set_xlabel(
        "ε at δ = 1e-5 (per-partner: max over clients; federation mode: aggregate view; client-level: RDP)"
    )
    ax.set_ylabel("test Recall@10 (last round)")
    ax.set_title(f"Amazon Scientific: privacy–utility ({scale} scale)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6.5, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def learning_curves_plot(rows: dict[str, dict], path: Path, scale: str) -> None:
    """Valid Recall@10 by round: partner-mode rows (a few long rounds) and federation mode (many steps)."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, title, names in (
        (axes[0], "partner mode and centralized", [n for n in ORDER if n not in FEDERATION_ROWS]),
        (axes[1], "federation mode (one noisy step a round)", list(FEDERATION_ROWS)),
    ):
        for name in names:
            row = rows.get(name)
            if not row or not row.get("curve"):
                continue
            curve = row["curve"]
            ax.plot(
                [p["round"] for p in curve],
                [p["valid-recall@10"] for p in curve],
                "o-",
                ms=3,
                label=LABELS[name],
            )
        if "zero-shot" in rows:
            ax.axhline(
                rows["zero-shot"]["valid"]["recall@10"], color="grey", linestyle=":", label="zero-shot"
            )
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_xlabel("round")
        ax.set_ylabel("valid Recall@10 (dataset's own split)")
        ax.set_title(f"{title} ({scale} scale)", fontsize=9)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _has_federated(rows: dict[str, dict]) -> bool:
    return any(name in rows for name in ("federated", *PRIVACY))


def _measured_round_seconds(rows: dict[str, dict], federation: bool = False) -> float | None:
    """Mean measured round time of the rows of one mode (federation mode's rounds are single steps)."""
    times = [
        t
        for name, row in rows.items()
        if (name in FEDERATION_ROWS) == federation
        for t in row.get("round_times_s") or []
    ]
    return sum(times) / len(times) if times else None


def round_times_text(times: list[float]) -> str:
    if len(times) <= 8:
        return ", ".join(f"{t:.0f}" for t in times)
    ordered = sorted(times)
    return (
        f"{len(times)} intervals: median {ordered[len(ordered) // 2]:.1f}, "
        f"min {ordered[0]:.1f}, max {ordered[-1]:.1f} (first {times[0]:.1f}, start-up included)"
    )


def _plan_dict(plan) -> dict:
    from dataclasses import asdict

    return asdict(plan)
