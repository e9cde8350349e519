"""Running a task run's attempts away from the flow process, and recording the outcome.

A runner that sends task runs to other processes or machines (the Dask and Ray runners
in ``contrib/``, both built on :class:`headwater.remote_runner.RemoteTaskRunner`) keeps the flow process the only writer of the run
store. It works in three steps, each a function here:

1. In the flow process, :func:`check_cache` answers a cache hit without leaving it, and
   :func:`detach` packs the run into a :class:`DetachedRun` (picklable; the task itself
   and its state policy travel beside it).
2. On the worker, :func:`run_detached` runs the engine's own attempt loop (retries,
   timeouts, the policy's answers) against a recording context: no session, no plugins,
   no run store. It returns an :class:`Outcome`: the state history, the result or
   exception, the result writes and cache entries it asked for, the captured logs, and
   the task runs the task started itself (tasks called inside it).
   :func:`make_sendable` pickles it, so an exception or result that cannot travel
   becomes a clear failure instead of a lost run.
3. Back in the flow process, :func:`record_outcome` replays the outcome into the real run
   store (through the usual ``headwater_state_changed`` observers), persists the result
   and writes the cache entry, re-emits the logs and runs the task's state callbacks.

Futures inside arguments are swapped for :class:`UpstreamRef` placeholders by
:func:`replace_futures` and filled in on the worker by :func:`fill_upstream`.

This module is the whole interface such a runner needs (``headwater.remote_runner``
uses nothing else of the engine): besides the steps above, the objects it receives
(:class:`Work`, :class:`Future`, :class:`TaskExecution` as ``work.execution``,
:class:`FlowRunContext` at ``start``) and the engine's ways to settle a run it holds:
:func:`finish_run` (a final state, unless the run has one), :func:`transition` (any
state), :func:`not_ready` (an upstream run did not complete) and
:func:`when_all_done` (call back once some futures are done). A run whose arguments hold
``allow_failure`` or ``quote`` (``work.tolerated is not None``) needs
:func:`resolve_arguments` once its upstream runs are done: the engine's own rules for
which failures stop it, and the arguments as its function receives them.
"""

from __future__ import annotations

import contextvars
import logging
import pickle
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from . import states
from .bindings import FlowBindings
from .engine.calls import not_ready, wait_upstream
from .engine.context import RUN_LOCKS, FlowRunContext, flow_run_ctx, task_run_ctx
from .engine.futures import Future, Work, collect_futures, resolve_futures, swap_nested, when_all_done
from .engine.task_loop import TaskExecution, execute_async, execute_sync, finish_run, transition
from .errors import HeadwaterError
from .results import ResultMissing, ResultNotPersisted, ResultStore
from .reuse import inputs_hash
from .run_logging import TASK_CREATED, TASK_FINISHED, log_line, record_message, task_extra, task_logger
from .runs import FlowRun, TaskRun
from .stores import CacheEntry, RunStore
from .task_lines import FINISHED
from .task_runners import InlineTaskRunner

from .policy import StatePolicy, WrappingPolicy

if TYPE_CHECKING:
    from .tasks import Task

__all__ = [
    "DetachedRun",
    "FlowRunContext",
    "Future",
    "TaskExecution",
    "Work",
    "finish_run",
    "not_ready",
    "transition",
    "when_all_done",
    "NotPicklable",
    "Outcome",
    "RemoteError",
    "UpstreamRef",
    "check_cache",
    "detach",
    "fill_upstream",
    "flow_facts",
    "make_sendable",
    "record_outcome",
    "replace_futures",
    "resolve_arguments",
    "run_detached",
]


class NotPicklable(HeadwaterError, TypeError):
    """A task or one of its arguments cannot be pickled to send it to another process."""


class RemoteError(HeadwaterError):
    """Stands in for a task's exception that could not be sent back from the worker;
    its message carries the original type, message and traceback."""


# -- futures in arguments ------------------------------------------------------------------


