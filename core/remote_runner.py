"""RemoteTaskRunner: the flow-process side of a runner that sends task runs to an engine
of worker processes (Dask, Ray), built on :mod:`headwater.remote`.

The flow process stays the only writer of the run store. For each submitted run it
answers cache hits itself, then sends the run (its arguments, a small run spec) with a
token naming its task; the task itself (with its state policy and the flow run's facts)
is pickled once per flow run and handed to the engine's subclass to ship
(:meth:`RemoteTaskRunner.ship_task`). The worker runs the attempt loop (retries,
timeouts; :func:`headwater.remote_worker.run_packed`) and returns one package, which the
flow process records. Futures in arguments become the engine's own handles of their runs
(Dask futures, Ray object refs), so the engine orders the work and moves the data from
worker to worker.

A run given ``allow_failure(...)`` or ``quote(...)`` is the exception: it waits in the flow
process for its upstream runs and leaves with plain values (see ``_dispatch_unwrapped``).

A subclass connects to its engine in ``start``/``shutdown`` and fills in the few
engine-specific steps: :meth:`~RemoteTaskRunner.is_open`,
:meth:`~RemoteTaskRunner.ship_task`, :meth:`~RemoteTaskRunner.call_remote`,
:meth:`~RemoteTaskRunner.when_finished` and :meth:`~RemoteTaskRunner.result_of`.
"""

from __future__ import annotations

import pickle
import threading
from typing import Any, Callable

from . import states
from .errors import HeadwaterError
from .remote import (
    FlowRunContext,
    Future,
    NotPicklable,
    Outcome,
    TaskExecution,
    UpstreamRef,
    Work,
    check_cache,
    detach,
    finish_run,
    flow_facts,
    not_ready,
    record_outcome,
    replace_futures,
    resolve_arguments,
    transition,
    when_all_done,
)
from .remote_pickling import dumps_by_value, dumps_run, dumps_task
from .remote_tracebacks import restore_file_names, restore_file_names_in_logs
from .remote_worker import NOT_READY
from .run_logging import task_extra, task_logger
from .task_runners import TaskRunner

__all__ = ["RemoteTaskRunner"]


