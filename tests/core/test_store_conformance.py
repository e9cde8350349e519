"""The built-in run stores pass the run-store conformance suite that ``headwater.testing``
offers third-party stores (core/testing_stores.py): the in-memory store (one handle, no
URL a child process could open) and the SQLite store (a second handle on its file, and
``sqlite:////path`` for child processes)."""

from __future__ import annotations

import pytest

from headwater.plugins.sqlite_store import SQLiteRunStore
from headwater.runs import FlowRun
from headwater.states import Completed
from headwater.stores import FlowRunFilter, MemoryRunStore
from headwater.testing import RunStoreConformance


class TestMemoryRunStore(RunStoreConformance):
    """The in-memory store: its tests of child processes skip (they cannot share it)."""

    def make_store(self, tmp_path):
        return MemoryRunStore()

    def open_again(self, store, tmp_path):
        return store  # its records live in this one object


class TestSQLiteRunStore(RunStoreConformance):
    """The SQLite store: every test runs, child processes included."""

    def make_store(self, tmp_path):
        return SQLiteRunStore(tmp_path / "conformance" / "headwater.db")

    def open_again(self, store, tmp_path):
        return SQLiteRunStore(store.path)

    def store_url(self, store):
        return f"sqlite:///{store.path}"  # the path is absolute: four slashes in all


def test_a_store_that_loses_task_runs_fails_the_suite(tmp_path):
    """The suite can fail: a store that forgets every task run fails its round trip."""

    class Forgetful(MemoryRunStore):
        def create_task_run(self, run):
            pass

    class Check(RunStoreConformance):
        def make_store(self, tmp_path):
            return Forgetful()

    suite = Check()
    with pytest.raises(AssertionError):
        suite.test_a_task_run_comes_back_with_every_field(suite.make_store(tmp_path))


def test_a_store_that_reads_one_state_late_fails_the_suite(tmp_path):
    """A store whose reader shows a flow run's previous state fails its round trip."""

    class Stale(MemoryRunStore):
        def read_flow_run(self, id_or_name):
            run = super().read_flow_run(id_or_name)
            if run is not None and len(self.states.get(run.id, [])) > 1:
                stale = FlowRun(run.id, run.flow_name, run.name)
                stale.state = self.states[run.id][-2]
                return stale
            return run

    class Check(RunStoreConformance):
        def make_store(self, tmp_path):
            return Stale()

    suite = Check()
    store = suite.make_store(tmp_path)
    with pytest.raises(AssertionError):
        suite.test_a_flow_run_comes_back_with_every_field(store)


def test_the_sqlite_store_finds_names_with_lone_surrogates_as_it_stored_them(tmp_path):
    """A flow name from a file name that is not UTF-8 (``headwater runs show`` given one)
    finds its run: looked up with its surrogates escaped, as it was written, not an error."""
    store = SQLiteRunStore(tmp_path / "headwater.db")
    run = FlowRun("f1", "report-\udcff", "run-\udcff")
    run.state = Completed()
    store.create_flow_run(run)
    store.record_state(run, run.state)
    store.flush()
    assert store.read_flow_run("run-\udcff").id == "f1"
    assert [r.id for r in store.read_flow_runs(flow_name="report-\udcff")] == ["f1"]
    assert store.search_flow_runs(FlowRunFilter(flow_names=["report-\udcff"], search="\udcff")).total == 1
    store.close()
