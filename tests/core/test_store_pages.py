"""The run store's paged reads and deletion (core/stores.py), the same on the in-memory
store, the SQLite store and a third-party reader that has only the required methods:
a page and its total, counts by state, filtered log lines, flow run search, deleting runs
with everything under them, and a 20,000-task run read a page at a time by indexed
queries only."""

from __future__ import annotations

import os
import sqlite3
import time

import pytest

from headwater.plugins import sqlite_store
from headwater.plugins.sqlite_store import SQLiteRunStore
from headwater.runs import FlowRun, TaskRun
from headwater.states import Completed, Failed, Pending, Running
from headwater.stores import CacheEntry, FlowRunFilter, MemoryRunStore, RunReader
from headwater.task_lines import marker_row


class RequiredOnly(RunReader):
    """A third-party reader: only the five required reads (and read_logs), delegated to
    an in-memory store; every paged read is the interface's default."""

    def __init__(self, inner: MemoryRunStore) -> None:
        self.inner = inner

    def read_flow_runs(self, limit=50, offset=0, flow_name=None, state=None, parent_flow_run_id=None):
        return self.inner.read_flow_runs(limit, offset, flow_name, state, parent_flow_run_id)

    def read_flow_run(self, id_or_name):
        return self.inner.read_flow_run(id_or_name)

    def read_task_runs(self, flow_run_id=None, limit=None):
        return self.inner.read_task_runs(flow_run_id, limit)

    def read_task_run(self, task_run_id):
        return self.inner.read_task_run(task_run_id)

    def read_states(self, run_id):
        return self.inner.read_states(run_id)

    def read_logs(self, flow_run_id=None, task_run_id=None, limit=1000):
        return self.inner.read_logs(flow_run_id, task_run_id, limit)


def record_flow_run(store, run_id, name, flow_name="etl", tasks=0, failed_every=0, parent=None, tags=(),
                    started=None, logs=True, end=True):
    """A flow run written through the writer API as the engine writes one: ``tasks``
    task runs (every ``failed_every``-th one Failed after a retry, with an ERROR line),
    the marker row of routine task lines, and a final state unless ``end`` is false."""
    flow_run = FlowRun(run_id, flow_name, name, tags=frozenset(tags), parent_flow_run_id=parent)
    flow_run.start_ts = started if started is not None else time.time()
    store.create_flow_run(flow_run)
    flow_run.state = Pending()
    store.record_state(flow_run, flow_run.state)
    flow_run.state = Running()
    store.record_state(flow_run, flow_run.state)
    if logs:
        store.record_logs([marker_row(run_id, time.time()),
                           (run_id, None, time.time(), "INFO", "headwater.flow_runs", f"{name} started")])
    for i in range(tasks):
        task_run = TaskRun(f"{run_id}-t{i:05d}", "load", "k", f"load-{i}", {"i": i}, frozenset(), run_id)
        store.create_task_run(task_run)
        task_run.state = Pending()
        store.record_state(task_run, task_run.state)
        task_run.start_ts = time.time()
        task_run.state = Running()
        store.record_state(task_run, task_run.state)
        if failed_every and i % failed_every == failed_every - 1:
            task_run.run_count = 2
            store.record_logs([(run_id, task_run.id, time.time(), "ERROR", "headwater.task_runs", f"boom {i}")])
            task_run.end_ts = time.time()
            task_run.state = Failed(message="boom")
        else:
            task_run.run_count = 1
            task_run.end_ts = time.time()
            task_run.state = Completed()
        store.record_state(task_run, task_run.state)
    if end:
        flow_run.end_ts = time.time()
        flow_run.state = Completed()
        store.record_state(flow_run, flow_run.state)
    store.flush()
    return flow_run


@pytest.fixture(params=["memory", "sqlite", "required-only"])
def store(request, tmp_path):
    """Each kind of store, with ``writer`` (where runs are recorded) and the reader."""
    if request.param == "sqlite":
        made = SQLiteRunStore(tmp_path / "headwater.db")
        made.writer = made
        yield made
        made.close()
        return
    memory = MemoryRunStore()
    made = memory if request.param == "memory" else RequiredOnly(memory)
    made.writer = memory
    yield made


def test_a_page_of_task_runs_has_its_total_and_keeps_creation_order(store):
    """offset/limit give one page, total counts every match; state and retried filter."""
    record_flow_run(store.writer, "f1", "big", tasks=120, failed_every=50)
    page = store.read_task_run_page("f1", offset=100, limit=50)
    assert (page.total, page.offset, page.limit) == (120, 100, 50)
    assert [t.name for t in page.items] == [f"load-{i}" for i in range(100, 120)]
    failed = store.read_task_run_page("f1", state="FAILED")
    assert [t.name for t in failed.items] == ["load-49", "load-99"] and failed.total == 2
    assert store.read_task_run_page("f1", state="completed", limit=1).total == 118
    assert [t.name for t in store.read_task_run_page("f1", retried=True).items] == ["load-49", "load-99"]
    assert store.read_task_run_page("f1", offset=500).items == []


