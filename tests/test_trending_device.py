"""Cold start for new shoppers (issue 15, part 4), on the device side: the DP trending list published with
the artifact (format 4, `trending.json`, shared/trending.py) and what a device, a session, the command
line, `fedrec index add` and the HTTP API make of it. The base artifact is test_device.py's (its
fixtures, imported), republished with a trending list: no model is trained or encoded here."""
# ruff: noqa: F811 (the imported fixtures are test arguments)

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from test_artifact import flip_byte, forge  # tests/ is on sys.path under pytest
from test_device import KEY, TENTS, catalogue, published, republish  # noqa: F401 (fixtures)
from test_device_serve import chromium, serving

from client.device import Device, Filters, Session
from client.device.index_add import add_items
from fedrec.cli import main
from shared import artifact
from shared.artifact import TRENDING_FILE, Artifact, ArtifactError, load_artifact
from shared.trending import Trending

# across categories of test_device's shop: coffee, tents, knives, gear, appliances, sleeping bags
TREND = Trending(
    item_ids=("i027", "i000", "i042", "i013", "i050", "i008", "i001", "i028"),
    totals=(41.5, 37.25, 30.0, 22.0, 18.5, 12.0, 9.75, 3.5),
    noise_multiplier=10.0,
    items_per_user=5,
    private=True,
    training="t-0001",
)
COFFEE = ["i027", "i028", "i029", "i030"]  # Kitchen > Coffee


def load(folder: Path) -> Artifact:
    return load_artifact(folder, public_key=KEY.public_key())


@pytest.fixture(scope="module")
def base(published) -> Artifact:
    return load(published / "v0001")


@pytest.fixture(scope="module")
def trending_root(base, tmp_path_factory) -> Path:
    """A publication root whose round 1 carries TREND."""
    root = tmp_path_factory.mktemp("trending") / "index"
    republish(base, root, trending=TREND)
    return root


@pytest.fixture(scope="module")
def device(trending_root, tmp_path_factory) -> Device:
    return Device(trending_root, publisher_key=KEY.public_key(), state_dir=tmp_path_factory.mktemp("state"))


def ids(recs) -> list[str]:
    return [r.item_id for r in recs]


# ---------------------------------------------------------------------------------------------- the artifact
def test_a_trending_list_round_trips_in_format_4(trending_root, base):
    folder = trending_root / "v0001"
    art = load(folder)
    assert art.trending == TREND and art.manifest["format_version"] == artifact.FORMAT_VERSION == 4
    entry = art.manifest["files"][TRENDING_FILE]  # listed and hashed like every other file: signed
    assert (folder / TRENDING_FILE).read_bytes() == TREND.to_json() and entry["bytes"] == len(TREND.to_json())
    assert art.version != base.version  # the version string covers it too
    assert art.item_ids == base.item_ids


def test_a_tampered_trending_list_is_refused(trending_root, tmp_path):
    folder = Path(shutil.copytree(trending_root / "v0001", tmp_path / "v0001"))
    flip_byte(folder / TRENDING_FILE, offset=20)
    with pytest.raises(ArtifactError, match=rf"{folder} refused: trending.json sha256 mismatch"):
        load(folder)


def test_a_trending_list_naming_an_unknown_item_is_refused(base, trending_root, tmp_path):
    forged = TREND.to_json().replace(b'"i042"', b'"nope"')
    folder = Path(shutil.copytree(trending_root / "v0001", tmp_path / "v0001"))
    forge(folder, replace={TRENDING_FILE: forged}, signing_key=KEY)  # as if the publisher had signed it
    with pytest.raises(
        ArtifactError, match=r"trending.json names item 'nope', which is not in the published"
    ):
        load(folder)
    forge(folder, replace={TRENDING_FILE: b'{"item_ids": []}'}, signing_key=KEY)
    with pytest.raises(ArtifactError, match=r"trending.json fields \['item_ids'\], expected"):
        load(folder)
    unknown = Trending(("i000", "gone"), (2.0, 1.0), 1.0, 1, True, "t")
    with pytest.raises(ValueError, match=r"unpublished item id\(s\), e.g. \['gone'\]"):  # nor published
        republish(base, tmp_path / "refused", trending=unknown)
    assert not (tmp_path / "refused" / "v0001").exists()


