"""The task loop: one task run from ``Pending`` to its final state.

A task run goes ``Pending`` → (cache key) → ``Running`` | ``Cached`` → call →
``Completed`` | ``AwaitingRetry`` → ``Retrying`` → … | ``Failed``. Every transition is
recorded in the run store. :class:`TaskExecution` holds the steps (propose a state, let
the policy answer, record it); :func:`headwater.engine.attempts.task_attempts` strings
them into attempts; :func:`execute_sync` and :func:`execute_async` drive that with the
sync or async driver.

The flow loop lives in ``flow_loop.py``; how ``task(...)``, ``.submit`` and ``.map``
start task runs, in ``calls.py``, which creates them with ``task_creation.py``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

from .. import states
from ..errors import ConfigurationError, StoreError, TaskNestingError, TaskTimeout
from ..policy import (PolicyAnswerError, TaskRunContext, answering_policy, check_completed_answer,
                      check_failed_answer, check_result_key, check_running_answer, is_retry, policy_name)
from ..results import DEFAULT_SERIALIZER, RESULT_DIGEST, RESULT_SIZE, ResultNotPersisted, unpack_written
from ..reuse import inputs_hash
from ..run_logging import TASK_FINISHED, enable_log_prints, log_line, log_prints_var, task_extra, task_logger
from ..runs import TaskRun
from ..task_lines import FINISHED
from ..tracebacks import describe, for_log, logged_in
from .attempts import task_attempts
from .context import RUN_LOCKS, FlowRunContext, task_run_ctx
from .drivers import drive, drive_async
from .timeouts import call_in_thread, call_with_deadline, secs

if TYPE_CHECKING:
    from ..tasks import Task

_INFO = logging.INFO
_FINAL = states.FINAL_TYPES
_get_ident = threading.get_ident

def transition(flow_context: FlowRunContext, run: Any, state: states.State) -> None:
    """Make ``state`` the run's state: record it, then tell observers."""
    previous = run.state
    run.state = state
    _record(flow_context, run, previous, state)


def _record(flow_context: FlowRunContext, run: Any, previous: states.State | None,
            state: states.State) -> None:
    flow_context.store.record_state(run, state)
    changed = flow_context.bindings.state_changed
    if changed is not None:
        changed(run=run, previous=previous, state=state)


def finish_run(flow_context: FlowRunContext, run: Any, state: states.State) -> states.State:
    """Give ``run`` the ``state`` (a final one sets its end time), unless it has a final
    state already; return the state that won. Every path that ends a task run from a
    thread other than the one running it (a crashing flow run, a runner that lost a
    worker) uses this, so a run never records two final states."""
    # Check and set are one step under the run's lock: a crashing flow run ends its
    # unfinished task runs from another thread while workers may be moving them on.
    with flow_context.run_locks[hash(run.id) % RUN_LOCKS]:
        previous = run.state
        if previous is not None and previous.is_final():
            return previous
        run.state = state
        if state.is_final():
            # When it is recorded (not when the state was made): after every line that
            # explains it (an error is logged once its Failed state exists), before the
            # run's "Finished" line, which the store words at this time (task_lines).
            run.end_ts = max(state.ts, time.time())
    _record(flow_context, run, previous, state)  # outside the lock: observers may submit runs
    return state


