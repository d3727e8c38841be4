"""Smoke test of the quality benchmark on a tiny RecBole folder: every in-process row, the report, the split.

Federated rows (Flower simulation) are not run here; tests/test_end_to_end.py covers the engine, and the
central evaluator's RecBole path is checked directly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks import quality
from benchmarks._quality_data import item_categories
from simulations.evaluation import central_users
from simulations.recbole import load_atomic, write_user_subset

CATEGORY_PATHS = [
    "Tapes, Adhesives & Sealants",
    "Tapes, Adhesives & Sealants Adhesive Tapes Duct Tape",
    "Lab & Scientific Products",
    "Lab & Scientific Products Pipettes",
    "Fasteners Screws Wood Screws",
]
BRANDS = ["Acme", "Kimtech", "Pyrex", "3M", "Eppendorf"]
N_ITEMS = 30


def item_text(i: int) -> str:
    return f"Item number {i} v. {i % 3}. Industrial & Scientific {CATEGORY_PATHS[i % 5]}. {BRANDS[i % 5]}. "


def tiny_sequences() -> dict[str, list[int]]:
    """12 users, 4-7 items each, skewed so that popularity has a clear order; one user repeats an item."""
    rng = np.random.default_rng(7)
    weights = np.linspace(3, 0.2, N_ITEMS)
    sequences = {}
    for u in range(12):
        length = 4 + u % 4
        sequences[f"AU{u:02d}"] = [
            int(i) for i in rng.choice(N_ITEMS, length, replace=False, p=weights / weights.sum())
        ]
    sequences["AU03"].insert(2, sequences["AU03"][0])  # a repeated item, as the real data has
    return sequences


def write_folder(folder: Path, sequences: dict[str, list[int]]) -> Path:
    """The RecBole atomic files UniSRec publishes (item tokens are indices, histories untruncated)."""
    folder.mkdir(parents=True, exist_ok=True)
    asins = [f"B{i:04d}" for i in range(N_ITEMS)]
    users = sorted(sequences)
    header = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
    files = {
        "item2index": "".join(f"{a}\t{i}\n" for i, a in enumerate(asins)),
        "user2index": "".join(f"{u}\t{k}\n" for k, u in enumerate(users)),
        "text": "item_id:token\ttext:token_seq\n"
        + "".join(f"{a}\t{item_text(i)}\n" for i, a in enumerate(asins)),
        "train.inter": header,
        "valid.inter": header,
        "test.inter": header,
    }
    for k, u in enumerate(users):
        s = sequences[u]
        for end in range(1, len(s) - 2):
            files["train.inter"] += f"{k}\t{' '.join(map(str, s[:end]))}\t{s[end]}\n"
        files["valid.inter"] += f"{k}\t{' '.join(map(str, s[:-2]))}\t{s[-2]}\n"
        files["test.inter"] += f"{k}\t{' '.join(map(str, s[:-1]))}\t{s[-1]}\n"
    for suffix, text in files.items():
        (folder / f"Tiny.{suffix}").write_text(text)
    return folder


def popularity_by_hand(sequences: dict[str, list[int]]) -> float:
    """Test Recall@10 of 'most frequent training items first, history excluded', written out plainly."""
    counts = [0] * N_ITEMS
    for s in sequences.values():
        for item in s[:-2]:
            counts[item] += 1
    order = sorted(range(N_ITEMS), key=lambda i: (-counts[i], i))
    hits = 0
    for s in sequences.values():
        seen = set(s[:-1])
        top10 = [i for i in order if i not in seen][:10]
        hits += s[-1] in top10
    return hits / len(sequences)


def test_item_categories_are_top_level_nodes_of_the_path() -> None:
    texts = [item_text(i) for i in range(5)] + ["Mr. Heater Kit. . Mr. Heater. "]
    assert item_categories(texts) == [
        "Tapes, Adhesives & Sealants",
        "Tapes, Adhesives & Sealants",
        "Lab & Scientific Products",
        "Lab & Scientific Products",
        "Fasteners Screws",  # no node is a prefix of it: its first two words
        "(none)",
    ]


def test_user_subset_keeps_the_dataset_split(tmp_path: Path) -> None:
    sequences = tiny_sequences()
    folder = write_folder(tmp_path / "tiny", sequences)
    keep = ["AU01", "AU03", "AU10"]
    part = load_atomic(write_user_subset(folder, tmp_path / "sub", keep))
    whole = load_atomic(folder)
    assert part.users.users == keep
    for name in ("train", "valid", "test"):
        rows = [whole.users.users.index(u) for u in keep]
        assert getattr(part.users, name) == [getattr(whole.users, name)[i] for i in rows]
    assert len(part.catalogue) == N_ITEMS  # still ranks over every item


def test_central_evaluator_reads_the_recbole_split_and_checks_item_order(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "tiny", tiny_sequences())
    dataset = load_atomic(folder)
    good = tmp_path / "catalogue.csv"
    dataset.catalogue.to_csv(good, index=False)
    users = central_users(good, folder, tmp_path / "q")
    assert users.test == dataset.users.test and users.train == dataset.users.train
    repeated = users.train[dataset.users.users.index("AU03")]
    assert len(set(repeated)) < len(repeated)  # repeats kept exactly as published
    bad = tmp_path / "shuffled.csv"
    dataset.catalogue.iloc[::-1].to_csv(bad, index=False)
    with pytest.raises(ValueError, match="same order"):
        central_users(bad, folder, tmp_path / "q")


def test_in_process_rows_and_report(tmp_path: Path) -> None:
    sequences = tiny_sequences()
    folder = write_folder(tmp_path / "tiny", sequences)
    results = tmp_path / "results"
    rows = ["popularity", "zero-shot", "centralized", "local-only"]
    argv = [
        "--data",
        str(folder),
        "--rows",
        ",".join(rows),
        "--results",
        str(results),
        "--work",
        str(tmp_path / "w"),
    ]
    argv += ["--clients", "2", "--rounds", "1", "--local-steps", "1", "--batch-size", "4"]
    assert quality.main(argv) == 0

    written = {row: json.loads((results / "quality" / f"{row}.json").read_text()) for row in rows}
    for row, data in written.items():
        for split in ("valid", "test"):
            for metric in ("recall@10", "ndcg@10", "recall@50", "ndcg@50"):
                assert 0.0 <= data[split][metric] <= 1.0, (row, split, metric)
            assert data[split]["ndcg@10"] <= data[split]["recall@10"]
            assert data[split]["recall@10"] <= data[split]["recall@50"]
        assert data["data"]["users"] == len(sequences)
    assert written["popularity"]["test"]["recall@10"] == pytest.approx(popularity_by_hand(sequences))
    assert written["centralized"]["curve"][0]["round"] == 0 and len(written["centralized"]["curve"]) == 2
    # Zero-shot is the centralized model before training: same towers, same split.
    assert written["centralized"]["curve"][0]["test-recall@10"] == pytest.approx(
        written["zero-shot"]["test"]["recall@10"]
    )
    local = written["local-only"]
    assert len(local["per_client"]) == 2
    assert sum(c["users"] for c in local["per_client"]) == len(sequences)
    assert local["test"]["recall@10"] == pytest.approx(
        np.mean([c["test"]["recall@10"] for c in local["per_client"]])
    )

    table = (results / "results.md").read_text()
    for row in quality.ROWS:
        assert quality.report.LABELS[row] in table
    for name in ("SASRec", "UniSRec", "Recformer"):
        assert name in table
    full_table = table.split("## Quick scale")[0]
    not_run = [line for line in full_table.splitlines() if "| not run |" in line]
    assert len(not_run) == len(quality.ROWS) - len(rows)
    assert all("est." in line and "min" in line for line in not_run)
    assert f"{written['popularity']['test']['recall@10']:.4f}" in full_table
    assert (results / "privacy_utility.png").stat().st_size > 0
    assert (results / "learning_curves.png").stat().st_size > 0

    # A model change tried with --variant lands beside the default row, which it leaves alone, and the
    # report states what it bought against that row.
    default_centralized = (results / "quality" / "centralized.json").read_text()
    variant = (
        argv[:3] + ["centralized"] + argv[4:] + ["--run-config", "bias-learning-rate=0.5", "--variant", "hot"]
    )
    assert quality.main(variant) == 0
    assert (results / "quality" / "centralized.json").read_text() == default_centralized
    tried = json.loads((results / "quality" / "variants" / "hot" / "centralized.json").read_text())
    assert tried["plan"]["run_config"] == {"bias-learning-rate": "0.5"}
    section = (results / "results.md").read_text().split("## Model changes tried")[1]
    line = next(line for line in section.splitlines() if line.startswith("| hot |"))
    delta = tried["test"]["recall@10"] - written["centralized"]["test"]["recall@10"]
    assert "bias-learning-rate=0.5" in line and f"({delta:+.4f})" in line


def test_a_variant_measured_at_several_epsilons_is_drawn_as_its_own_frontier(tmp_path: Path) -> None:
    """Only variants with two or more user-level DP rows make a curve; the plot states their values."""
    from benchmarks import _quality_report as report

    def row(folder: Path, name: str, recall: float, epsilon: float | None) -> dict:
        data = {"row": name, "test": {"recall@10": recall}}
        if epsilon is not None:
            data["epsilon"] = {"client-0": epsilon, "client-1": epsilon - 0.01}
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.json").write_text(json.dumps(data))
        return data

    variants = tmp_path / "variants"
    row(variants / "tuned", "dp-eps8", 0.11, 8.0)
    row(variants / "tuned", "dp-eps1", 0.10, 1.0)
    row(variants / "tuned", "federated", 0.12, None)
    row(variants / "one-point", "dp-eps8", 0.2, 8.0)
    row(variants / "one-point", "client-dp", 0.2, None)
    frontiers = report.variant_frontiers(variants)
    assert list(frontiers) == ["tuned"]
    assert report._user_level_points(frontiers["tuned"]) == [(1.0, 0.10), (8.0, 0.11)]

    default = {"dp-eps8": row(tmp_path / "default", "dp-eps8", 0.09, 8.0)}
    path = tmp_path / "frontier.png"
    report.privacy_utility_plot(default, path, "full", frontiers)
    assert path.stat().st_size > 0


COMMITTED = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "quality"


@pytest.mark.parametrize("row", ["federated", "dp-eps8", "dp-eps3", "dp-eps1", "client-dp"])
def test_partner_rows_keep_their_committed_configuration(row: str) -> None:
    """Whatever the pyproject defaults become, a partner-mode row runs with the config its JSON records."""
    committed = json.loads((COMMITTED / f"{row}.json").read_text())["run_config"]
    built = quality.federated_config(quality.FULL, row, [900] * 10, {}).to_flower()
    assert {k: built[k] for k in committed} == committed
    assert built["dp-mode"] == "partner" and built["federation-population"] == 0


def test_federation_rows_declare_the_federation_population() -> None:
    declared = [400, 450, 500]
    plan = quality.replace(quality.FULL, clients=3)
    for row, target in (("fed-nonprivate", None), ("fed-dp-eps8", 8.0), ("fed-dp-eps1", 1.0)):
        cfg = quality.federated_config(plan, row, declared, {"run-dir": "x"})
        assert cfg.federation_dp and cfg.secure_aggregation and cfg.run_dir == "x"
        assert cfg.federation_population == sum(declared) and cfg.min_clients == 3
        assert (cfg.lora_rank, cfg.item_id_rank, cfg.learning_rate) == (0, 16, 0.003)
        assert cfg.num_server_rounds == quality.FEDERATION_ROUNDS
        assert cfg.private == (target is not None)
        if target:
            assert cfg.target_epsilon == target and cfg.delta == 1e-5
    quick = quality.federated_config(quality.QUICK, "fed-dp-eps8", declared, {})
    assert quick.num_server_rounds == quality.QUICK.federation_rounds
    # a variant's --run-config wins over the row's pinned values
    tried = quality.replace(plan, run_config={"learning-rate": "0.01", "lora-rank": "0"})
    assert quality.federated_config(tried, "fed-dp-eps8", declared, {}).learning_rate == 0.01
    assert quality.federated_config(tried, "dp-eps8", declared, {}).lora_rank == 0


def test_share_of_the_learnable_gain_and_federation_epsilon(tmp_path: Path) -> None:
    from benchmarks import _quality_report as report

    def metrics(recall: float) -> dict:
        return {"recall@10": recall, "ndcg@10": recall / 2, "recall@50": 2 * recall, "ndcg@50": recall}

    def row(name: str, test: float, valid: float, **extra) -> dict:
        plan = {"clients": 3, "alpha": 0.5, "rounds": 4, "local_steps": 10, "batch_size": 64}
        return {
            "row": name,
            "test": metrics(test),
            "valid": metrics(valid),
            "plan": plan,
            "wall_time_s": 60.0,
            "command": "c",
            **extra,
        }

    federation = {"epsilon": {"aggregate": 7.99, "share": 61.2}, "sigma": 1.1, "share_sigma": 0.64}
    federation |= {"noise_shares": 3, "population": 1500}
    rows = {
        "zero-shot": row("zero-shot", 0.10, 0.11),
        "federated": row("federated", 0.11, 0.13),
        "dp-eps8": row("dp-eps8", 0.1025, 0.115, epsilon={"client-0": 8.0}),
        "fed-nonprivate": row("fed-nonprivate", 0.14, 0.15),
        "fed-dp-eps8": row("fed-dp-eps8", 0.13, 0.14, federation=federation, run_config={}),
    }
    assert report.gain_kept(rows, "dp-eps8", "test") == pytest.approx(0.25)
    assert report.gain_kept(rows, "dp-eps8", "valid") == pytest.approx(0.25)
    assert report.gain_kept(rows, "fed-dp-eps8", "test") == pytest.approx(0.75)
    assert report.gain_kept(rows, "fed-dp-eps8", "valid") == pytest.approx(0.75)
    assert report.gain_text(rows, "fed-dp-eps8") == "test 75% / valid 75%"
    assert report.gain_text(rows, "federated") == ""  # not a DP row
    assert report.max_epsilon(rows["fed-dp-eps8"]) == pytest.approx(7.99)  # the aggregate view
    assert "7.99 (aggregate view)" in report.epsilon_text(rows["fed-dp-eps8"])
    assert "61.20 (share view)" in report.epsilon_text(rows["fed-dp-eps8"])
    lines = report.table(rows, None, quick=False)
    fed = next(line for line in lines if line.startswith(f"| {report.LABELS['fed-dp-eps8']} |"))
    assert "test 75% / valid 75%" in fed
    assert any("VQ-Rec" in line and "same split" in line for line in lines)
    assert any("Recformer" in line and "different split" in line for line in lines)
    path = tmp_path / "frontier.png"
    report.privacy_utility_plot(rows, path, "full")
    assert path.stat().st_size > 0
    # zero-shot is the reference's own untrained model when its curve has round 0
    rows["fed-nonprivate"]["curve"] = [{"round": 0, "test-recall@10": 0.12, "valid-recall@10": 0.13}]
    assert report.gain_kept(rows, "fed-dp-eps8", "test") == pytest.approx(0.5)
    assert report.gain_kept(rows, "fed-dp-eps8", "valid") == pytest.approx(0.5)
    rows["fed-nonprivate"]["test"] = metrics(0.11)  # below its own zero-shot: no gain to keep
    assert report.gain_kept(rows, "fed-dp-eps8", "test") is None
    assert "test n/a" in report.gain_text(rows, "fed-dp-eps8")


def test_inprocess_summary_averages_noise_draws_per_series_against_the_best_non_private_point(tmp_path):
    """Draws of one setting are one line (mean ± std); the gain kept uses the best validation point of the
    same model's non-private runs; what was published and the learning rate tell series apart."""

    def run(name, private, valid, test, curve, **knobs):
        cfg = {"private": private, "sequence-layers": 0, "sequence-learning-rate": 0.001, "item-id-rank": 16}
        cfg |= {"temperature": 0.12, "max-length": 64, "learning-rate": 0.001, "num-server-rounds": 300}
        out = {
            "run_config": cfg | knobs,
            "valid": {"recall@10": valid},
            "test": {"recall@10": test, "ndcg@10": test / 2},
            "curve": [{"valid-recall@10": v} for v in curve],
            "federation": {"aggregate": 7.99} if private else {},
        }
        (tmp_path / f"{name}.json").write_text(json.dumps(out))

    run("np", False, 0.12, 0.11, [0.10, 0.14, 0.12])  # best validation point 0.14
    run("a", True, 0.12, 0.11, [0.10, 0.12], **{"model-average-decay": 0.98})
    run("b", True, 0.14, 0.13, [0.10, 0.14], **{"model-average-decay": 0.98})
    run("c", True, 0.11, 0.10, [0.10, 0.11])  # before the knob: the last step was published
    lines = quality.report.inprocess_summary(quality.report.load_inprocess(tmp_path))
    averaged = next(line for line in lines if "average of the steps (0.98)" in line)
    assert "| 8 | 2 | 0.1200 ± 0.0100 | 0.0600 ± 0.0050 | 0.1300 | 75% |" in averaged  # (0.13-0.1)/(0.14-0.1)
    last = next(line for line in lines if "last step" in line)
    assert "| 8 | 1 | 0.1000 ± 0.0000 |" in last and "| 25% |" in last
