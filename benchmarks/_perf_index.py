"""Section 7 of benchmarks/performance.py: which index to publish, and which query encoder to run.

At `compare_items` items, the same catalogue is published three times (shared/artifact.py): exact
IndexFlatIP, the HNSW graph, and the compressed IVF-PQ with exact re-ranking from `vectors.npy`. For each:
artifact size on disk, memory once loaded (the RSS a fresh process gains loading it with
`client.device.Device`, in a subprocess: `python -m benchmarks._perf_index rss FOLDER KEY`), recall@10 of
`Device.recommend` / `similar` / `search` against an exact NumPy scan of the same rows, and their p50.
Then the query encoder: fp32 vs bf16 vs int8 copies of the published MiniLM on the same real queries
(cosine of the query rows, top-10 overlap over the catalogue, encode p50), and `Device.search` p50 with
each encoder the device accepted.

The catalogue: Amazon Scientific's real item texts (../shared/datasets/amazon-scientific, 4,385 items)
encoded by the published item tower, then perturbed copies of them up to `compare_items` (as section 3
does with the shop's items; encoding 100k texts would take ~40 min on two cores). Histories are
Amazon Scientific's real user sequences; queries are real item titles cut to their first words.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
AMAZON = ROOT.parent / "shared" / "datasets" / "amazon-scientific"
INDEX_TYPES = ("IndexFlatIP", "IndexHNSWFlat", "IndexIVFPQ")
ENCODERS = ("fp32", "bf16", "int8")


def amazon_catalogue(bench, model) -> tuple[list[str], list[str], np.ndarray, list[list[str]]]:
    """Real item ids, titles, item-tower vectors (cached) and user sequences of Amazon Scientific."""
    import pandas as pd

    from shared.item_cache import catalogue_vectors

    text = pd.read_csv(
        AMAZON / "Scientific.text", sep="\t", names=["item_id", "text"], header=0, dtype=str, quoting=3
    )
    text = text.dropna(subset=["item_id"]).fillna("")
    texts = text["text"].str.strip().tolist()
    vectors = catalogue_vectors(model, texts, bench.work / "item-cache")
    titles = [t.split(". ")[0] for t in texts]
    sequences = []
    with open(AMAZON / "Scientific.sequences.tsv", encoding="utf-8") as f:
        next(f)
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) >= 2:
                sequences.append(parts[1].split())
    return text["item_id"].tolist(), titles, vectors, sequences


def catalogue(bench, model, n: int) -> tuple[np.ndarray, Any, list[list[str]], list[str]]:
    """`n` rows: the real items, then perturbed copies of them (noise of norm U(0.35, 0.75), renormalised)."""
    import pandas as pd

    ids, titles, base, sequences = amazon_catalogue(bench, model)
    rng = np.random.default_rng(0)
    extra = max(n - len(base), 0)
    source = np.concatenate([np.arange(len(base)), rng.integers(len(base), size=extra)])[:n]
    vectors = base[source].copy()
    noise = rng.normal(size=(extra, base.shape[1])).astype(np.float32)
    noise *= (
        rng.uniform(0.35, 0.75, size=(extra, 1)).astype(np.float32) / np.linalg.norm(noise, axis=1)[:, None]
    )
    vectors[len(base) :] += noise
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    item_ids = (ids + [f"var-{i:06d}" for i in range(len(base), n)])[:n]
    items = pd.DataFrame(
        {
            "item_id": item_ids,
            "title": [
                titles[s] if i < len(base) else f"{titles[s]} (variant {i})" for i, s in enumerate(source)
            ],
        }
    )
    known = set(item_ids)
    # distinct, in order of first engagement, as Device.recommend takes a history
    histories = [list(dict.fromkeys(i for i in s if i in known))[-20:] for s in sequences]
    queries = [" ".join(t.split()[:5]) for t in titles if t.strip()]
    return vectors, items, [h for h in histories if len(h) >= 2], queries


def bench_index(bench) -> dict[str, Any]:
    """Flat vs HNSW vs IVF-PQ at `compare_items` items, and the fp32 / bf16 / int8 query encoders."""
    import faiss
    import torch

    from client.device import Device
    from client.device.query import query_intent
    from client.device.query_encoder import agreement, compressed_encoder
    from shared.artifact import ROWS_FILE, write_artifact
    from shared.config import RunConfig
    from shared.model import Recommender
    from shared.signing import ensure_key_pair, run_public_key

    s = bench.sizes
    n, k = s.compare_items, 10
    publisher = Recommender(RunConfig().model_config(n))  # untrained: bias column 0
    vectors, items, histories, queries = catalogue(bench, publisher, n)
    rows = publisher.item_rows(publisher.item_space(vectors))
    rng = np.random.default_rng(2)
    histories = [
        histories[i] for i in rng.choice(len(histories), min(s.compare_queries, len(histories)), False)
    ]
    queries = [queries[i] for i in rng.choice(len(queries), min(s.compare_searches, len(queries)), False)]
    key = ensure_key_pair(bench.work / "server")
    out: dict[str, Any] = {"items": n, "catalogue": "Amazon Scientific texts + perturbed copies", "types": {}}
    model = None
    for index_type in INDEX_TYPES:
        started = time.perf_counter()
        folder = write_artifact(
            bench.work / f"index-{index_type}",
            round=0,
            item_ids=list(items["item_id"]),
            item_vectors=rows,
            items=items,
            trainable_state=publisher.trainable_state(),
            model_config=publisher.config.to_dict(),
            info={"benchmark": "section 7"},
            signing_key=key,
            index_type=index_type,
        )
        publish_s = time.perf_counter() - started
        files = {p.name: p.stat().st_size for p in folder.iterdir()}
        rss = loaded_rss(folder, run_public_key(folder))
        device = Device(
            folder, publisher_key=run_public_key(folder), state_dir=bench.work / f"state-{index_type}"
        )
        if model is not None:
            device._model = model  # the same MiniLM: built once
        model = device.model()
        result = measure(device, histories, queries, k)
        manifest = device.artifact.manifest
        out["types"][index_type] = {
            "index_params": manifest["index_params"],
            "publish_s": publish_s,
            "disk_bytes": sum(files.values()),
            "index_bytes": files["index.faiss"],
            "rows_bytes": files.get(ROWS_FILE, 0),
            "rss": rss,
            **result,
        }
        del device
    # the query encoder, on the last (IVF-PQ) artifact's rows
    assert model is not None
    exact_rows = np.ascontiguousarray(rows)
    encoders = {"fp32": None, **{kind: compressed_encoder(model.encoder, kind) for kind in ENCODERS[1:]}}
    encode: dict[str, list[float]] = {kind: [] for kind in ENCODERS}
    found: dict[str, list[np.ndarray]] = {kind: [] for kind in ENCODERS}
    for i, query in enumerate(queries):
        order = ENCODERS[i % 3 :] + ENCODERS[: i % 3]
        for kind in order:
            started = time.perf_counter()
            row = query_intent(model, query, encoders[kind]).row()[0]
            encode[kind].append(time.perf_counter() - started)
            found[kind].append(row)
    full = np.vstack(found["fp32"])
    out["encoders"] = {}
    for kind in ENCODERS:
        agree = agreement(full, np.vstack(found[kind]), exact_rows)
        out["encoders"][kind] = {
            "encode_p50_ms": 1000 * float(np.median(encode[kind])),
            "cosine_min": agree.cosine_min,
            "cosine_mean": agree.cosine_mean,
            "overlap@10": agree.overlap_at_10,
            "holds": agree.holds,
        }
    folder = bench.work / "index-IndexIVFPQ" / "v0000"
    for kind in ENCODERS:
        device = Device(
            folder,
            publisher_key=run_public_key(folder),
            state_dir=bench.work / "state-enc",
            query_encoder=kind,
        )
        device._model = model
        device.search(queries[0], k=k)  # the first search builds and checks the encoder
        times = []
        for query in queries:
            started = time.perf_counter()
            device.search(query, k=k)
            times.append(time.perf_counter() - started)
        out["encoders"][kind]["device"] = {
            "used": device.query_encoder_used,
            "note": device.query_encoder_note,
            "search_p50_ms": 1000 * float(np.median(times)),
        }
    out["torch_threads"], out["faiss_threads"] = torch.get_num_threads(), faiss.omp_get_max_threads()
    out["queries"], out["searches"] = len(histories), len(queries)
    return out


def measure(device, histories: list[list[str]], queries: list[str], k: int) -> dict[str, Any]:
    """p50 and recall@10 vs an exact scan for recommend, similar and search on one device."""
    from client.device.query import query_intent

    rows = np.asarray(device.rows)
    model = device.model()

    def exact(vector: np.ndarray, banned: set[int]) -> set[int]:
        scores = rows @ vector
        if banned:
            scores[list(banned)] = -np.inf
        return set(np.argpartition(-scores, k)[:k].tolist())

    times: dict[str, list[float]] = {"recommend": [], "similar": [], "search": []}
    recall: dict[str, list[float]] = {"recommend": [], "similar": [], "search": []}
    for history in histories:
        banned = {device.position[i] for i in history}
        started = time.perf_counter()
        got = device.recommend(history, k=k)
        times["recommend"].append(time.perf_counter() - started)
        truth = exact(device.profile(history).row()[0], banned)
        recall["recommend"].append(len(truth & {device.position[r.item_id] for r in got}) / k)
        last = device.position[history[-1]]
        started = time.perf_counter()
        got = device.similar(history[-1], k=k)
        times["similar"].append(time.perf_counter() - started)
        truth = exact(np.append(device.vectors[last], 0.0).astype(np.float32), {last})
        recall["similar"].append(len(truth & {device.position[r.item_id] for r in got}) / k)
    for query in queries:
        started = time.perf_counter()
        got = device.search(query, k=k)
        times["search"].append(time.perf_counter() - started)
        truth = exact(query_intent(model, query).row()[0], set())
        recall["search"].append(len(truth & {device.position[r.item_id] for r in got}) / k)
    return {
        name: {"p50_ms": 1000 * float(np.median(times[name])), "recall@10": float(np.mean(recall[name]))}
        for name in times
    }


def loaded_rss(folder: Path, public_key: Path) -> dict[str, float]:
    """VmRSS of a fresh process before and after it loads the artifact with `Device` (imports done)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, "-m", "benchmarks._perf_index", "rss", str(folder), str(public_key)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=True, timeout=600)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _rss_main(folder: str, public_key: str) -> None:
    import tempfile

    from client.device import Device

    with tempfile.TemporaryDirectory() as state:
        before = _rss_mb()
        started = time.perf_counter()
        device = Device(folder, publisher_key=public_key, state_dir=state)
        load_s = time.perf_counter() - started
        after = _rss_mb()
        device.recommend([device.artifact.item_ids[0], device.artifact.item_ids[1]], k=10)  # first use
        used = _rss_mb()
    print(
        json.dumps(
            {
                "before_mb": before,
                "loaded_mb": after,
                "delta_mb": after - before,
                "after_first_recommend_mb": used,
                "load_s": load_s,
            }
        )
    )