class TaskExecution:
    """One task run from Pending to its final state: the steps of its attempts.

    It holds the run's :class:`~headwater.policy.TaskRunContext` (``context``: all a
    state policy or plugin sees of the run) beside what only the engine uses: the
    flow run's shared state, the policy, and the error that ended the run.
    """

    __slots__ = ("context", "task", "task_run", "flow_context", "policy", "error", "_tokens")

    def __init__(self, task: Task, run: TaskRun, flow_context: FlowRunContext,
                 parameters: dict[str, Any]) -> None:
        self.context = TaskRunContext(task, run, parameters, flow_context, flow_context.flow_run)
        self.task = task
        self.task_run = run
        self.flow_context = flow_context
        self.policy = flow_context.policy_for(task)
        self.error: BaseException | None = None

    @property
    def parameters(self) -> dict[str, Any]:
        """The run's arguments (held by its context; set once upstream futures resolve)."""
        return self.context.parameters

    @parameters.setter
    def parameters(self, value: dict[str, Any]) -> None:
        self.context.parameters = value

    @property
    def retries_done(self) -> int:
        return self.context.retries_done

    @property
    def nesting(self) -> int:
        return self.context.nesting

    # -- the run active while its attempts run (``with execution:``) ---------------------

    def __enter__(self) -> TaskExecution:
        """Make this the active task run (and its ``log_prints`` choice)."""
        token = task_run_ctx.set(self.context)
        wants_prints = self.task.spec.log_prints  # None: as the flow says
        if wants_prints is None:
            self._tokens = (token, None)  # the usual case
        else:
            if wants_prints:
                enable_log_prints()  # print goes through the run logger from now on (once per process)
            self._tokens = (token, log_prints_var.set(wants_prints))
        return self

    def __exit__(self, kind: Any, exc: BaseException | None, traceback: Any) -> bool:
        """An exception that escaped the attempts ends the run Crashed (``_escaped``); then
        the run is no longer the active one. The exception goes on."""
        try:
            if exc is not None:
                _escaped(self, exc)
        finally:
            token, prints = self._tokens
            if prints is not None:
                log_prints_var.reset(prints)
            task_run_ctx.reset(token)
            if self.context.nesting:
                self.flow_context.nested.pop(self.task_run.id, None)
        return False

    # -- the steps of an attempt (strung together by attempts.task_attempts) -------------

    def begin_attempt(self) -> states.State | None:
        """Propose Running. Return a final state to stop (cache hit, key failure), or
        ``AwaitingRetry`` when a failed cache key scheduled a retry."""
        run = self.task_run
        flow_context = self.flow_context
        if flow_context.crashed:  # never start a run once its flow run crashed
            ended = run.state
            if ended is not None and ended.is_final():
                return ended  # the crashing flow run ended it
            return finish_run(flow_context, run, states.Cancelled(
                message="The flow run crashed before this attempt of the task run started."))
        if self.policy.uses_cache and run.cache_key is None:
            try:
                self.compute_cache_key()
            except Exception as exc:
                # A retry scheduled after a failed key: hand the loop the AwaitingRetry
                # state so it waits and begins again (never calls the body without a key).
                final = self.failed(exc, before_call=True)
                return final if final is not None else run.state
        early = self.propose_running()
        if early is not None:
            return finish_run(flow_context, run, early)
        running = states.Retrying() if self.context.retries_done else states.Running()
        run.run_count += 1
        if run.start_ts is None:
            run.start_ts = running.ts
        won = finish_run(flow_context, run, running)
        return None if won is running else won

    def ended_by_flow(self) -> states.State | None:
        """The final state a crashing flow run gave this run (Cancelled, Crashed), if any."""
        if self.flow_context.crashed:
            state = self.task_run.state
            if state is not None and state.is_final():
                return state
        return None

    def compute_cache_key(self) -> None:
        """Ask the ``headwater_task_cache_key`` hook for the run's key (``cache_key``)."""
        make_key = self.flow_context.bindings.task_cache_key
        if make_key is None:
            return
        key = make_key(task=self.task, context=self.context, parameters=self.context.parameters)
        if key is not None:
            self.task_run.cache_key = key if isinstance(key, str) else str(key)

    def failed(self, exc: BaseException, before_call: bool = False) -> states.State | None:
        """Answer a failed attempt. Return the final state, or ``None`` to retry
        (after ``self.retry_delay`` seconds). An interrupt (not an ``Exception``) ends
        the run Crashed and is raised again."""
        run = self.task_run
        flow_context = self.flow_context
        if flow_context.unfinished:  # nested runs that could not end themselves
            end_unfinished(flow_context)
        ended = self.ended_by_flow()
        if ended is not None:
            return ended  # the crashing flow run ended it first: its state stays
        label = task_extra(self.context)
        if not isinstance(exc, Exception):
            crashed = states.Crashed(message=f"Execution was interrupted by {type(exc).__name__}.", data=exc)
            # the Finished line and on_crashed, before re-raising
            self.finish_logs(finish_run(flow_context, run, crashed))
            raise exc
        where = "cache key computation" if before_call else "execution"
        if isinstance(exc, TaskTimeout):
            state = states.TimedOut(message=str(exc), data=exc)
        else:
            state = states.Failed(message=f"Task run encountered an exception during {where}: "
                                          f"{describe(exc)}", data=exc)
        logged = logged_in(exc)
        if logged is None:
            task_logger.error("Encountered exception during %s:", where,
                              exc_info=for_log(exc, label["run_label"]), extra=label)
        else:  # one traceback per failure: the (nested) run that raised it logged it already
            task_logger.error("Encountered exception during %s: %s (raised in %s; its "
                              "traceback is logged there)", where, describe(exc), logged, extra=label)
        answer = state if isinstance(exc, TaskNestingError) else self._answer_to_failure(exc, state)
        if is_retry(answer):
            won = finish_run(flow_context, run, answer)
            if won is not answer:
                return won
            self.context.retries_done += 1
            delay = self.retry_delay(answer)
            if task_logger.isEnabledFor(_INFO):
                task_logger.info("Retry %s will start %s second(s) from now",
                                 retry_count(self.context.retries_done, self.task.spec.retries), secs(delay),
                                 extra=label)
            return None
        self.error = exc
        return finish_run(flow_context, run, answer)

    def _answer_to_failure(self, exc: BaseException, state: states.State) -> states.State:
        """The policy's checked answer to a failed attempt. A nesting error is not asked
        about: it is deterministic, and retrying (at every level) would only repeat it."""
        try:
            answer = self.policy.propose_failed(self.context, exc, state)
        except Exception as policy_exc:
            task_logger.error("Retry policy failed:", exc_info=policy_exc, extra=task_extra(self.context))
            return states.Failed(message=f"The retry policy of task {self.task.name!r} raised "
                                         f"{type(policy_exc).__name__}: {policy_exc}", data=policy_exc)
        try:
            answer = check_failed_answer(self.policy, answer, self._subject())
        except PolicyAnswerError as error:
            return self._refused(error, exc)
        if answer.type is states.StateType.COMPLETED:
            task_logger.warning("State policy %s answered the failed attempt with %s: the run is "
                                "recorded as completed", policy_name(answering_policy(self.policy, "propose_failed")), answer,
                                extra=task_extra(self.context))
        return answer

    def retry_delay(self, awaiting: states.State) -> float:
        """Seconds from now until ``awaiting``'s scheduled time (0: at once)."""
        scheduled = awaiting.state_details.scheduled_time
        if scheduled is None:
            return 0.0
        return max(0.0, scheduled.timestamp() - time.time())

    def completed(self, value: Any) -> states.State:
        """Answer a successful attempt: persist the result if asked, let the policy
        answer, end the run. Returns the final state."""
        flow_context = self.flow_context
        if flow_context.unfinished:  # nested runs that could not end themselves
            end_unfinished(flow_context)
        ended = self.ended_by_flow()
        if ended is not None:
            return ended  # finished in the background after its flow run crashed
        if isinstance(value, states.State):  # a task may return a state of its own making
            if value.type not in _FINAL:  # ... but a final one: an open run would look alive
                message = (f"Task {self.task.name!r} returned the state {value}, which does not end "
                           f"a run; expected a final state (Completed, Failed, ...) or a value")
                error = ConfigurationError(message)
                self.error = error
                task_logger.error("%s", message, extra=task_extra(self.context))
                value = states.Failed(message=message, data=error)
            return finish_run(flow_context, self.task_run, value)
        # Persisted under the policy's result_key (if any), then answered by the policy.
        policy = self.policy
        key = policy.result_key(self.context)
        if key is not None:
            failure = self._persist(key, value)
            if failure is not None:
                return finish_run(flow_context, self.task_run, failure)
        answer = policy.propose_completed(self.context, states.Completed(data=value))
        if not (isinstance(answer, states.State) and answer.type in _FINAL):
            try:
                answer = check_completed_answer(policy, answer, self._subject())
            except PolicyAnswerError as error:
                answer = self._refused(error)
        return finish_run(flow_context, self.task_run, answer)

    def persist_if_wanted(self, value: Any) -> states.State | None:
        """Persist ``value`` under the policy's ``result_key``, if any. Returns a Failed
        state when the storage is unusable (``None`` otherwise)."""
        key = self.policy.result_key(self.context)
        return self._persist(key, value) if key is not None else None

    # -- the policy's answers ---------------------------------------------------------------

    def propose_running(self) -> states.State | None:
        """The policy's answer before an attempt: None to run it, or a final state (a
        cache hit); any other answer is a Failed state naming the policy."""
        early = self.policy.propose_running(self.context)
        if early is None:
            return None
        if isinstance(early, states.State) and early.type in _FINAL:
            run = self.task_run
            if run.result_location is not None and run.inputs_hash is None and early.is_completed():
                # A cache hit's result is kept too: a retried flow run may reuse this run.
                run.inputs_hash = inputs_hash(self.context.parameters, self.task)
            return early
        try:
            return check_running_answer(self.policy, early, self._subject())
        except PolicyAnswerError as error:
            return self._refused(error)

    def _subject(self) -> str:
        return f"task run {self.task_run.name!r}"

    def _refused(self, error: PolicyAnswerError, exc: BaseException | None = None) -> states.State:
        """The Failed state that ends a run whose policy answered what the engine cannot
        act on: a run left Scheduled or Running would look alive forever, and ``None`` as a
        result would pass a failure off as a success."""
        message = str(error)
        if exc is not None:
            message += f" (the attempt failed with {describe(exc)})"
            error = PolicyAnswerError(message)
            error.__cause__ = exc
        self.error = error
        task_logger.error("%s", message, extra=task_extra(self.context))
        return states.Failed(message=message, data=error)

    def crash(self, exc: BaseException) -> states.State:
        """End the run Crashed by ``exc`` (an error outside the body, or an interrupt) and
        return its final state; a run that is final already keeps its state."""
        run = self.task_run
        if run.state is not None and run.state.is_final():
            return run.state
        state = states.Crashed(message=f"Task run crashed: {describe(exc)}", data=exc)
        if isinstance(exc, Exception):
            task_logger.error("Crashed:", exc_info=exc, extra=task_extra(self.context))
        return finish_run(self.flow_context, run, state)

    def _persist(self, key: str, value: Any) -> states.State | None:
        """Write ``value`` under ``key``; a Failed state when the storage is unusable or
        the key is not one (the policy's ``result_key`` answered, say, a number)."""
        if type(key) is not str or not key:
            try:
                check_result_key(self.policy, key, self._subject())
            except PolicyAnswerError as error:
                return self._refused(error)
        run = self.task_run
        serializer = self.task.spec.result_serializer or DEFAULT_SERIALIZER
        try:
            run.result_location, size, digest = unpack_written(
                self.flow_context.result_store.write(key, value, serializer))
            # What a retried flow run matches this run by (headwater.reuse): only a run
            # whose result is kept can be reused, so only such a run pays for the hash.
            run.inputs_hash = inputs_hash(self.context.parameters, self.task)
            run.stash[RESULT_SIZE] = size  # for the cache index (`headwater cache ls`)
            if digest is not None:  # recorded in the cache entry, checked on every hit
                run.stash[RESULT_DIGEST] = digest
        except ResultNotPersisted as exc:
            task_logger.warning("Result of type %s was not persisted (so not cached): %s",
                                type(value).__name__, exc, extra=task_extra(self.context))
        except (StoreError, ConfigurationError) as exc:
            # Unusable storage or an unknown serializer is a setup mistake, not a flaky
            # attempt: fail now, with the error naming the setting, no retries.
            task_logger.error("Could not persist the result: %s", exc, extra=task_extra(self.context))
            self.error = exc
            return states.Failed(message=f"Task run could not persist its result: {exc}", data=exc)
        return None

    def result_size_and_digest(self) -> tuple[int | None, str | None]:
        """Size and digest of the result this run persisted (for its cache entry)."""
        stash = self.task_run.stash
        return stash.get(RESULT_SIZE, None), stash.get(RESULT_DIGEST, None)

    def finish_logs(self, state: states.State) -> None:
        """The run's "Finished in state" line, then its state callbacks."""
        run = self.task_run
        state.note_ended_run(run.flow_run_id, run.id)  # the final state tells which run it ended
        if task_logger.isEnabledFor(_INFO):
            log_line(task_logger, _INFO, FINISHED, (state,), task_extra(self.context),
                     TASK_FINISHED, state)
        callbacks = callbacks_for(self.task.spec, state)
        if callbacks:
            run_callbacks(callbacks, self.task, run, state, task_logger, task_extra(self.context))

    def run_callbacks(self, state: states.State) -> None:
        """Mark ``state`` as this run's end, then run the task's callbacks for it."""
        run = self.task_run
        state.note_ended_run(run.flow_run_id, run.id)  # the final state tells which run it ended
        callbacks = callbacks_for(self.task.spec, state)
        if callbacks:
            run_callbacks(callbacks, self.task, run, state, task_logger, task_extra(self.context))

    # -- calling the body ---------------------------------------------------------------------

    def call(self) -> Any:
        """Call the task's function once (through ``headwater_task_run_call`` if bound)."""
        task = self.task
        args, kwargs = task.binder.call_args(self.context.parameters)
        fn = task.fn
        wrapped = self.flow_context.bindings.task_run_call
        if wrapped is not None:
            self.task_run.set_body(lambda: fn(*args, **kwargs))
            return wrapped(task_run=self.task_run)
        return fn(*args, **kwargs)

    def call_with_timeout(self) -> Any:
        """:meth:`call`, in a thread given up after the policy's timeout (if any)."""
        timeout = self.policy.timeout_seconds
        if timeout is None:
            return self.call()
        return call_in_thread(self.call, timeout, f"Task run {self.task_run.name!r}")

    async def call_async(self) -> Any:
        """Await an async task's call once, within the policy's timeout (if any)."""
        timeout = self.policy.timeout_seconds
        if timeout is None:
            return await self.call()
        return await call_with_deadline(self.call, timeout, f"Task run {self.task_run.name!r}")


