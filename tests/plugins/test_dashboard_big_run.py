"""The dashboard over a 20,000-task flow run: the flow run's page and its API answer a
page of task runs and log lines with their totals, small, and by indexed queries only
(no read walks every task run, log line or state). The run is recorded through the
run store's writer API, as the engine records one, rather than run."""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from headwater.plugins import sqlite_store
from headwater.runs import FlowRun, TaskRun
from headwater.session import Session
from headwater.states import Completed, Failed, Pending, Running
from headwater.task_lines import marker_row

pytest.importorskip("markdown_it", reason='the dashboard needs its extra: pip install "headwater[ui]"')

from headwater.plugins.dashboard.server import make_server  # noqa: E402

BIG = 20_000
FAILED_EVERY = 5000
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def record_big_run(store: Any, run_id: str = "big", tasks: int = BIG) -> None:
    """A finished flow run of ``tasks`` task runs, each after the first depending on
    it; every ``FAILED_EVERY``-th one failed after a retry, with an ERROR line."""
    flow_run = FlowRun(run_id, "etl", "big-run")
    flow_run.start_ts = time.time()
    flow_run.run_count = 1
    store.create_flow_run(flow_run)
    for state in (Pending(), Running()):
        flow_run.state = state
        store.record_state(flow_run, state)
    store.record_logs([marker_row(run_id, time.time()),
                       (run_id, None, time.time(), "INFO", "headwater.flow_runs", "big-run started")])
    first = None
    for i in range(tasks):
        task_run = TaskRun(f"{run_id}-t{i:05d}", "load", "k", f"load-{i}", {"i": i}, frozenset(), run_id)
        if first is not None:
            task_run.upstream_ids = (first,)
        first = first or task_run.id
        store.create_task_run(task_run)
        task_run.state = Pending()
        store.record_state(task_run, task_run.state)
        task_run.start_ts = time.time()
        task_run.state = Running()
        store.record_state(task_run, task_run.state)
        task_run.end_ts = time.time()
        if i % FAILED_EVERY == FAILED_EVERY - 1:
            task_run.run_count = 2
            store.record_logs([(run_id, task_run.id, time.time(), "ERROR", "headwater.task_runs", f"boom {i}")])
            task_run.state = Failed(message="boom")
        else:
            task_run.state = Completed()
        store.record_state(task_run, task_run.state)
    flow_run.end_ts = time.time()
    flow_run.state = Completed()
    store.record_state(flow_run, flow_run.state)
    store.flush()


class Board:
    """A dashboard served in this process, every SQL statement of its store traced."""

    def __init__(self, home: Path) -> None:
        self.statements: list[str] = []
        plain = sqlite_store.connect

        def traced(path: Any) -> Any:
            conn = plain(path)
            conn.set_trace_callback(self.statements.append)
            return conn

        self.patch = pytest.MonkeyPatch()
        self.patch.setattr(sqlite_store, "connect", traced)
        self.session = Session(env={"HEADWATER_HOME": str(home)})
        self.session.__enter__()
        record_big_run(self.session.store)
        self.db = Path(self.session.settings.database_url.split("///", 1)[1])
        self.server = make_server(self.session, "127.0.0.1", 0)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with DIRECT.open(self.url + path, timeout=60) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def api(self, path: str) -> Any:
        status, body = self.get("/api" + path)
        assert status == 200, body[:300]
        return json.loads(body)

    def full_scans(self) -> list[tuple[str, str]]:
        """The traced statements whose plan reads every row of task_runs, logs or states."""
        conn = sqlite3.connect(self.db)
        scans = []
        for sql in list(self.statements):
            if not sql.lstrip().upper().startswith(("SELECT", "WITH")):
                continue
            plan = [row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + sql)]
            scans += [(sql, step) for step in plan
                      if step.startswith("SCAN ") and step.split()[1] in ("task_runs", "logs", "states")]
        conn.close()
        return scans

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.session.__exit__(None, None, None)
        self.patch.undo()


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Board]:
    running = Board(tmp_path_factory.mktemp("big-dashboard"))
    yield running
    running.close()


