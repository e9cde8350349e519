"""Futures for submitted task runs, waiting for several (``wait``, ``as_completed``),
and finding and resolving futures inside arguments (``allow_failure``, ``quote``).

A future never raises while waiting: it ends with a final :class:`State`. ``result()``
turns a failed state back into its exception. Reading a future's outcome (``result``,
``wait`` or ``state`` once done) marks it observed: a failure nobody observed fails the
flow run.
"""

from __future__ import annotations

import contextvars
import itertools
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, NamedTuple

from ..states import Pending, State
from ..utilities.annotations import allow_failure, quote
from ..utilities.annotations import unmapped as unmapped  # where the engine's callers import it
from .context import task_run_ctx

if TYPE_CHECKING:
    from ..runs import TaskRun
    from .task_loop import TaskExecution


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
            if timeout is None:
                self._help()
            if not self._signal().wait(timeout):
                return None
        return self.state

    def _help(self) -> None:
        """About to block on this unfinished future with no time limit: in a task run,
        run its work here if no worker has started it yet.

        A task waiting on a task it submitted runs it here, so nested submits cannot
        deadlock a full worker pool. The flow itself only waits (its tasks run on the
        runner), and so does a wait with a timeout (the caller wants it bounded)."""
        if task_run_ctx.get() is None:
            return
        if not in_event_loop():
            self._run_here()
            return
        work = self.work
        if work is not None and not work.claimed:
            # An async task blocking its event loop: the loop cannot run what it waits
            # for, so a helper thread does (async tasks included). Not when a runner has
            # it already: the thread would do nothing.
            context = contextvars.copy_context()
            threading.Thread(target=context.run, args=(self._run_here,), daemon=True,
                             name="headwater-wait-helper").start()

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


class FutureList(list):
    """What ``task.map(...)`` returns: the list of its futures, with ``wait()`` and
    ``result()`` for all of them (Prefect's ``PrefectFutureList``). Passed to another task,
    it is a list like any other: the task receives the results."""

    def wait(self, timeout: float | None = None) -> None:
        """Block until every future is done, or ``timeout`` seconds passed in all."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for future in self:
            future.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> list[Any]:
        """Every future's result, in order; the first failure raises (unless told not to).
        A ``TimeoutError`` when ``timeout`` seconds pass in all first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        return [future.result(None if deadline is None else max(0.0, deadline - time.monotonic()),
                              raise_on_failure) for future in self]


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
                 "tolerated", "context")

    def __init__(self, future: Future, execution: TaskExecution, sync_fn: Callable[[Work], State] | None,
                 async_fn: Callable[[Work], Any] | None, upstream: list[Future],
                 tolerated: frozenset[Future] | None = None) -> None:
        self.future = future
        #: The run from Pending to its final state: task, run, parameters, state policy.
        self.execution = execution
        self._sync = sync_fn
        self._async = async_fn
        self.is_async = async_fn is not None
        self._claimed = False  # set under the future's lock: no lock of its own
        self.ready = False  # set when handed to the runner (upstream done)
        self.upstream = upstream
        #: The upstream futures passed only inside ``allow_failure``: their runs may fail
        #: and this one still runs. ``None`` when no argument holds ``allow_failure`` or
        #: ``quote`` (the arguments need no unwrapping).
        self.tolerated = tolerated
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


class DoneAndNotDoneFutures(NamedTuple):
    """What :func:`wait` returns: the futures that finished, and those that did not."""

    done: set[Future]
    not_done: set[Future]


def wait(futures: Iterable[Future], timeout: float | None = None) -> DoneAndNotDoneFutures:
    """Block until every future is done, or ``timeout`` seconds passed; return the
    ``(done, not_done)`` sets (duplicates removed). Never raises for a failed task run,
    and reads no outcome: a failure in ``done`` still fails the flow run unless its
    future is read (``result()``, ``state``, ``wait()``)."""
    unique = _unique_futures(futures, timeout, "wait")
    if timeout is None:
        for future in unique:
            if future._state is None:
                future._help()
                future._signal().wait()
        return DoneAndNotDoneFutures(set(unique), set())
    deadline = time.monotonic() + timeout
    for future in unique:
        if future._state is None and not future._signal().wait(max(deadline - time.monotonic(), 0)):
            break  # out of time: the rest are counted as they are
    done = {future for future in unique if future._state is not None}
    return DoneAndNotDoneFutures(done, set(unique).difference(done))


def as_completed(futures: Iterable[Future], timeout: float | None = None) -> Iterator[Future]:
    """Yield the futures as their runs finish (those done already first, in the order
    given; duplicates once). If ``timeout`` seconds pass (counted from this call) before
    all are done, raise ``TimeoutError`` saying how many are unfinished. Reads no
    outcome, like :func:`wait`."""
    unique = _unique_futures(futures, timeout, "as_completed")
    deadline = None if timeout is None else time.monotonic() + timeout
    return _in_completion_order(unique, timeout, deadline)