def retry_count(done: int, allowed: int) -> str:
    """``"2/3"`` for the log's retry line; ``"4"`` when a policy retries beyond the
    option's count (a count over its total would read as a mistake)."""
    return f"{done}/{allowed}" if done <= allowed else str(done)


def callbacks_for(spec: Any, state: states.State) -> list[Callable[..., Any]]:
    """The ``on_completion``/``on_failure``/``on_crashed``/``on_cancellation`` callbacks
    for ``state``."""
    if state.type is states.StateType.COMPLETED:
        return spec.on_completion
    if state.type is states.StateType.FAILED:
        return spec.on_failure
    if state.type is states.StateType.CRASHED:
        return spec.on_crashed
    if state.type is states.StateType.CANCELLED:
        return spec.on_cancellation
    return []


def run_callbacks(callbacks: list[Callable[..., Any]], owner: Any, run: Any, state: states.State,
                  logger: logging.Logger, extra: dict[str, Any]) -> None:
    """Call each ``callback(owner, run, state)``; one that raises is logged, and the
    run's outcome stays as it is."""
    for callback in callbacks:
        try:
            callback(owner, run, state)
        except Exception as exc:  # a callback must not change the run's outcome
            logger.error("State callback %r raised %s: %s", getattr(callback, "__name__", callback),
                         type(exc).__name__, exc, exc_info=exc, extra=extra)