class UpstreamRef:
    """Placeholder for the ``index``-th upstream future inside a detached run's arguments."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UpstreamRef) and other.index == self.index

    def __hash__(self) -> int:
        return hash(("UpstreamRef", self.index))

    def __reduce__(self) -> tuple[Any, ...]:
        return (UpstreamRef, (self.index,))

    def __repr__(self) -> str:
        return f"UpstreamRef({self.index})"


def replace_futures(value: Any, swap: Callable[[Future], Any]) -> Any:
    """``value`` with every Future (also nested in lists, tuples, sets, dicts) replaced by
    ``swap(future)``."""
    return swap_nested(value, Future, swap)


def fill_upstream(value: Any, results: list[Any]) -> Any:
    """``value`` with every :class:`UpstreamRef` replaced by ``results[ref.index]``."""
    return swap_nested(value, UpstreamRef, lambda ref: results[ref.index])


def resolve_arguments(work: Work) -> states.State | None:
    """In the flow process, once every future in ``work.upstream`` is done: end the run
    ``NotReady`` (and return its state) if an upstream run it needs did not complete;
    else set the run's parameters to what its function receives and return ``None``.

    For a run given ``allow_failure`` or ``quote`` (``work.tolerated is not None``), whose
    arguments cannot travel as they are: a failure inside ``allow_failure`` does not stop
    the run (its exception is the argument, and it no longer fails the flow run), and
    ``quote`` wrappers are removed (futures inside a quote stay futures). This is the
    very step the local runners take (``engine.calls.wait_upstream``), so the rules
    cannot drift apart. Never call it with an upstream future unfinished: it would block.
    """
    return wait_upstream(work.execution, work.upstream, work.tolerated)


# -- the package sent to the worker, and the one sent back ---------------------------------


@dataclass
class DetachedRun:
    """One task run as a worker needs it. Picklable when its parameters are."""

    task_run_id: str
    name: str
    task_name: str
    task_key: str
    parameters: dict[str, Any]
    tags: frozenset[str]
    flow_run_id: str | None
    flow_run_name: str
    flow_name: str
    cache_key: str | None
    #: Where the result is persisted (the policy's ``result_key``, asked in the flow
    #: process, which knows the flow), or None: kept in memory.
    result_key: str | None
    retries_done: int = 0
    start_after: float = 0.0  # epoch seconds: a retry scheduled before the run left
    log_level: int = logging.INFO
    flow_run_count: int = 0


@dataclass
class Outcome:
    """What a worker sends back: enough for the flow process to record the run."""

    task_run_id: str
    states: list[states.State] = field(default_factory=list)
    run_count: int = 0
    start_ts: float | None = None
    end_ts: float | None = None
    cache_key: str | None = None
    result_location: str | None = None
    #: The hash of the run's inputs, when its result is to be persisted (``headwater.reuse``);
    #: the flow process records its own hash of them instead (see record_outcome).
    inputs_hash: str | None = None
    #: ``(key, serializer)`` of each result write the run asked for; the flow process
    #: does the write (the value is the final state's data).
    result_writes: list[tuple[str, str]] = field(default_factory=list)
    cache_entries: list[CacheEntry] = field(default_factory=list)
    #: ``(created, levelno, logger name, message, run_label, run_event)`` per captured record.
    logs: list[tuple[float, int, str, str, str, str | None]] = field(default_factory=list)
    #: Task runs started inside the task (a task called in its body), with their states.
    nested: list[tuple[TaskRun, list[states.State]]] = field(default_factory=list)

    @property
    def final(self) -> states.State:
        return self.states[-1]


# -- the flow-process side, before sending -------------------------------------------------


def check_cache(execution: TaskExecution) -> states.State | None:
    """In the flow process, before a run leaves it: compute the cache key and ask the
    policy. Return ``None`` when the run must run; otherwise the state it is in, already
    recorded: a final one (a ``Cached`` hit, or a key function that failed for good) ends
    the run here; ``AwaitingRetry`` (type SCHEDULED) means the key function failed and a
    retry is due at its ``scheduled_time``: call again then (with the same ``execution``).
    """
    policy = execution.policy
    if not policy.uses_cache:
        return None
    run = execution.task_run
    if run.cache_key is None:
        try:
            execution.compute_cache_key()
        except Exception as exc:
            final = execution.failed(exc, before_call=True)
            if final is None:
                return run.state
            execution.finish_logs(final)
            return final
    early = execution.propose_running()
    if early is not None:
        transition(execution.flow_context, run, early)
        execution.finish_logs(early)
    return early


def detach(execution: TaskExecution, parameters: dict[str, Any] | None = None) -> DetachedRun:
    """Pack ``execution`` for a worker. ``parameters`` defaults to the run's own (which must then
    hold no futures; see :func:`replace_futures`)."""
    run = execution.task_run
    flow_context = execution.flow_context
    flow_run = flow_context.flow_run
    start_after = 0.0
    if execution.retries_done and run.state is not None and run.state.name == "AwaitingRetry":
        scheduled = run.state.state_details.scheduled_time
        start_after = scheduled.timestamp() if scheduled is not None else 0.0
    return DetachedRun(
        task_run_id=run.id, name=run.name, task_name=run.task_name, task_key=run.task_key,
        parameters=run.parameters if parameters is None else parameters, tags=run.tags,
        flow_run_id=flow_run.id if flow_run is not None else None,
        flow_run_name=flow_run.name if flow_run is not None else "",
        flow_name=flow_run.flow_name if flow_run is not None else "",
        flow_run_count=flow_run.run_count if flow_run is not None else 0,
        cache_key=run.cache_key, result_key=execution.policy.result_key(execution.context), retries_done=execution.retries_done,
        start_after=start_after, log_level=task_logger.getEffectiveLevel(),
    )


# -- the worker side -----------------------------------------------------------------------


class _RecordingStore(RunStore):
    """Keeps what a detached run records: its states, the task runs it starts itself
    (a task called inside the task) with theirs, and its cache entry. Holds nothing to
    read: cache lookups were made in the flow process."""

    def __init__(self, main_id: str) -> None:
        self.main_id = main_id
        self.states: list[states.State] = []
        self.nested: dict[str, tuple[TaskRun, list[states.State]]] = {}
        self.cache_entries: list[CacheEntry] = []

    def create_task_run(self, run: TaskRun) -> None:
        if run.id != self.main_id:
            self.nested[run.id] = (run, [])

    def record_state(self, run: Any, state: states.State) -> None:
        if run.id == self.main_id:
            self.states.append(state)
        else:
            self.nested.setdefault(run.id, (run, []))[1].append(state)

    def read_cache_entry(self, key: str) -> CacheEntry | None:
        return None

    def write_cache_entry(self, entry: CacheEntry) -> None:
        if entry.task_run_id == self.main_id:
            self.cache_entries.append(entry)


_DEFERRED = "deferred:"


class _DeferredResults(ResultStore):
    """Notes the detached run's result writes for the flow process to make; reads
    nothing. Runs it starts itself are not persisted (their results stay in memory)."""

    def __init__(self, main_id: str) -> None:
        self.main_id = main_id
        self.writes: list[tuple[str, str]] = []

    def write(self, key: str, value: Any, serializer: str = "cloudpickle") -> tuple[str, int]:
        current = task_run_ctx.get()
        if current is None or current.task_run.id != self.main_id:
            raise ResultNotPersisted("a task run started inside a task on a remote worker keeps "
                                     "its result in memory")
        self.writes.append((key, serializer))
        return _DEFERRED + key, 0

    def read(self, location: str) -> Any:
        raise ResultMissing(f"results are not readable on a worker ({location!r})")

    def delete(self, location: str) -> None:
        pass


_shared: tuple[FlowBindings, tuple[threading.Lock, ...]] | None = None


def _worker_shared() -> tuple[FlowBindings, tuple[threading.Lock, ...]]:
    """What every detached run in this process reads and nobody changes, made once: the
    bindings (no plugin but the default namer) and the run locks. Made per run, they
    were a tenth of a worker's time per task run."""
    global _shared
    if _shared is None:
        bindings = FlowBindings.empty()
        # layering: the default namer, so runs started on a worker are named as in the flow process
        from headwater.plugins.run_naming import headwater_task_run_name

        bindings.task_run_name = headwater_task_run_name
        _shared = bindings, tuple(threading.Lock() for _ in range(RUN_LOCKS))
    return _shared


