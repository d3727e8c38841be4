"""`fedrec serve` (issue 15, part 8): the real server in a subprocess on 127.0.0.1, called over HTTP with
urllib; every answer checked against `Device` called in this process on the same signed artifact; bad
input is a 4xx JSON answer, never a traceback; the page renders in headless Chromium.

The artifact is test_device.py's (its fixtures, imported), so it is built the same way."""
# ruff: noqa: F811 (the imported fixtures are test arguments)

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_device import KEY, TENTS, catalogue, published  # noqa: F401 (fixtures)

from client.device import Device, Filters
from client.device.serve import MAX_BODY_BYTES

ROOT = Path(__file__).resolve().parent.parent
COFFEE = ["i027", "i028", "i029"]  # Kitchen > Coffee in test_device's shop
START_TIMEOUT = 180  # s: the server loads the artifact and MiniLM before it answers
CHROMIUM_TIMEOUT = 90  # s per Chromium run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, url: str, process: subprocess.Popen, log: Path) -> None:
        self.url, self.process, self.log = url, process, log

    def call(
        self, method: str, path: str, body=None, *, raw: bytes | None = None, headers: dict | None = None
    ) -> tuple[int, dict]:
        """(status, JSON answer) of one request; every answer of this server is JSON (204: {})."""
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        sent = {"Content-Type": "application/json"} if data is not None else {}
        request = urllib.request.Request(self.url + path, data, {**sent, **(headers or {})}, method=method)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, text = response.status, response.read()
        except urllib.error.HTTPError as err:
            status, text = err.code, err.read()
        assert b"Traceback" not in text
        return status, json.loads(text) if text else {}

    def post(self, path: str, body=None) -> dict:
        status, answer = self.call("POST", path, {} if body is None else body)
        assert status in (200, 201), (path, status, answer)
        return answer


@pytest.fixture(scope="module")
def device(published, tmp_path_factory) -> Device:
    return Device(published, publisher_key=KEY.public_key(), state_dir=tmp_path_factory.mktemp("state"))


@contextlib.contextmanager
def serving(artifact: Path, key: Path, home: Path) -> Iterator[Server]:
    """`fedrec serve` of `artifact` (pinning `key`) on a free loopback port, in its own process, with
    `home` as its HOME (the device state, ~/.fedrec/device, lands there); stopped by its PID afterwards."""
    port, log = free_port(), home / "serve.log"
    argv = [sys.executable, "-m", "fedrec.cli", "serve", "--artifact", str(artifact), "--port", str(port)]
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(ROOT)}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [*argv, "--publisher-key", str(key)], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        server = Server(f"http://127.0.0.1:{port}", process, log)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert process.poll() is None, f"fedrec serve exited {process.returncode}: {log.read_text()}"
            assert time.monotonic() < deadline, f"fedrec serve did not answer in {START_TIMEOUT} s"
            try:
                if server.call("GET", "/api/info")[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.3)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def server(published, tmp_path_factory):
    key = published.parent / "server" / "publisher.pub"
    with serving(published, key, tmp_path_factory.mktemp("home")) as server:
        yield server


def same(answer: list[dict], recs) -> None:
    """An HTTP answer lists the device's results: the same items, scores, metadata and reasons."""
    assert [r["item_id"] for r in answer] == [r.item_id for r in recs]
    for got, want in zip(answer, recs, strict=True):
        assert got["score"] == pytest.approx(want.score, abs=1e-5)
        assert (got["title"], got["category"], got["price"]) == (want.title, want.category, want.price)
        assert [(x["kind"], x["key"]) for x in got["reasons"]] == [(x.kind, x.key) for x in want.reasons]


# ---------------------------------------------------------------------------------------------- answers
def test_info_names_the_artifact(server, device):
    status, info = server.call("GET", "/api/info")
    assert status == 200
    assert (info["version"], info["n_items"]) == (device.artifact.version, len(device.artifact.item_ids))


def test_recommend_search_similar_complements_answer_as_the_device(server, device):
    body = {"history": TENTS, "k": 5, "exclude": ["i004"], "explain": True}
    same(server.post("/api/recommend", body)["results"], device.recommend(TENTS, 5, ["i004"], explain=True))

    filters = {"categories": ["kitchen"], "max_price": 240}
    answer = server.post("/api/search", {"query": "espresso coffee grinder", "k": 4, "filters": filters})
    want = device.search(
        "espresso coffee grinder", 4, filters=Filters(("kitchen",), max_price=240.0), explain=True
    )
    same(answer["results"], want)
    assert answer["results"][0]["category"] == "Kitchen > Coffee"
    assert all(r["price"] <= 240 for r in answer["results"])

    personal = {"query": "tent", "history": COFFEE, "personalize": 0.5, "diversity": 0.3, "explain": False}
    want = device.search("tent", history=COFFEE, personalize=0.5, diversity=0.3)
    same(server.post("/api/search", personal)["results"], want)

    same(server.post("/api/similar", {"item_id": "i000", "k": 6})["results"], device.similar("i000", 6))
    answer = server.post("/api/complements", {"item_id": "i000", "k": 6})["results"]
    same(answer, device.complements("i000", 6))
    assert all(r["category"] != "Camping > Tents" for r in answer)


