"""The dashboard's server: every JSON endpoint, the HTML pages, input validation and
safety, served in-process over a store filled by real flow runs."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import sys
import threading
import urllib.error
import urllib.request
from typing import Any, Iterator

import pytest

from headwater import flow, get_run_logger, task
from headwater.cli import main
from headwater.session import Session
from headwater.tasks import task_input_hash

pytest.importorskip("markdown_it", reason='the dashboard needs its extra: pip install "headwater[ui]"')

from headwater.plugins.dashboard.server import make_server  # noqa: E402


@task(retries=2, retry_delay_seconds=0, tags=["network"])
def flaky(attempts: list[int]) -> int:
    attempts.append(1)
    get_run_logger().info("attempt %d", len(attempts))
    if len(attempts) < 3:
        raise ConnectionError("try again")
    return len(attempts)


@task(cache_key_fn=task_input_hash, cache_expiration=dt.timedelta(hours=1))
def double(x: int) -> int:
    return 2 * x


@flow(flow_run_name="child-{x}")
def child(x: int) -> int:
    """A small child flow."""
    return double(x)


@flow(version="2.1", flow_run_name="nightly-{n}")
def nightly(n: int = 3) -> int:
    """# Nightly load

Moves **data** from A to B.

- extract
- transform
- load
"""
    flaky([])
    double(n)
    double(n)
    return child(n)


@flow(flow_run_name="evil-run")
def evil() -> None:
    """Looks <script>window.__pwned = 1</script> harmless <img src=x onerror="window.__pwned=2">"""


@flow(flow_run_name="broken-{i}")
def broken(i: int) -> None:
    raise ValueError("no good")


STEP_BROKEN: set[str] = set()  # the steps of `pipeline` that fail while listed


@task
def step(name: str, value: int) -> int:
    if name in STEP_BROKEN:
        raise RuntimeError(f"step {name} is broken")
    return value + 1


@flow(persist_result=True, flow_run_name="pipeline-{start}")
def pipeline(start: int = 0) -> int:
    a = step("one", start)
    b = step("two", a)
    return step("three", b)


@pytest.fixture
def retried(headwater_session: Session) -> Iterator[str]:
    """A pipeline run whose third step failed, retried: attempt 1 has three task runs
    (two completed, one failed), attempt 2 reuses the two and runs the third again."""
    import headwater

    STEP_BROKEN.add("three")
    try:
        assert pipeline(1, return_state=True).is_failed()
    finally:
        STEP_BROKEN.clear()
    run = headwater_session.store.read_flow_runs(limit=1)[0]
    assert headwater.retry_run(run.id).is_completed()
    headwater_session.store.flush()
    yield run.id


# Loopback requests must not go through an HTTP proxy set in the environment.
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Dashboard:
    """A running dashboard server and helpers to read from it."""

    def __init__(self, session: Session) -> None:
        self.server = make_server(session, "127.0.0.1", 0)
        # A short poll interval: shutdown() waits up to one interval.
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def get(self, path: str, method: str = "GET") -> tuple[int, dict[str, str], str]:
        request = urllib.request.Request(self.url + path, method=method)
        try:
            with DIRECT.open(request, timeout=10) as response:
                return response.status, dict(response.headers), response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read().decode()

    def api(self, path: str) -> Any:
        status, headers, body = self.get("/api" + path)
        assert status == 200, body
        assert headers["Content-Type"].startswith("application/json")
        return json.loads(body)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def empty_dashboard(headwater_session: Session) -> Iterator[Dashboard]:
    board = Dashboard(headwater_session)
    yield board
    board.close()


@pytest.fixture
def dashboard(headwater_session: Session) -> Iterator[Dashboard]:
    """Runs: nightly (retried task, cache miss then hit, subflow), evil, and three broken."""
    nightly(3)
    evil()
    for i in range(3):
        broken(i, return_state=True)
    headwater_session.store.flush()
    board = Dashboard(headwater_session)
    yield board
    board.close()


def run_id(board: Dashboard, name: str) -> str:
    runs = board.api("/flow-runs?per_page=200")["flow_runs"]
    return next(r["id"] for r in runs if r["name"] == name)


# -- JSON API ----------------------------------------------------------------------------------


def test_api_index_lists_the_endpoints(empty_dashboard: Dashboard) -> None:
    """/api/ documents every endpoint."""
    index = empty_dashboard.api("/")
    assert set(index["endpoints"]) == {"/api/flows", "/api/flow-runs", "/api/flow-runs/{id}",
                                       "/api/flow-runs/{id}/task-runs", "/api/flow-runs/{id}/logs",
                                       "/api/flow-runs/{id}/graph", "/api/task-runs/{id}",
                                       "/api/task-runs/{id}/logs", "/api/cache-entries"}


def test_api_flows_gives_description_version_tags_last_run_and_counts(dashboard: Dashboard) -> None:
    """/api/flows has one entry per flow with its markdown source, version, last run and
    counts by state type."""
    flows = {f["name"]: f for f in dashboard.api("/flows")["flows"]}
    assert set(flows) == {"nightly", "child", "evil", "broken"}
    night = flows["nightly"]
    assert night["description"].startswith("# Nightly load")
    assert night["version"] == "2.1" and night["tags"] == []
    assert night["run_count"] == 1 and night["state_counts"] == {"COMPLETED": 1}
    assert night["last_run"]["name"] == "nightly-3"
    assert flows["broken"]["run_count"] == 3 and flows["broken"]["state_counts"] == {"FAILED": 3}
    assert flows["broken"]["last_run"]["name"] == "broken-2"


def test_api_flow_runs_are_newest_first_filtered_and_paginated(dashboard: Dashboard) -> None:
    """/api/flow-runs filters by flow and by state type or name, newest first, in pages."""
    everything = dashboard.api("/flow-runs")
    assert everything["total"] == 6
    names = [r["name"] for r in everything["flow_runs"]]
    assert names[:3] == ["broken-2", "broken-1", "broken-0"]
    page = dashboard.api("/flow-runs?flow=broken&per_page=2&page=2")
    assert (page["total"], page["pages"], page["page"]) == (3, 2, 2)
    assert [r["name"] for r in page["flow_runs"]] == ["broken-0"]
    assert {r["name"] for r in dashboard.api("/flow-runs?state=failed")["flow_runs"]} == {
        "broken-0", "broken-1", "broken-2"}
    assert dashboard.api("/flow-runs?state=Completed&flow=child")["total"] == 1
    assert dashboard.api("/flow-runs?flow=nobody")["flow_runs"] == []


def test_api_flow_run_has_states_task_runs_with_retries_and_cache_hits(dashboard: Dashboard) -> None:
    """/api/flow-runs/{id}: parameters, state history, task runs with their histories,
    retries and cache hits, the subflow run, and the log lines."""
    run = dashboard.api(f"/flow-runs/{run_id(dashboard, 'nightly-3')}")
    assert run["parameters"] == {"n": 3}
    assert [s["name"] for s in run["states"]] == ["Pending", "Running", "Completed"]
    tasks = {t["name"]: t for t in run["task_runs"]}
    retried = next(t for t in tasks.values() if t["task_name"] == "flaky")
    assert retried["retries"] == 2 and retried["tags"] == ["network"]
    assert [s["name"] for s in retried["states"]].count("AwaitingRetry") == 2
    doubles = [t for t in run["task_runs"] if t["task_name"] == "double"]
    assert [t["cache_hit"] for t in doubles] == [False, True]
    assert [s["name"] for s in run["subflow_runs"]] == ["child-3"]
    messages = [line["message"] for line in run["logs"]]
    assert "attempt 3" in messages and any(m.startswith("Finished in state") for m in messages)


def test_api_a_run_that_ran_once_has_one_attempt(dashboard: Dashboard) -> None:
    """A flow run never retried has one attempt holding all its task runs, none reused."""
    run = dashboard.api("/flow-runs/nightly-3")
    assert len(run["attempts"]) == 1
    attempt = run["attempts"][0]
    assert attempt["number"] == 1 and attempt["state"]["name"] == "Completed"
    assert attempt["task_runs"] == len(run["task_runs"]) == 3 and attempt["reused"] == 0
    assert attempt["started"] == run["start_time"] and attempt["ended"] == run["end_time"]
    assert {t["attempt"] for t in run["task_runs"]} == {1}
    assert {t["reused_from"] for t in run["task_runs"]} == {None}


def test_api_a_retried_run_has_its_attempts_and_reused_task_runs(retried: str,
                                                                headwater_session: Session) -> None:
    """A flow run retried with `retry_run` lists two attempts with their task runs and
    reused counts; the reused task runs name the earlier runs, which the task run API
    gives back too."""
    board = Dashboard(headwater_session)
    try:
        run = board.api(f"/flow-runs/{retried}")
        assert run["run_count"] == 2
        first, second = run["attempts"]
        assert (first["number"], first["task_runs"], first["reused"]) == (1, 3, 0)
        assert first["state"]["name"] == "Failed" and first["ended"] is not None
        assert (second["number"], second["task_runs"], second["reused"]) == (2, 3, 2)
        assert second["state"]["name"] == "Completed" and second["started"] >= first["ended"]
        assert [t["attempt"] for t in run["task_runs"]] == [1, 1, 1, 2, 2, 2]
        earlier = {t["id"]: t for t in run["task_runs"] if t["attempt"] == 1}
        reused = [t for t in run["task_runs"] if t["reused_from"]]
        assert len(reused) == 2 and all(t["attempt"] == 2 for t in reused)
        for t in reused:
            source = earlier[t["reused_from"]]
            assert source["state"]["name"] == "Completed" and source["task_name"] == t["task_name"]
            assert t["state"]["name"] == "Cached" and not t["cache_hit"]
            assert t["state"]["message"].startswith(f"Reused the result of task run '{source['name']}' (attempt 1)")
        rerun = [t for t in run["task_runs"] if t["attempt"] == 2 and not t["reused_from"]]
        assert [t["state"]["name"] for t in rerun] == ["Completed"]

        detail = board.api(f"/task-runs/{reused[0]['id']}")
        assert detail["attempt"] == 2 and detail["reused_from"] == reused[0]["reused_from"]
        assert detail["reused_from_run"] == {"id": reused[0]["reused_from"],
                                             "name": earlier[reused[0]["reused_from"]]["name"], "attempt": 1}

        _, _, body = board.get(f"/runs/{retried}")
        assert "<h2>Attempts" in body and "reused from attempt 1" in body
        assert f'href="/task-runs/{reused[0]["reused_from"]}"' in body
        assert "Attempt 1" in body and "Attempt 2" in body
    finally:
        board.close()


def test_a_run_with_one_attempt_shows_no_attempts_section(dashboard: Dashboard) -> None:
    """A flow run page of a run never retried looks as before: no attempts, no groups."""
    _, _, body = dashboard.get("/runs/nightly-3")
    assert "Attempts" not in body and "attempt-group" not in body and "reused" not in body


def test_api_flow_run_accepts_its_name(dashboard: Dashboard) -> None:
    """A flow run can be addressed by its name as well as its id."""
    assert dashboard.api("/flow-runs/nightly-3")["id"] == run_id(dashboard, "nightly-3")


def test_api_task_run_has_history_messages_cache_key_and_location(dashboard: Dashboard) -> None:
    """/api/task-runs/{id}: the state history with messages, tags, cache key and result
    location, its flow run and its log lines."""
    run = dashboard.api(f"/flow-runs/{run_id(dashboard, 'nightly-3')}")
    flaky_id = next(t["id"] for t in run["task_runs"] if t["task_name"] == "flaky")
    detail = dashboard.api(f"/task-runs/{flaky_id}")
    assert detail["flow_run"]["name"] == "nightly-3"
    waits = [s for s in detail["states"] if s["name"] == "AwaitingRetry"]
    assert len(waits) == 2
    assert [line["message"] for line in detail["logs"] if line["message"].startswith("attempt")] == [
        "attempt 1", "attempt 2", "attempt 3"]
    cached_id = next(t["id"] for t in run["task_runs"] if t["task_name"] == "double" and not t["cache_hit"])
    cached = dashboard.api(f"/task-runs/{cached_id}")
    assert cached["cache_key"] and cached["result_location"]


def test_api_cache_entries(dashboard: Dashboard) -> None:
    """/api/cache-entries lists the entries the runs wrote, with task and expiry."""
    entries = dashboard.api("/cache-entries")["cache_entries"]
    assert len(entries) == 1  # double(3) computed once, then a hit (child's double(3) hit too)
    assert entries[0]["task_name"] == "double" and entries[0]["expires"] and not entries[0]["expired"]


@pytest.mark.parametrize("path, expected", [
    ("/flow-runs?page=0", "page '0' is not valid"),
    ("/flow-runs?per_page=10000", "per_page '10000' is not valid"),
    ("/flow-runs?state=%3Cb%3E", "state '<b>' is not valid"),
    ("/flow-runs?flow=a%00b", "flow name 'a\\x00b' is not valid"),
    ("/flow-runs/..%2F..%2Fetc", "flow run id '../../etc' is not valid"),
    ("/task-runs/%3Cscript%3E", "task run id '<script>' is not valid"),
    ("/flow-runs/some-run/task-runs?offset=-1", "offset '-1' is not valid"),
    ("/flow-runs/some-run/task-runs?limit=0", "limit '0' is not valid"),
    ("/flow-runs/some-run/task-runs?limit=501", "limit '501' is not valid"),
    ("/flow-runs/some-run/logs?level=LOUD", "level 'LOUD' is not valid"),
    ("/flow-runs/some-run/logs?limit=x", "limit 'x' is not valid"),
    ("/flow-runs/some-run?log_offset=1.5", "log_offset '1.5' is not valid"),
    ("/flow-runs?since=yesterday", "since 'yesterday' is not valid"),
    ("/flow-runs?until=2026-13-01", "until '2026-13-01' is not valid"),
    ("/flow-runs?top=yes", "top 'yes' is not valid"),
    ("/task-runs/some-task/logs?offset=a", "offset 'a' is not valid"),
])
def test_api_rejects_bad_values_naming_them(empty_dashboard: Dashboard, path: str, expected: str) -> None:
    """A bad id, name, state or page number is a 400 whose message names the value and
    what was expected."""
    status, _, body = empty_dashboard.get("/api" + path)
    assert status == 400
    error = json.loads(body)["error"]
    assert expected in error and "expected" in error


@pytest.mark.parametrize("path, name", [
    ("/flow-runs/some-run/task-runs?ofset=5", "ofset"),
    ("/flow-runs/some-run/logs?state=failed", "state"),
    ("/flow-runs?flows=a", "flows"),
    ("/flow-runs/some-run?page=2", "page"),
])
def test_api_rejects_unknown_parameters_naming_them(empty_dashboard: Dashboard, path: str, name: str) -> None:
    """A misspelt parameter is a 400 naming it and the ones the endpoint knows, as one
    line of JSON, instead of being ignored."""
    status, _, body = empty_dashboard.get("/api" + path)
    assert status == 400
    error = json.loads(body)["error"]
    assert f"unknown query parameter {name!r}: expected one of " in error and "\n" not in error


def test_api_unknown_runs_are_404(empty_dashboard: Dashboard) -> None:
    """An id that is valid but unknown is a 404 naming it."""
    status, _, body = empty_dashboard.get("/api/flow-runs/0123abcd")
    assert status == 404 and "0123abcd" in json.loads(body)["error"]
    assert empty_dashboard.get("/api/task-runs/0123abcd")[0] == 404
    assert empty_dashboard.get("/api/nothing-here")[0] == 404


# -- pages -------------------------------------------------------------------------------------


def test_every_page_renders(dashboard: Dashboard) -> None:
    """Flows, flow runs (filtered), a flow run, a task run and the cache page answer 200
    with HTML that names what they show."""
    rid = run_id(dashboard, "nightly-3")
    task_id = dashboard.api(f"/flow-runs/{rid}")["task_runs"][0]["id"]
    for path, text in [("/", "Nightly load"), ("/runs", "broken-2"), ("/runs?flow=broken&state=FAILED", "broken-0"),
                       (f"/runs/{rid}", "nightly-3"), (f"/task-runs/{task_id}", "AwaitingRetry"),
                       ("/cache", "double")]:
        status, headers, body = dashboard.get(path)
        assert status == 200 and headers["Content-Type"].startswith("text/html"), path
        assert text in body, path


def test_markdown_renders_without_raw_html(dashboard: Dashboard) -> None:
    """The description's heading and list become HTML; the <script> and <img> in another
    description are shown as text, never as markup."""
    _, _, body = dashboard.get("/")
    assert "<h1>Nightly load</h1>" in body and "<li>transform</li>" in body
    assert "<strong>data</strong>" in body
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in body
    assert "<script" not in body and "<img" not in body


def test_pages_forbid_scripts_and_framing(empty_dashboard: Dashboard) -> None:
    """Every answer carries a Content-Security-Policy without scripts, and nosniff."""
    for path in ("/", "/api/flows", "/static/dashboard.css"):
        headers = empty_dashboard.get(path)[1]
        assert "default-src 'none'" in headers["Content-Security-Policy"]
        assert "script-src" not in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"


def test_live_runs_pages_refresh_themselves(headwater_session: Session) -> None:
    """A flow run that is still running gets a self-refreshing page; a finished one not."""
    from headwater.runs import FlowRun
    from headwater.states import Running

    store = headwater_session.store
    live = FlowRun("1234abcd-live", "slow", "still-going")
    live.state = Running()
    live.start_ts = live.state.ts
    store.create_flow_run(live)
    store.record_state(live, live.state)
    nightly(1)
    store.flush()
    board = Dashboard(headwater_session)
    try:
        assert 'http-equiv="refresh"' in board.get("/runs/still-going")[2]
        assert 'http-equiv="refresh"' in board.get("/runs")[2]
        assert 'http-equiv="refresh"' not in board.get("/runs/nightly-1")[2]
    finally:
        board.close()


def test_html_errors_are_pages_with_the_message(empty_dashboard: Dashboard) -> None:
    """A bad or unknown id in a page URL answers an HTML page saying what was wrong."""
    status, _, body = empty_dashboard.get("/runs/%3Cscript%3Ealert(1)%3C%2Fscript%3E")
    assert status == 400 and "is not valid" in body and "<script>" not in body
    status, _, body = empty_dashboard.get("/task-runs/abcdef12")
    assert status == 404 and "no task run with id" in body


# -- safety ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [
    "/static/../__init__.py",
    "/static/..%2F__init__.py",
    "/static/%2e%2e/%2e%2e/pyproject.toml",
    "/static/..%5C__init__.py",
    "/static//etc/passwd",
    "/static/%2Fetc%2Fpasswd",
    "/static/templates/page.html",
    "/static/",
    "/../../../../etc/passwd",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/server.py",
    "/templates/page.html",
])
def test_no_file_outside_the_static_files_is_served(empty_dashboard: Dashboard, path: str) -> None:
    """Path traversal in any spelling gets a 404, never a file's contents."""
    import http.client

    # http.client sends the path exactly as written (urllib would normalise "..").
    host, port = empty_dashboard.server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read().decode(errors="replace")
    conn.close()
    assert response.status == 404
    assert "root:" not in body and "import" not in body and "[project]" not in body