class _NoSession:
    """Stands in for the session on a worker: there is none, and no run store."""

    store: RunStore | None = None
    settings = None


class _DetachedContext(FlowRunContext):
    """A flow run context without a session: what a task run's attempt loop reads,
    recording into a :class:`_RecordingStore`."""

    def __init__(self, detached: DetachedRun, task: Task, policy: StatePolicy,
                 flow_facts: dict[str, Any] | None = None) -> None:
        facts = flow_facts or {}
        flow_run = FlowRun(detached.flow_run_id or "", detached.flow_name, detached.flow_run_name,
                           facts.get("parameters") or {}, frozenset(facts.get("tags") or ()))
        flow_run.start_ts = facts.get("start_ts")
        flow_run.run_count = detached.flow_run_count
        bindings, locks = _worker_shared()
        super().__init__(None, flow_run, _NoSession(), bindings,  # type: ignore[arg-type]
                         result_store=_DeferredResults(detached.task_run_id), run_locks=locks)
        self.store = _RecordingStore(detached.task_run_id)
        # submit() inside a task on a worker: the run is made there, in this thread.
        self.task_runner = InlineTaskRunner()
        self._main_task = task
        self._policy = policy
        self._prefix = detached.task_run_id[-8:]  # the varying end (ids may be time-ordered)

    def policy_for(self, task: Task) -> StatePolicy:
        if task is self._main_task:
            return self._policy
        # A task called inside the task: the default rules of its own options (retries,
        # timeouts); no plugin policies, and no cache, on a worker.
        from headwater.plugins.retries import RetryPolicy  # layering: the default plugin's rules

        return RetryPolicy(task)

    def next_index(self, task_key: str) -> Any:
        # Unique beside the flow process's own counters: prefixed by the parent run's id.
        return f"{self._prefix}.{super().next_index(task_key)}"