# -- driving the attempts -----------------------------------------------------------------


def _escaped(execution: TaskExecution, exc: BaseException) -> None:
    """An exception escaped the attempts (the engine, the store or a policy failed, or
    an interrupt): end the run Crashed, unless it is final already, so no caller (a
    direct call, a worker, a remote one) leaves it Running in the history."""
    # Noted first (one append, the cheapest step): with Python's recursion limit reached
    # the calls below fail too, and an enclosing run (with stack to spare) ends it from
    # this note.
    execution.flow_context.unfinished.append((execution, exc, _get_ident()))
    try:
        execution.crash(exc)
    except Exception as record_exc:  # the store failing again: the first error matters more
        task_logger.error("Could not record the crash of %s: %s: %s", execution.task_run.name,
                          type(record_exc).__name__, record_exc, extra=task_extra(execution.context))


def execute_sync(execution: TaskExecution) -> states.State:
    """Run the attempts of one task run in this thread; return its final state."""
    with execution:
        final = drive(task_attempts(execution), execution.call_with_timeout)
    execution.finish_logs(final)
    return final


async def execute_async(execution: TaskExecution) -> states.State:
    """Run the attempts of one async task run on this event loop; return its final state."""
    with execution:
        final = await drive_async(task_attempts(execution), execution.call_async)
    execution.finish_logs(final)
    return final