def test_a_session_takes_events_and_answers_as_a_device_session(server, device):
    created = server.post("/api/session", {"history": TENTS, "k": 8})
    session_id, local = created["session_id"], device.session(TENTS, k=8, explain=True)
    same(created["recommendations"], local.recommend())

    for event, item_id in [("view", "i027"), ("click", "i028"), ("purchase", "i029")]:
        answer = server.post(f"/api/session/{session_id}/events", {"event": event, "item_id": item_id})
        same(answer["recommendations"], local.add(event, item_id))
        assert all(r["reasons"] for r in answer["recommendations"])  # explanations come with them
    assert answer["history"] == local.history()
    assert "i029" not in {r["item_id"] for r in answer["recommendations"]}  # purchased: never back

    answer = server.post(f"/api/session/{session_id}/search", {"query": "coffee scale", "k": 3})
    same(answer["results"], local.search("coffee scale", 3))
    assert answer["history"][-1] == "query:coffee scale"
    answer = server.post(f"/api/session/{session_id}/events", {"event": "search", "query": "kettle"})
    same(answer["recommendations"], local.add("search", query="kettle"))

    status, shown = server.call("GET", f"/api/session/{session_id}")
    assert status == 200 and shown["history"] == local.history()
    other = server.post("/api/session")["session_id"]  # another browser session: its own, empty
    assert other != session_id and server.call("GET", f"/api/session/{other}")[1]["history"] == []

    assert server.call("DELETE", f"/api/session/{session_id}")[0] == 204
    status, answer = server.call("GET", f"/api/session/{session_id}")
    assert status == 404 and "unknown session" in answer["error"]


def test_concurrent_requests_are_served_one_device_call_at_a_time(server, device):
    want = [r.item_id for r in device.search("camping lantern", 5)]
    answers: list = []

    def ask() -> None:
        answers.append(server.post("/api/search", {"query": "camping lantern", "k": 5})["results"])

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(answers) == 6 and all([r["item_id"] for r in a] == want for a in answers)


# ---------------------------------------------------------------------------------------------- bad input
BAD = [  # (method, path, body, status, what the error says)
    ("POST", "/api/recommend", {"history": ["i000", "nope"]}, 404, "unknown item id(s) 'nope'"),
    ("POST", "/api/similar", {"item_id": "B00NOPE"}, 404, "unknown item id(s) 'B00NOPE'"),
    ("POST", "/api/complements", {"item_id": "nope"}, 404, "unknown item id(s) 'nope'"),
    ("POST", "/api/recommend", {"history": TENTS, "k": 0}, 400, "k must be between 1 and 1000, got 0"),
    ("POST", "/api/recommend", {"history": TENTS, "k": 1001}, 400, "k must be between 1 and 1000"),
    ("POST", "/api/search", {"query": "tent", "k": "10"}, 400, "k must be an integer"),
    ("POST", "/api/search", {"query": "tent", "k": True}, 400, "k must be an integer"),
    ("POST", "/api/search", {"query": "tent", "k": 2.5}, 400, "k must be an integer"),
    ("POST", "/api/search", {"k": 5}, 400, "missing field 'query'"),
    ("POST", "/api/search", {"query": "   "}, 400, "empty query"),
    ("POST", "/api/search", {"query": 42}, 400, "query must be a string"),
    ("POST", "/api/search", {"query": "t" * 1001}, 400, "query is longer than 1000 characters"),
    ("POST", "/api/search", {"query": "tent", "kk": 5}, 400, "unknown field(s) ['kk']"),
    (
        "POST",
        "/api/search",
        {"query": "tent", "personalize": 0.5},
        400,
        "personalized search needs a history",
    ),
    ("POST", "/api/search", {"query": "tent", "personalize": 2}, 400, "personalize must be between 0 and 1"),
    ("POST", "/api/search", {"query": "t", "filters": {"min_price": 9, "max_price": 1}}, 400, "min_price 9"),
    ("POST", "/api/search", {"query": "t", "filters": {"color": ["red"]}}, 400, "filters must be an object"),
    ("POST", "/api/search", {"query": "t", "filters": {"brands": ["Nobody"]}}, 400, "no published item"),
    ("POST", "/api/recommend", {}, 400, "empty history: there is nothing to recommend from, and the"),
    ("POST", "/api/recommend", {"history": "i000"}, 400, "history must be a list of item id strings"),
    ("POST", "/api/recommend", {"history": ["i000"] * 1001}, 400, "holds 1001 ids; at most 1000"),
    ("POST", "/api/recommend", [1, 2], 400, "must be a JSON object"),
    ("POST", "/api/similar", {}, 400, "missing field 'item_id'"),
    ("POST", "/api/session/nope/events", {"event": "view", "item_id": "i000"}, 404, "unknown session 'nope'"),
    ("GET", "/api/nothing", None, 404, "no such path '/api/nothing'"),
    ("GET", "/api/recommend", None, 405, "method GET not allowed"),
]


