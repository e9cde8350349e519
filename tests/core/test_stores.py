"""The run store interface in three parts (core/stores.py): a third-party store may
implement only the writer, the writer and the cache index, or all three, and what
lacks a part says so in one line."""

from __future__ import annotations

import os
import textwrap

import pytest

from headwater import Session, flow, hookimpl, task
from headwater.cli import main
from headwater.errors import ConfigurationError
from headwater.stores import (
    CacheEntry,
    CacheIndex,
    MemoryRunStore,
    RunReader,
    RunStore,
    RunWriter,
    has_part,
    require_part,
)
from headwater.tasks import task_input_hash


class ListWriter(RunWriter):
    """A store that only records: every call appended to a list, as a log shipper might."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    def create_flow_run(self, run):
        self.events.append(("flow", run.flow_name, "created"))

    def create_task_run(self, run):
        self.events.append(("task", run.task_name, "created"))

    def record_state(self, run, state):
        self.events.append((run.kind, run.id, state.name))


class IndexedWriter(ListWriter, CacheIndex):
    """The writer plus a cache index in a dict: caching works, nothing can be read back."""

    def __init__(self) -> None:
        super().__init__()
        self.entries: dict[str, CacheEntry] = {}

    def read_cache_entry(self, key):
        return self.entries.get(key)

    def write_cache_entry(self, entry):
        self.entries[entry.key] = entry

    def read_cache_entries(self):
        return sorted(self.entries.values(), key=lambda e: e.created)

    def delete_cache_entries(self, *, expired_only=False, task_name=None):
        gone = [e for e in self.entries.values() if task_name in (None, e.task_name)
                and (not expired_only or e.is_expired())]
        for entry in gone:
            del self.entries[entry.key]
        return gone


class StoreOf:
    """A plugin that makes ``store`` the session's run store."""

    def __init__(self, store) -> None:
        self.store = store

    @hookimpl
    def headwater_make_run_store(self, session):
        return self.store


calls = []


@task
def double(x):
    return 2 * x


@task(cache_key_fn=task_input_hash)
def cached_double(x):
    calls.append(x)
    return 2 * x


@flow
def doubles(n):
    return [double(i) for i in range(n)] + [f.result() for f in double.map(range(n))]


@flow
def cached_doubles():
    return [cached_double(1), cached_double(1)]


def test_a_store_with_only_the_writer_part_runs_and_records_flows():
    """Flows, called and submitted tasks run and every run's states are recorded."""
    store = ListWriter()
    with Session(plugins=[StoreOf(store)]):
        assert doubles(2) == [0, 2, 0, 2]
    created = [e for e in store.events if e[2] == "created"]
    assert created == [("flow", "doubles", "created")] + [("task", "double", "created")] * 4
    finals = [e for e in store.events if e[2] == "Completed"]
    assert [kind for kind, _, _ in finals].count("task") == 4
    assert finals[-1][0] == "flow"


def test_a_cached_task_on_a_store_without_a_cache_index_is_refused_in_one_line():
    """Running it uncached would break its cache_key_fn's promise: the call raises a
    ConfigurationError naming the task, the store and the missing part; the body never
    runs."""
    calls.clear()
    store = ListWriter()
    with Session(plugins=[StoreOf(store)]):
        state = cached_doubles(return_state=True)
    assert state.is_failed()
    with pytest.raises(ConfigurationError) as caught:
        state.result()
    message = str(caught.value)
    assert "\n" not in message
    assert "'cached_double'" in message and "ListWriter" in message
    assert "headwater.stores.CacheIndex" in message
    assert calls == []


def test_a_store_with_the_writer_and_cache_index_parts_answers_cache_hits():
    """The second call with the same input is Cached: the entry is in the store's index."""
    calls.clear()
    store = IndexedWriter()
    with Session(plugins=[StoreOf(store)]):
        assert cached_doubles() == [2, 2]
    assert calls == [1]
    assert [e.task_name for e in store.read_cache_entries()] == ["cached_double"]
    assert "Cached" in [name for _, _, name in store.events]


def test_parts_are_found_by_subclass_or_by_their_methods():
    """A store that subclasses no part still provides each part whose required methods
    it has; RunStore and MemoryRunStore provide all three."""

    class DuckReader:
        def read_flow_runs(self, limit=50, offset=0, flow_name=None, state=None, parent_flow_run_id=None):
            return []

        read_flow_run = read_task_run = lambda self, _: None
        read_task_runs = lambda self, flow_run_id=None, limit=None: []
        read_states = lambda self, run_id: []

    assert has_part(DuckReader(), RunReader)
    assert not has_part(DuckReader(), RunWriter) and not has_part(DuckReader(), CacheIndex)
    assert has_part(IndexedWriter(), CacheIndex) and not has_part(IndexedWriter(), RunReader)
    assert issubclass(RunStore, (RunWriter, CacheIndex, RunReader))
    assert all(has_part(MemoryRunStore(), part) for part in (RunWriter, CacheIndex, RunReader))


