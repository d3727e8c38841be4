"""Explanations (issue 15, part 6): each result names the history items, or query words, that added most
to its score; the parts add up to the score exactly, so the explanation is the ranking's own arithmetic."""
# ruff: noqa: F811 (the imported fixtures are test arguments)

from __future__ import annotations

import json

import numpy as np
import pytest
from test_device import TENTS, catalogue, device, published  # noqa: F401 (fixtures)

from fedrec.cli import main

HISTORY = ["i000", "i027", "i042"]  # a tent, a coffee grinder, a chef's knife


def test_recommendations_are_explained_by_history_items(device):
    recs = device.recommend(HISTORY, k=6, explain=True)
    for r in recs:
        assert r.reasons and {x.kind for x in r.reasons} == {"item"}
        assert {x.key for x in r.reasons} <= set(HISTORY)
        assert [x.weight for x in r.reasons] == sorted((x.weight for x in r.reasons), reverse=True)
    for r in recs:  # a coffee item owes most to the grinder, a camping item to the tent
        if r.category.startswith("Kitchen > Coffee"):
            assert r.reasons[0].key == "i027", r
        if r.category.startswith("Camping"):
            assert r.reasons[0].key == "i000", r


def test_the_parts_add_up_to_the_score(device):
    intent = device.profile(HISTORY)
    for r in device.recommend(HISTORY, k=5):
        row = device.rows[device.position[r.item_id]]
        total = float(intent.parts.sum(axis=0) @ row[:-1] + intent.popularity * row[-1])
        assert total == pytest.approx(r.score, abs=1e-4)
        assert np.allclose((intent.parts @ row[:-1]).sum(), total - row[-1], atol=1e-4)


def test_search_results_are_explained_by_query_words(device):
    results = device.search("espresso coffee grinder", k=3, explain=True)
    words = {x.text for r in results for x in r.reasons}
    assert words <= {"espresso", "coffee", "grinder"} and words, results
    assert all(x.kind == "term" for r in results for x in r.reasons)


def test_explain_in_the_command_line(published, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    argv = ["recommend", "--artifact", str(published), "--history", ",".join(HISTORY), "-k", "3"]
    assert main([*argv, "--explain"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 6 and all(line.startswith("      because: ") for line in out[1::2]), out
    titles = {"2-person backpacking tent", "burr coffee grinder for espresso", "chef's knife 20cm"}
    assert any(title in out[1] for title in titles), out
    assert main([*argv, "--explain", "--json"]) == 0
    reasons = [x for r in json.loads(capsys.readouterr().out) for x in r["reasons"]]
    assert reasons and {x["key"] for x in reasons} <= set(HISTORY)
    assert main(["search", "coffee grinder", "--artifact", str(published), "-k", "2", "--explain"]) == 0
    assert "because: " in capsys.readouterr().out
