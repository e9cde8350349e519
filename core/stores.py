"""The run store interface in three parts, its values, and the in-memory store.

A run store records flow runs, task runs, every state, and the cache index. Its
interface has three parts that a store implements separately:

* :class:`RunWriter`: what the engine records (``create_*``, ``record_state``, which may
  buffer: ``flush`` makes everything written so far durable);
* :class:`CacheIndex`: which stored result answers which cache key;
* :class:`RunReader`: the read API of ``get_store()``, the CLI and the dashboard.

:class:`RunStore` is the three together; :class:`MemoryRunStore` is the in-memory one,
used by tests and ``memory://`` URLs. The values: :class:`CacheEntry`,
:class:`FlowInfo`, :class:`FlowSummary`; for paged reads of big and many runs,
:class:`Page`, :class:`StateCounts`, :class:`FlowRunFilter`, and what a deletion
removed, :class:`DeletedRuns`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Generic, Iterable, Sequence, TypeVar

from .errors import StoreError
from .runs import FlowRun, TaskRun
from .states import State
from .task_lines import is_marker, merge_lines, task_lines


@dataclass
class CacheEntry:
    """One entry of the cache index: where the result of a cache key is stored."""

    key: str
    task_name: str
    task_run_id: str | None
    location: str
    serializer: str
    created: float
    expiration: float | None = None  # epoch seconds, None = never
    size: int | None = None
    #: Digest of the result's bytes (``"sha256:<hex>"``) from the result store's write; a
    #: read checks it. None: not checked (a store that gives none, or an older entry).
    digest: str | None = None

    def is_expired(self, now: float | None = None) -> bool:
        """Whether the entry's expiration has passed (at ``now``, default: the time now)."""
        return self.expiration is not None and (now or time.time()) >= self.expiration


@dataclass
class FlowInfo:
    """What a flow says about itself, recorded when one of its runs is created."""

    name: str
    description: str | None
    version: str | None
    tags: list[str]
    updated: float
    kind = "flow_info"  # lets a store's write queue tell it from runs


@dataclass
class FlowSummary:
    """One flow as the run store knows it: its info plus counts over its runs."""

    name: str
    description: str | None = None
    version: str | None = None
    tags: list[str] = field(default_factory=list)
    run_count: int = 0
    state_counts: dict[str, int] = field(default_factory=dict)  # state type -> runs
    last_run: FlowRun | None = None


T = TypeVar("T")

#: Log levels from the lowest, as ``read_log_page(level=...)`` compares them.
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass
class Page(Generic[T]):
    """One page of a longer listing: ``items`` from position ``offset`` (0-based) on, at
    most ``limit`` of them (None: no limit), out of ``total`` that match."""

    items: list[T]
    total: int
    offset: int
    limit: int | None


@dataclass
class StateCounts:
    """How many runs are in each state, by state type (``COMPLETED``) and by state name
    (``Cached``); a run in no state yet counts under ``NONE`` in both."""

    total: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    by_name: dict[str, int] = field(default_factory=dict)

    def add(self, state_type: str | None, state_name: str | None, count: int = 1) -> None:
        """Count ``count`` more runs in this state."""
        kind, name = state_type or "NONE", state_name or "NONE"
        self.total += count
        self.by_type[kind] = self.by_type.get(kind, 0) + count
        self.by_name[name] = self.by_name.get(name, 0) + count


def state_matches(state: State | None, text: str) -> bool:
    """Whether ``state`` has the type or the name ``text`` (any case): the rule of every
    ``state=`` filter of the read API."""
    return state is not None and text.upper() in (state.type.value, state.name.upper())


def level_at_least(level: str | None, lowest: str) -> bool:
    """Whether a log line's ``level`` is ``lowest`` or above (:data:`LOG_LEVELS`); a level
    outside that list (a custom one) only matches itself."""
    level, lowest = (level or "").upper(), lowest.upper()
    if level in LOG_LEVELS and lowest in LOG_LEVELS:
        return LOG_LEVELS.index(level) >= LOG_LEVELS.index(lowest)
    return level == lowest


