"""Futures for submitted task runs, and finding futures inside arguments.

A future never raises while waiting: it ends with a final :class:`State`. ``result()``
turns a failed state back into its exception. Reading a future's outcome (``result``,
``wait`` or ``state`` once done) marks it observed: a failure nobody observed fails the
flow run.
"""

from __future__ import annotations

import contextvars
import itertools
import threading
from typing import TYPE_CHECKING, Any, Callable

from ..states import Pending, State
from .context import task_run_ctx

if TYPE_CHECKING:
    from ..runs import TaskRun
    from .task_loop import TaskExecution


class unmapped:
    """Wrap an argument of ``Task.map`` that is the same for every mapped call."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"unmapped({self.value!r})"


class Future:
    """The eventual final state of one submitted task run."""

    __slots__ = ("task_run_id", "task_run_name", "_run", "_state", "_event", "_callbacks",
                 "_lock", "observed", "work", "_owner")

    def __init__(self, run: TaskRun, owner: Any = None) -> None:
        self.task_run_id = run.id
        self.task_run_name = run.name
        self._run: TaskRun | None = run  # dropped when done: memory stays per result
        self._state: State | None = None
        # Made by the first waiter that finds the run unfinished: most results are read
        # after their run ended, and a lock per submitted run made submit slower.
        self._event: _Signal | None = None
        self._callbacks: list[Callable[[Future], None]] | None = None  # made on first use
        # One of a few shared locks, not a lock per future: held only for a few steps and
        # never two at a time, and one object fewer per submitted run for the garbage
        # collector to walk while the run is in flight.
        self._lock = _LOCKS[next(_lock_turns) % len(_LOCKS)]
        self.observed = False
        self.work: Work | None = None
        # The flow run that tracks this future: told first when it finishes (a method
        # call instead of a callback list per submitted run).
        self._owner = owner

    def done(self) -> bool:
        return self._state is not None

    @property
    def final_state(self) -> State | None:
        """The final state once done, else ``None``; reading it does not mark the
        outcome observed (the engine's own bookkeeping reads it)."""
        return self._state

    @property
    def state(self) -> State:
        """The final state if done (marking it observed), else the run's current state."""
        state = self._state
        if state is not None:
            self.observed = True
            return state
        run = self._run
        return (run.state if run is not None and run.state is not None else None) or Pending()

    def wait(self, timeout: float | None = None) -> State | None:
        """Block until done; return the final state, or ``None`` on timeout."""
        if self._state is None:
            if timeout is None and task_run_ctx.get() is not None:
                # A task waiting on a task it submitted runs it here if no worker has
                # started it yet, so nested submits cannot deadlock a full worker pool.
                # The flow itself only waits (its tasks run on the runner), and so does
                # a wait with a timeout (the caller wants it bounded).
                if not in_event_loop():
                    self._run_here()
                else:
                    work = self.work
                    if work is not None and not work.claimed:
                        # An async task blocking its event loop: the loop cannot run what
                        # it waits for, so a helper thread does (async tasks included).
                        # Not when a runner has it already: the thread would do nothing.
                        context = contextvars.copy_context()
                        threading.Thread(target=context.run, args=(self._run_here,), daemon=True,
                                         name="headwater-wait-helper").start()
            if not self._signal().wait(timeout):
                return None
        return self.state

    def _signal(self) -> _Signal:
        """What a waiter blocks on: set when the future finishes (made on first use)."""
        event = self._event
        if event is None:
            with self._lock:
                if self._event is None:
                    self._event = _Signal()
                event = self._event  # _DONE if it finished meanwhile
        return event

    def wait_quietly(self) -> None:
        """Block until done and told to the flow run that tracks it, without marking
        the outcome observed (the flow run's own wait: an unobserved failure must still
        fail it). Waits on the signal, set only after the flow run was told, so the
        flow run does not spin in between."""
        self._signal().wait()

    def _run_here(self, depth: int = 0) -> None:
        """Run this future's work (and first its unstarted upstream work) in this thread,
        unless a runner has claimed it already."""
        work = self.work
        if work is None or depth > 100:
            return
        if not work.ready:
            for upstream in work.upstream:
                if upstream._state is None:
                    upstream._run_here(depth + 1)
        # Finishing the upstream runs hands this work to the runner (ready) at once.
        if work.ready:
            work.run()

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> Any:
        """The task's return value; raises its exception if it failed (unless told not to)."""
        state = self.wait(timeout)
        if state is None:
            raise TimeoutError(f"task run {self.task_run_name!r} did not finish within {timeout} s")
        return state.result(raise_on_failure=raise_on_failure)

    def add_done_callback(self, fn: Callable[[Future], None]) -> None:
        with self._lock:
            if self._state is None:
                if self._callbacks is None:
                    self._callbacks = [fn]
                else:
                    self._callbacks.append(fn)
                return
        fn(self)

    def set_state(self, state: State) -> None:
        """Finish the future (engine only). The first final state wins: a run the flow
        already ended on a crash stays ended when its thread finishes later."""
        with self._lock:
            if self._state is not None:
                return
            self._state = state
            self._run = None
            self.work = None
            callbacks, self._callbacks = self._callbacks, _NO_CALLBACKS
        owner = self._owner
        if owner is not None:
            # Before waking waiters: the flow run waiting for its futures then finds
            # this one gone from its pending set (and its failure counted) at once.
            self._owner = None
            owner.finished(self)
        with self._lock:  # a signal made meanwhile (_signal) is taken and set here
            event, self._event = self._event, _DONE
        if event is not None:
            event.set()
        # A finished future keeps its state only: the run, its work and its own event
        # are dropped, so ten thousand finished futures cost little more than results.
        self._lock = _DONE_LOCK
        if callbacks:
            for fn in callbacks:
                fn(self)

    def __repr__(self) -> str:
        status = str(self._state) if self._state is not None else "pending"
        return f"<Future {self.task_run_name!r} {status}>"


class _Signal:
    """A one-shot event on a single lock, held until ``set()``.

    ``threading.Event`` builds a Condition (three bound methods, a deque, and three
    caught AttributeErrors) per instance; one per submitted task run made ``submit`` a
    third slower and fed the garbage collector. Same ``set``/``is_set``/``wait`` API.
    """

    __slots__ = ("_lock", "_set")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self._set = False

    def set(self) -> None:
        if not self._set:
            self._set = True
            try:
                self._lock.release()
            except RuntimeError:  # two threads raced to set it: it is set either way
                pass

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        if self._set:
            return True
        if timeout is None:
            acquired = self._lock.acquire()
        else:
            acquired = self._lock.acquire(timeout=max(timeout, 0))
        if acquired:
            self._lock.release()  # let the next waiter through
            return True
        return self._set


_DONE = _Signal()
_DONE.set()
_DONE_LOCK = threading.Lock()
_LOCKS = tuple(threading.Lock() for _ in range(64))
_lock_turns = itertools.count()
_NO_CALLBACKS: list[Callable[[Future], None]] = []  # never appended to: guarded by _state


class Work:
    """One submitted task run as a task runner sees it.

    A runner calls ``run()`` (sync tasks) or awaits ``arun()`` (async tasks) exactly once,
    in any thread. ``claim`` makes that safe when a waiter runs it first. A runner that
    runs the attempt loop elsewhere (on other processes) starts from ``execution``.
    """

    __slots__ = ("future", "execution", "_sync", "_async", "is_async", "_claimed", "ready", "upstream",
                 "context")

    def __init__(self, future: Future, execution: TaskExecution, sync_fn: Callable[[Work], State] | None,
                 async_fn: Callable[[Work], Any] | None, upstream: list[Future]) -> None:
        self.future = future
        #: The run from Pending to its final state: task, run, parameters, state policy.
        self.execution = execution
        self._sync = sync_fn
        self._async = async_fn
        self.is_async = async_fn is not None
        self._claimed = False  # set under the future's lock: no lock of its own
        self.ready = False  # set when handed to the runner (upstream done)
        self.upstream = upstream
        #: Free for the runner: the context variables to run it with, when it runs the
        #: work in another thread (``contextvars.copy_context()`` at submit).
        self.context: contextvars.Context | None = None

    @property
    def task(self) -> Any:
        """The task this work runs."""
        return self.execution.task

    @property
    def run_obj(self) -> TaskRun:
        """The task run this work makes."""
        return self.execution.task_run

    def claim(self) -> bool:
        """True exactly once while the future is unfinished: for the first caller, who
        then runs it. (A finished future shares one lock with every finished future;
        a claim then can only find the run ended, which run() turns into nothing.)"""
        with self.future._lock:
            if self._claimed:
                return False
            self._claimed = True
        return True

    @property
    def claimed(self) -> bool:
        """A runner or a waiter has taken this work (it may be running or done)."""
        return self._claimed

    def run(self) -> None:
        if not self.claim():
            return
        if self._sync is None:
            # An async task on a sync-only runner.
            state = run_coroutine_function(lambda: self._async(self))  # type: ignore[misc]
        else:
            state = self._sync(self)
        self.future.set_state(state)

    async def arun(self) -> None:
        if not self.claim():
            return
        assert self._async is not None
        self.future.set_state(await self._async(self))


def run_coroutine_function(fn: Callable[[], Any]) -> Any:
    """``anyio.run(fn)``; in a thread that already runs an event loop (an async flow on
    the sequential runner), in a thread of its own, waited for."""
    import anyio

    if not in_event_loop():
        return anyio.run(fn)
    outcome: list[Any] = []
    context = contextvars.copy_context()

    def target() -> None:
        try:
            outcome.append((True, context.run(anyio.run, fn)))
        except BaseException as exc:  # handed to the waiting thread
            outcome.append((False, exc))

    thread = threading.Thread(target=target, name="headwater-async-task")
    thread.start()
    thread.join()
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


def in_event_loop() -> bool:
    """True when this thread is running an asyncio event loop."""
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def when_all_done(futures: list[Future], callback: Callable[[], None]) -> None:
    """Call ``callback()`` once, in the thread that finishes the last of ``futures``."""
    remaining = [len(futures)]
    lock = threading.Lock()

    def one_done(_: Future) -> None:
        with lock:
            remaining[0] -= 1
            last = remaining[0] == 0
        if last:
            callback()

    for future in futures:
        future.add_done_callback(one_done)


def collect_futures(value: Any, found: list[Future], depth: int = 0) -> None:
    """Append every Future in ``value`` (lists, tuples, sets, dicts, nested) to ``found``."""
    if isinstance(value, Future):
        found.append(value)
    elif depth < 16:
        cls = type(value)
        if cls in (list, tuple, set, frozenset):
            for item in value:
                collect_futures(item, found, depth + 1)
        elif cls is dict:
            for item in value.values():
                collect_futures(item, found, depth + 1)


def swap_nested(value: Any, kind: type, swap: Callable[[Any], Any], depth: int = 0) -> Any:
    """``value`` with every instance of ``kind`` (also nested in lists, tuples, sets,
    frozensets and dicts, the containers :func:`collect_futures` looks into) replaced by
    ``swap(instance)``."""
    if isinstance(value, kind):
        return swap(value)
    if depth < 16:
        cls = type(value)
        if cls in (list, tuple, set, frozenset):
            return cls(swap_nested(v, kind, swap, depth + 1) for v in value)
        if cls is dict:
            return {k: swap_nested(v, kind, swap, depth + 1) for k, v in value.items()}
    return value


def resolve_futures(value: Any) -> Any:
    """``value`` with every Future replaced by its result (all must be done and completed)."""
    return swap_nested(value, Future, Future.result)
