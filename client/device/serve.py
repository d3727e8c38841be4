"""`fedrec serve`: the device as a small local HTTP service, with one page to try it in a browser.

A shop backend (or a person) asks over HTTP what the Python API answers: recommend, search, similar,
complements, and a session that takes events as they happen (session.py). Everything stays in this
process: a session lives in memory under a random id (one per browser session), is never written
anywhere, and is forgotten when the server stops or when MAX_SESSIONS newer ones push it out.

- Bound to 127.0.0.1 by default; the Host header must name this machine (or the host it was bound to),
  so a web page elsewhere cannot reach it through DNS rebinding; POSTs must be JSON, so a cross-site
  form cannot send events without a CORS preflight, which this server never grants.
- Bad input is a 4xx JSON answer {"error": message}: 400 malformed, out of range or too long, 404 an
  unknown item, session or path, 405 a wrong method, 413 a body over MAX_BODY_BYTES, 415 not JSON. A bug is a
  500 with a generic message (its traceback goes to this server's log, never to the client).
- Device calls take one lock: the one-thread switch of threads.py is process-wide, and a Session is
  not safe to change from two threads at once. A device call is milliseconds, so it costs little.
- A new shopper (an empty history, a session before its first event) gets the artifact's trending list,
  each result with its trending reason (runtime.py); an artifact without one answers 400 saying so (for a
  session: no recommendations until its first event). /api/info says how many items the list holds.
- The page (page/) is plain HTML + JS served from here, nothing external: no CDN, no fonts.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from client.device.filters import Filters
from client.device.items import Recommendation
from client.device.runtime import MAX_K, Device
from client.device.session import Session
from shared.schema import EVENT_TYPES, MAX_ID_CHARS, MAX_QUERY_CHARS

PAGE = Path(__file__).resolve().parent / "page"
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8000
MAX_BODY_BYTES = 1 << 20  # a request body; a history of MAX_IDS long ids fits
MAX_IDS = 1_000  # item ids in one list (history, exclude, purchased): a session keeps no more
MAX_SESSIONS = 1_000  # sessions kept in memory; the least recently used goes first
MAX_VALUES = 100  # values of one filter field
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
T = TypeVar("T")


class BadRequest(Exception):
    """Input the service refuses; `status` is the HTTP code of the JSON answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.status = message, status