@dataclass
class FlowRunFilter:
    """Which flow runs ``search_flow_runs`` lists; every field given must match.

    ``flow_names``: runs of any of these flows. ``search``: text in the run's or its
    flow's name (any case). ``tags``: runs with every one of these tags. ``state``: a
    state type or name (any case). ``started_after`` / ``started_before``: epoch seconds
    the run started at or after / before (a run not started yet: when it was created).
    ``parent_flow_run_id``: subflow runs of that run; ``top_level``: only runs that are
    not subflow runs.
    """

    flow_names: Sequence[str] = ()
    search: str | None = None
    tags: Sequence[str] = ()
    state: str | None = None
    started_after: float | None = None
    started_before: float | None = None
    parent_flow_run_id: str | None = None
    top_level: bool = False

    def matches(self, run: FlowRun) -> bool:
        """Whether ``run`` passes the filter (what a store without its own
        ``search_flow_runs`` checks each run with)."""
        started = run.start_ts if run.start_ts is not None else (run.state.ts if run.state else None)
        text = (self.search or "").lower()
        return ((not self.flow_names or run.flow_name in self.flow_names)
                and (not text or text in run.name.lower() or text in run.flow_name.lower())
                and all(tag in run.tags for tag in self.tags)
                and (self.state is None or state_matches(run.state, self.state))
                and (self.started_after is None or (started is not None and started >= self.started_after))
                and (self.started_before is None or (started is not None and started < self.started_before))
                and (self.parent_flow_run_id is None or run.parent_flow_run_id == self.parent_flow_run_id)
                and (not self.top_level or run.parent_flow_run_id is None))


@dataclass
class DeletedRuns:
    """What ``delete_flow_runs`` removed: the flow runs' ids (subflow runs included) and
    how many task runs, states and log lines went with them."""

    flow_run_ids: list[str] = field(default_factory=list)
    task_runs: int = 0
    states: int = 0
    logs: int = 0


def active_flow_info(run: FlowRun) -> FlowInfo | None:
    """The info of the flow whose run ``run`` is being created, if the engine gave it
    (``run.flow_info``): a store records it with the run."""
    return getattr(run, "flow_info", None)


class RunWriter:
    """The writer part of a run store: what the engine records while flows run.

    ``create_flow_run``, ``create_task_run`` and ``record_state`` are required; the
    others have defaults (log lines are dropped, nothing is buffered). A store may buffer
    writes: ``flush`` makes everything written so far durable, and the engine calls it
    before a flow call returns. A store with only this part runs and records flows; tasks
    with a ``cache_key_fn`` are refused (see :class:`CacheIndex`).
    """

    def create_flow_run(self, run: FlowRun) -> None:
        """Record a new flow run (its first state follows with ``record_state``)."""
        raise NotImplementedError

    def create_task_run(self, run: TaskRun) -> None:
        """Record a new task run. ``create_task_run`` may defer the row until the first
        state: the engine always records one (Pending) right after, with ``record_state``."""
        raise NotImplementedError

    def record_state(self, run: FlowRun | TaskRun, state: State) -> None:
        """Append ``state`` to the run's history and make it the run's current state."""
        raise NotImplementedError

    def record_logs(self, rows: Iterable[tuple[str | None, str | None, float, str, str, str]]) -> None:
        """Store log lines: ``(flow_run_id, task_run_id, ts, level, logger, message)``."""

    def reopen_flow_run(self, run: FlowRun, state: State) -> None:
        """Make an ended flow run unfinished again for a new attempt (``headwater runs
        retry``): append ``state`` to its history, make it the current state, clear its
        end time, set its ``run_count`` and ``entry_point`` from ``run``, and treat the run
        as this process's from now on (so it is not shown Crashed for its earlier
        attempt's process being gone), also when it was Crashed. Durable when it returns.
        A store without it cannot retry runs."""
        raise StoreError(f"the run store {type(self).__qualname__} cannot retry flow runs (it has no "
                         f"reopen_flow_run; docs/plugins.md, 'Writing a run store')")

    def delete_flow_runs(self, flow_run_ids: Sequence[str]) -> DeletedRuns:
        """Delete these flow runs with their subflow runs (at any depth), their task runs,
        every state of them all, and their log lines, all or nothing; return what went.
        Ids that match no run are left out of the answer. Cache entries (and any result
        file) stay. A store without it cannot delete runs (``headwater runs delete`` and
        ``prune`` say so)."""
        raise StoreError(f"the run store {type(self).__qualname__} cannot delete flow runs (it has no "
                         f"delete_flow_runs; docs/plugins.md, 'Writing a run store')")

    def compact(self) -> None:
        """Give back the room deleted runs took (a file store shrinks its files); called
        after a deletion. Does nothing by default."""

    def flush(self) -> None:
        """Make every write so far durable."""

    def close(self) -> None:
        """Flush, then release what the store holds (files, threads); called once."""
        self.flush()


