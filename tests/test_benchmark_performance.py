"""Smoke test of benchmarks/performance.py on tiny sizes (no Flower simulation): the numbers it reports
must be the ones it claims to measure."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from benchmarks.performance import SECTIONS, TINY, Bench, bench_device, run


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return Bench(sizes=TINY, work=tmp_path_factory.mktemp("perf-work"))


@pytest.fixture(scope="module")
def report(bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("perf-results")
    return run(TINY, out, bench.work, log=lambda _: None, bench=bench), out


def test_writes_json_and_every_section_but_the_simulation(report):
    data, out = report
    assert json.loads((out / "performance.json").read_text())["sections"].keys() == data["sections"].keys()
    text = (out / "performance.md").read_text()
    for title in SECTIONS[:5]:
        assert f"## {title}" in text
    assert f"## {SECTIONS[5]}" not in text  # TINY skips Flower
    for section in data["sections"].values():
        assert len(section["loadavg_before"]) == 3 and len(section["loadavg_after"]) == 3


def test_dp_and_non_dp_steps_are_timed_alike(report):
    dp = report[0]["sections"]["dp_step"]
    steps = TINY.dp_reps * (TINY.dp_steps - 1)
    assert dp["dp"]["n"] == dp["non_dp"]["n"] == steps
    assert dp["non_dp"]["examples_per_step"] == [TINY.batch_size] * TINY.dp_reps  # fixed batch without DP
    assert dp["ratio_dp_over_non_dp"] > 0


def test_encoders_agree_on_the_untrained_model(report):
    enc = report[0]["sections"]["encoding"]
    assert enc["titles"] == TINY.encode_titles
    assert enc["cosine"]["min"] > 0.999  # FFA-LoRA's B starts at 0: fedrec's item tower is plain MiniLM
    assert (
        enc["fedrec"]["median_titles_per_s"] > 0 and enc["sentence_transformers"]["median_titles_per_s"] > 0
    )
    assert enc["bf16"]["cosine_to_fp32"]["min"] > 0.99  # bfloat16 moves a vector, not the ranking
    assert 0 <= enc["bf16"]["neighbour_overlap_at_10"] <= 1


def test_device_index_is_approximate_and_measured_against_exact(report):
    dev = report[0]["sections"]["device"]
    assert dev["items"] == TINY.index_items and dev["dimension"] == 385
    assert dev["index_type"] == "IndexHNSWFlat"  # TINY lowers the flat limit to exercise the graph index
    for call in ("recommend", "search"):
        assert 0.9 <= dev[call]["recall@10_device_vs_exact"] <= 1.0
        assert dev[call]["device_call"]["n"] == dev[call]["queries"] > 0
        assert dev[call]["device_call"]["p99_ms"] >= dev[call]["device_call"]["p50_ms"]


def test_exact_index_has_recall_one(bench, report, tmp_path):
    exact = replace(
        TINY, flat_max_items=TINY.index_items, index_type=None, index_queries=10, search_queries=3
    )
    dev = bench_device(Bench(sizes=exact, work=tmp_path, cache=bench.cache))  # same shop and model
    assert dev["index_type"] == "IndexFlatIP"
    for call in ("recommend", "search"):
        assert dev[call]["recall@10_device_vs_exact"] == 1.0


def test_adapter_bytes_are_the_adapter_tensors_and_far_below_the_full_model(report):
    b = report[0]["sections"]["bytes"]
    adapter, full = b["adapter"], b["full_model"]
    # the default model (frozen text tower, no LoRA): user head (384 x 16 + 16 x 384), item bias (one per
    # item) and item ID rows (16 per item), float32
    values = 2 * 384 * 16 + TINY.shop_items * (1 + 16)
    assert (
        adapter["values"] == values
        and adapter["payload_bytes"] == adapter["record_payload_bytes"] == 4 * values
    )
    assert adapter["payload_bytes"] < adapter["wire_bytes"] < adapter["payload_bytes"] + 4096  # headers only
    assert full["values"] > 22_000_000 and full["wire_bytes"] >= full["payload_bytes"]
    assert b["ratio_full_over_adapter"] > 100


def test_client_round_subprocess_reports_rss_and_reply(report):
    r = report[0]["sections"]["rss"]["dp"]
    assert r["private"] is True and r["local_steps"] == TINY.rss_steps
    assert r["vmhwm_mb"] > r["vmhwm_before_round_mb"] > 100  # the round loads a model: the peak grows
    assert r["ru_maxrss_mb"] >= r["vmhwm_mb"] - 1
    # the reply carries a trained adapter (distinct values: no chunk deduplicated) plus metrics and privacy
    assert r["reply_bytes"] > r["reply_arrays_bytes"] > r["reply_arrays_payload_bytes"]