def markdown(v: dict[str, Any]) -> list[str]:
    """Section 7's tables."""
    lines = [
        "## 7. Index choice and compression",
        "",
        f"{v['items']:,} items × 385 ({v['catalogue']}: Amazon Scientific's 4,385 real item texts "
        "encoded by the published item tower, then perturbed copies of them); "
        f"{v['queries']} recommend / similar calls from real Amazon Scientific user sequences, "
        f"{v['searches']} searches of real titles cut to 5 words; k = 10; recall against an exact NumPy "
        "scan of the same rows (Flat's shortfall from 1 is ties: Amazon items of identical text). "
        "Memory: VmRSS a fresh process gains in `Device(...)` (imports done "
        f"before). Torch threads {v['torch_threads']}, FAISS threads {v['faiss_threads']} (a query runs "
        "on one).",
        "",
        "| index | params | on disk (MB) | of which index / exact rows (MB) | RSS once loaded (MB) | "
        "load (s) | publish (s) | recommend p50 (ms) / recall@10 | similar p50 / recall@10 | "
        "search p50 / recall@10 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, t in v["types"].items():
        mb = 1 / 2**20
        lines.append(
            f"| {name} | {t['index_params']} | {t['disk_bytes'] * mb:.1f} | {t['index_bytes'] * mb:.1f} / "
            f"{t['rows_bytes'] * mb:.1f} | {t['rss']['delta_mb']:.0f} | {t['rss']['load_s']:.2f} | "
            f"{t['publish_s']:.0f} | {t['recommend']['p50_ms']:.2f} / {t['recommend']['recall@10']:.4f} | "
            f"{t['similar']['p50_ms']:.2f} / {t['similar']['recall@10']:.4f} | "
            f"{t['search']['p50_ms']:.2f} / {t['search']['recall@10']:.4f} |"
        )
    lines += [
        "",
        "The query encoder: the published MiniLM (+ adapter, LoRA merged) in fp32, bfloat16, and torch "
        "dynamic int8 (per-channel weights), on the same queries in rotating order; cosine of each query "
        "row to fp32 and top-10 overlap over the catalogue; `Device.search` p50 on the IVF-PQ artifact "
        "with each encoder the device accepted (a refused one falls back to fp32: the device's own "
        "agreement check on 24 catalogue titles).",
        "",
        "| encoder | encode p50 (ms) | cosine min / mean | top-10 overlap | agrees (≥ 0.99, ≥ 0.95) | "
        "device uses | Device.search p50 (ms) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, e in v["encoders"].items():
        lines.append(
            f"| {name} | {e['encode_p50_ms']:.1f} | {e['cosine_min']:.4f} / {e['cosine_mean']:.4f} | "
            f"{e['overlap@10']:.3f} | {'yes' if e['holds'] else 'no'} | {e['device']['used']} | "
            f"{e['device']['search_p50_ms']:.1f} |"
        )
    return lines


if __name__ == "__main__":
    if sys.argv[1:2] == ["rss"]:
        _rss_main(sys.argv[2], sys.argv[3])