class CacheIndex:
    """The cache index part of a run store: which result answers which cache key.

    Needed by tasks with a ``cache_key_fn`` (the ``caching`` plugin) and by ``headwater
    cache``. Without it, calling such a task raises ``ConfigurationError`` naming the
    store, and ``headwater cache`` exits with a one-line error. Unlike the writer part,
    the index is not buffered: an entry is durable, and visible to other processes,
    when ``write_cache_entry`` returns.
    """

    def read_cache_entry(self, key: str) -> CacheEntry | None:
        """The entry for ``key`` (expired or not), or None. Must see entries other
        processes wrote: the index is not buffered."""
        raise NotImplementedError

    def write_cache_entry(self, entry: CacheEntry) -> None:
        """Insert or replace the entry for ``entry.key``, durably, before returning."""
        raise NotImplementedError

    def read_cache_entries(self) -> list[CacheEntry]:
        """Every entry, oldest first (for ``headwater cache ls``)."""
        raise NotImplementedError

    def delete_cache_entries(self, *, expired_only: bool = False, task_name: str | None = None) -> list[CacheEntry]:
        """Delete the matching entries and return them (their result files are the
        caller's to delete)."""
        raise NotImplementedError


class RunReader:
    """The reader part of a run store: the read API of ``get_store()``, the CLI and the
    dashboard.

    ``read_flow_runs``, ``read_flow_run``, ``read_task_runs``, ``read_task_run`` and
    ``read_states`` are required; the others have defaults built on them (override them
    when the store can answer faster): among them the paged reads of big runs and long
    histories (``read_task_run_page``, ``count_task_run_states``, ``read_log_page``,
    ``search_flow_runs``) and ``read_result_locations``. Without this part, ``headwater
    runs`` and ``headwater ui`` exit with a one-line error naming the store.
    """

    def read_flow_runs(self, limit: int = 50, offset: int = 0, flow_name: str | None = None,
                       state: str | None = None, parent_flow_run_id: str | None = None) -> list[FlowRun]:
        """Flow runs, newest first. ``state`` matches a state type or name."""
        raise NotImplementedError

    def read_flow_run(self, id_or_name: str) -> FlowRun | None:
        """The flow run with this id, else the newest one with this name, else None."""
        raise NotImplementedError

    def read_task_runs(self, flow_run_id: str | None = None, limit: int | None = None) -> list[TaskRun]:
        """Task runs of one flow run (or all), in creation order."""
        raise NotImplementedError

    def read_task_run(self, task_run_id: str) -> TaskRun | None:
        """The task run with this id, or None."""
        raise NotImplementedError

    def read_states(self, run_id: str) -> list[State]:
        """The full state history of a flow run or task run, oldest first."""
        raise NotImplementedError

    def read_logs(self, flow_run_id: str | None = None, task_run_id: str | None = None,
                  limit: int = 1000) -> list[dict[str, Any]]:
        """Recorded log lines, oldest first: the first ``limit`` only (pass a large number
        for every line; ``read_log_page`` reads one page of a flow run's lines)."""
        return []

    def count_flow_runs(self, flow_name: str | None = None, state: str | None = None) -> int:
        """How many flow runs ``read_flow_runs`` would list without a limit."""
        return len(self.read_flow_runs(limit=2**62, flow_name=flow_name, state=state))

    def read_flows(self) -> list[FlowSummary]:
        """Every flow with runs (or recorded info), the flow run most recently first."""
        return _flow_summaries(self.read_flow_runs(limit=2**62))

    def read_task_run_states(self, flow_run_id: str) -> dict[str, list[State]]:
        """The state history of every task run of one flow run, by task run id."""
        return {t.id: self.read_states(t.id) for t in self.read_task_runs(flow_run_id=flow_run_id)}

    def search_flow_runs(self, where: FlowRunFilter | None = None, offset: int = 0,
                         limit: int | None = 50) -> Page[FlowRun]:
        """The flow runs ``where`` lets through, newest first: one page, and how many
        match in all."""
        where = where or FlowRunFilter()
        runs = [r for r in self.read_flow_runs(limit=2**62, parent_flow_run_id=where.parent_flow_run_id)
                if where.matches(r)]
        return _page(runs, offset, limit)

    def read_task_run_page(self, flow_run_id: str, offset: int = 0, limit: int | None = 50,
                           state: str | None = None, retried: bool = False) -> Page[TaskRun]:
        """A page of one flow run's task runs in creation order, and how many match.
        ``state``: only runs in this state type or name (any case); ``retried``: only
        runs that ran more than once."""
        runs = [r for r in self.read_task_runs(flow_run_id=flow_run_id)
                if (state is None or state_matches(r.state, state)) and (not retried or r.run_count > 1)]
        return _page(runs, offset, limit)

    def count_task_run_states(self, flow_run_id: str) -> StateCounts:
        """How many task runs the flow run has, in each state."""
        counts = StateCounts()
        for run in self.read_task_runs(flow_run_id=flow_run_id):
            counts.add(run.state.type.value if run.state else None, run.state.name if run.state else None)
        return counts

    def read_log_page(self, flow_run_id: str, offset: int = 0, limit: int | None = 200,
                      level: str | None = None, task: str | None = None) -> Page[dict[str, Any]]:
        """A page of one flow run's log lines (those ``read_logs`` gives, in its order),
        and how many match. ``level``: only lines of this level or above
        (:data:`LOG_LEVELS`); ``task``: only lines filed under the task runs with this
        id or name, or of the task of this name."""
        lines = self.read_logs(flow_run_id=flow_run_id, limit=2**62)
        if task is not None:
            ids = {r.id for r in self.read_task_runs(flow_run_id=flow_run_id) if task in (r.id, r.name, r.task_name)}
            lines = [line for line in lines if line["task_run_id"] in ids]
        if level is not None:
            lines = [line for line in lines if level_at_least(line["level"], level)]
        return _page(lines, offset, limit)

    def read_result_locations(self) -> set[str]:
        """Every result location a recorded run refers to: task runs' results, flow runs'
        persisted parameters and results (a retry loads them). ``headwater cache prune``
        never deletes these."""
        out: set[str] = set()
        for flow_run in self.read_flow_runs(limit=2**62):
            out.update(x for x in (flow_run.parameters_location, flow_run.result_location) if x)
        out.update(t.result_location for t in self.read_task_runs() if t.result_location)
        return out