def test_the_static_files_are_served(empty_dashboard: Dashboard) -> None:
    """The stylesheet and icon are served with their content types."""
    status, headers, body = empty_dashboard.get("/static/dashboard.css")
    assert status == 200 and headers["Content-Type"].startswith("text/css") and "svg.tl" in body
    assert empty_dashboard.get("/static/favicon.svg")[1]["Content-Type"] == "image/svg+xml"


def test_the_dashboard_is_read_only(empty_dashboard: Dashboard) -> None:
    """POST, PUT and DELETE are refused with 405."""
    for method in ("POST", "PUT", "DELETE"):
        status, headers, _ = empty_dashboard.get("/api/flows", method=method)
        assert status == 405 and headers["Allow"] == "GET, HEAD"


def test_a_missing_store_shows_an_empty_dashboard_without_creating_it(headwater_session: Session) -> None:
    """With no run store file yet, every page is an empty 200 and no file is created."""
    db = headwater_session.settings.home / "headwater.db"
    assert not db.exists()
    board = Dashboard(headwater_session)
    try:
        status, _, body = board.get("/")
        assert status == 200 and "No flow runs recorded yet" in body
        assert board.api("/flows") == {"flows": []}
        assert board.api("/flow-runs")["total"] == 0
        assert board.get("/runs")[0] == 200 and board.get("/cache")[0] == 200
        assert not db.exists()
    finally:
        board.close()