def _in_completion_order(unique: list[Future], timeout: float | None,
                         deadline: float | None) -> Iterator[Future]:
    total = len(unique)
    pending = {future for future in unique if future._state is None}
    for future in unique:
        if future not in pending:
            yield future
    if not pending:
        return
    lock = threading.Lock()
    arrived = threading.Event()
    finished: list[Future] = []

    def one_done(future: Future) -> None:  # in the thread that finishes it
        with lock:
            finished.append(future)
            arrived.set()

    for future in list(pending):
        future.add_done_callback(one_done)
    while pending:
        with lock:
            batch = finished[:]
            finished.clear()
            arrived.clear()
        if batch:
            for future in batch:
                pending.discard(future)
                yield future
            continue
        if deadline is None:
            # In a task run, run one of them here if no worker started it: the task may
            # hold the pool's last worker (nested submits), as Future.wait() does.
            idle = next((f for f in pending if f.work is not None and not f.work.claimed), None)
            if idle is not None:
                idle._help()
            arrived.wait()
        elif not arrived.wait(max(deadline - time.monotonic(), 0)):
            raise TimeoutError(f"{len(pending)} (of {total}) futures unfinished after "
                               f"{timeout} s")


def _unique_futures(futures: Any, timeout: Any, caller: str) -> list[Future]:
    """``futures`` once each, in order; a clear error for anything but futures."""
    if isinstance(futures, Future):
        raise TypeError(f"{caller}() takes a list of futures, got the single future {futures!r}; "
                        f"pass [future]")
    if isinstance(futures, (str, bytes, dict)) or not hasattr(futures, "__iter__"):
        raise TypeError(f"{caller}() takes a list of futures (from .submit() or .map()), got "
                        f"{futures!r}")
    items = list(futures)
    for item in items:
        if not isinstance(item, Future):
            raise TypeError(f"{caller}() takes futures from .submit() or .map(), got {item!r} "
                            f"({type(item).__name__})")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or timeout < 0):
        raise ValueError(f"{caller}(timeout={timeout!r}): expected None or a number of seconds "
                         f"of at least 0")
    return list(dict.fromkeys(items))


def collect_futures(value: Any, found: list[Future], depth: int = 0,
                    annotated: list[Any] | None = None) -> None:
    """Append every Future in ``value`` (lists, tuples, sets, dicts, nested) to ``found``.

    Futures inside ``allow_failure(...)`` are found too; those inside ``quote(...)`` are
    not (the task receives them as they are). With ``annotated``, every ``allow_failure``
    and ``quote`` met is appended to it as well: the arguments need unwrapping."""
    if isinstance(value, Future):
        found.append(value)
    elif depth < 16:
        cls = type(value)
        if cls in (list, tuple, set, frozenset, FutureList):
            for item in value:
                collect_futures(item, found, depth + 1, annotated)
        elif cls is dict:
            for item in value.values():
                collect_futures(item, found, depth + 1, annotated)
        elif cls is allow_failure or cls is quote:
            if annotated is not None:
                annotated.append(value)
            if cls is allow_failure:
                collect_futures(value.value, found, depth + 1, annotated)


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
        if cls is FutureList:  # the results of a map are a plain list
            return [swap_nested(v, kind, swap, depth + 1) for v in value]
        if cls is dict:
            return {k: swap_nested(v, kind, swap, depth + 1) for k, v in value.items()}
    return value


def resolve_futures(value: Any) -> Any:
    """``value`` with every Future replaced by its result (all must be done and completed)."""
    return swap_nested(value, Future, Future.result)


def resolve_annotated(value: Any, quotes: list[Any] | None = None, allowed: bool = False,
                      depth: int = 0) -> Any:
    """``value`` as the task receives it: every Future replaced by its result (all must
    be done), ``allow_failure(x)`` by ``x`` resolved with a failed run's exception as its
    result, and ``quote(x)`` by ``x`` untouched. With ``quotes``, the quote wrappers are
    kept (the view cache keys take) and appended to it. Looks into the containers
    :func:`collect_futures` does."""
    if isinstance(value, Future):
        return value.result(raise_on_failure=not allowed)
    if depth < 16:
        cls = type(value)
        if cls in (list, tuple, set, frozenset):
            return cls(resolve_annotated(v, quotes, allowed, depth + 1) for v in value)
        if cls is dict:
            return {k: resolve_annotated(v, quotes, allowed, depth + 1) for k, v in value.items()}
        if cls is allow_failure:
            return resolve_annotated(value.value, quotes, True, depth + 1)
        if cls is quote:
            if quotes is None:
                return value.value
            quotes.append(value)
            return value
    return value


def strip_quotes(value: Any) -> Any:
    """``value`` with every ``quote(x)`` (also nested) replaced by ``x``."""
    return swap_nested(value, quote, quote.unquote)