def test_task_runs_are_counted_by_state_type_and_name(store):
    """count_task_run_states: the total, by type and by name."""
    record_flow_run(store.writer, "f1", "big", tasks=30, failed_every=10)
    counts = store.count_task_run_states("f1")
    assert counts.total == 30
    assert counts.by_type == {"COMPLETED": 27, "FAILED": 3}
    assert counts.by_name == {"Completed": 27, "Failed": 3}
    assert store.count_task_run_states("no-such-run").total == 0


def test_a_log_page_is_a_slice_of_read_logs_with_its_total(store):
    """Pages of log lines, put together, are read_logs' lines in its order."""
    record_flow_run(store.writer, "f1", "big", tasks=40, failed_every=20)
    every = store.read_logs(flow_run_id="f1", limit=10**6)
    pages = [store.read_log_page("f1", offset=o, limit=25) for o in range(0, len(every), 25)]
    assert {p.total for p in pages} == {len(every)} and len(every) == 1 + 40 + 40 + 2
    joined = [line for p in pages for line in p.items]
    assert [(x["ts"], x["task_run_id"], x["message"]) for x in joined] == [
        (x["ts"], x["task_run_id"], x["message"]) for x in every]
    assert joined[1]["message"] == "Created task run 'load-0' for task 'load'"


def test_log_lines_are_filtered_by_level_and_task(store):
    """level: that level and above; task: one task run by name or id, or a whole task."""
    record_flow_run(store.writer, "f1", "big", tasks=40, failed_every=20)
    errors = store.read_log_page("f1", level="warning")
    assert [x["message"] for x in errors.items] == ["boom 19", "boom 39"] and errors.total == 2
    one = store.read_log_page("f1", task="load-19")
    assert [x["message"] for x in one.items] == ["boom 19", "Finished in state Failed('boom')"]
    assert store.read_log_page("f1", task="f1-t00019").total == 2
    whole_task = store.read_log_page("f1", task="load", level="ERROR")
    assert whole_task.total == 2
    assert store.read_log_page("f1", task="load").total == 40 + 2  # every Finished line, both errors
    assert store.read_log_page("f1", task="nope").total == 0


def test_flow_runs_are_searched_by_flows_name_tags_state_and_dates(store):
    """Every FlowRunFilter field narrows the list; newest first, with the total."""
    now = time.time()
    record_flow_run(store.writer, "a1", "nightly-a", "extract", tags=["prod"], started=now - 3 * 86400)
    time.sleep(0.01)
    record_flow_run(store.writer, "b1", "hourly-b", "load", tags=["prod", "eu"], started=now - 3600)
    time.sleep(0.01)
    record_flow_run(store.writer, "c1", "child-c", "report", parent="b1", started=now - 10)
    time.sleep(0.01)
    record_flow_run(store.writer, "d1", "running-d", "load", end=False, started=now)

    def names(**where):
        return [r.name for r in store.search_flow_runs(FlowRunFilter(**where), limit=None).items]

    assert names(flow_names=["extract", "report"]) == ["child-c", "nightly-a"]
    assert names(search="HOURLY") == ["hourly-b"] and names(search="load") == ["running-d", "hourly-b"]
    assert names(search="%") == []  # taken literally
    assert names(tags=["prod", "eu"]) == ["hourly-b"] and names(tags=["prod"]) == ["hourly-b", "nightly-a"]
    assert names(state="running") == ["running-d"]
    assert names(started_before=now - 86400) == ["nightly-a"]
    assert names(started_after=now - 7200, started_before=now - 60) == ["hourly-b"]
    assert names(top_level=True) == ["running-d", "hourly-b", "nightly-a"]
    assert names(parent_flow_run_id="b1") == ["child-c"]
    page = store.search_flow_runs(FlowRunFilter(), offset=1, limit=2)
    assert page.total == 4 and [r.name for r in page.items] == ["child-c", "hourly-b"]


@pytest.fixture(params=["memory", "sqlite"])
def full_store(request, tmp_path):
    made = SQLiteRunStore(tmp_path / "headwater.db") if request.param == "sqlite" else MemoryRunStore()
    yield made
    if request.param == "sqlite":
        made.close()