class RunStore(RunWriter, CacheIndex, RunReader):
    """A complete run store: writer, cache index and reader. Subclass it (or only the
    parts a store provides) and register a factory by URL scheme
    (``registry.add_run_store``); docs/plugins.md, "Writing a run store"."""


#: The methods a store must have to provide each part (the others have defaults).
REQUIRED_METHODS: dict[type, tuple[str, ...]] = {
    RunWriter: ("create_flow_run", "create_task_run", "record_state"),
    CacheIndex: ("read_cache_entry", "write_cache_entry", "read_cache_entries", "delete_cache_entries"),
    RunReader: ("read_flow_runs", "read_flow_run", "read_task_runs", "read_task_run", "read_states"),
}

_PART_NAMES = {RunWriter: "writer", CacheIndex: "cache index", RunReader: "reader"}


def has_part(store: object, part: type) -> bool:
    """Whether ``store`` provides ``part`` (:class:`RunWriter`, :class:`CacheIndex` or
    :class:`RunReader`): it subclasses it, or has every required method of it."""
    if isinstance(store, part):
        return True
    return all(callable(getattr(store, name, None)) for name in REQUIRED_METHODS[part])


def require_part(store: Any, part: type, needed_for: str) -> Any:
    """``store`` itself if it provides ``part``; else a :class:`StoreError` naming the
    store, the missing part and what needed it (the CLI prints it as one line)."""
    if has_part(store, part):
        return store
    missing = [name for name in REQUIRED_METHODS[part] if not callable(getattr(store, name, None))]
    raise StoreError(
        f"{needed_for} needs a run store with a {_PART_NAMES[part]} part "
        f"(headwater.stores.{part.__name__}), but the run store {type(store).__qualname__} "
        f"has none (no {', '.join(missing)}); set HEADWATER_DATABASE_URL to a store that has one")