def test_an_unlisted_trending_list_and_one_in_format_3_are_refused(base, tmp_path, monkeypatch):
    folder = republish(base, tmp_path / "plain")
    (folder / TRENDING_FILE).write_bytes(TREND.to_json())
    with pytest.raises(ArtifactError, match="trending.json is not listed in the manifest"):
        load(folder)
    monkeypatch.setattr(artifact, "FORMAT_VERSION", 3)
    folder = republish(base, tmp_path / "old", trending=TREND)
    with pytest.raises(ArtifactError, match="trending.json is listed, but format 3 holds no trending list"):
        load(folder)


def test_a_format_3_artifact_still_loads_and_says_it_has_no_trending_list(base, tmp_path, monkeypatch):
    monkeypatch.setattr(artifact, "FORMAT_VERSION", 3)  # what a fedrec before format 4 wrote
    republish(base, tmp_path / "index")
    monkeypatch.undo()
    old = Device(tmp_path / "index", publisher_key=KEY.public_key(), state_dir=tmp_path / "state")
    assert old.artifact.manifest["format_version"] == 3 and old.artifact.trending is None
    assert len(old.recommend(TENTS, k=3)) == 3  # a history: the model, as before
    with pytest.raises(ValueError, match=r"empty history: .* carries no trending list for new shoppers"):
        old.recommend([])
    with pytest.raises(ValueError, match=r"empty session \(no event yet\): .* carries no trending list"):
        old.session().recommend()
    assert not old.session().can_recommend() and old.session(TENTS[:1]).can_recommend()


# ---------------------------------------------------------------------------------------------- the device
def test_an_empty_history_gets_the_trending_list_in_order(device):
    recs = device.recommend([], k=5)
    assert ids(recs) == list(TREND.item_ids[:5])
    assert [r.score for r in recs] == list(TREND.totals[:5])  # the noisy vote totals, not a model score
    top = recs[0]
    assert (top.title, top.category) == ("burr coffee grinder for espresso", "Kitchen > Coffee")
    for rec, total in zip(recs, TREND.totals, strict=False):
        (reason,) = rec.reasons  # explained or not: its one reason
        assert (reason.kind, reason.key, reason.weight) == ("trending", "t-0001", total)
        assert (
            reason.text == f"trending: among the federation's most engaged items (DP vote total {total:.1f})"
        )
    assert ids(device.recommend([], k=100)) == list(TREND.item_ids)  # fewer than k: all there are
    assert ids(device.recommend([], k=3, diversity=0.5)) == list(TREND.item_ids[:3])  # a fixed ranking


def test_trending_excludes_purchases_and_respects_filters(device):
    recs = device.recommend([], k=4, exclude=["i027", "i042", "not-published"])
    assert ids(recs) == ["i000", "i013", "i050", "i008"]
    kitchen = device.recommend([], k=10, filters=Filters(categories=("kitchen",)))
    assert ids(kitchen) == ["i027", "i042", "i050", "i028"]
    assert all(r.category.startswith("Kitchen") for r in kitchen)
    assert ids(device.recommend([], filters=Filters(categories=("Hiking",)))) == []  # none trending there
    with pytest.raises(ValueError, match="no published item matches the filters"):
        device.recommend([], filters=Filters(brands=("Nobody",)))
    assert device.recommend(TENTS, k=3)[0].reasons == ()  # a history: the model, as before