def test_deleting_a_flow_run_takes_its_subflow_runs_task_runs_states_and_logs(full_store):
    """Subflow runs at any depth go too; other runs and the cache entries stay."""
    store = full_store
    record_flow_run(store, "p1", "parent", tasks=5, failed_every=5)
    record_flow_run(store, "c1", "child", tasks=3, parent="p1")
    record_flow_run(store, "g1", "grandchild", tasks=2, parent="c1")
    record_flow_run(store, "o1", "other", tasks=4)
    store.write_cache_entry(CacheEntry("k", "load", "p1-t00000", "loc", "json", time.time()))
    deleted = store.delete_flow_runs(["p1", "no-such-run"])
    assert sorted(deleted.flow_run_ids) == ["c1", "g1", "p1"]
    assert deleted.task_runs == 10
    assert deleted.states == 3 * 3 + 10 * 3  # Pending, Running, final of each run
    assert deleted.logs == 3 * 2 + 1  # marker and first line of each flow run, one error line
    assert [r.name for r in store.read_flow_runs()] == ["other"]
    assert [t.flow_run_id for t in store.read_task_runs()] == ["o1"] * 4
    assert store.read_states("p1-t00000") == [] and store.read_states("c1") == []
    assert {x["flow_run_id"] for x in store.read_logs(limit=10**6)} == {"o1"}
    assert [e.key for e in store.read_cache_entries()] == ["k"]


def test_compacting_after_a_deletion_shrinks_the_sqlite_file(tmp_path):
    """VACUUM and a truncating checkpoint: the database and its log take less room."""
    store = SQLiteRunStore(tmp_path / "headwater.db")
    record_flow_run(store, "f1", "big", tasks=3000)

    def size():
        return sum(os.path.getsize(p) for p in (store.path, f"{store.path}-wal") if os.path.exists(p))

    before = size()
    store.delete_flow_runs(["f1"])
    store.compact()
    assert size() < before / 5
    store.close()


def test_result_locations_are_those_of_task_runs_and_flow_runs(store):
    """read_result_locations: what runs refer to (cache prune keeps these files)."""
    flow_run = record_flow_run(store.writer, "f1", "big", tasks=2)
    task_run = store.writer.read_task_run("f1-t00000")
    task_run.result_location = "aa" * 32
    store.writer.record_state(task_run, task_run.state)
    flow_run.parameters_location, flow_run.result_location = "bb" * 32, "cc" * 32
    store.writer.record_state(flow_run, flow_run.state)
    store.writer.flush()
    assert store.read_result_locations() == {"aa" * 32, "bb" * 32, "cc" * 32}


# -- a 20,000-task run ------------------------------------------------------------------------

BIG = 20_000


@pytest.fixture(scope="module")
def big_store(tmp_path_factory):
    """One SQLite store with a 20,000-task run (4 failed after a retry), recorded through
    the writer API; every statement its connections run is kept in ``statements``."""
    statements: list[str] = []
    plain = sqlite_store.connect

    def traced(path):
        conn = plain(path)
        conn.set_trace_callback(statements.append)
        return conn

    home = tmp_path_factory.mktemp("big")
    mp = pytest.MonkeyPatch()
    mp.setattr(sqlite_store, "connect", traced)
    store = SQLiteRunStore(home / "headwater.db")
    record_flow_run(store, "big", "big-run", tasks=BIG, failed_every=5000)
    store.statements = statements
    yield store
    store.close()
    mp.undo()


def _full_scans(store, statements):
    """The statements among ``statements`` whose plan reads every row of task_runs, logs
    or states (a read of one run must search an index instead)."""
    conn = sqlite3.connect(store.path)
    scans = []
    for sql in statements:
        if not sql.lstrip().upper().startswith(("SELECT", "WITH")):
            continue
        plan = [row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + sql)]
        scans += [(sql, step) for step in plan
                  if step.startswith("SCAN ") and step.split()[1] in ("task_runs", "logs", "states")]
    conn.close()
    return scans


def test_a_20000_task_run_is_read_a_page_at_a_time(big_store):
    """The last page, the failed runs, the counts and a page of log lines, each with its
    total, and no read walks every task run, log line or state of the store."""
    store = big_store
    store.statements.clear()
    last = store.read_task_run_page("big", offset=BIG - 50, limit=50)
    assert last.total == BIG and [t.name for t in last.items][-1] == f"load-{BIG - 1}"
    failed = store.read_task_run_page("big", state="failed")
    assert [t.name for t in failed.items] == ["load-4999", "load-9999", "load-14999", "load-19999"]
    counts = store.count_task_run_states("big")
    assert counts.by_type == {"COMPLETED": BIG - 4, "FAILED": 4}
    logs = store.read_log_page("big", offset=100, limit=50)
    assert logs.total == 1 + 2 * BIG + 4 and len(logs.items) == 50
    assert [x["message"] for x in store.read_log_page("big", level="error").items] == [
        "boom 4999", "boom 9999", "boom 14999", "boom 19999"]
    assert store.read_log_page("big", task="load-4999").total == 2
    assert store.statements, "the trace saw the reads"
    assert _full_scans(store, list(store.statements)) == []