# ---------------------------------------------------------------------------------------------- input
class Body:
    """A request's JSON object, read field by field with its type and range checked; a field it does not
    know is an error (a typo would otherwise be ignored silently)."""

    def __init__(self, data: Any, known: tuple[str, ...]) -> None:
        if not isinstance(data, dict):
            raise BadRequest("the request body must be a JSON object")
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise BadRequest(f"unknown field(s) {unknown}; this endpoint takes {sorted(known)}")
        self.data = data

    def text(self, name: str, limit: int, required: bool = False) -> str | None:
        value = self.data.get(name)
        if value is None:
            if required:
                raise BadRequest(f"missing field {name!r}")
            return None
        if not isinstance(value, str):
            raise BadRequest(f"{name} must be a string")
        if len(value) > limit:
            raise BadRequest(f"{name} is longer than {limit} characters")
        return value

    def query(self) -> str:
        """The query, required; longer than the device searches is refused, not cut silently."""
        query = self.text("query", MAX_QUERY_CHARS, required=True)
        if not query.strip():
            raise BadRequest("empty query: give the words to search for")
        return query

    def item(self, name: str = "item_id", required: bool = True) -> str | None:
        return self.text(name, MAX_ID_CHARS, required)

    def ids(self, name: str) -> list[str]:
        value = self.data.get(name)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(i, str) for i in value):
            raise BadRequest(f"{name} must be a list of item id strings")
        if len(value) > MAX_IDS:
            raise BadRequest(f"{name} holds {len(value)} ids; at most {MAX_IDS}")
        return value

    def k(self, default: int = 10) -> int:
        value = self.data.get("k", default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadRequest("k must be an integer")
        if not 1 <= value <= MAX_K:
            raise BadRequest(f"k must be between 1 and {MAX_K}, got {value}")
        return value

    def share(self, name: str) -> float:
        value = self.number(name)
        value = 0.0 if value is None else value
        if not 0.0 <= value <= 1.0:
            raise BadRequest(f"{name} must be between 0 and 1, got {value}")
        return value

    def number(self, name: str, data: dict | None = None) -> float | None:
        value = (self.data if data is None else data).get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BadRequest(f"{name} must be a number")
        return float(value)

    def flag(self, name: str, default: bool) -> bool:
        value = self.data.get(name, default)
        if not isinstance(value, bool):
            raise BadRequest(f"{name} must be true or false")
        return value

    def filters(self) -> Filters | None:
        """{"categories": [...], "brands": [...], "min_price": x, "max_price": y}, each optional."""
        value = self.data.get("filters")
        if value is None:
            return None
        fields = ("categories", "brands", "min_price", "max_price")
        if not isinstance(value, dict) or set(value) - set(fields):
            raise BadRequest(f"filters must be an object with fields among {list(fields)}")
        lists = {}
        for name in ("categories", "brands"):
            values = value.get(name, [])
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise BadRequest(f"filters.{name} must be a list of strings")
            if len(values) > MAX_VALUES or any(len(v) > MAX_ID_CHARS for v in values):
                raise BadRequest(f"filters.{name}: at most {MAX_VALUES} values of {MAX_ID_CHARS} characters")
            lists[name] = tuple(values)
        low, high = self.number("min_price", value), self.number("max_price", value)
        try:
            filters = Filters(lists["categories"], lists["brands"], low, high)
        except ValueError as err:
            raise BadRequest(f"filters: {err}") from None
        return filters or None


def results(recs: list[Recommendation]) -> list[dict]:
    """Results as JSON objects: item_id, title, score, brand, category, price, reasons."""
    return [asdict(r) for r in recs]


# ---------------------------------------------------------------------------------------------- service
class Service:
    """The device behind the HTTP endpoints, one call at a time, and the sessions it keeps in memory."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self.lock = threading.Lock()
        self.sessions: OrderedDict[str, Session] = OrderedDict()

    async def call(self, work: Callable[[], T]) -> T:
        """Run `work` in a worker thread, holding the device lock; the device's ValueErrors are 400s."""

        def locked() -> T:
            with self.lock:
                try:
                    return work()
                except ValueError as err:
                    raise BadRequest(" ".join(str(err).split())) from None

        return await run_in_threadpool(locked)

    def known(self, *item_ids: str | None, lists: tuple[list[str], ...] = ()) -> None:
        """404 naming the ids the published catalogue lacks."""
        wanted = [i for i in item_ids if i is not None] + [i for ids in lists for i in ids]
        unknown = self.device.unknown(wanted)
        if unknown:
            shown = ", ".join(repr(i[:64]) for i in unknown[:5])
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            version = self.device.artifact.version
            raise BadRequest(
                f"unknown item id(s) {shown}{more}: not in the published catalogue {version}", 404
            )

    def session(self, session_id: str) -> Session:
        session = self.sessions.get(session_id)
        if session is None:
            raise BadRequest(f"unknown session {session_id[:64]!r} (expired, or the server restarted)", 404)
        self.sessions.move_to_end(session_id)
        return session

    def keep(self, session: Session) -> str:
        session_id = secrets.token_urlsafe(16)
        self.sessions[session_id] = session
        while len(self.sessions) > MAX_SESSIONS:
            self.sessions.popitem(last=False)
        return session_id

    # ------------------------------------------------------------------ endpoints
    async def info(self, request: Request) -> JSONResponse:
        artifact = self.device.artifact
        return JSONResponse(
            {
                "version": artifact.version,
                "round": artifact.round,
                "n_items": len(artifact.item_ids),
                "max_k": MAX_K,
                "max_query_chars": MAX_QUERY_CHARS,
                "events": list(EVENT_TYPES),
                "sessions": len(self.sessions),
                "trending": 0 if artifact.trending is None else len(artifact.trending.item_ids),
            }
        )

    async def recommend(self, request: Request) -> JSONResponse:
        body = Body(await read_json(request), ("history", "k", "exclude", "filters", "diversity", "explain"))
        history, exclude = body.ids("history"), body.ids("exclude")  # no history: a new shopper (trending)
        options = {"filters": body.filters(), "diversity": body.share("diversity")}
        k, explain = body.k(), body.flag("explain", True)
        self.known(lists=(history,))
        recs = await self.call(lambda: self.device.recommend(history, k, exclude, explain=explain, **options))
        return JSONResponse({"results": results(recs)})

    async def search(self, request: Request) -> JSONResponse:
        known = ("query", "k", "filters", "history", "personalize", "exclude", "diversity", "explain")
        body = Body(await read_json(request), known)
        query, history = body.query(), body.ids("history")
        options = {
            "k": body.k(),
            "filters": body.filters(),
            "personalize": body.share("personalize"),
            "exclude": body.ids("exclude"),
            "diversity": body.share("diversity"),
            "explain": body.flag("explain", True),
        }
        self.known(lists=(history,))
        recs = await self.call(lambda: self.device.search(query, history=history or None, **options))
        return JSONResponse({"results": results(recs)})

    async def related(self, request: Request) -> JSONResponse:
        """/api/similar and /api/complements."""
        body = Body(await read_json(request), ("item_id", "k", "filters", "exclude", "diversity"))
        item_id = body.item()
        options = {
            "filters": body.filters(),
            "exclude": body.ids("exclude"),
            "diversity": body.share("diversity"),
        }
        k = body.k()
        self.known(item_id)
        find = self.device.complements if request.url.path.endswith("complements") else self.device.similar
        recs = await self.call(lambda: find(item_id, k, **options))
        return JSONResponse({"results": results(recs)})

    async def new_session(self, request: Request) -> JSONResponse:
        body = Body(
            await read_json(request), ("history", "purchased", "k", "filters", "diversity", "explain")
        )
        history, purchased = body.ids("history"), body.ids("purchased")
        options = {
            "k": body.k(),
            "filters": body.filters(),
            "diversity": body.share("diversity"),
            "explain": body.flag("explain", True),
        }
        self.known(lists=(history,))
        session = await self.call(lambda: Session(self.device, history, purchased, **options))
        recs = await self.call(lambda: session.recommend() if session.can_recommend() else [])
        session_id = self.keep(session)
        return JSONResponse({"session_id": session_id, "recommendations": results(recs)}, status_code=201)

    async def event(self, request: Request) -> JSONResponse:
        """One event in; the session's fresh recommendations (with their reasons) out."""
        session = self.session(request.path_params["session_id"])
        body = Body(await read_json(request), ("event", "item_id", "query"))
        event = body.text("event", 32, required=True)
        if event not in EVENT_TYPES:
            raise BadRequest(f"unknown event {event!r}; expected one of {', '.join(EVENT_TYPES)}")
        item_id, query = body.item(required=False), body.text("query", MAX_QUERY_CHARS)
        if query is not None and not query.strip():
            raise BadRequest("empty query: give the words searched for")
        self.known(item_id)
        recs, history = await self.call(lambda: (session.add(event, item_id, query), session.history()))
        return JSONResponse({"recommendations": results(recs), "history": history})

    async def session_search(self, request: Request) -> JSONResponse:
        """Search within a session: the query joins its history (what the shopper looks for now)."""
        session = self.session(request.path_params["session_id"])
        body = Body(await read_json(request), ("query", "k", "filters", "personalize", "explain"))
        query, k, filters = body.query(), body.k(), body.filters()
        personalize, explain = body.share("personalize"), body.flag("explain", True)
        recs, history = await self.call(
            lambda: (
                session.search(query, k, filters=filters, personalize=personalize, explain=explain),
                session.history(),
            )
        )
        return JSONResponse({"results": results(recs), "history": history})

    async def show_session(self, request: Request) -> JSONResponse:
        session = self.session(request.path_params["session_id"])

        def now() -> tuple[list[Recommendation], list[str]]:
            history = session.history()
            return (session.recommend() if session.can_recommend() else []), history

        recs, history = await self.call(now)
        return JSONResponse({"recommendations": results(recs), "history": history})

    async def end_session(self, request: Request) -> Response:
        self.session(request.path_params["session_id"])
        del self.sessions[request.path_params["session_id"]]
        return Response(status_code=204)


async def read_json(request: Request) -> Any:
    """The body as JSON: 415 if not declared JSON, 413 if over MAX_BODY_BYTES, 400 if malformed."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise BadRequest("send the request body as JSON (Content-Type: application/json)", 415)
    chunks, size = [], 0  # read up to the limit, whatever Content-Length says: memory stays bounded
    async for chunk in request.stream():
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BadRequest(f"request body over {MAX_BODY_BYTES} bytes", 413)
    try:
        return json.loads(b"".join(chunks).decode("utf-8") or "{}")
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BadRequest("the request body is not valid JSON") from None


# ---------------------------------------------------------------------------------------------- the app
async def _refused(request: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, BadRequest)
    return JSONResponse({"error": err.message}, status_code=err.status)


async def _http_error(request: Request, err: Exception) -> JSONResponse:
    """Starlette's own 404 / 405 (unknown path, wrong method) as JSON too."""
    assert isinstance(err, HTTPException)
    message = {404: f"no such path {request.url.path[:200]!r}", 405: f"method {request.method} not allowed"}
    return JSONResponse(
        {"error": message.get(err.status_code, str(err.detail))},
        status_code=err.status_code,
        headers=err.headers,
    )


async def _bug(request: Request, err: Exception) -> JSONResponse:
    """A bug: uvicorn logs its traceback (the operator's log); the client gets no detail."""
    return JSONResponse({"error": "internal error (see the server's log)"}, status_code=500)


async def _page(request: Request) -> FileResponse:
    return FileResponse(PAGE / "index.html", headers={"Cache-Control": "no-store"})


class HostCheck:
    """Refuse (400, JSON) a request whose Host header names neither this machine nor the bound host: a
    page served from elsewhere, pointed here by DNS rebinding, sends its own name. Bound to a wildcard
    address (0.0.0.0, ::), any name is taken: the operator chose to serve the network."""

    def __init__(self, app: ASGIApp, host: str) -> None:
        self.app = app
        try:
            self.any = ipaddress.ip_address(host.strip("[]")).is_unspecified
        except ValueError:
            self.any = False
        self.hosts = {*LOCAL_HOSTS, host.lower(), _url_host(host).lower()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.any:
            headers = dict(scope["headers"])
            name = headers.get(b"host", b"").decode("latin-1").lower()
            name = name.rsplit(":", 1)[0] if not name.endswith("]") else name  # drop the port
            if name not in self.hosts:
                response = JSONResponse({"error": f"host {name[:100]!r} is not served here"}, status_code=400)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(device: Device, host: str = DEFAULT_HOST) -> Starlette:
    """The Starlette app over a loaded device (which the caller keeps, e.g. to warm its model)."""
    service = Service(device)
    session_path = "/api/session/{session_id}"
    routes = [
        Route("/", _page, methods=["GET"]),
        Route("/api/info", service.info, methods=["GET"]),
        Route("/api/recommend", service.recommend, methods=["POST"]),
        Route("/api/search", service.search, methods=["POST"]),
        Route("/api/similar", service.related, methods=["POST"]),
        Route("/api/complements", service.related, methods=["POST"]),
        Route("/api/session", service.new_session, methods=["POST"]),
        Route(session_path, service.show_session, methods=["GET"]),
        Route(session_path, service.end_session, methods=["DELETE"]),
        Route(session_path + "/events", service.event, methods=["POST"]),
        Route(session_path + "/search", service.session_search, methods=["POST"]),
        Mount("/page", StaticFiles(directory=PAGE), name="page"),
    ]
    handlers = {BadRequest: _refused, HTTPException: _http_error, Exception: _bug}
    middleware = [Middleware(HostCheck, host=host)]
    app = Starlette(routes=routes, exception_handlers=handlers, middleware=middleware)
    app.state.service = service
    return app


def serve(device: Device, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
    """Serve until interrupted. The query encoder is built first, so the first search is not seconds."""
    import uvicorn

    device.model()
    print(f"fedrec serve: {device.artifact.version} on http://{_url_host(host)}:{port}/", file=sys.stderr)
    uvicorn.run(create_app(device, host), host=host, port=port, log_level="warning", access_log=False)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
