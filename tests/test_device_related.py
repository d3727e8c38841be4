"""Similar and complementary items (issue 15, part 3), and MMR diversity with coverage (part 5)."""
# ruff: noqa: F811 (the imported fixtures are test arguments)

from __future__ import annotations

import json

import numpy as np
import pytest
from test_device import TENTS, catalogue, device, published  # noqa: F401 (fixtures)

from client.device import coverage, intra_list_similarity
from client.device.diversity import mmr
from fedrec.cli import main


def test_similar_items_are_substitutes(device):
    similar = device.similar("i000", k=4)  # a 2-person backpacking tent
    assert "i000" not in {r.item_id for r in similar}
    assert all(r.category == "Camping > Tents" for r in similar), similar
    assert [r.score for r in similar] == sorted((r.score for r in similar), reverse=True)


def test_complements_come_from_other_categories(device):
    complements = device.complements("i000", k=6)
    assert len(complements) == 6 and all(r.category != "Camping > Tents" for r in complements)
    assert sum(r.category.startswith(("Camping", "Hiking")) for r in complements) >= 4, complements
    with pytest.raises(ValueError, match="item id 'nope' is not in the published catalogue"):
        device.similar("nope")


def test_similar_command(published, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    argv = ["similar", "i027", "--artifact", str(published), "-k", "3", "--json"]
    assert main(argv) == 0
    assert {r["category"] for r in json.loads(capsys.readouterr().out)} == {"Kitchen > Coffee"}
    assert main([*argv, "--complements"]) == 0
    assert "Kitchen > Coffee" not in {r["category"] for r in json.loads(capsys.readouterr().out)}
    assert main(["similar", "nope", "--artifact", str(published)]) == 2
    assert "item id 'nope' is not in the published catalogue" in capsys.readouterr().err


def test_mmr_trades_relevance_for_variety(device):
    plain = device.recommend(TENTS, k=8)
    varied = device.recommend(TENTS, k=8, diversity=0.7)
    assert plain[0].item_id == varied[0].item_id  # the best item stays first
    similarity = [
        intra_list_similarity(device.vectors[[device.position[r.item_id] for r in recs]])
        for recs in (plain, varied)
    ]
    assert similarity[1] < similarity[0]
    assert len({r.category for r in varied}) > len({r.category for r in plain})
    with pytest.raises(ValueError, match="diversity must be between 0 and 1"):
        device.recommend(TENTS, diversity=2)
    unit = np.eye(3, dtype=np.float32)
    assert mmr(np.array([0.9, 0.8, 0.7]), unit, 3, 0.0) == [0, 1, 2]


def test_coverage_is_the_share_of_the_catalogue_shown():
    assert coverage([["a", "b"], ["b", "c"]], 10) == pytest.approx(0.3)
    assert coverage([], 10) == 0.0
