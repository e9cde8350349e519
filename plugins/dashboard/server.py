"""The dashboard's HTTP server: the standard library's ``ThreadingHTTPServer``, read-only.

Routes (``GET`` and ``HEAD`` only; anything else is answered 405):

========================================  ==========================================
``/``                                     flows
``/runs?q=&flow=&state=&tag=&since=...``  flow runs, newest first, searched
``/runs/<flow run id>?state=&offset=...`` one flow run: progress, a page of task
                                          runs, subflow runs, graph, a page of logs
``/task-runs/<task run id>``              one task run
``/cache``                                cache entries
``/static/<file>``                        the stylesheet and icon (a fixed list)
``/api/...``                              the same data as JSON (``/api/`` lists
                                          it), and pages of a run's task runs,
                                          logs and its graph
========================================  ==========================================

A query parameter a route does not know, or a bad value, is a 400 naming it.

Static files are served from a table built at start-up from the package's own
``static`` folder: a request names a key of that table, never a path, so nothing else
on disk can be reached.

Every request must name the server by a ``Host`` it knows (``localhost``, ``127.0.0.1``,
``[::1]``, the address it listens on, and ``--allow-host`` names; any port): a web page
that points a name of its own at 127.0.0.1 (DNS rebinding) is answered 421, on every
path, before anything is read from the store.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs, unquote, urlsplit

from headwater.errors import HeadwaterError
from headwater.settings import hide_password
from headwater.stores import FlowRunFilter, MemoryRunStore, RunReader, RunStore, require_part

from . import LOOPBACK_HOSTS, host_name
from . import data as D
from . import pages as P
from . import queries as Q
from . import run_pages as RP

_TYPES = {".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".js": "text/javascript; charset=utf-8",
          ".png": "image/png"}
_SECURITY_HEADERS = {
    # No script at all, styles only from our own stylesheet: even a rendering mistake
    # could not run code someone put in a flow description.
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; "
                               "form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

#: What ``/api/`` answers: the endpoints and their query parameters.
API_INDEX = {
    "endpoints": {
        "/api/flows": "every flow: name, description (markdown), version, tags, run_count, "
                      "state_counts, last_run",
        "/api/flow-runs": "flow runs, newest first; query: q (text in the run's or flow's name), flow "
                          "(repeat for any of several), state (type or name), tag (repeat: all of them), "
                          "since and until (dates, or ISO 8601 times), parent (a flow run id: its subflow "
                          "runs), top=1 (no subflow runs), page, per_page "
                          f"(1-{D.PER_PAGE_MAX}, default {D.PER_PAGE_DEFAULT})",
        "/api/flow-runs/{id}": "one flow run with states, attempts, task_run_counts (total, done, by_type, "
                               "by_name), parent, subflow_runs (the first "
                               f"{D.SUBFLOW_PAGE}) and subflow_runs_total, and the first page of "
                               "task_runs and logs (task_runs_page, logs_page: total, offset, limit); "
                               "query: state, offset, limit, level, log_offset, log_limit",
        "/api/flow-runs/{id}/task-runs": "a page of the run's task runs in creation order: "
                                         "{task_runs, total, offset, limit}; query: offset, limit "
                                         f"(1-{D.TASK_PAGE_MAX}, default {D.TASK_PAGE}), state",
        "/api/flow-runs/{id}/logs": "a page of the run's log lines: {logs, total, offset, limit}; query: "
                                    f"offset, limit (1-{D.LOG_PAGE_MAX}, default {D.LOG_PAGE}), level "
                                    "(that level and above)",
        "/api/flow-runs/{id}/graph": "the task dependency graph: nodes, edges [upstream, downstream], "
                                     f"drawn (false past {D.GRAPH_LIMIT} task runs), total, limit",
        "/api/task-runs/{id}": "one task run with states, tags, cache_key, result_location, attempt, "
                               "reused_from, flow_run, the first page of logs and logs_page",
        "/api/task-runs/{id}/logs": "a page of the task run's log lines: {logs, total, offset, limit}; "
                                    "query: offset, limit, level",
        "/api/cache-entries": "the cache index",
    },
}


def static_files() -> dict[str, tuple[bytes, str]]:
    """The dashboard's static files by name, read once: the only files the server serves."""
    out = {}
    folder = resources.files(__package__).joinpath("static")
    for item in folder.iterdir():
        suffix = "." + item.name.rsplit(".", 1)[-1] if "." in item.name else ""
        if item.is_file() and suffix in _TYPES:
            out[item.name] = (item.read_bytes(), _TYPES[suffix])
    return out