class _DecidedKey(WrappingPolicy):
    """The run's policy, with the result key the flow process decided (it knows the
    flow, which the worker does not)."""

    def __init__(self, inner: StatePolicy, key: str | None) -> None:
        super().__init__(inner)
        self.key = key

    def result_key(self, ctx: Any) -> str | None:
        return self.key


class _DetachedExecution(TaskExecution):
    """The engine's TaskExecution, with the flow-process decisions it cannot make itself."""

    __slots__ = ()

    def finish_logs(self, state: states.State) -> None:
        # State callbacks run in the flow process, after the outcome is recorded.
        if not task_logger.isEnabledFor(logging.INFO):
            return
        extra = task_extra(self.context)
        buffer = _capture.get()
        if buffer is not None and task_logger.filters == _ONLY_CAPTURE and not task_logger.disabled:
            # The row the capture filter would keep, without the LogRecord made only for
            # it (about a fifth of a worker's time per task run at the default level).
            buffer.append((time.time(), logging.INFO, task_logger.name, FINISHED % (state,),
                           extra["run_label"], TASK_FINISHED))
            return
        log_line(task_logger, logging.INFO, FINISHED, (state,), extra, TASK_FINISHED, state)


_capture: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar(
    "headwater_remote_capture", default=None)
_filter_installed = False


def _capture_filter(record: logging.LogRecord) -> bool:
    # A filter on the logger itself, so a captured record reaches no handler here: in a
    # worker living in the flow process it would otherwise be shown twice.
    buffer = _capture.get()
    if buffer is None:
        return True
    message = record_message(record)
    if record.exc_info and record.exc_info[1] is not None:
        message += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
    buffer.append((record.created, record.levelno, record.name, message,
                   getattr(record, "run_label", "") or "", getattr(record, "run_event", None)))
    return False


_ONLY_CAPTURE = [_capture_filter]
_headwater_logger = logging.getLogger("headwater")  # looked up once: getLogger takes a lock


def _install_capture(level: int) -> None:
    global _filter_installed
    if not _filter_installed:
        task_logger.addFilter(_capture_filter)  # with "Created task run" of tasks it calls
        _filter_installed = True
    if _headwater_logger.level == logging.NOTSET:  # a fresh worker process: log what the flow logs
        _headwater_logger.setLevel(level)


def flow_facts(flow_context: FlowRunContext) -> dict[str, Any]:
    """What ``headwater.runtime.flow_run`` reads, for :func:`run_detached` (send it once
    per flow run; drop ``parameters`` if they cannot be pickled)."""
    run = flow_context.flow_run
    if run is None:
        return {}
    return {"parameters": run.parameters, "tags": tuple(run.tags), "start_ts": run.start_ts}