def test_a_session_starts_on_the_trending_list_then_follows_its_events(device):
    session = device.session(purchased=["i000"], k=4, explain=True)
    assert session.can_recommend()
    assert ids(session.recommend()) == ["i027", "i042", "i013", "i050"]  # purchased: never
    for item_id in COFFEE[:3]:
        recs = session.add("view", item_id)
    assert {r.reasons[0].kind for r in recs} == {"item"}  # the model's, explained by the items viewed
    assert not set(ids(recs)) & {"i000", *COFFEE[:3]}
    assert recs[0].category == "Kitchen > Coffee"
    expected = Session(device, [], ["i000"], k=4, explain=True)
    for item_id in COFFEE[:3]:
        expected.add("view", item_id)
    assert ids(recs) == ids(expected.recommend())


# ---------------------------------------------------------------------------------------------- index add
def test_index_add_carries_the_trending_list_forward(trending_root, tmp_path):
    root = Path(shutil.copytree(trending_root, tmp_path / "index"))
    new = pd.DataFrame({"item_id": ["n001"], "title": ["titanium spork"], "category": ["Camping > Gear"]})
    new.to_csv(tmp_path / "new.csv", index=False)
    folder = add_items(root, tmp_path / "new.csv", KEY)
    art = load(folder)
    assert art.round == 2 and art.item_ids[-1] == "n001"
    assert art.trending == TREND and (folder / TRENDING_FILE).read_bytes() == TREND.to_json()


# ---------------------------------------------------------------------------------------------- command line
def test_recommend_without_a_history_prints_the_trending_list(
    trending_root, published, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("HOME", str(tmp_path))
    key = ["--publisher-key", str(published.parent / "server" / "publisher.pub")]
    argv = ["recommend", "--artifact", str(trending_root), *key, "-k", "3", "--json"]
    assert main([*argv, "--exclude", "i000"]) == 0
    out = capsys.readouterr()
    assert [r["item_id"] for r in json.loads(out.out)] == ["i027", "i042", "i013"]
    assert "no history: the trending list of r0001-" in out.err
    assert main([*argv[:-1], "--explain"]) == 0
    assert "because: trending: among the federation's most engaged items (DP vote total 41.5)" in (
        capsys.readouterr().out
    )
    assert main(["recommend", "--artifact", str(published), *key]) == 2  # no list: one error line
    assert "carries no trending list for new shoppers" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- HTTP API
def test_the_http_api_answers_a_new_shopper_with_the_trending_list(
    trending_root, published, device, tmp_path
):
    with serving(trending_root, published.parent / "server" / "publisher.pub", tmp_path) as server:
        assert server.call("GET", "/api/info")[1]["trending"] == len(TREND.item_ids)
        answer = server.post("/api/recommend", {"k": 3, "exclude": ["i027"]})["results"]
        assert [r["item_id"] for r in answer] == ["i000", "i042", "i013"]
        assert [r["reasons"][0]["kind"] for r in answer] == ["trending"] * 3
        assert server.post("/api/recommend", {"history": []})["results"][0]["item_id"] == "i027"

        created = server.post("/api/session", {"k": 4})
        assert [r["item_id"] for r in created["recommendations"]] == list(TREND.item_ids[:4])
        session = f"/api/session/{created['session_id']}"
        assert [r["item_id"] for r in server.call("GET", session)[1]["recommendations"]] == list(
            TREND.item_ids[:4]
        )
        answer = server.post(f"{session}/events", {"event": "click", "item_id": "i028"})["recommendations"]
        assert answer and {r["reasons"][0]["kind"] for r in answer} == {"item"}

        if shutil.which("chromium"):  # the page of a new browser session shows the trending list
            dom = chromium("--dump-dom", server.url + "/", profile=tmp_path / "profile").stdout
            assert 'data-state="ready"' in dom, dom[-2000:]
            recommended = dom.split('id="recommendations"')[1].split("</ol>")[0]
            assert recommended.count('class="item"') == len(TREND.item_ids)  # k 10: all 8 of them
            assert recommended.index('data-item-id="i027"') < recommended.index('data-item-id="i028"')
            assert 'data-kind="trending"' in recommended and "DP vote total 41.5" in recommended