def test_an_empty_store_shows_an_empty_dashboard(headwater_session: Session) -> None:
    """A store file with no runs in it shows empty pages, not errors."""
    headwater_session.store.flush()  # creates the file
    board = Dashboard(headwater_session)
    try:
        assert "No flow runs recorded yet" in board.get("/")[2]
        assert "No flow runs match" in board.get("/runs")[2]
        assert "The cache is empty" in board.get("/cache")[2]
    finally:
        board.close()


def test_a_store_from_before_the_flows_table_still_lists_its_flows(headwater_session: Session) -> None:
    """A run store written before flow descriptions were recorded gains the table when
    opened and lists its flows (without descriptions)."""
    from headwater.plugins.sqlite_store import SQLiteRunStore

    nightly(2)
    store = headwater_session.store
    store.flush()
    path = store.path
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE flows")
    reopened = SQLiteRunStore(path)
    try:
        names = {f.name: f for f in reopened.read_flows()}
        assert set(names) == {"nightly", "child"}
        assert names["nightly"].description is None and names["nightly"].run_count == 1
    finally:
        reopened.close()


def test_a_memory_store_is_served_too(headwater_home: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """HEADWATER_DATABASE_URL=memory:// works: flows recorded in this process are shown."""
    monkeypatch.setenv("HEADWATER_DATABASE_URL", "memory://")
    with Session() as session:
        nightly(4)
        board = Dashboard(session)
        try:
            flows = {f["name"]: f for f in board.api("/flows")["flows"]}
            assert flows["nightly"]["description"].startswith("# Nightly load")
            assert board.api("/flow-runs/nightly-4")["subflow_runs"][0]["name"] == "child-4"
        finally:
            board.close()


# -- the command -------------------------------------------------------------------------------


def test_ui_without_the_extra_says_what_to_install(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Without markdown-it-py, `headwater ui` exits 1 and prints the pip command."""
    monkeypatch.setitem(sys.modules, "markdown_it", None)
    assert main(["ui", "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert 'pip install "headwater[ui]"' in err


def test_ui_rejects_a_bad_port(capsys: pytest.CaptureFixture[str]) -> None:
    """--port must be 0..65535; anything else is a usage error naming the value."""
    with pytest.raises(SystemExit) as exc:
        main(["ui", "--port", "70000"])
    assert exc.value.code == 2
    assert "invalid port '70000'" in capsys.readouterr().err


def test_ui_reports_a_port_in_use(capsys: pytest.CaptureFixture[str], empty_dashboard: Dashboard) -> None:
    """A port that is taken is a clear error suggesting --port, not a traceback."""
    port = str(empty_dashboard.server.server_address[1])
    assert main(["ui", "--port", port]) == 1
    err = capsys.readouterr().err
    assert f"cannot serve on 127.0.0.1:{port}" in err and "--port" in err


def test_ui_warns_when_not_on_loopback_and_opens_a_browser(monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """--host 0.0.0.0 warns that anyone who can reach it can read the history; --open
    opens the dashboard at this machine's address; Ctrl+C stops it cleanly."""
    import webbrowser

    from headwater.plugins.dashboard.server import DashboardServer

    opened: list[str] = []
    done = threading.Event()
    monkeypatch.setattr(webbrowser, "open", lambda url: (opened.append(url), done.set()))

    def interrupted(self: Any, poll_interval: float = 0.5) -> None:
        done.wait(5)  # the browser opens while the server runs
        raise KeyboardInterrupt

    monkeypatch.setattr(DashboardServer, "serve_forever", interrupted)
    assert main(["ui", "--host", "0.0.0.0", "--port", "0", "--open"]) == 0
    out, err = capsys.readouterr()
    assert "headwater dashboard on http://0.0.0.0:" in out and "stopped" in out
    assert "warning: listening on 0.0.0.0" in err and "no login" in err
    assert len(opened) == 1 and opened[0].startswith("http://127.0.0.1:")


def test_ui_on_loopback_does_not_warn(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The default host is 127.0.0.1 and prints no warning."""
    from headwater.plugins.dashboard.server import DashboardServer

    def interrupted(self: Any, poll_interval: float = 0.5) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(DashboardServer, "serve_forever", interrupted)
    assert main(["ui", "--port", "0"]) == 0
    out, err = capsys.readouterr()
    assert "http://127.0.0.1:" in out and "warning" not in err


# -- pages of a run, search, graph, progress ---------------------------------------------------


def test_api_flow_run_counts_its_task_runs_and_carries_one_page(dashboard: Dashboard) -> None:
    """/api/flow-runs/{id} counts the task runs by state type and name and carries the
    first page of task runs and log lines, each page with its total, offset and limit;
    the subflow run is counted apart from the task runs."""
    run = dashboard.api("/flow-runs/nightly-3")
    counts = run["task_run_counts"]
    assert (counts["total"], counts["done"]) == (3, 3)
    assert counts["by_type"] == {"COMPLETED": 3} and counts["by_name"] == {"Completed": 2, "Cached": 1}
    assert run["task_runs_page"] == {"total": 3, "offset": 0, "limit": 50, "state": None}
    assert run["logs_page"]["total"] == len(run["logs"]) and run["logs_page"]["limit"] == 100
    assert run["subflow_runs_total"] == 1 and run["subflow_runs"][0]["name"] == "child-3"
    child = dashboard.api("/flow-runs/child-3")
    assert child["parent"] == {"id": run["id"], "name": "nightly-3"}


def test_api_task_runs_and_logs_of_a_run_come_in_pages(dashboard: Dashboard) -> None:
    """The task-runs and logs endpoints answer {items, total, offset, limit}, filtered
    by state and by level (that level and above)."""
    page = dashboard.api("/flow-runs/nightly-3/task-runs?offset=1&limit=1")
    assert set(page) == {"task_runs", "total", "offset", "limit", "state"}
    assert (page["total"], page["offset"], page["limit"]) == (3, 1, 1)
    assert [t["task_name"] for t in page["task_runs"]] == ["double"]
    cached = dashboard.api("/flow-runs/nightly-3/task-runs?state=cached")
    assert cached["total"] == 1 and cached["task_runs"][0]["cache_hit"]
    everything = dashboard.api("/flow-runs/nightly-3/logs")
    assert set(everything) == {"logs", "total", "offset", "limit", "level"}
    two = dashboard.api("/flow-runs/nightly-3/logs?offset=2&limit=2")
    assert two["logs"] == everything["logs"][2:4] and two["total"] == everything["total"]
    errors = dashboard.api("/flow-runs/nightly-3/logs?level=error")
    assert errors["total"] == 2 and {line["level"] for line in errors["logs"]} == {"ERROR"}
    assert {line["task_run_name"] for line in errors["logs"]} == {
        t["name"] for t in everything_tasks(dashboard) if t["task_name"] == "flaky"}
    warnings = dashboard.api("/flow-runs/nightly-3/logs?level=warning")
    assert warnings["total"] >= errors["total"]
    flaky_id = next(t["id"] for t in everything_tasks(dashboard) if t["task_name"] == "flaky")
    own = dashboard.api(f"/task-runs/{flaky_id}/logs?limit=2")
    assert own["total"] > 2 and len(own["logs"]) == 2
    assert {line["task_run_id"] for line in own["logs"]} == {flaky_id}


def everything_tasks(board: Dashboard) -> list[dict[str, Any]]:
    return board.api("/flow-runs/nightly-3/task-runs?limit=500")["task_runs"]


def test_the_flow_run_page_pages_and_filters_its_task_runs_and_logs(dashboard: Dashboard) -> None:
    """The page says which task runs and lines it shows, of how many, and links to the
    others; state and level links filter them."""
    rid = run_id(dashboard, "nightly-3")
    _, _, body = dashboard.get("/runs/nightly-3?limit=1&offset=1")
    assert "showing 2–2 of 3 task runs" in body
    assert f'rel="prev" href="/runs/{rid}?limit=1#task-runs"' in body
    assert f'rel="next" href="/runs/{rid}?offset=2&amp;limit=1#task-runs"' in body
    _, _, body = dashboard.get("/runs/nightly-3?state=Cached")
    assert "Task runs <span class=\"muted\">(1 Cached of 3)</span>" in body
    assert body.count('<td class="tl-name"><a href="/task-runs/') == 1
    _, _, body = dashboard.get("/runs/nightly-3?level=ERROR")
    assert "showing 1–2 of 2 log lines" in body and "attempt 1" not in body
    assert f'<a class="chosen" href="/runs/{rid}?level=ERROR#logs">error+</a>' in body


def test_a_parent_flow_run_counts_subflow_runs_apart_and_children_name_it(dashboard: Dashboard) -> None:
    """The parent's page has "Task runs (3)" and "Subflow runs (1)"; the child's page and
    the runs list name the parent instead of showing a piece of its id."""
    parent_id = run_id(dashboard, "nightly-3")
    _, _, body = dashboard.get("/runs/nightly-3")
    assert 'Task runs <span class="muted">(3)</span>' in body
    assert 'Subflow runs <span class="muted">(1)</span>' in body
    _, _, body = dashboard.get("/runs/child-3")
    assert f'<dt>parent</dt><dd><a href="/runs/{parent_id}">nightly-3</a></dd>' in body
    _, _, body = dashboard.get("/runs")
    assert f'of <a href="/runs/{parent_id}">nightly-3</a>' in body
    assert parent_id[:8] not in body.replace(f"/runs/{parent_id}", "").replace(f'title="{parent_id}"', "")


def test_runs_are_searched_by_name_and_filtered_by_date_and_nesting(dashboard: Dashboard) -> None:
    """q finds text in a run's or its flow's name; since/until bound the start date;
    top=1 leaves subflow runs out and parent= lists one run's subflow runs."""
    def names(query: str) -> list[str]:
        return [r["name"] for r in dashboard.api(f"/flow-runs?{query}")["flow_runs"]]

    assert names("q=NIGHT") == ["nightly-3"]
    assert names("q=brok&state=failed") == ["broken-2", "broken-1", "broken-0"]
    assert names("flow=evil&flow=child") == ["evil-run", "child-3"]
    today = dt.date.today()
    assert len(names(f"since={today}&until={today}")) == 6
    assert names(f"since={today + dt.timedelta(days=1)}") == []
    assert names(f"until={today - dt.timedelta(days=1)}") == []
    assert "child-3" not in names("top=1") and len(names("top=1")) == 5
    parent = dashboard.api(f"/flow-runs?parent={run_id(dashboard, 'nightly-3')}")
    assert [r["name"] for r in parent["flow_runs"]] == ["child-3"]
    assert parent["parent"]["name"] == "nightly-3"
    assert dashboard.api("/flow-runs?q=brok")["filters"]["q"] == "brok"


@flow(flow_run_name="tagged-{env}")
def tagged(env: str) -> None:
    """A run tagged with its environment."""


def test_runs_are_filtered_by_tags_all_of_them(headwater_session: Session) -> None:
    """tag= (repeated, or comma separated in the form's box) lists runs with every tag."""
    from headwater import tags

    with tags("nightly", "prod"):
        tagged("prod")
    with tags("nightly"):
        tagged("staging")
    headwater_session.store.flush()
    board = Dashboard(headwater_session)
    try:
        def names(query: str) -> list[str]:
            return [r["name"] for r in board.api(f"/flow-runs?{query}")["flow_runs"]]

        assert names("tag=nightly") == ["tagged-staging", "tagged-prod"]
        assert names("tag=nightly&tag=prod") == names("tag=nightly,%20prod") == ["tagged-prod"]
        _, _, body = board.get("/runs?tag=nightly,prod")
        assert 'name="tag" value="nightly, prod"' in body and "tagged-staging" not in body
    finally:
        board.close()


def test_the_runs_list_shows_why_a_run_failed(dashboard: Dashboard) -> None:
    """A failed run's row carries its state's message, the exception first."""
    _, _, body = dashboard.get("/runs?flow=broken")
    assert body.count('<td class="message" title="Flow run encountered an exception: ValueError: no good') == 3
    assert ">ValueError: no good</td>" in body


@task
def produce(n: int) -> list[int]:
    return list(range(n))


@task
def square(x: int) -> int:
    return x * x


@task
def total(values: list[int]) -> int:
    return sum(values)


@flow(flow_run_name="fan-{n}")
def fan(n: int) -> int:
    numbers = produce.submit(n)
    squares = [square.submit(x, wait_for=[numbers]) for x in range(n)]
    return total(squares)


def test_api_graph_has_every_task_run_and_its_upstream_runs(headwater_session: Session) -> None:
    """/graph gives a node per task run and an edge per recorded upstream run: produce
    before each square, each square before total; the page draws them as SVG links."""
    fan(3)
    headwater_session.store.flush()
    board = Dashboard(headwater_session)
    try:
        graph = board.api("/flow-runs/fan-3/graph")
        assert graph["drawn"] is True and graph["total"] == 5
        ids = {n["name"].split("-")[0]: [] for n in graph["nodes"]}
        for node in graph["nodes"]:
            ids[node["name"].split("-")[0]].append(node["id"])
        (produced,), (summed,) = ids["produce"], ids["total"]
        expected = {(produced, s) for s in ids["square"]} | {(s, summed) for s in ids["square"]}
        assert {tuple(e) for e in graph["edges"]} == expected
        _, _, body = board.get("/runs/fan-3")
        assert body.count('<a href="/task-runs/') >= 5 and '<svg class="graph"' in body
        assert body.count('class="edge"') == 6
        assert "Dependency graph" in body and "(5 task runs, 6 dependencies)" in body
    finally:
        board.close()


def test_a_running_flow_shows_its_progress_and_refreshes(headwater_session: Session) -> None:
    """A live run's page says how many of its task runs are done, by state, and reloads;
    the next load shows the run further on."""
    from headwater.runs import FlowRun, TaskRun
    from headwater.states import Completed, Failed, Running

    store = headwater_session.store
    live = FlowRun("feed0000-live", "feed", "feeding")
    live.state, live.start_ts = Running(), dt.datetime.now().timestamp()
    store.create_flow_run(live)
    store.record_state(live, live.state)
    runs = []
    for i, state in enumerate([Completed(), Failed(message="bad row"), Running()]):
        run = TaskRun(f"feed0000-t{i}", "ingest", "k", f"ingest-{i}", {}, frozenset(), live.id)
        run.state = state
        store.create_task_run(run)
        store.record_state(run, state)
        runs.append(run)
    store.flush()
    board = Dashboard(headwater_session)
    try:
        _, _, body = board.get("/runs/feeding")
        assert "2 of 3 task runs done, 1 not yet" in body and 'http-equiv="refresh"' in body
        assert ">completed 1</a>" in body and ">failed 1</a>" in body and ">running 1</a>" in body
        runs[2].state = Completed()
        store.record_state(runs[2], runs[2].state)
        store.flush()
        _, _, body = board.get("/runs/feeding")
        assert "3 of 3 task runs done" in body and ">completed 2</a>" in body
        assert board.api("/flow-runs/feeding")["task_run_counts"]["done"] == 3
    finally:
        board.close()


def test_the_cache_page_names_the_task_runs_that_wrote_entries(dashboard: Dashboard) -> None:
    """A cache entry's task run shows by name and the shortest suffix of its id, not the
    first eight characters every time-ordered id of the run shares."""
    entry = dashboard.api("/cache-entries")["cache_entries"][0]
    writer = dashboard.api(f"/task-runs/{entry['task_run_id']}")
    assert entry["task_run_name"] == writer["name"]
    assert entry["task_run_id"].replace("-", "").endswith(entry["task_run_short_id"])
    _, _, body = dashboard.get("/cache")
    assert f'>{writer["name"]}</a>' in body


def test_a_retried_run_paged_links_each_attempt_to_the_page_it_starts_on(retried: str,
                                                                          headwater_session: Session) -> None:
    """With two task runs a page, attempt 2 (task runs 4 to 6) links to the page from
    the third run on, which heads its runs with "Attempt 2"."""
    board = Dashboard(headwater_session)
    try:
        _, _, body = board.get(f"/runs/{retried}?limit=2")
        assert f'href="/runs/{retried}?limit=2#attempt-1-tasks"' in body
        assert f'href="/runs/{retried}?offset=2&amp;limit=2#attempt-2-tasks"' in body
        _, _, body = board.get(f"/runs/{retried}?offset=2&limit=2")
        assert 'id="attempt-2-tasks"' in body and "showing 3–4 of 6 task runs" in body
        run = board.api(f"/flow-runs/{retried}?offset=3&limit=3")
        assert [t["attempt"] for t in run["task_runs"]] == [2, 2, 2]
        assert [t["reused_from_attempt"] for t in run["task_runs"]] == [1, 1, None]
    finally:
        board.close()