def run_detached(task: Task, policy: StatePolicy, detached: DetachedRun,
                 flow_facts: dict[str, Any] | None = None) -> Outcome:
    """Run one task run's attempts here, detached from any session; never raises for a
    failing task (its exception is in the outcome's final state). ``flow_facts`` (from
    :func:`flow_facts`) fill in ``headwater.runtime.flow_run``."""
    _install_capture(detached.log_level)
    run = TaskRun(detached.task_run_id, detached.task_name, detached.task_key, detached.name,
                  detached.parameters, detached.tags, detached.flow_run_id)
    run.cache_key = detached.cache_key
    flow_context = _DetachedContext(detached, task, policy, flow_facts)
    execution = _DetachedExecution(task, run, flow_context, detached.parameters)  # type: ignore[arg-type]
    execution.policy = _DecidedKey(policy, detached.result_key)
    execution.context.retries_done = detached.retries_done
    logs: list[Any] = []
    token = _capture.set(logs)
    flow_token = flow_run_ctx.set(flow_context)  # tasks called inside the task join this run
    try:
        wait = detached.start_after - time.time()
        if wait > 0:
            time.sleep(wait)
        try:
            if task.is_async:
                import anyio

                final = anyio.run(execute_async, execution)
            else:
                final = execute_sync(execution)
        except BaseException as exc:  # an interrupt or an engine error: end it Crashed
            if run.state is not None and run.state.is_final():
                final = run.state
            else:
                final = states.Crashed(message=f"Task run crashed: {type(exc).__name__}: {exc}", data=exc)
                run.end_ts = final.ts
                flow_context.store.record_state(run, final)
    finally:
        flow_run_ctx.reset(flow_token)
        _capture.reset(token)
    history = flow_context.store.states
    if not history or history[-1] is not final:
        history.append(final)
    return Outcome(task_run_id=run.id, states=history, run_count=run.run_count,
                   start_ts=run.start_ts, end_ts=run.end_ts, cache_key=run.cache_key,
                   result_location=run.result_location, inputs_hash=run.inputs_hash,
                   result_writes=flow_context.result_store.writes,
                   cache_entries=flow_context.store.cache_entries, logs=logs,
                   nested=[_sendable_run(inner, inner_states)
                           for inner, inner_states in flow_context.store.nested.values()])


def _sendable_run(run: TaskRun, history: list[states.State]) -> tuple[TaskRun, list[states.State]]:
    run.drop_live_parts()  # the live call, and plugins' per-run values, stay here
    run.state = None  # set again as the flow process records the states
    return run, history


def make_sendable(outcome: Outcome, dumps: Callable[[Any], bytes], run_name: str = "") -> bytes:
    """Serialize ``outcome`` with ``dumps``. An exception that does not survive the trip
    becomes a :class:`RemoteError` with its text; a result that cannot be pickled fails
    the run with a message that says so."""
    final = outcome.final
    if isinstance(final.data, BaseException):
        try:
            pickle.loads(dumps(final.data))
        except Exception:
            exc = final.data
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()
            final.data = RemoteError(f"{type(exc).__name__}: {exc}\n(sent back as text: the "
                                     f"exception could not be pickled)\n{text}")
    try:
        return dumps(outcome)
    except Exception as exc:
        what = type(final.data).__name__
        error = NotPicklable(f"the result of task run {run_name or repr(outcome.task_run_id)} (a {what}) cannot be "
                             f"pickled to send it back from the worker: {type(exc).__name__}: {exc}")
        outcome.states[-1] = states.Failed(message=f"Task run encountered an exception during execution: "
                                              f"NotPicklable: {error}", data=error)
        outcome.result_writes, outcome.cache_entries = [], []
        return dumps(outcome)


# -- the flow-process side, after the outcome is back --------------------------------------