def test_require_part_names_the_store_the_part_and_what_needed_it():
    store = IndexedWriter()
    assert require_part(store, CacheIndex, "caching") is store
    with pytest.raises(Exception) as caught:
        require_part(store, RunReader, "`headwater runs`")
    assert str(caught.value) == (
        "`headwater runs` needs a run store with a reader part (headwater.stores.RunReader), "
        "but the run store IndexedWriter has none (no read_flow_runs, read_flow_run, "
        "read_task_runs, read_task_run, read_states); set HEADWATER_DATABASE_URL to a store "
        "that has one")


@pytest.fixture
def writer_only_url(tmp_path, monkeypatch):
    """``HEADWATER_DATABASE_URL=listwriter://`` served by an installed-style plugin module
    that registers a writer-only store by URL scheme."""
    (tmp_path / "listwriter_store.py").write_text(textwrap.dedent("""
        from headwater import hookimpl
        from headwater.stores import RunWriter


        class ListWriter(RunWriter):
            def create_flow_run(self, run): pass
            def create_task_run(self, run): pass
            def record_state(self, run, state): pass


        @hookimpl
        def headwater_register_components(registry):
            registry.add_run_store("listwriter", lambda url, session: ListWriter())
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("HEADWATER_PLUGINS", "listwriter_store")
    monkeypatch.setenv("HEADWATER_DATABASE_URL", "listwriter://")
    monkeypatch.setenv("HEADWATER_DISABLE_PLUGIN_AUTOLOAD", "1")
    return "listwriter://"


@pytest.mark.parametrize("argv, part", [
    (["runs"], "reader part (headwater.stores.RunReader)"),
    (["runs", "show", "some-run"], "reader part (headwater.stores.RunReader)"),
    (["cache", "ls"], "cache index part (headwater.stores.CacheIndex)"),
])
def test_the_cli_on_a_store_without_the_part_it_reads_is_a_one_line_error(writer_only_url, capsys, argv, part):
    """`headwater runs` and `headwater cache` name the command, the part and the store."""
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("headwater: error: `headwater ")
    assert part in err and "ListWriter" in err


def test_the_dashboard_on_a_store_without_the_reader_part_fails_before_serving(writer_only_url):
    pytest.importorskip("markdown_it")
    from headwater.errors import StoreError
    from headwater.plugins.dashboard.server import make_server

    with Session(env=dict(os.environ)) as session:
        with pytest.raises(StoreError, match=r"^`headwater ui` needs a run store with a reader part"):
            make_server(session, port=0)


def test_a_reader_gets_flow_summaries_and_counts_from_the_five_required_reads():
    """A store implementing only RunReader's required methods answers read_flows and
    count_flow_runs through the defaults (as the dashboard asks them)."""
    recorded = MemoryRunStore()
    with Session(plugins=[StoreOf(recorded)]):
        doubles(1)
        doubles(1)
        cached_doubles.with_options(name="other")(return_state=True)

    class ReadOnly(RunReader):
        """Reads another store's runs; implements nothing else."""

        def read_flow_runs(self, limit=50, offset=0, flow_name=None, state=None, parent_flow_run_id=None):
            return recorded.read_flow_runs(limit, offset, flow_name, state, parent_flow_run_id)

        def read_flow_run(self, id_or_name):
            return recorded.read_flow_run(id_or_name)

        def read_task_runs(self, flow_run_id=None, limit=None):
            return recorded.read_task_runs(flow_run_id, limit)

        def read_task_run(self, task_run_id):
            return recorded.read_task_run(task_run_id)

        def read_states(self, run_id):
            return recorded.read_states(run_id)

    reader = ReadOnly()
    summaries = {s.name: s for s in reader.read_flows()}
    assert summaries["doubles"].run_count == 2 and summaries["other"].run_count == 1
    assert reader.count_flow_runs() == 3 and reader.count_flow_runs(flow_name="doubles") == 2
    (run,) = reader.read_flow_runs(flow_name="other")
    assert reader.read_task_run_states(run.id) == {t.id: recorded.read_states(t.id)
                                                  for t in recorded.read_task_runs(run.id)}