class RemoteTaskRunner(TaskRunner):
    """Base of the runners that send task runs to worker processes (see the module
    docstring for the steps a subclass fills in)."""

    handles_dependencies = True

    #: The engine's name in messages: ``"Dask"``, ``"Ray"``.
    engine = "remote"
    #: What the flow run holds open while it runs, in messages: ``"Dask client"``.
    link = "connection"
    #: The error raised for a runner that is not started, or closed.
    runner_error: type[Exception] = HeadwaterError
    #: Packages the workers import by name (their modules are never pickled by value).
    installed: tuple[str, ...] = ("headwater",)

    def reset(self) -> None:
        """The per-flow-run state; a subclass adds its own and calls this."""
        self._context: FlowRunContext | None = None
        self._lock = threading.Lock()
        self._inflight: dict[str, Any] = {}  # task run id -> the engine's handle, until recorded
        self._tasks: dict[int, tuple[str, Any, Any]] = {}  # id(task) -> token, shipped, task

    # -- what a subclass fills in -----------------------------------------------------------

    def is_open(self) -> bool:
        """Whether the engine is reachable (between ``start`` and ``shutdown``)."""
        raise NotImplementedError

    def ship_task(self, task: Any, blob: bytes) -> Any:
        """Make the pickled task available to the workers, once per flow run and task;
        the value returned is given to each :meth:`call_remote` of its runs."""
        return blob

    def call_remote(self, work: Work, token: str, shipped: Any, run_blob: bytes, deps: list[Any]) -> Any:
        """Start the run on the engine; return its handle (which other runs' ``deps``
        hold). ``deps`` are the handles its ``UpstreamRef`` placeholders point at."""
        raise NotImplementedError

    def when_finished(self, handle: Any, work: Work, execution: TaskExecution) -> None:
        """Arrange for :meth:`record_done` to be called with ``handle``'s result when it ends."""
        raise NotImplementedError

    def result_of(self, done: Any) -> tuple[bytes | None, BaseException | None]:
        """The worker's bytes from a finished call, or the engine's error (the run was lost)."""
        raise NotImplementedError

    def adjust_outcome(self, outcome: Outcome, work: Work) -> None:
        """Adjust an outcome as it arrives, before it is recorded: by default, the frames
        of the task's exception and of the tracebacks in its log lines get the task's
        file name back (see :mod:`headwater.remote_tracebacks`)."""
        restore_file_names(outcome.final.data, work.task)
        restore_file_names_in_logs(outcome.logs, work.task)

    def lost_reason(self) -> str:
        """How a run the engine lost is described: ``"was lost by Dask"``."""
        return f"was lost by {self.engine}"

    # -- submitting -------------------------------------------------------------------------

    def submit(self, work: Work) -> None:
        # Claimed here, so a waiter never runs the task in the flow process instead.
        if not work.claim():
            return
        try:
            if self._context is None or not self.is_open():
                raise self.runner_error(f"{type(self).__name__}.submit() before start(): the flow run starts it")
            self._dispatch(work, work.execution)
        except NotPicklable:
            raise
        except BaseException as exc:
            if not work.future.done():
                self._settle(work, self._crashed(work, exc, f"could not be sent to {self.engine}"))
            raise

    def _check_open(self, work: Work) -> None:
        if not self.is_open():
            raise self.runner_error(f"the flow run's {self.link} is closed; task run "
                                    f"{work.run_obj.name!r} was not sent")

    def _dispatch(self, work: Work, execution: TaskExecution) -> None:
        """Send ``work`` to the engine, or settle it here, or arrange to come back when it can go."""
        self._check_open(work)
        if work.tolerated is not None:  # allow_failure / quote among the arguments: rare
            self._dispatch_unwrapped(work, execution)
            return
        run = work.run_obj
        upstream = work.upstream
        uses_cache = execution.policy.uses_cache
        with self._lock:
            # A cached task needs its inputs here, to look up its key; other runs wait here
            # only on runs that are not on the engine yet (themselves waiting for a cache lookup).
            waiting = [f for f in upstream if not f.done()
                       and (uses_cache or f.task_run_id not in self._inflight)]
        if waiting:
            when_all_done(waiting, lambda: self._redispatch(work, execution))
            return
        failed = next((f for f in upstream if f.done() and not f.state.is_completed()), None)
        if failed is not None:
            self._settle(work, not_ready(execution, failed))
            return
        if uses_cache:
            resolved = {k: replace_futures(v, lambda f: f.result()) for k, v in run.parameters.items()}
            execution.parameters = run.parameters = resolved
            state = check_cache(execution)
            if state is not None and state.type is states.StateType.SCHEDULED:
                self._later(execution.retry_delay(state), work, execution)  # the key function failed
                return
            if state is not None:
                self._settle(work, state)
                return
        deps: list[Any] = []
        index: dict[str, int] = {}

        def swap(future: Future) -> Any:
            with self._lock:
                handle = self._inflight.get(future.task_run_id)
            if handle is None:  # finished (and recorded) since: its value is here
                if not future.state.is_completed():
                    raise _UpstreamNotCompleted(future)
                return future.result()
            if future.task_run_id not in index:
                index[future.task_run_id] = len(deps)
                deps.append(handle)
            return UpstreamRef(index[future.task_run_id])

        try:
            parameters = {k: replace_futures(v, swap) for k, v in run.parameters.items()}
        except _UpstreamNotCompleted as failed_upstream:
            self._settle(work, not_ready(execution, failed_upstream.future))
            return
        for future in upstream:  # wait_for=[...]: ordering without data
            if future.task_run_id not in index:
                with self._lock:
                    handle = self._inflight.get(future.task_run_id)
                if handle is not None:
                    index[future.task_run_id] = len(deps)
                    deps.append(handle)
                elif not future.state.is_completed():
                    self._settle(work, not_ready(execution, future))
                    return
        self._send(work, execution, parameters, deps)

    def _dispatch_unwrapped(self, work: Work, execution: TaskExecution) -> None:
        """Dispatch a run whose arguments hold ``allow_failure`` or ``quote``.

        Those wrappers cannot go to the worker as they are: an upstream run inside
        ``allow_failure`` may fail and the run must still go ahead with its exception,
        while an engine dependency only carries a completed result (the worker answers
        NOT_READY otherwise); and ``quote`` must reach the task unwrapped, its futures
        untouched. So such a run waits here for all its upstream runs, then the engine's
        own step (``resolve_arguments``, as the local runners do) decides NotReady, or
        gives the arguments as the function receives them, which go as plain values with
        no engine dependencies. The upstream results are in the flow process anyway (each
        outcome is recorded here), so the cost is only the trip back out to a worker.
        """
        pending = [f for f in work.upstream if not f.done()]
        if pending:
            # The thread that records outcomes finishes them: never block it, come back instead.
            when_all_done(pending, lambda: self._redispatch(work, execution))
            return
        stopped = resolve_arguments(work)
        if stopped is not None:
            self._settle(work, stopped)
            return
        self._send_plain(work, execution)

    def _send_plain(self, work: Work, execution: TaskExecution) -> None:
        """Send a run whose parameters are already plain values (``_dispatch_unwrapped``).
        Also where a retried cache key function comes back to: resolving the arguments
        again would read quoted futures as if they were plain ones."""
        self._check_open(work)
        if execution.policy.uses_cache:
            state = check_cache(execution)
            if state is not None and state.type is states.StateType.SCHEDULED:
                self._later(execution.retry_delay(state), work, execution, self._send_plain)
                return
            if state is not None:
                self._settle(work, state)
                return
        parameters = execution.task_run.parameters
        quoted: list[Future] = []
        for value in parameters.values():
            replace_futures(value, quoted.append)
        if quoted:
            # Only quote(...) leaves futures in resolved arguments. A future lives in the
            # flow process (its run's state, its waiters) and cannot be sent to a worker.
            self._fail_unpicklable(execution, work.future, NotPicklable(
                f"task {work.task.name!r} was given quote(...) around the future of task run "
                f"{quoted[0].task_run_name!r}: a future cannot be sent to a {self.engine} worker, only "
                f"its result. Pass the future without quote(...) to receive its result, or "
                f"run this task with a local task runner"))
        self._send(work, execution, parameters, [])

    def _send(self, work: Work, execution: TaskExecution, parameters: dict[str, Any], deps: list[Any]) -> None:
        """Pickle the run and start it on the engine; ``deps`` are the handles of the
        upstream runs its ``UpstreamRef`` placeholders point at, in their order."""
        run = work.run_obj
        try:
            token, shipped = self._task_entry(execution)
            run_blob = dumps_run(work.task, run.name, detach(execution, parameters), self.engine, self.installed)
        except NotPicklable as error:
            self._fail_unpicklable(execution, work.future, error)
        # Not under the lock: the call may take a while, and recording outcomes needs it.
        handle = self.call_remote(work, token, shipped, run_blob, deps)
        with self._lock:
            self._inflight[run.id] = handle
        # Only now: the run leaves _inflight when recorded, so it must be in it first.
        self.when_finished(handle, work, execution)

    def _later(self, delay: float, work: Work, execution: TaskExecution,
               step: Callable[[Work, TaskExecution], None] | None = None) -> None:
        timer = threading.Timer(delay, self._redispatch, (work, execution, step))
        timer.daemon = True
        timer.start()

    def _redispatch(self, work: Work, execution: TaskExecution,
                    step: Callable[[Work, TaskExecution], None] | None = None) -> None:
        try:
            (step or self._dispatch)(work, execution)
        except BaseException as exc:  # nobody to raise to: end the run instead
            if not work.future.done():
                self._settle(work, self._crashed(work, exc, f"could not be sent to {self.engine}"))

    def _task_entry(self, execution: TaskExecution) -> tuple[str, Any]:
        """The task's token and what :meth:`ship_task` made of it: pickled once per task
        and flow run, so each run carries only its own arguments."""
        task = execution.task
        cached = self._tasks.get(id(task))
        if cached is None:
            flow_run = execution.flow_context.flow_run
            token = f"{flow_run.id if flow_run else ''}:{id(task)}"
            facts = flow_facts(execution.flow_context)
            try:
                dumps_by_value(facts, task, self.installed)
            except Exception:  # the flow's own parameters are a convenience on workers
                facts = {**facts, "parameters": {}}
            blob = dumps_task((task, execution.policy, facts), task, self.engine, self.installed)
            cached = (token, self.ship_task(task, blob), task)  # the task is kept so its id stays unique
            self._tasks[id(task)] = cached
        return cached[0], cached[1]

    def forget_inflight(self) -> list[Any]:
        """At shutdown: the handles of the runs still on the engine; the shipped tasks are dropped."""
        with self._lock:
            inflight = list(self._inflight.values())
            self._tasks.clear()
        return inflight

    # -- results ----------------------------------------------------------------------------

    def record_done(self, work: Work, execution: TaskExecution, done: Any) -> None:
        """Record the outcome of a finished call, then finish the run's future."""
        run = work.run_obj
        try:
            blob, error = self.result_of(done)
            if error is None:
                if blob == NOT_READY:
                    self._not_ready_when_recorded(work, execution)
                    return
                outcome = pickle.loads(blob)  # type: ignore[arg-type]
                self.adjust_outcome(outcome, work)
                final = record_outcome(execution, outcome)
            elif run.state is not None and run.state.is_final():
                final = run.state  # cancelled with a crashed flow run, which recorded it
            else:
                # An upstream run inside allow_failure may have failed: that is not why
                # this one was lost (such a run had no engine dependencies).
                tolerated = work.tolerated or ()
                failed = next((f for f in work.upstream if f not in tolerated and f.done()
                               and not f.state.is_completed()), None)
                if failed is not None:
                    final = not_ready(execution, failed)
                else:
                    final = self._crashed(work, error, self.lost_reason())
        except BaseException as exc:
            final = self._crashed(work, exc, "could not be recorded")
        self._settle(work, final)

    def _not_ready_when_recorded(self, work: Work, execution: TaskExecution) -> None:
        # An upstream run did not complete, but its outcome may still be waiting in this
        # very recording thread: never block here, settle once every upstream is recorded.
        # (Never for a run given allow_failure or quote: it has no engine dependencies, so
        # its worker never answers NOT_READY.)
        def settle() -> None:
            upstream = work.upstream
            failed = next((f for f in upstream if not f.state.is_completed()), upstream[0])
            self._settle(work, not_ready(execution, failed))

        pending = [f for f in work.upstream if not f.done()]
        if pending:
            when_all_done(pending, settle)
        else:
            settle()

    def _settle(self, work: Work, final: states.State) -> None:
        work.future.set_state(final)
        with self._lock:
            self._inflight.pop(work.run_obj.id, None)

    # -- states the flow process settles itself ----------------------------------------------

    def _crashed(self, work: Work, exc: BaseException, what: str) -> states.State:
        """End the run Crashed, saying what went wrong on the way to or from the engine; a
        run that is final already (its flow run crashed meanwhile) keeps its state."""
        state = states.Crashed(message=f"Task run {what}: {type(exc).__name__}: {exc}", data=exc)
        return finish_run(work.execution.flow_context, work.run_obj, state)

    def _fail_unpicklable(self, execution: TaskExecution, future: Future, error: NotPicklable) -> None:
        """Record the run Failed, finish its future, and raise ``error`` to submit()'s caller."""
        run = execution.task_run
        state = states.Failed(message=f"Task run could not be sent to {self.engine}: {error}", data=error)
        run.end_ts = state.ts
        transition(execution.flow_context, run, state)
        task_logger.error("%s", error, extra=task_extra(execution.context))
        future.set_state(state)
        future.observed = True  # raised to the caller of submit(): handled there
        raise error


class _UpstreamNotCompleted(Exception):
    def __init__(self, future: Future) -> None:
        super().__init__(future.task_run_name)
        self.future = future
