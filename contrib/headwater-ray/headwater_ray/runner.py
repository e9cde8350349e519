"""RayTaskRunner: run a flow's submitted task runs as Ray remote functions.

The flow process stays the only writer of the run store. For each submitted run it
answers cache hits itself, then sends the run to Ray with the task (put in Ray's object
store once per flow run); the worker runs the attempt loop (retries, timeouts) and
returns one package, which the flow process records (``headwater.remote``). Futures in
arguments become the object refs of their runs, which Ray resolves on the worker: the
upstream result goes from worker to worker, and Ray orders the work.

A run given ``allow_failure(...)`` or ``quote(...)`` is the exception: it waits in the flow
process for its upstream runs and leaves with plain values (see ``_dispatch_unwrapped``).

Outcomes are recorded by one thread of the runner's own, fed by Ray's completion
callbacks (which must not block Ray's own threads with store writes).
"""

from __future__ import annotations

import logging
import pickle
import queue
import threading
from typing import Any, Callable

from headwater import states
from headwater.errors import ConfigurationError
from headwater.main_guard import check_main_guard
from headwater.remote import (
    FlowRunContext,
    Future,
    NotPicklable,
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
from headwater.run_logging import flow_extra, flow_logger, task_extra, task_logger
from headwater.task_runners import TaskRunner

from .connection import Connection, RayRunnerError, check_init_kwargs, connect, disconnect, host_and_port
from .pickling import describe_task, dumps_by_value, dumps_run, dumps_task
from .tracebacks import restore_file_names

__all__ = ["RayTaskRunner", "RayRunnerError"]

_STOP = object()


class RayTaskRunner(TaskRunner):
    """Runs submitted task runs as Ray remote functions.

    ``address``: a running cluster (``"ray://head:10001"``, ``"head:6379"`` or
    ``"auto"``); the runner connects and never shuts that cluster down. Without it (and
    without ``HEADWATER_RAY_ADDRESS`` or ``RAY_ADDRESS``) the runner starts a local Ray for
    the flow run (``num_cpus`` from ``init_kwargs``, default at most 4) and stops it when
    the flow run ends. ``init_kwargs`` go to ``ray.init``.
    """

    handles_dependencies = True

    def __init__(self, address: str | None = None, init_kwargs: dict[str, Any] | None = None) -> None:
        if address is not None and (not isinstance(address, str) or not address):
            raise ConfigurationError(f"RayTaskRunner(address={address!r}): expected a cluster address "
                                     f"such as 'ray://127.0.0.1:10001' or 'auto'")
        if address is not None and address != "auto":
            host_and_port(address)  # a malformed address is an error here, not at flow start
        self.address = address
        self.init_kwargs = check_init_kwargs(address, init_kwargs)
        self._reset()

    def _reset(self) -> None:
        self._connection: Connection | None = None
        self._remote: Any = None
        self._context: FlowRunContext | None = None
        self._lock = threading.Lock()
        self._inflight: dict[str, Any] = {}  # task run id -> Ray object ref, until recorded
        self._tasks: dict[int, tuple[str, Any, Any, Any]] = {}  # id(task) -> token, ref, remote, task
        self._done: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._recorder: threading.Thread | None = None

    def duplicate(self) -> RayTaskRunner:
        return RayTaskRunner(self.address, self.init_kwargs or None)

    def __reduce__(self) -> tuple[Any, ...]:
        # A template pickles as its options, never its connection (per flow run), so a
        # flow's runner can go to another process (a script the conformance suite starts).
        return RayTaskRunner, (self.address, self.init_kwargs or None)

    def __repr__(self) -> str:
        if self.address:
            return f"RayTaskRunner(address={self.address!r})"
        return f"RayTaskRunner(init_kwargs={self.init_kwargs!r})"

    @property
    def where(self) -> str:
        """The cluster in messages: its address."""
        connection = self._connection
        if connection is None:
            return repr(self.address) if self.address else "a local Ray"
        return f"{'the local Ray at ' if connection.local else ''}{connection.address!r}"

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, context: FlowRunContext | None = None) -> None:
        import ray

        from headwater_ray.worker import run_task

        self._context = context
        # Ray's workers never import the script, so a script without a main guard works;
        # but a process that imports it again (multiprocessing's spawn) starts no Ray.
        check_main_guard(context.flow_run.flow_name if context and context.flow_run else "?", None)
        self._connection = connect(self.address, self.init_kwargs)
        # Ray would run a task again when its worker dies; headwater's retries are the
        # task's own, so a lost worker ends the run Crashed instead.
        self._remote = ray.remote(max_retries=0)(run_task)
        self._recorder = threading.Thread(target=self._record_loop, name="headwater-ray-recorder", daemon=True)
        self._recorder.start()
        if context is not None and context.flow_run is not None and flow_logger.isEnabledFor(logging.INFO):
            kind = "local Ray started for this flow run" if self._connection.local else "Ray cluster"
            flow_logger.info("%s at %s", kind, self._connection.address, extra=flow_extra(context))

    def shutdown(self, wait: bool = True) -> None:
        connection, recorder = self._connection, self._recorder
        self._connection = self._recorder = None
        with self._lock:
            inflight = list(self._inflight.values())
            self._tasks.clear()
        try:
            if not wait and connection is not None and inflight:
                import ray

                for ref in inflight:
                    try:
                        ray.cancel(ref)
                    except Exception:
                        pass
        finally:
            if recorder is not None:
                self._done.put(_STOP)
                if wait:
                    recorder.join()
            if connection is not None:
                disconnect(connection)

    # -- submitting -------------------------------------------------------------------------

    def submit(self, work: Work) -> None:
        # Claimed here, so a waiter never runs the task in the flow process instead.
        if not work.claim():
            return
        try:
            if self._context is None or self._connection is None:
                raise RayRunnerError("RayTaskRunner.submit() before start(): the flow run starts it")
            self._dispatch(work, work.execution)
        except NotPicklable:
            raise
        except BaseException as exc:
            if not work.future.done():
                self._settle(work, _crashed(work, exc, "could not be sent to Ray"))
            raise

    def _check_open(self, work: Work) -> None:
        if self._connection is None:
            raise RayRunnerError(f"the flow run's Ray connection is closed; task run "
                                 f"{work.run_obj.name!r} was not sent")

    def _dispatch(self, work: Work, execution: TaskExecution) -> None:
        """Send ``work`` to Ray, or settle it here, or arrange to come back when it can go."""
        self._check_open(work)
        if work.tolerated is not None:  # allow_failure / quote among the arguments: rare
            self._dispatch_unwrapped(work, execution)
            return
        run = work.run_obj
        upstream = work.upstream
        uses_cache = execution.policy.uses_cache
        with self._lock:
            # A cached task needs its inputs here, to look up its key; other runs wait here
            # only on runs that are not on Ray yet (themselves waiting for a cache lookup).
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
                ref = self._inflight.get(future.task_run_id)
            if ref is None:  # finished (and recorded) since: its value is here
                if not future.state.is_completed():
                    raise _UpstreamNotCompleted(future)
                return future.result()
            if future.task_run_id not in index:
                index[future.task_run_id] = len(deps)
                deps.append(ref)
            return UpstreamRef(index[future.task_run_id])

        try:
            parameters = {k: replace_futures(v, swap) for k, v in run.parameters.items()}
        except _UpstreamNotCompleted as failed_upstream:
            self._settle(work, not_ready(execution, failed_upstream.future))
            return
        for future in upstream:  # wait_for=[...]: ordering without data
            if future.task_run_id not in index:
                with self._lock:
                    ref = self._inflight.get(future.task_run_id)
                if ref is not None:
                    index[future.task_run_id] = len(deps)
                    deps.append(ref)
                elif not future.state.is_completed():
                    self._settle(work, not_ready(execution, future))
                    return
        self._send(work, execution, parameters, deps)

    def _dispatch_unwrapped(self, work: Work, execution: TaskExecution) -> None:
        """Dispatch a run whose arguments hold ``allow_failure`` or ``quote``: it waits here
        for its upstream runs, then goes with the arguments its function receives, as
        plain values (``headwater.remote.resolve_arguments``)."""
        pending = [f for f in work.upstream if not f.done()]
        if pending:
            # The recorder thread finishes them: never block it, come back instead.
            when_all_done(pending, lambda: self._redispatch(work, execution))
            return
        stopped = resolve_arguments(work)
        if stopped is not None:
            self._settle(work, stopped)
            return
        self._send_plain(work, execution)

    def _send_plain(self, work: Work, execution: TaskExecution) -> None:
        """Send a run whose parameters are already plain values. Also where a retried
        cache key function comes back to: resolving the arguments again would read
        quoted futures as if they were plain ones."""
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
            _fail_unpicklable(execution, work.future, NotPicklable(
                f"task {work.task.name!r} was given quote(...) around the future of task run "
                f"{quoted[0].task_run_name!r}: a future cannot be sent to a Ray worker, only "
                f"its result. Pass the future without quote(...) to receive its result, or "
                f"run this task with a local task runner"))
        self._send(work, execution, parameters, [])

    def _send(self, work: Work, execution: TaskExecution, parameters: dict[str, Any], deps: list[Any]) -> None:
        """Pickle the run and call the remote function; ``deps`` are the object refs of
        the upstream runs its ``UpstreamRef`` placeholders point at, in their order."""
        run = work.run_obj
        try:
            token, task_ref, remote = self._task_entry(execution)
            run_blob = dumps_run(work.task, run.name, detach(execution, parameters))
        except NotPicklable as error:
            _fail_unpicklable(execution, work.future, error)
        # Not under the lock: the call takes a while, and the recorder thread needs it.
        ref = remote.remote(token, task_ref, run_blob, *deps)
        with self._lock:
            self._inflight[run.id] = ref
        # Only now: the run leaves _inflight when recorded, so it must be in it first.
        ref.future().add_done_callback(lambda done: self._done.put((work, execution, done)))

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
                self._settle(work, _crashed(work, exc, "could not be sent to Ray"))

    def _task_entry(self, execution: TaskExecution) -> tuple[str, Any, Any]:
        """The task's token, its object ref in Ray's store and its remote function: made
        once per task and flow run, so each run carries only its own arguments."""
        import ray

        task = execution.task
        cached = self._tasks.get(id(task))
        if cached is None:
            flow_run = execution.flow_context.flow_run
            token = f"{flow_run.id if flow_run else ''}:{id(task)}"
            facts = flow_facts(execution.flow_context)
            try:
                dumps_by_value(facts, task)
            except Exception:  # the flow's own parameters are a convenience on workers
                facts = {**facts, "parameters": {}}
            blob = dumps_task((task, execution.policy, facts), task, lambda: describe_task(task))
            # Named after the task, so Ray's dashboard and errors say which task it is.
            remote = self._remote.options(name=task.name)
            cached = (token, ray.put(blob), remote, task)  # the task is kept so its id stays unique
            self._tasks[id(task)] = cached
        return cached[0], cached[1], cached[2]

    # -- results ----------------------------------------------------------------------------

    def _record_loop(self) -> None:
        """The runner's recorder thread: record each outcome as Ray hands it over."""
        while True:
            item = self._done.get()
            if item is _STOP:
                return
            self._on_done(*item)

    def _on_done(self, work: Work, execution: TaskExecution, done: Any) -> None:
        """Record the outcome, then finish the future."""
        from headwater_ray.worker import NOT_READY

        run = work.run_obj
        try:
            error = done.exception()
            if error is None:
                blob = done.result()
                if blob == NOT_READY:
                    self._not_ready_when_recorded(work, execution)
                    return
                outcome = pickle.loads(blob)
                restore_file_names(outcome.final.data, work.task)
                final = record_outcome(execution, outcome)
            elif run.state is not None and run.state.is_final():
                final = run.state  # cancelled with a crashed flow run, which recorded it
            else:
                # An upstream run inside allow_failure may have failed: that is not why
                # this one was lost (such a run had no Ray dependencies).
                tolerated = work.tolerated or ()
                failed = next((f for f in work.upstream if f not in tolerated and f.done()
                               and not f.state.is_completed()), None)
                if failed is not None:
                    final = not_ready(execution, failed)
                else:
                    final = _crashed(work, error, f"was lost by Ray (cluster at {self.where})")
        except BaseException as exc:
            final = _crashed(work, exc, "could not be recorded")
        self._settle(work, final)

    def _not_ready_when_recorded(self, work: Work, execution: TaskExecution) -> None:
        # An upstream run did not complete, but its outcome may still be waiting in this
        # very recorder thread: never block here, settle once every upstream is recorded.
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


class _UpstreamNotCompleted(Exception):
    def __init__(self, future: Future) -> None:
        super().__init__(future.task_run_name)
        self.future = future


def _crashed(work: Work, exc: BaseException, what: str) -> states.State:
    """End the run Crashed, saying what went wrong on the way to or from Ray; a run that
    is final already (its flow run crashed meanwhile) keeps its state."""
    state = states.Crashed(message=f"Task run {what}: {type(exc).__name__}: {exc}", data=exc)
    return finish_run(work.execution.flow_context, work.run_obj, state)


def _fail_unpicklable(execution: TaskExecution, future: Future, error: NotPicklable) -> None:
    """Record the run Failed, finish its future, and raise ``error`` to submit()'s caller."""
    run = execution.task_run
    state = states.Failed(message=f"Task run could not be sent to Ray: {error}", data=error)
    run.end_ts = state.ts
    transition(execution.flow_context, run, state)
    task_logger.error("%s", error, extra=task_extra(execution.context))
    future.set_state(state)
    future.observed = True  # raised to the caller of submit(): handled there
    raise error
