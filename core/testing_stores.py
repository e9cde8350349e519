"""The run-store conformance suite: the behaviour every run store owes headwater.

A store's author subclasses :class:`RunStoreConformance` in a test module, names the
subclass ``Test...`` so pytest collects it, and says how to make a store::

    from headwater.testing import RunStoreConformance

    class TestMyStore(RunStoreConformance):
        def make_store(self, tmp_path):
            return MyStore(tmp_path / "runs")

        def open_again(self, store, tmp_path):
            return MyStore(tmp_path / "runs")  # another handle, as another process opens it

        def store_url(self, store):
            return f"mystore://{store.path}"  # what HEADWATER_DATABASE_URL a child process gets

Each test gets a new, empty store from ``make_store`` and closes it at the end. Without
``open_again`` the tests of a second handle skip, and without ``store_url`` the tests
that run a flow in a child process skip, each saying so. ``crash_env`` adds settings to
those child processes (a short heartbeat threshold, say), and ``crash_seconds`` is how
long after a process is killed its unfinished runs may still read as running.

What is checked is what the engine, ``headwater runs``, ``headwater cache`` and the
dashboard rely on (``headwater.stores``): every field of flow runs and task runs comes
back from the reader after ``flush``, with state histories in order; the listings' filters
and orders; log lines and their routine task lines; every paged read agrees with the
default built on the required reads; deletion takes subflow runs at any depth, and a run
can be reopened; the cache index is durable and visible to another handle at once; any
text is stored (lone surrogates, NUL, emoji) and read back without an error; threads and
handles writing at once lose nothing; and a flow killed with ``kill -9`` reads as Crashed,
while a flow call that returned has every state stored. The tests of a store shared by
threads, handles and processes are ``testing_store_sharing``'s; the runs they record,
recorded as the engine records them, ``testing_store_records``'.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from .runs import FlowRun, TaskRun
from .states import AwaitingRetry, Cached, Completed, Crashed, Failed, Pending, Running, State, StateType, TimedOut
from .stores import CacheEntry, FlowInfo, FlowRunFilter, RunReader, RunStore, RunWriter
from .testing_store_records import (AWKWARD_TEXTS, at, logged_flow_run, move, new_flow_run, new_task_run,
                                    surrogates_escaped)
from .testing_store_sharing import SharedStoreTests

__all__ = ["RunStoreConformance"]


class RunStoreConformance(SharedStoreTests):
    """Tests every run store must pass. Subclass it (as ``Test<YourStore>``) and override
    :meth:`make_store`; override :meth:`open_again` and :meth:`store_url` to run the tests
    of a second handle and of child processes too (skipped, saying so, without them)."""

    # crash_env, crash_seconds, writers and runs_per_writer: see SharedStoreTests.

    def make_store(self, tmp_path: Path) -> RunStore:
        """A new, empty store."""
        raise NotImplementedError("override make_store(self, tmp_path) to return your run store")

    def open_again(self, store: RunStore, tmp_path: Path) -> RunStore | None:
        """Another handle on the records of ``store``, opened as a second process would
        open it; None (the default): the tests that need one are skipped."""
        return None

    def store_url(self, store: RunStore) -> str | None:
        """The ``HEADWATER_DATABASE_URL`` a child process opens the records of ``store``
        with; None (the default): the tests that run a child process are skipped."""
        return None

    def text_read_back(self, text: str) -> set[str]:
        """The texts the store may give back for ``text`` written: the text itself, or
        with each lone surrogate as its backslash escape (UTF-8 cannot encode one). A
        store with another rule for what it cannot hold overrides this."""
        return {text, surrogates_escaped(text)}

    # -- fixtures and helpers -------------------------------------------------------------

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[RunStore]:
        """The store under test, new for each test, closed after it."""
        self._store_tmp_path = tmp_path
        self._opened_handles: list[Any] = []
        self._closed_handles: list[Any] = []  # closed by the test itself (a session closes its store)
        made = self.make_store(tmp_path)
        yield made
        for handle in [*self._opened_handles, made]:
            if not any(handle is closed for closed in self._closed_handles):
                handle.close()
        # pytest keeps each test's instance until the session ends: without this, every
        # store (an in-memory one holds the runs themselves) would live as long.
        self._opened_handles, self._closed_handles = [], []

    def _second_handle(self, store: RunStore) -> RunStore:
        """Another handle on ``store`` (closed after the test), or the test is skipped."""
        again = self.open_again(store, self._store_tmp_path)
        if again is None:
            pytest.skip(f"{type(self).__name__} does not override open_again(store, tmp_path)")
        if again is not store:
            self._opened_handles.append(again)
        return again

    def _url_for_children(self, store: RunStore) -> str:
        url = self.store_url(store)
        if url is None:
            pytest.skip(f"{type(self).__name__} does not override store_url(store)")
        return url

    @staticmethod
    def _requires_method(store: Any, method: str) -> None:
        """Skip the test when the store keeps the default (a refusal) of an optional method."""
        own = getattr(type(store), method, None)
        if own is None or own is getattr(RunWriter, method):
            pytest.skip(f"{type(store).__name__} has no {method} (optional: docs/plugins.md, "
                        f"'Writing a run store')")

    def _assert_text_read_back(self, got: Any, written: str, what: str) -> None:
        assert got in self.text_read_back(written), \
            f"{what}: wrote {written!r}, read back {got!r} (expected one of {sorted(self.text_read_back(written))!r})"

    # -- flow runs and task runs: every field ----------------------------------------------

    def test_a_flow_run_comes_back_with_every_field(self, store: RunStore) -> None:
        now = time.time()
        parent = new_flow_run(store, "conformance-parent", "parent-run", "outer", started=now - 10)
        parent_task = new_task_run(store, parent, "conformance-parent-task", "inner-call", "inner")
        parameters = {"n": 3, "ratio": 0.25, "flag": True, "nothing": None, "text": "naïve ☃",
                      "items": [1, "two", [3.5]], "nested": {"a": {"b": [None, False]}}}
        run = FlowRun("conformance-run", "inner", "brave-otter", parameters, frozenset({"prod", "eu"}),
                      flow_version="1.2", parent_flow_run_id=parent.id, parent_task_run_id=parent_task.id)
        run.entry_point = json.dumps({"module": "pipelines.etl", "qualname": "inner"})
        run.inputs_hash = "ab" * 16
        run.parameters_location = "cd" * 32
        run.result_location = "ef" * 32
        run.run_count = 1
        store.create_flow_run(run)
        pending = move(store, run, Pending())
        running = move(store, run, Running())
        run.run_count = 2
        retrying = move(store, run, AwaitingRetry(message="again", scheduled_time=None))
        again = move(store, run, Running(message="second attempt"))
        done = move(store, run, Completed(message="all good"))
        store.flush()

        got = store.read_flow_run(run.id)
        assert got is not None, "read_flow_run(id) did not find a flushed flow run"
        assert (got.id, got.name, got.flow_name, got.flow_version) == (run.id, "brave-otter", "inner", "1.2")
        assert got.parameters == parameters
        assert set(got.tags) == {"prod", "eu"}
        assert (got.parent_flow_run_id, got.parent_task_run_id) == (parent.id, parent_task.id)
        assert (got.entry_point, got.inputs_hash) == (run.entry_point, run.inputs_hash)
        assert (got.parameters_location, got.result_location) == (run.parameters_location, run.result_location)
        assert got.run_count == 2
        assert got.start_ts == pytest.approx(running.ts, abs=1e-3)
        assert got.end_ts == pytest.approx(done.ts, abs=1e-3)
        assert got.state is not None and (got.state.type, got.state.name, got.state.message) == (
            StateType.COMPLETED, "Completed", "all good")
        history = store.read_states(run.id)
        assert [(s.type, s.name, s.message) for s in history] == [
            (s.type, s.name, s.message) for s in (pending, running, retrying, again, done)]
        assert [s.ts for s in history] == pytest.approx([s.ts for s in (pending, running, retrying, again, done)],
                                                        abs=1e-3)

    def test_a_task_run_comes_back_with_every_field(self, store: RunStore) -> None:
        flow_run = new_flow_run(store, "conformance-flow", "flow-run", started=time.time())
        upstream = new_task_run(store, flow_run, "conformance-up", "extract-0", "extract", final=Completed())
        run = TaskRun("conformance-task", "load", "load-4f2a", "load-7", {"rows": "<future>", "table": "t"},
                      frozenset({"io"}), flow_run.id)
        run.upstream_ids = (upstream.id,)
        store.create_task_run(run)
        pending = move(store, run, Pending())
        run.parameters = {"rows": [1, 2, 3], "table": "t"}  # the future became its result
        run.run_count = 1
        running = move(store, run, Running())
        expires = time.time() + 3600
        run.cache_key = "load-key-7"
        waiting = move(store, run, AwaitingRetry(message="timed out"))
        run.run_count = 2
        retry = move(store, run, State(StateType.RUNNING, "Retrying"))
        run.result_location = "12" * 32
        run.inputs_hash = "34" * 16
        done = move(store, run, Completed(cache_key="load-key-7",
                                          cache_expiration=dt.datetime.fromtimestamp(expires, dt.timezone.utc)))
        store.flush()

        got = store.read_task_run(run.id)
        assert got is not None, "read_task_run(id) did not find a flushed task run"
        assert (got.id, got.task_name, got.task_key, got.name, got.flow_run_id) == (
            run.id, "load", "load-4f2a", "load-7", flow_run.id)
        assert got.parameters == {"rows": [1, 2, 3], "table": "t"}, \
            "the parameters a run started with (its futures' results) were not kept"
        assert set(got.tags) == {"io"}
        assert tuple(got.upstream_ids) == (upstream.id,)
        assert (got.cache_key, got.result_location, got.inputs_hash) == ("load-key-7", "12" * 32, "34" * 16)
        assert got.run_count == 2
        assert got.start_ts == pytest.approx(running.ts, abs=1e-3)
        assert got.end_ts == pytest.approx(done.ts, abs=1e-3)
        assert got.state is not None and (got.state.type, got.state.name) == (StateType.COMPLETED, "Completed")
        history = store.read_states(run.id)
        written = (pending, running, waiting, retry, done)
        assert [(s.type, s.name) for s in history] == [(s.type, s.name) for s in written]
        assert history[2].message == "timed out"
        details = history[-1].state_details
        assert details.cache_key == "load-key-7"
        assert details.cache_expiration is not None and details.cache_expiration.timestamp() == pytest.approx(
            expires, abs=1e-3)
        assert [t.id for t in store.read_task_runs(flow_run_id=flow_run.id)] == [upstream.id, run.id]

    def test_a_scheduled_time_and_failure_messages_are_kept_in_the_history(self, store: RunStore) -> None:
        flow_run = new_flow_run(store, "conformance-flow", "flow-run", started=time.time())
        run = new_task_run(store, flow_run, "conformance-task", "flaky-0", "flaky")
        when = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=5)
        move(store, run, AwaitingRetry(message="retry in 5 minutes", scheduled_time=when))
        move(store, run, Running())
        move(store, run, TimedOut(message="took longer than 1 s"))
        store.flush()
        history = store.read_states(run.id)
        assert [(s.type, s.name) for s in history] == [
            (StateType.PENDING, "Pending"), (StateType.RUNNING, "Running"), (StateType.SCHEDULED, "AwaitingRetry"),
            (StateType.RUNNING, "Running"), (StateType.FAILED, "TimedOut")]
        scheduled = history[2].state_details.scheduled_time
        assert scheduled is not None and scheduled.timestamp() == pytest.approx(when.timestamp(), abs=1e-3)
        assert history[-1].message == "took longer than 1 s"
        assert store.read_task_run(run.id).state.name == "TimedOut"

    def test_unknown_ids_read_as_nothing(self, store: RunStore) -> None:
        new_flow_run(store, "conformance-flow", "flow-run", started=time.time(), final=Completed())
        store.flush()
        assert store.read_flow_run("no-such-run-at-all") is None
        assert store.read_task_run("no-such-run-at-all") is None
        assert store.read_states("no-such-run-at-all") == []
        assert store.read_task_runs(flow_run_id="no-such-run-at-all") == []
        assert store.read_flow_runs(flow_name="no-such-flow") == []

    def test_parameters_json_cannot_hold_still_leave_the_run_recorded(self, store: RunStore) -> None:
        lock = threading.Lock()
        run = new_flow_run(store, "conformance-flow", "odd-values", started=time.time(), final=Completed(),
                           parameters={"lock": lock, "when": time.gmtime(0), "pair": (1, 2), 3: "int key"})
        store.flush()
        got = store.read_flow_run(run.id)
        assert got is not None and got.state.is_completed(), "a run with odd parameters was not recorded"
        assert "lock" in got.parameters and "pair" in got.parameters

    # -- listings -----------------------------------------------------------------------------

    def _some_flow_runs(self, store: RunStore) -> dict[str, FlowRun]:
        """Five flow runs, created (and started) one after the other, oldest first."""
        now = time.time()
        runs: dict[str, FlowRun] = {}
        plan = [("a1", "nightly", "extract", ("prod",), Completed(), None, now - 3 * 86400),
                ("b1", "hourly", "load", ("prod", "eu"), Failed(message="boom"), None, now - 3600),
                ("c1", "child", "report", (), Completed(), "b1", now - 600),
                ("d1", "nightly", "load", ("eu",), TimedOut(), None, now - 60),
                ("e1", "live", "load", (), None, None, now - 1)]
        for run_id, name, flow_name, tags, final, parent, started in plan:
            runs[run_id] = new_flow_run(store, f"conformance-{run_id}", name, flow_name, started=started, tags=tags,
                                        final=final, parent=runs[parent] if parent else None)
            time.sleep(0.002)  # created one after the other, whatever the clock's grain
        store.flush()
        return runs

    def test_flow_runs_are_listed_newest_first_and_filtered(self, store: RunStore) -> None:
        runs = self._some_flow_runs(store)

        def names(**filters: Any) -> list[str]:
            return [r.id.removeprefix("conformance-") for r in store.read_flow_runs(**filters)]

        assert names() == ["e1", "d1", "c1", "b1", "a1"]
        assert names(limit=2) == ["e1", "d1"] and names(limit=2, offset=2) == ["c1", "b1"]
        assert names(offset=10) == []
        assert names(flow_name="load") == ["e1", "d1", "b1"]
        assert names(state="failed") == ["d1", "b1"], "state= matches a state type, any case"
        assert names(state="TimedOut") == ["d1"] and names(state="timedout") == ["d1"], \
            "state= matches a state name, any case"
        assert names(state="running") == ["e1"]
        assert names(parent_flow_run_id=runs["b1"].id) == ["c1"]
        assert names(flow_name="load", state="FAILED", limit=1) == ["d1"]
        assert store.count_flow_runs() == 5
        assert store.count_flow_runs(flow_name="load", state="failed") == 2

    def test_a_flow_run_not_started_yet_is_listed_by_when_it_was_created(self, store: RunStore) -> None:
        started = new_flow_run(store, "conformance-started", "nightly", started=time.time() - 60, final=Completed())
        time.sleep(0.002)
        waiting = FlowRun("conformance-waiting", "etl", "nightly")
        store.create_flow_run(waiting)
        move(store, waiting, Pending())
        store.flush()
        assert [r.id for r in store.read_flow_runs()] == [waiting.id, started.id], \
            "newest first: a run created last comes first, started or not"
        assert store.read_flow_run("nightly").id == waiting.id
        assert [r.id for r in store.search_flow_runs().items] == [waiting.id, started.id]

    def test_a_flow_run_is_read_by_id_or_by_its_newest_name(self, store: RunStore) -> None:
        runs = self._some_flow_runs(store)
        assert store.read_flow_run(runs["a1"].id).name == "nightly"
        newest = store.read_flow_run("nightly")
        assert newest is not None and newest.id == runs["d1"].id, "by name: the newest run of that name"
        assert store.read_flow_run("never-ran") is None

    def test_flows_are_summarized_with_their_counts_and_what_they_say(self, store: RunStore) -> None:
        self._some_flow_runs(store)
        documented = FlowRun("conformance-documented", "documented", "with-info")
        documented.flow_info = FlowInfo("documented", "Pulls the data in", "2.0", ["etl"], time.time())
        store.create_flow_run(documented)
        move(store, documented, Running())
        move(store, documented, Completed())
        store.flush()
        summaries = {s.name: s for s in store.read_flows()}
        assert set(summaries) == {"extract", "load", "report", "documented"}
        assert summaries["load"].run_count == 3
        assert summaries["load"].state_counts == {"RUNNING": 1, "FAILED": 2}
        assert summaries["load"].last_run is not None and summaries["load"].last_run.name == "live"
        info = summaries["documented"]
        assert (info.description, info.version, list(info.tags), info.run_count) == (
            "Pulls the data in", "2.0", ["etl"], 1), "what a flow says about itself (FlowInfo) was not kept"

    def test_task_runs_are_read_in_creation_order(self, store: RunStore) -> None:
        now = time.time()
        first = new_flow_run(store, "conformance-f1", "first", started=now)
        second = new_flow_run(store, "conformance-f2", "second", started=now + 1)
        made = []
        for i in range(6):
            owner = first if i % 2 == 0 else second
            made.append(new_task_run(store, owner, f"conformance-t{i}", f"load-{i}", final=Completed()))
            time.sleep(0.002)
        store.flush()
        assert [t.id for t in store.read_task_runs(flow_run_id=first.id)] == [made[i].id for i in (0, 2, 4)]
        assert [t.id for t in store.read_task_runs(flow_run_id=second.id)] == [made[i].id for i in (1, 3, 5)]
        assert [t.id for t in store.read_task_runs()] == [t.id for t in made]
        assert [t.id for t in store.read_task_runs(limit=2)] == [made[0].id, made[1].id]
        states = store.read_task_run_states(first.id)
        assert set(states) == {made[i].id for i in (0, 2, 4)}
        assert all([s.name for s in history] == ["Pending", "Running", "Completed"] for history in states.values())

    # -- log lines ---------------------------------------------------------------------------

    def test_log_lines_are_read_oldest_first_with_routine_task_lines(self, store: RunStore) -> None:
        run, tasks = logged_flow_run(store)
        lines = store.read_logs(flow_run_id=run.id, limit=10**6)
        messages = [line["message"] for line in lines]
        assert None not in messages, "the marker row was returned as a line (read_logs must word it)"
        for i, task_run in enumerate(tasks):
            assert f"Created task run {task_run.name!r} for task {task_run.task_name!r}" in messages
        assert messages.count("Finished in state Completed()") == 3
        assert "Finished in state Failed('bad')" in messages
        assert [m for m in messages if "from" in m or "bye" in m or "level" in m] == [
            "DEBUG from 0", "INFO from 1", "WARNING from 2", "ERROR from 3", "a level of its own", "flow says bye"]
        assert [line["ts"] for line in lines] == sorted(line["ts"] for line in lines), "oldest first"
        assert all(line["flow_run_id"] == run.id for line in lines)
        only = store.read_logs(task_run_id=tasks[2].id, limit=10**6)
        assert [line["message"] for line in only] == ["WARNING from 2", "Finished in state Completed()"]
        assert len(store.read_logs(flow_run_id=run.id, limit=3)) == 3
        other = new_flow_run(store, "conformance-other", "other", started=time.time(), final=Completed())
        store.flush()
        assert store.read_logs(flow_run_id=other.id, task_run_id=tasks[2].id) == [], \
            "a task run of another flow run has no lines in this one"

    def test_log_pages_agree_with_the_default_built_on_read_logs(self, store: RunStore) -> None:
        run, tasks = logged_flow_run(store)
        every = store.read_logs(flow_run_id=run.id, limit=10**6)

        def key(line: dict[str, Any]) -> tuple[Any, ...]:
            return line["task_run_id"], line["level"], line["message"], round(line["ts"], 3)

        cases = [dict(), dict(level="warning"), dict(level="ERROR"), dict(level="info"), dict(task="load"),
                 dict(task="load-2"), dict(task=tasks[3].id), dict(task="save", level="error"), dict(task="none"),
                 dict(level="notice"), dict(offset=3, limit=4), dict(offset=50), dict(limit=None)]
        for case in cases:
            page = store.read_log_page(run.id, **case)
            default = RunReader.read_log_page(store, run.id, **case)
            assert page.total == default.total, f"read_log_page({case}): total {page.total}, expected {default.total}"
            assert [key(x) for x in page.items] == [key(x) for x in default.items], f"read_log_page({case})"
        assert store.read_log_page(run.id).total == len(every)
        assert [x["message"] for x in store.read_log_page(run.id, level="error").items] == [
            "ERROR from 3", "flow says bye"]
        assert [x["message"] for x in store.read_log_page(run.id, level="NOTICE").items] == ["a level of its own"]
        assert store.read_log_page(run.id, task="load").total == 3 + 3  # three lines, three Finished

    # -- paged reads ---------------------------------------------------------------------------

    def test_flow_run_search_agrees_with_the_default_for_every_filter(self, store: RunStore) -> None:
        runs = self._some_flow_runs(store)
        now = time.time()
        filters = [FlowRunFilter(), FlowRunFilter(flow_names=["extract", "report"]), FlowRunFilter(search="NIGHT"),
                   FlowRunFilter(search="load"), FlowRunFilter(search="%"), FlowRunFilter(search="_"),
                   FlowRunFilter(tags=["prod"]), FlowRunFilter(tags=["prod", "eu"]), FlowRunFilter(state="failed"),
                   FlowRunFilter(state="TimedOut"), FlowRunFilter(started_after=now - 7200),
                   FlowRunFilter(started_before=now - 86400),
                   FlowRunFilter(started_after=now - 7200, started_before=now - 120),
                   FlowRunFilter(parent_flow_run_id=runs["b1"].id), FlowRunFilter(top_level=True),
                   FlowRunFilter(flow_names=["load"], tags=["eu"], state="failed")]
        for where in filters:
            for offset, limit in ((0, None), (0, 2), (1, 2), (9, 5)):
                page = store.search_flow_runs(where, offset=offset, limit=limit)
                default = RunReader.search_flow_runs(store, where, offset=offset, limit=limit)
                assert page.total == default.total, f"search_flow_runs({where}): total {page.total}, " \
                                                    f"expected {default.total}"
                assert [r.id for r in page.items] == [r.id for r in default.items], \
                    f"search_flow_runs({where}, offset={offset}, limit={limit})"

        def found(**where: Any) -> list[str]:
            return [r.id.removeprefix("conformance-") for r in store.search_flow_runs(FlowRunFilter(**where)).items]

        assert found(search="NIGHT") == ["d1", "a1"] and found(search="%") == []
        assert found(tags=["prod", "eu"]) == ["b1"] and found(top_level=True) == ["e1", "d1", "b1", "a1"]
        assert found(started_after=now - 7200, started_before=now - 120) == ["c1", "b1"]

    def _big_flow_run(self, store: RunStore) -> FlowRun:
        run = new_flow_run(store, "conformance-big", "big", started=time.time())
        for i in range(30):
            final = Failed(message="boom") if i % 10 == 9 else Cached() if i % 7 == 0 else Completed()
            new_task_run(store, run, f"conformance-big-{i:02d}", f"load-{i}", final=final,
                         run_count=2 if i % 10 == 9 else 1)
        new_task_run(store, run, "conformance-big-live", "load-live")  # still running
        store.flush()
        return run

    def test_task_run_pages_and_counts_agree_with_the_default(self, store: RunStore) -> None:
        run = self._big_flow_run(store)
        cases = [dict(), dict(offset=20, limit=5), dict(offset=28), dict(limit=None), dict(state="failed"),
                 dict(state="COMPLETED"), dict(state="cached"), dict(state="running"), dict(retried=True),
                 dict(state="failed", retried=True, limit=1, offset=1), dict(offset=100)]
        for case in cases:
            page = store.read_task_run_page(run.id, **case)
            default = RunReader.read_task_run_page(store, run.id, **case)
            assert page.total == default.total, f"read_task_run_page({case}): total {page.total}, " \
                                                f"expected {default.total}"
            assert [t.id for t in page.items] == [t.id for t in default.items], f"read_task_run_page({case})"
        assert store.read_task_run_page(run.id, state="failed").total == 3
        assert [t.name for t in store.read_task_run_page(run.id, offset=29, limit=5).items] == ["load-29", "load-live"]
        counts = store.count_task_run_states(run.id)
        default_counts = RunReader.count_task_run_states(store, run.id)
        assert (counts.total, counts.by_type, counts.by_name) == (
            default_counts.total, default_counts.by_type, default_counts.by_name)
        assert counts.total == 31 and counts.by_type == {"COMPLETED": 27, "FAILED": 3, "RUNNING": 1}
        assert counts.by_name == {"Completed": 22, "Cached": 5, "Failed": 3, "Running": 1}
        assert store.count_task_run_states("no-such-run").total == 0

    def test_result_locations_are_every_one_a_run_refers_to(self, store: RunStore) -> None:
        run = new_flow_run(store, "conformance-flow", "flow-run", started=time.time())
        new_task_run(store, run, "conformance-t1", "load-1", final=Completed(), result_location="aa" * 32)
        new_task_run(store, run, "conformance-t2", "load-2", final=Completed())
        run.parameters_location, run.result_location = "bb" * 32, "cc" * 32
        move(store, run, Completed())
        store.flush()
        assert store.read_result_locations() == {"aa" * 32, "bb" * 32, "cc" * 32}
        assert RunReader.read_result_locations(store) == store.read_result_locations()

    # -- deleting and reopening ----------------------------------------------------------------

    def test_deleting_a_flow_run_takes_its_subflow_runs_at_any_depth(self, store: RunStore) -> None:
        self._requires_method(store, "delete_flow_runs")
        now = time.time()
        top = new_flow_run(store, "conformance-top", "top", started=now - 5, final=Completed())
        middle = new_flow_run(store, "conformance-middle", "middle", started=now - 4, parent=top, final=Completed())
        bottom = new_flow_run(store, "conformance-bottom", "bottom", started=now - 3, parent=middle,
                              final=Completed())
        other = new_flow_run(store, "conformance-other", "other", started=now - 2, final=Completed())
        for owner in (top, middle, bottom, other):
            new_task_run(store, owner, f"{owner.id}-t", "load-0", final=Completed())
            store.record_logs([(owner.id, f"{owner.id}-t", time.time(), "INFO", "user", f"line of {owner.name}")])
        store.write_cache_entry(CacheEntry("conformance-key", "load", f"{top.id}-t", "loc", "json", time.time()))
        store.flush()

        deleted = store.delete_flow_runs([top.id, "no-such-run"])
        assert sorted(deleted.flow_run_ids) == sorted([top.id, middle.id, bottom.id])
        assert deleted.task_runs == 3
        assert deleted.states == 3 * 3 + 3 * 3  # Pending, Running and Completed of each run
        assert deleted.logs == 3
        assert [r.id for r in store.read_flow_runs()] == [other.id]
        assert [t.id for t in store.read_task_runs()] == [f"{other.id}-t"]
        for gone in (top, middle, bottom):
            assert store.read_flow_run(gone.id) is None and store.read_states(gone.id) == []
            assert store.read_task_run(f"{gone.id}-t") is None and store.read_states(f"{gone.id}-t") == []
        assert {line["message"] for line in store.read_logs(limit=10**6)} == {"line of other"}
        assert [e.key for e in store.read_cache_entries()] == ["conformance-key"], "cache entries stay"
        assert store.delete_flow_runs(["no-such-run"]).flow_run_ids == []
        store.compact()
        assert [r.id for r in store.read_flow_runs()] == [other.id], "compact() lost a run"

    def test_a_deletion_is_seen_by_another_handle(self, store: RunStore) -> None:
        self._requires_method(store, "delete_flow_runs")
        run = new_flow_run(store, "conformance-flow", "doomed", started=time.time(), final=Completed())
        new_task_run(store, run, "conformance-task", "load-0", final=Completed())
        store.flush()
        other = self._second_handle(store)
        assert other.read_flow_run(run.id) is not None
        store.delete_flow_runs([run.id])
        assert other.read_flow_run(run.id) is None and other.read_task_run("conformance-task") is None

    def test_an_ended_flow_run_is_reopened_for_a_retry(self, store: RunStore) -> None:
        self._requires_method(store, "reopen_flow_run")
        for final in (Failed(message="boom"), Crashed(message="the process ended")):
            run = new_flow_run(store, f"conformance-{final.name}", f"was-{final.name}", started=time.time(),
                               final=final)
            store.flush()
            run = store.read_flow_run(run.id)
            run.run_count = 2
            run.entry_point = json.dumps({"module": "retried", "qualname": "again"})
            reopened = at(Running(message="retried"), time.time())
            run.state = reopened
            store.reopen_flow_run(run, reopened)
            got = store.read_flow_run(run.id)
            assert got.state.type is StateType.RUNNING, f"a {final.name} run reopened reads {got.state}"
            assert got.end_ts is None and got.run_count == 2 and got.entry_point == run.entry_point
            assert [s.name for s in store.read_states(run.id)] == ["Pending", "Running", final.name, "Running"]
            move(store, run, Completed())
            store.flush()
            assert store.read_flow_run(run.id).state.is_completed()

    # -- the cache index -----------------------------------------------------------------------

    def test_a_cache_entry_comes_back_with_every_field(self, store: RunStore) -> None:
        now = time.time()
        entry = CacheEntry("conformance-key", "load", "task-run-1", "ab" * 32, "json", now, now + 60, 1234,
                           "sha256:" + "0" * 64)
        store.write_cache_entry(entry)
        got = store.read_cache_entry("conformance-key")
        assert got is not None, "a cache entry was not found right after write_cache_entry"
        assert (got.key, got.task_name, got.task_run_id, got.location, got.serializer, got.size, got.digest) == (
            "conformance-key", "load", "task-run-1", "ab" * 32, "json", 1234, "sha256:" + "0" * 64)
        assert got.created == pytest.approx(now, abs=1e-3) and got.expiration == pytest.approx(now + 60, abs=1e-3)
        assert not got.is_expired()
        store.write_cache_entry(CacheEntry("no-expiry", "load", None, "cd" * 32, "cloudpickle", now))
        bare = store.read_cache_entry("no-expiry")
        assert bare is not None and bare.expiration is None and bare.task_run_id is None
        assert bare.size is None and bare.digest is None
        assert store.read_cache_entry("never-written") is None

    def test_a_cache_entry_is_replaced_listed_and_deleted(self, store: RunStore) -> None:
        now = time.time()
        for key, task_name, created, expiration in (("k2", "load", now - 20, None), ("k1", "load", now - 30, now - 1),
                                                    ("k3", "save", now - 10, now - 5), ("k4", "save", now, None)):
            store.write_cache_entry(CacheEntry(key, task_name, None, f"loc-{key}", "json", created, expiration))
        assert [e.key for e in store.read_cache_entries()] == ["k1", "k2", "k3", "k4"], "oldest first"
        store.write_cache_entry(CacheEntry("k2", "load", "run-2", "loc-k2-new", "json", now + 1))
        assert store.read_cache_entry("k2").location == "loc-k2-new", "a second write replaces the entry"
        assert [e.key for e in store.read_cache_entries()] == ["k1", "k3", "k4", "k2"]
        expired = store.delete_cache_entries(expired_only=True)
        assert sorted(e.key for e in expired) == ["k1", "k3"]
        assert store.read_cache_entry("k1") is None and store.read_cache_entry("k2") is not None
        saved = store.delete_cache_entries(task_name="save")
        assert [e.key for e in saved] == ["k4"]
        assert [e.key for e in store.read_cache_entries()] == ["k2"]
        assert [e.key for e in store.delete_cache_entries()] == ["k2"] and store.read_cache_entries() == []

    def test_a_cache_entry_is_seen_by_another_handle_at_once(self, store: RunStore) -> None:
        other = self._second_handle(store)
        store.write_cache_entry(CacheEntry("shared", "load", None, "first", "json", time.time()))
        # No flush: the cache index is not buffered.
        got = other.read_cache_entry("shared")
        assert got is not None and got.location == "first", "another handle did not see a cache entry at once"
        other.write_cache_entry(CacheEntry("shared", "load", None, "second", "json", time.time()))
        assert store.read_cache_entry("shared").location == "second"
        store.delete_cache_entries(task_name="load")
        assert other.read_cache_entry("shared") is None

    # -- text ----------------------------------------------------------------------------------

    def test_any_text_is_stored_and_read_back(self, store: RunStore) -> None:
        now = time.time()
        written = {}
        for i, (label, text) in enumerate(AWKWARD_TEXTS.items()):
            run = FlowRun(f"conformance-text-{i}", text, text, {text: text, "plain": [text]}, frozenset({text}))
            store.create_flow_run(run)
            move(store, run, at(Running(message=text), now + i))
            store.record_logs([(run.id, None, now + i, "INFO", text, text)])
            task_run = TaskRun(f"conformance-text-task-{i}", text, text, text, {"x": text}, frozenset(), run.id)
            task_run.cache_key = text
            task_run.result_location = text
            store.create_task_run(task_run)
            move(store, task_run, Pending())
            move(store, task_run, Failed(message=text))
            move(store, run, at(Completed(message=text), now + i + 0.5))
            store.write_cache_entry(CacheEntry(text, text, task_run.id, text, "json", now + i))
            written[label] = (text, run, task_run)
        fine = new_flow_run(store, "conformance-plain", "plain", started=now + 50, final=Completed())
        store.flush()

        assert store.read_flow_run(fine.id) is not None, "a run with plain text was lost with the others"
        for label, (text, run, task_run) in written.items():
            got = store.read_flow_run(run.id)
            assert got is not None, f"the flow run named with {label} text was not stored"
            self._assert_text_read_back(got.name, text, f"{label}: flow run name")
            self._assert_text_read_back(got.flow_name, text, f"{label}: flow name")
            self._assert_text_read_back(next(iter(got.tags)), text, f"{label}: tag")
            self._assert_text_read_back(got.state.message, text, f"{label}: state message")
            assert len(got.parameters) == 2, f"{label}: parameters {got.parameters!r}"
            key = next(k for k in got.parameters if k != "plain")
            self._assert_text_read_back(key, text, f"{label}: parameter name")
            self._assert_text_read_back(got.parameters[key], text, f"{label}: parameter value")
            self._assert_text_read_back(got.parameters["plain"][0], text, f"{label}: parameter in a list")
            self._assert_text_read_back(store.read_states(run.id)[-1].message, text, f"{label}: message in the history")
            line = next(x for x in store.read_logs(flow_run_id=run.id, limit=10**6) if x["level"] == "INFO"
                        and x["task_run_id"] is None and x["message"] not in (None,) and "task run" not in x["message"])
            self._assert_text_read_back(line["message"], text, f"{label}: log message")
            self._assert_text_read_back(line["logger"], text, f"{label}: logger")
            got_task = store.read_task_run(task_run.id)
            assert got_task is not None, f"the task run named with {label} text was not stored"
            for field in ("name", "task_name", "task_key", "cache_key", "result_location"):
                self._assert_text_read_back(getattr(got_task, field), text, f"{label}: task run {field}")
            self._assert_text_read_back(got_task.parameters["x"], text, f"{label}: task run parameter")
            self._assert_text_read_back(got_task.state.message, text, f"{label}: task run state message")
            entry = store.read_cache_entry(text)
            assert entry is not None, f"{label}: a cache entry with this key is not found by it"
            for field in ("key", "task_name", "location"):
                self._assert_text_read_back(getattr(entry, field), text, f"{label}: cache entry {field}")

    def test_any_text_finds_what_it_names(self, store: RunStore) -> None:
        now = time.time()
        for i, (label, text) in enumerate(AWKWARD_TEXTS.items()):
            run = new_flow_run(store, f"conformance-text-{i}", text, text, started=now + i, final=Completed())
            store.flush()
            by_name = store.read_flow_run(text)
            assert by_name is not None and by_name.id == run.id, f"read_flow_run(name) with {label} text"
            assert [r.id for r in store.read_flow_runs(flow_name=text)] == [run.id], \
                f"read_flow_runs(flow_name=...) with {label} text"
            assert [r.id for r in store.search_flow_runs(FlowRunFilter(flow_names=[text])).items] == [run.id], \
                f"search_flow_runs(flow_names=[...]) with {label} text"
            assert run.id in [r.id for r in store.search_flow_runs(FlowRunFilter(search=text)).items], \
                f"search_flow_runs(search=...) with {label} text"
            task_run = new_task_run(store, run, f"conformance-text-task-{i}", text, text, final=Completed())
            store.record_logs([(run.id, task_run.id, now + i, "INFO", "user", "a line")])
            store.flush()
            assert store.read_log_page(run.id, task=text).total == 1, f"read_log_page(task=...) with {label} text"
            store.write_cache_entry(CacheEntry(f"key {text}", text, None, "loc", "json", now))
            assert [e.key for e in store.delete_cache_entries(task_name=text)] != [], \
                f"delete_cache_entries(task_name=...) with {label} text"