def _page(items: list[T], offset: int, limit: int | None) -> Page[T]:
    """The page of ``items`` from ``offset`` on (the defaults of the paged reads)."""
    offset = max(0, int(offset))
    end = None if limit is None else offset + max(0, int(limit))
    return Page(items[offset:end], len(items), offset, limit)


def _flow_summaries(runs: Iterable[FlowRun], infos: Iterable[FlowInfo] = ()) -> list[FlowSummary]:
    """Flow summaries for a store that computes none itself: the rules live with the
    store plugins (``headwater.plugins.sqlite_reads.summarize_flows``)."""
    # Only a store without its own ``read_flows`` (the in-memory one) gets here.
    # layering: the summary rules are the store plugins'; core loads no plugin when imported
    from headwater.plugins.sqlite_reads import summarize_flows

    return summarize_flows(runs, infos)


class MemoryRunStore(RunStore):
    """The in-memory double of every part: keeps everything in dictionaries, for tests,
    ``memory://`` URLs, and as the model a third-party store can follow."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.flow_runs: dict[str, FlowRun] = {}
        self.task_runs: dict[str, TaskRun] = {}
        self.states: dict[str, list[State]] = {}
        self.cache: dict[str, CacheEntry] = {}
        self.logs: list[dict[str, Any]] = []
        self.flows: dict[str, FlowInfo] = {}

    # Writers take the lock, and readers copy what they iterate under it: the dashboard
    # reads while worker threads record, and a dict must not change while it is iterated.

    def _values(self, table: dict[str, T]) -> list[T]:
        with self._lock:
            return list(table.values())

    def create_flow_run(self, run: FlowRun) -> None:
        info = active_flow_info(run)
        with self._lock:
            self.flow_runs[run.id] = run
            if info is not None:
                self.flows[info.name] = info

    def create_task_run(self, run: TaskRun) -> None:
        with self._lock:
            self.task_runs[run.id] = run

    def record_state(self, run: FlowRun | TaskRun, state: State) -> None:
        with self._lock:
            self.states.setdefault(run.id, []).append(state)

    def reopen_flow_run(self, run: FlowRun, state: State) -> None:
        with self._lock:
            self.states.setdefault(run.id, []).append(state)
            run.state = state
            run.end_ts = None
            self.flow_runs[run.id] = run

    def record_logs(self, rows: Iterable[tuple[Any, ...]]) -> None:
        keys = ("flow_run_id", "task_run_id", "ts", "level", "logger", "message")
        with self._lock:
            self.logs.extend(dict(zip(keys, row)) for row in rows)

    def delete_flow_runs(self, flow_run_ids: Sequence[str]) -> DeletedRuns:
        with self._lock:
            doomed = [i for i in dict.fromkeys(flow_run_ids) if i in self.flow_runs]
            for run_id in doomed:  # grows as subflow runs are found
                doomed.extend(r.id for r in self.flow_runs.values()
                              if r.parent_flow_run_id == run_id and r.id not in doomed)
            gone = set(doomed)
            tasks = [t for t in self.task_runs if self.task_runs[t].flow_run_id in gone]
            out = DeletedRuns(doomed, len(tasks))
            for run_id in doomed + tasks:
                out.states += len(self.states.pop(run_id, []))
                self.flow_runs.pop(run_id, None)
                self.task_runs.pop(run_id, None)
            gone.update(tasks)
            kept = [r for r in self.logs if r["flow_run_id"] not in gone and r["task_run_id"] not in gone]
            out.logs = len(self.logs) - len(kept)
            self.logs = kept
        return out

    def read_cache_entry(self, key: str) -> CacheEntry | None:
        return self.cache.get(key)

    def write_cache_entry(self, entry: CacheEntry) -> None:
        with self._lock:
            self.cache[entry.key] = entry

    def read_cache_entries(self) -> list[CacheEntry]:
        with self._lock:  # worker threads may write entries meanwhile
            entries = list(self.cache.values())
        return sorted(entries, key=lambda e: e.created)

    def delete_cache_entries(self, *, expired_only: bool = False, task_name: str | None = None) -> list[CacheEntry]:
        with self._lock:
            gone = [e for e in self.cache.values()
                    if (not expired_only or e.is_expired()) and (task_name is None or e.task_name == task_name)]
            for entry in gone:
                del self.cache[entry.key]
        return gone

    def read_flow_runs(self, limit: int = 50, offset: int = 0, flow_name: str | None = None,
                       state: str | None = None, parent_flow_run_id: str | None = None) -> list[FlowRun]:
        # Newest first is last created first (the dict keeps creation order), started or
        # not: as the SQLite store lists them.
        runs = [r for r in reversed(self._values(self.flow_runs))
                if (flow_name is None or r.flow_name == flow_name)
                and (parent_flow_run_id is None or r.parent_flow_run_id == parent_flow_run_id)
                and (state is None or state_matches(r.state, state))]
        return runs[offset: offset + limit]

    def read_flow_run(self, id_or_name: str) -> FlowRun | None:
        run = self.flow_runs.get(id_or_name)
        if run is None:
            run = next((r for r in reversed(self._values(self.flow_runs)) if r.name == id_or_name), None)
        return run

    def read_task_runs(self, flow_run_id: str | None = None, limit: int | None = None) -> list[TaskRun]:
        runs = [r for r in self._values(self.task_runs) if flow_run_id is None or r.flow_run_id == flow_run_id]
        return runs[:limit] if limit else runs

    def read_task_run(self, task_run_id: str) -> TaskRun | None:
        return self.task_runs.get(task_run_id)

    def read_states(self, run_id: str) -> list[State]:
        return list(self.states.get(run_id, []))

    def read_logs(self, flow_run_id: str | None = None, task_run_id: str | None = None,
                  limit: int = 1000) -> list[dict[str, Any]]:
        with self._lock:
            rows = [r for r in self.logs
                    if (flow_run_id is None or r["flow_run_id"] == flow_run_id)
                    and (task_run_id is None or r["task_run_id"] == task_run_id)]
            if task_run_id is not None:
                run = self.task_runs.get(task_run_id)
                scope = {run.flow_run_id} if run is not None and run.flow_run_id else set()
                if flow_run_id is not None:
                    scope &= {flow_run_id}  # a task run of another flow run: nothing
            else:
                scope = {flow_run_id} if flow_run_id is not None else {r["flow_run_id"] for r in self.logs}
            marked = {r["flow_run_id"] for r in self.logs if r["flow_run_id"] in scope and is_marker(r)}
            facts = {flow: [(t.id, t.name, t.task_name, self._created(t), t.state, t.end_ts)
                            for t in self.task_runs.values() if t.flow_run_id == flow] for flow in marked}
        derived = [line for flow in sorted(marked) for line in task_lines(flow, facts[flow], task_run_id)]
        return merge_lines(rows, derived, limit)

    def _created(self, run: TaskRun) -> float:
        history = self.states.get(run.id)
        return history[0].ts if history else (run.start_ts or 0.0)

    def read_flows(self) -> list[FlowSummary]:
        return _flow_summaries(self.read_flow_runs(limit=2**62), self._values(self.flows))