def record_outcome(execution: TaskExecution, outcome: Outcome) -> states.State:
    """Record a detached run's outcome as if it had run here; return its final state.

    The history up to the final state is replayed, then the run ends through the
    engine's own completion path: a completed result is persisted here (the worker only
    asked for it) and only then is its cache entry written, then the final state, the
    run's logs and its state callbacks.
    """
    flow_context = execution.flow_context
    run = execution.task_run
    final = outcome.final
    if run.state is not None and run.state.is_final():
        return run.state  # ended meanwhile (its flow run crashed): that state stays
    for state in outcome.states[:-1]:
        transition(flow_context, run, state)
    for inner, inner_states in outcome.nested:
        flow_context.store.create_task_run(inner)
        for state in inner_states:
            transition(flow_context, inner, state)
    run.run_count = outcome.run_count
    if run.start_ts is None:
        run.start_ts = outcome.start_ts
    run.cache_key = outcome.cache_key
    location = outcome.result_location
    run.result_location = None if location is not None and location.startswith(_DEFERRED) else location
    if outcome.result_writes and final.is_completed():
        failure = execution.persist_if_wanted(final.data)
        if failure is not None:
            final = failure
        elif run.result_location is not None:  # a cache entry only for a result safely stored
            run.inputs_hash = _inputs_hash_here(execution, outcome)
            for entry in outcome.cache_entries:
                if entry.location.startswith(_DEFERRED):
                    entry.location = run.result_location
                    entry.size, entry.digest = execution.result_size_and_digest()
                flow_context.store.write_cache_entry(entry)
    run.end_ts = outcome.end_ts if outcome.end_ts is not None and final is outcome.final else time.time()
    transition(flow_context, run, final)
    # The final states of the task runs the task started itself, by the label of their lines.
    nested_finals = {f"Task run {inner.name!r}": inner_states[-1]
                     for inner, inner_states in outcome.nested if inner_states}
    _replay_logs(outcome.logs, task_extra(execution.context), final, nested_finals)
    execution.run_callbacks(final)
    return final


def _inputs_hash_here(execution: TaskExecution, outcome: Outcome) -> str | None:
    """The inputs hash to record with a run whose result the flow process persisted.

    Hashed here, as a retry hashes the same call here to match it: a worker names the
    classes of a module it got by value (a dataclass, an enum of the user's files) by
    module instead of by file, so its hash would never match. The worker's hash says
    whether the run's policy records one at all, and stands in when an upstream run is
    somehow not recorded here yet (never waited for in Dask's callback thread)."""
    if outcome.inputs_hash is None:
        return None
    futures: list[Future] = []
    collect_futures(execution.parameters, futures)
    if not all(f.done() and f.state.is_completed() for f in futures):
        return outcome.inputs_hash
    return inputs_hash(resolve_futures(execution.parameters), execution.task)


#: Loggers by name, for the replayed lines (``logging.getLogger`` takes the module's lock).
_loggers: dict[str, logging.Logger] = {}


def _replay_logs(rows: list[tuple[float, int, str, str, str, str | None]], extra: dict[str, Any],
                 final: states.State, nested_finals: dict[str, states.State]) -> None:
    """Hand captured records to this process's handlers (the console, a log store).
    ``final`` is the run's final state as recorded here; ``nested_finals`` those of the
    task runs it started, by the label of their lines."""
    for created, levelno, name, message, label, event in rows:
        logger = _loggers.get(name) or _loggers.setdefault(name, logging.getLogger(name))
        if not logger.isEnabledFor(levelno):
            continue
        if event == TASK_FINISHED:  # the engine's own line again: counted, kept as a fact
            label = label or extra["run_label"]
            line_extra = {**extra, "run_label": label}
            if label in nested_finals:  # a task run the task called: its own state, as worded there
                log_line(logger, levelno, "%s", (message,), line_extra, event, nested_finals[label],
                         created=created)
            else:  # the run's: worded from the state recorded here (see record_outcome)
                log_line(logger, levelno, FINISHED, (final,), line_extra, event, final, created=created)
            continue
        if event == TASK_CREATED:  # a task run the task started (its record is here now)
            log_line(logger, levelno, "%s", (message,), {**extra, "run_label": label or extra["run_label"]},
                     event, created=created)
            continue
        record = logger.makeRecord(name, levelno, "(worker)", 0, message, None, None,
                                   extra={**extra, "run_label": label or extra["run_label"]})
        record.created = created
        record.msecs = (created - int(created)) * 1000
        logger.handle(record)