# -- runs that could not end themselves ---------------------------------------------------


def end_unfinished(flow_context: FlowRunContext, every_thread: bool = False) -> None:
    """End the runs that could not record their own end (this thread hit Python's
    recursion limit while recording it): called on the way out by an enclosing task run
    in the same thread, or by the flow run (``every_thread``: its tasks are done), which
    have stack to spare. Runs that are final by now are only dropped."""
    me = _get_ident()
    for entry in list(flow_context.unfinished):
        execution, exc, thread = entry
        if thread != me and not every_thread:
            continue  # its own thread may be ending it right now
        state = execution.task_run.state
        if state is None or (state.is_pending() and not state.has_ended()):
            never_started(execution, exc)
        elif not state.has_ended():
            kind = states.Failed if isinstance(exc, Exception) else states.Crashed
            execution.finish_logs(finish_run(flow_context, execution.task_run, kind(
                message=f"Task run encountered an exception during execution: {describe(exc)}", data=exc)))
        try:
            flow_context.unfinished.remove(entry)
        except ValueError:  # another caller (the flow run) took it meanwhile
            pass


def never_started(execution: TaskExecution, exc: BaseException) -> None:
    """End a run that ``exc`` (an interrupt, a failing store) stopped before its attempt
    loop began: ``Cancelled``, unless it is final already, so no created run is left
    without a final state."""
    current = execution.task_run.state
    if current is not None and (not current.is_pending() or current.has_ended()):
        return  # started or ended (NotReady stays): the attempt loop, or end_unfinished, ends it
    state = states.Cancelled(message=f"The task run was stopped by {describe(exc)} before it started.",
                             data=exc)
    try:
        finish_run(execution.flow_context, execution.task_run, state)
    except Exception:  # noqa: S110 - the store failing again: the first error is raised
        pass