@pytest.mark.parametrize("method, path, body, status, message", BAD, ids=[f"{b[1]}-{b[4][:30]}" for b in BAD])
def test_bad_input_is_a_4xx_json_error(server, method, path, body, status, message):
    got, answer = server.call(method, path, body)
    assert (got, list(answer)) == (status, ["error"]), answer
    assert message in answer["error"], answer


def test_bad_session_events_and_bodies_are_4xx_json_errors(server):
    session_id = server.post("/api/session")["session_id"]
    events = f"/api/session/{session_id}/events"
    for body, status, message in [
        ({"event": "like", "item_id": "i000"}, 400, "unknown event 'like'"),
        ({"event": "view"}, 400, "a view event needs an item id"),
        ({"event": "view", "item_id": "nope"}, 404, "unknown item id(s) 'nope'"),
        ({"item_id": "i000"}, 400, "missing field 'event'"),
        ({"event": "search"}, 400, "a search event needs a query"),
    ]:
        got, answer = server.call("POST", events, body)
        assert got == status and message in answer["error"], (body, answer)
    assert server.call("GET", f"/api/session/{session_id}")[1]["history"] == []  # nothing recorded

    assert server.call("POST", "/api/search", raw=b"{not json")[0] == 400
    status, answer = server.call(
        "POST", "/api/search", raw=b'{"query": "tent"}', headers={"Content-Type": "text/plain"}
    )
    assert status == 415 and "Content-Type: application/json" in answer["error"]
    status, answer = server.call("POST", "/api/search", raw=b" " * (MAX_BODY_BYTES + 1))
    assert status == 413 and "request body over" in answer["error"]
    status, answer = server.call("GET", "/api/info", headers={"Host": "rebound.example:8000"})
    assert status == 400 and "host 'rebound.example' is not served here" in answer["error"]


# ---------------------------------------------------------------------------------------------- the page
def test_the_page_and_its_files_are_served(server):
    for path, kind in [("/", "text/html"), ("/page/app.js", "javascript"), ("/page/style.css", "text/css")]:
        with urllib.request.urlopen(server.url + path, timeout=30) as response:
            assert response.status == 200 and kind in response.headers["Content-Type"]
            text = response.read().decode()
        assert "http://" not in text and "https://" not in text  # nothing external: no CDN, no fonts


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    browser = shutil.which("chromium")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"]
    flags += [f"--user-data-dir={profile}", "--hide-scrollbars", "--virtual-time-budget=30000"]
    return subprocess.run(
        [browser, *flags, *args], capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT, check=True
    )


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_the_page_renders_search_results_and_explained_recommendations(server, tmp_path):
    """A visit replayed by its URL: search "coffee grinder", click one result, view a tent."""
    query = urllib.parse.urlencode([("q", "coffee grinder"), ("click", "i027"), ("view", "i001")])
    url = f"{server.url}/?{query}"
    dom = chromium("--dump-dom", url, profile=tmp_path / "profile").stdout
    assert 'data-state="ready"' in dom, dom[-2000:]
    results = dom.split('id="results"')[1].split("</ol>")[0]
    assert results.count('class="item"') == 10 and 'data-item-id="i027"' in results
    recommended = dom.split('id="recommendations"')[1].split("</ol>")[0]
    assert recommended.count('class="item"') == 10
    assert 'data-item-id="i027"' not in recommended  # clicked: seen, not recommended back
    assert 'data-kind="item" data-key="i027"' in recommended  # explained by the history item clicked
    assert "burr coffee grinder for espresso" in dom.split('id="history"')[1]

    shot = tmp_path / "fedrec-page.png"
    chromium(f"--screenshot={shot}", "--window-size=1280,1400", url, profile=tmp_path / "profile2")
    assert shot.stat().st_size > 10_000
    print(f"screenshot of the page: {shot}")