def test_the_flow_run_api_carries_counts_and_one_page_not_every_task_run(board: Board) -> None:
    """/api/flow-runs/big: counts by state for all 20,000 task runs, the first 50 task
    runs and 100 log lines with their totals, in well under a megabyte."""
    status, body = board.get("/api/flow-runs/big")
    assert status == 200 and len(body) < 200_000, len(body)
    run = json.loads(body)
    counts = run["task_run_counts"]
    assert counts["total"] == BIG and counts["done"] == BIG
    assert counts["by_type"] == {"COMPLETED": BIG - 4, "FAILED": 4}
    assert len(run["task_runs"]) == 50 and run["task_runs_page"]["total"] == BIG
    assert run["task_runs"][0]["name"] == "load-0"
    assert len(run["logs"]) == 100 and run["logs_page"]["total"] == 1 + 2 * BIG + 4
    assert run["attempts"][0]["task_runs"] == BIG


def test_task_runs_and_log_lines_come_a_page_at_a_time(board: Board) -> None:
    """The task-runs and logs endpoints page through the whole run and filter it."""
    page = board.api("/flow-runs/big/task-runs?offset=19950&limit=50")
    assert (page["total"], page["offset"], page["limit"]) == (BIG, 19950, 50)
    assert [t["name"] for t in page["task_runs"]][-1] == f"load-{BIG - 1}"
    failed = board.api("/flow-runs/big/task-runs?state=failed")
    assert [t["name"] for t in failed["task_runs"]] == ["load-4999", "load-9999", "load-14999", "load-19999"]
    assert failed["total"] == 4 and failed["task_runs"][0]["retries"] == 1
    errors = board.api("/flow-runs/big/logs?level=error")
    assert [line["message"] for line in errors["logs"]] == ["boom 4999", "boom 9999", "boom 14999", "boom 19999"]
    assert errors["logs"][0]["task_run_name"] == "load-4999"
    lines = board.api("/flow-runs/big/logs?offset=40000&limit=10")
    assert (lines["total"], len(lines["logs"])) == (1 + 2 * BIG + 4, 5)


def test_the_flow_run_page_says_where_it_is_and_links_on(board: Board) -> None:
    """The page shows task runs 101-150 of 20,000 with links to 51-100 and 151-200,
    the progress by state, and says why the graph is not drawn."""
    status, body = board.get("/runs/big?offset=100")
    text = body.decode()
    assert status == 200 and len(body) < 500_000, len(body)
    assert "showing 101–150 of 20,000 task runs" in text
    assert 'href="/runs/big?offset=50#task-runs"' in text and 'href="/runs/big?offset=150#task-runs"' in text
    assert ">load-100</a>" in text and ">load-149</a>" in text and ">load-150</a>" not in text
    assert "20,000 of 20,000 task runs done" in text
    assert "The graph is drawn for runs of up to 500 task runs; this one has 20,000" in text
    assert "showing 1–100 of 40,005 log lines" in text


def test_no_read_of_the_big_run_walks_every_row(board: Board) -> None:
    """The page, its API and the pages of task runs and logs read by index only."""
    board.statements.clear()
    for path in ("/runs/big", "/runs/big?state=failed&offset=0", "/runs/big?level=error&log_offset=100",
                 "/api/flow-runs/big", "/api/flow-runs/big/task-runs?offset=10000",
                 "/api/flow-runs/big/logs?offset=20000", "/api/flow-runs/big/graph", "/runs"):
        assert board.get(path)[0] == 200, path
    assert board.statements, "the trace saw the reads"
    assert board.full_scans() == []


def test_the_graph_of_a_big_run_is_not_drawn_and_says_so(board: Board) -> None:
    """Past the graph's limit, /graph answers the count and no nodes."""
    graph = board.api("/flow-runs/big/graph")
    assert graph["drawn"] is False and graph["total"] == BIG and graph["limit"] == 500
    assert graph["nodes"] == [] and graph["edges"] == []


def test_a_page_past_the_end_is_empty_and_says_so(board: Board) -> None:
    """An offset past the last task run is an empty page, not an error."""
    page = board.api("/flow-runs/big/task-runs?offset=25000")
    assert page["task_runs"] == [] and page["total"] == BIG
    text = board.get("/runs/big?offset=25000")[1].decode()
    assert "nothing past 20,000 task runs" in text
    assert re.search(r'rel="prev" href="/runs/big\?offset=24950', text)