class StoreSource:
    """The run store to read, opened on first need.

    A SQLite store whose file does not exist yet is not created: the dashboard shows an
    empty store until a flow run creates the file.
    """

    def __init__(self, session: Any) -> None:
        self.session = session
        self._store: RunStore | None = None
        self._empty = MemoryRunStore()
        self._lock = threading.Lock()
        self.description = hide_password(session.settings.database_url)

    def get(self) -> RunStore:
        if self._store is not None:
            return self._store
        with self._lock:
            if self._store is None:
                url = self.session.settings.database_url
                if url.startswith("sqlite:"):
                    from headwater.plugins.sqlite_store import sqlite_path

                    if not sqlite_path(url).exists():
                        return self._empty
                self._store = require_part(self.session.store, RunReader, "`headwater ui`")
        return self._store


class DashboardHandler(BaseHTTPRequestHandler):
    """Answers one request. ``server.source`` gives the store, ``server.static`` the files."""

    server_version = "headwater-dashboard"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    # -- plumbing ------------------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:
        if getattr(self.server, "verbose", False):
            super().log_message(format, *args)

    def parse_request(self) -> bool:
        """Parse the request line and headers, then refuse a ``Host`` this server does
        not answer to (421 Misdirected Request), whatever the method and path."""
        if not super().parse_request():
            return False
        host = self.headers.get("Host")
        name = host_name(host) if host is not None else None
        if name is not None and name in self.server.allowed_hosts:  # type: ignore[attr-defined]
            return True
        self.close_connection = True
        shown = "no Host header" if host is None else f"Host {host[:100]!r}"
        self._send(421, (f"Misdirected request: this headwater dashboard does not answer to {shown}. "
                         f"Open it as http://localhost:PORT/, or start it with --allow-host NAME "
                         f"for another name.\n").encode("utf-8", "backslashreplace"),
                   "text/plain; charset=utf-8")
        return False

    def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in {**_SECURITY_HEADERS, **(extra or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _html(self, status: int, text: str) -> None:
        self._send(status, text.encode("utf-8"), "text/html; charset=utf-8")

    def _json(self, status: int, value: Any) -> None:
        self._send(status, json.dumps(value, indent=2, default=repr).encode("utf-8"),
                   "application/json; charset=utf-8")

    def do_GET(self) -> None:
        split = urlsplit(self.path)
        raw_path = split.path
        query = Q.Query(parse_qs(split.query, keep_blank_values=True))
        # Split before decoding, so an encoded "/" (%2F) stays inside one segment.
        segments = [unquote(s) for s in raw_path.split("/")[1:]]
        if segments and segments[-1] == "" and len(segments) > 1:
            segments.pop()  # a trailing slash: /runs/ is /runs
        is_api = segments[:1] == ["api"]
        store_name = self.server.source.description  # type: ignore[attr-defined]
        try:
            if segments[:1] == ["static"]:
                self._static(segments[1:])
                return
            route = _match(segments[1:] if is_api else segments, is_api)
            if route is None:
                raise Q.NotFound(f"no page at {raw_path[:200]!r}")
            handler, arg = route
            store = self.server.source.get()  # type: ignore[attr-defined]
            model, page = handler(store, arg, query)
            if is_api:
                self._json(200, model)
            else:
                self._html(200, page(model, store_name))
        except Q.BadRequest as exc:
            self._error(400, str(exc), is_api, store_name)
        except Q.NotFound as exc:
            self._error(404, str(exc), is_api, store_name)
        except HeadwaterError as exc:
            self._error(500, f"the run store cannot be read: {exc}", is_api, store_name)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as exc:  # a bug: answer, and leave the traceback for the terminal
            import traceback

            traceback.print_exc()
            self._error(500, f"the dashboard failed: {type(exc).__name__}: {exc}", is_api, store_name)

    def do_HEAD(self) -> None:
        self.do_GET()

    def _not_allowed(self) -> None:
        self._send(405, b"The headwater dashboard is read-only.\n", "text/plain; charset=utf-8",
                   {"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed  # type: ignore[assignment]

    def _error(self, status: int, message: str, is_api: bool, store_name: str) -> None:
        if is_api:
            self._json(status, {"error": message, "status": status})
        else:
            self._html(status, P.error_page(status, message, store_name))

    def _static(self, rest: list[str]) -> None:
        files = self.server.static  # type: ignore[attr-defined]
        found = files.get(rest[0]) if len(rest) == 1 else None
        if found is None:
            raise Q.NotFound("no such static file")
        body, content_type = found
        self._send(200, body, content_type)


# -- routes: (store, path argument, query) -> (model, page renderer) ----------------------------

Renderer = Callable[[dict[str, Any], str], str]


def _flows(store: RunStore, _: str | None, query: Q.Query) -> tuple[dict[str, Any], Renderer]:
    query.expect()
    return D.flows(store), P.flows_page


RUNS_PARAMETERS = ("flow", "q", "state", "tag", "since", "until", "parent", "top", "page", "per_page")


def _runs(store: RunStore, _: str | None, query: Q.Query) -> tuple[dict[str, Any], Renderer]:
    query.expect(*RUNS_PARAMETERS)
    flows = [name for value in query.all("flow") if (name := Q.check_flow_name(value))]
    # A tag box may hold several, comma separated; the API may repeat the parameter too.
    tags = [t for value in query.all("tag") for part in value.split(",")
            if (t := Q.check_text(part.strip(), "tag"))]
    parent = query.get("parent")
    top = query.get("top")
    if top not in (None, "1", "0", "true", "false"):
        raise Q.BadRequest(f"top {top[:20]!r} is not valid: expected 1 (only runs that are not subflow runs) or 0")
    where = FlowRunFilter(
        flow_names=flows, search=Q.check_text(query.get("q"), "search text q"), tags=tags,
        state=Q.check_state(query.get("state")),
        started_after=Q.check_date(query.get("since"), "since"),
        started_before=Q.check_date(query.get("until"), "until", end=True),
        parent_flow_run_id=Q.check_run_id(parent, "parent flow run id") if parent else None,
        top_level=top in ("1", "true"))
    filters = {"flow": flows, "q": where.search, "state": where.state, "tag": tags, "since": query.get("since"),
               "until": query.get("until"), "parent": parent, "top": where.top_level}
    page = Q.check_int(query.get("page"), "page", 1, Q.MAX_PAGE)
    per_page = Q.check_int(query.get("per_page"), "per_page", D.PER_PAGE_DEFAULT, D.PER_PAGE_MAX)
    model = D.flow_runs(store, where, page, per_page, filters)
    if parent:
        model["parent"] = D.flow_run_summary(D.find_flow_run(store, parent))

    def render(model: dict[str, Any], store_name: str) -> str:
        names = sorted({f.name for f in store.read_flows()})
        return P.runs_page(model, names, store_name)

    return model, render


def _task_query(query: Q.Query, offset: str = "offset", limit: str = "limit") -> dict[str, Any]:
    return {"offset": Q.check_offset(query.get(offset), offset),
            "limit": Q.check_int(query.get(limit), limit, D.TASK_PAGE, D.TASK_PAGE_MAX),
            "state": Q.check_state(query.get("state"))}


def _log_query(query: Q.Query, offset: str = "offset", limit: str = "limit") -> dict[str, Any]:
    return {"offset": Q.check_offset(query.get(offset), offset),
            "limit": Q.check_int(query.get(limit), limit, D.LOG_PAGE, D.LOG_PAGE_MAX),
            "level": Q.check_level(query.get("level"))}


RUN_PARAMETERS = ("state", "offset", "limit", "level", "log_offset", "log_limit")


def _run(store: RunStore, run_id: str | None, query: Q.Query) -> tuple[dict[str, Any], Renderer]:
    assert run_id is not None
    query.expect(*RUN_PARAMETERS)
    model = D.flow_run(store, run_id, tasks=_task_query(query),
                       logs=_log_query(query, "log_offset", "log_limit"))

    def render(model: dict[str, Any], store_name: str) -> str:
        return RP.run_page(model, store_name, D.graph(store, model["id"], model["task_run_counts"]["total"]))

    return model, render


def _run_task_runs(store: RunStore, run_id: str | None, query: Q.Query) -> tuple[dict[str, Any], Renderer]:
    assert run_id is not None
    query.expect("offset", "limit", "state")
    wanted = _task_query(query)  # a bad value is a 400 whatever the run
    return D.task_run_page(store, D.find_flow_run(store, run_id), **wanted), _no_page


def _run_logs(store: RunStore, run_id: str | None, query: Q.Query) -> tuple[dict[str, Any], Renderer]:
    assert run_id is not None
    query.expect("offset", "limit", "level")
    wanted = _log_query(query)
    return D.log_page(store, D.find_flow_run(store, run_id).id, **wanted), _no_page


def _run_graph(store: RunStore, run_id: str | None, query: Q.Query) -> tuple[dict[str, Any], Renderer]:
    assert run_id is not None
    query.expect()
    return D.graph(store, run_id), _no_page


def _task(store: RunStore, run_id: str | None, query: Q.Query) -> tuple[dict[str, Any], Renderer]:
    assert run_id is not None
    query.expect("level", "log_offset", "log_limit")
    return D.task_run(store, run_id, logs=_log_query(query, "log_offset", "log_limit")), RP.task_page


def _task_logs(store: RunStore, run_id: str | None, query: Q.Query) -> tuple[dict[str, Any], Renderer]:
    assert run_id is not None
    query.expect("offset", "limit", "level")
    wanted = _log_query(query)
    return D.task_run_logs(store, D.find_task_run(store, run_id), **wanted), _no_page


def _cache(store: RunStore, _: str | None, query: Q.Query) -> tuple[dict[str, Any], Renderer]:
    query.expect()
    return D.cache_entries(store), P.cache_page


def _index(store: RunStore, _: str | None, query: Q.Query) -> tuple[dict[str, Any], Renderer]:
    return API_INDEX, _no_page


def _no_page(model: dict[str, Any], store_name: str) -> str:
    return ""


_ROUTES: dict[tuple[str, ...], Any] = {
    ("",): _flows, ("flows",): _flows, ("runs",): _runs, ("flow-runs",): _runs,
    ("cache",): _cache, ("cache-entries",): _cache,
}
_ID_ROUTES: dict[str, Any] = {"runs": _run, "flow-runs": _run, "task-runs": _task}
#: Parts of a run, as JSON only: ``/api/flow-runs/{id}/task-runs`` and the like.
_API_PART_ROUTES: dict[tuple[str, str], Any] = {
    ("flow-runs", "task-runs"): _run_task_runs, ("flow-runs", "logs"): _run_logs,
    ("flow-runs", "graph"): _run_graph, ("task-runs", "logs"): _task_logs,
}


def _match(segments: list[str], is_api: bool) -> tuple[Any, str | None] | None:
    """The route for path segments (HTML and API share the table), or ``None``."""
    if not segments:
        return (_index, None) if is_api else None
    route = _ROUTES.get(tuple(segments))
    if route is not None:
        return route, None
    if len(segments) == 2 and segments[0] in _ID_ROUTES:
        return _ID_ROUTES[segments[0]], segments[1]
    if is_api and len(segments) == 3 and (segments[0], segments[2]) in _API_PART_ROUTES:
        return _API_PART_ROUTES[segments[0], segments[2]], segments[1]
    return None


class DashboardServer(ThreadingHTTPServer):
    """A threading HTTP server carrying the store source and the static files."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], source: StoreSource, verbose: bool = False,
                 allowed_hosts: Iterable[str] = ()) -> None:
        self.source = source
        self.static = static_files()
        self.verbose = verbose
        self.allowed_hosts = allowed_host_names(address[0], allowed_hosts)
        if ":" in address[0]:
            import socket

            self.address_family = socket.AF_INET6
        super().__init__(address, DashboardHandler)


def allowed_host_names(listen_address: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """The ``Host`` names a server listening on ``listen_address`` answers to: the
    loopback names, that address, and ``extra`` (``--allow-host`` values; a bad one is a
    :class:`ValueError` naming it)."""
    names = set(LOOPBACK_HOSTS)
    listening = host_name(listen_address)
    if listening is not None:  # an address that is not a host name fails to bind anyway
        names.add(listening)
    for value in extra:
        name = host_name(value)
        if name is None:
            raise ValueError(f"invalid host name {value!r}: expected a name or address such as "
                             f"dash.example.com, 192.168.1.5 or [fe80::1], optionally with :PORT")
        names.add(name)
    return frozenset(names)


def make_server(session: Any, host: str = "127.0.0.1", port: int = 4200, verbose: bool = False,
                allowed_hosts: Iterable[str] = ()) -> DashboardServer:
    """A dashboard server over ``session``'s run store, bound but not yet serving.

    It answers only requests whose ``Host`` is a loopback name, ``host``, or one of
    ``allowed_hosts`` (any port); others get 421.
    """
    source = StoreSource(session)
    source.get()  # a store without a reader part: its one-line error now, not per request
    return DashboardServer((host, port), source, verbose=verbose, allowed_hosts=allowed_hosts)
