"""The run loop for tasks: propose a state, let the policy answer, record it, repeat.

A task run goes ``Pending`` → (cache key) → ``Running`` | ``Cached`` → call →
``Completed`` | ``AwaitingRetry`` → ``Retrying`` → … | ``Failed``. Every transition is
recorded in the run store. The sync and async loops differ only in how they call
the body and sleep; the decisions are shared methods of :class:`TaskExecution`.

The flow loop lives in ``flow_engine.py``; how ``task(...)``, ``.submit`` and ``.map``
start task runs, in ``task_calls.py``, which creates them with ``task_creation.py``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

from . import states as S
from .context import _RUN_LOCKS, FlowRunContext, TaskRunContext, task_run_ctx
from .errors import ConfigurationError, StoreError, TaskNestingError, TaskTimeout
from .results import DEFAULT_SERIALIZER, RESULT_DIGEST, RESULT_SIZE, ResultNotPersisted, unpack_written
from .run_logging import log_line, log_prints_var, task_extra, task_logger
from .runs import TaskRun
from .timeouts import call_in_thread, call_with_deadline, secs as _secs
from .tracebacks import describe, for_log, logged_in

if TYPE_CHECKING:
    from .tasks import Task

_INFO = logging.INFO
_FINAL = S.FINAL_TYPES
_get_ident = threading.get_ident

#: How deep task runs may nest (a task calling a task calling a task ...), counted from
#: the flow run (or the outermost task run): a task that calls itself without end then
#: fails with one clear error long before Python's recursion limit, which would strike
#: inside the engine while it records the runs.
MAX_TASK_NESTING = 50


def transition(fctx: FlowRunContext, run: Any, state: S.State) -> None:
    """Make ``state`` the run's state: record it, then tell observers."""
    previous = run.state
    run.state = state
    _record(fctx, run, previous, state)


def _record(fctx: FlowRunContext, run: Any, previous: S.State | None, state: S.State) -> None:
    fctx.store.record_state(run, state)
    changed = fctx.bindings.state_changed
    if changed is not None:
        changed(run=run, previous=previous, state=state)


def _transition_unless_final(fctx: FlowRunContext, run: Any, state: S.State) -> S.State:
    # Check and set are one step under the run's lock: a crashing flow run ends its
    # unfinished task runs from another thread while workers may be moving them on.
    with fctx._run_locks[hash(run.id) % _RUN_LOCKS]:
        previous = run.state
        if previous is not None and previous.is_final():
            return previous
        run.state = state
        if state.is_final():
            run.end_ts = state.ts
    _record(fctx, run, previous, state)  # outside the lock: observers may submit runs
    return state


def finish_run(fctx: FlowRunContext, run: Any, state: S.State) -> S.State:
    """Give ``run`` the final ``state`` (and its end time), unless it has a final state
    already; return the state that won. Every path that ends a task run from a thread
    other than the one running it (a crashing flow run, a runner that lost a worker)
    uses this, so a run never records two final states."""
    return _transition_unless_final(fctx, run, state)


class TaskExecution(TaskRunContext):
    """One task run from Pending to its final state (and the context plugins see)."""

    __slots__ = ("policy", "error")

    def __init__(self, task: Task, run: TaskRun, fctx: FlowRunContext, parameters: dict[str, Any]) -> None:
        super().__init__(task, run, fctx, parameters)
        self.policy = fctx.policy_for(task)
        self.error: BaseException | None = None

    # -- the decisions, shared by the sync and async loops ------------------------------

    def begin_attempt(self) -> S.State | None:
        """Propose Running. Return a final state to stop (cache hit, key failure)."""
        run = self.task_run
        fctx = self.flow_context
        if fctx.crashed:  # never start a run once its flow run crashed
            ended = run.state
            if ended is not None and ended.is_final():
                return ended  # the crashing flow run ended it
            return finish_run(fctx, run, S.Cancelled(
                message="The flow run crashed before this attempt of the task run started."))
        policy = self.policy
        if policy.uses_cache and run.cache_key is None:
            try:
                self._compute_cache_key()
            except Exception as exc:
                # A retry scheduled after a failed key: hand the loop the AwaitingRetry
                # state so it waits and begins again (never calls the body without a key).
                final = self.failed(exc, before_call=True)
                return final if final is not None else run.state
        early = self.propose_running()
        if early is not None:
            return finish_run(self.flow_context, run, early)
        running = S.Retrying() if self.retries_done else S.Running()
        run.run_count += 1
        if run.start_ts is None:
            run.start_ts = running.ts
        won = _transition_unless_final(self.flow_context, run, running)
        return None if won is running else won

    def ended_by_flow(self) -> S.State | None:
        """The final state a crashing flow run gave this run (Cancelled, Crashed), if any."""
        if self.flow_context.crashed:
            state = self.task_run.state
            if state is not None and state.is_final():
                return state
        return None

    def _compute_cache_key(self) -> None:
        make_key = self.flow_context.bindings.task_cache_key
        if make_key is None:
            return
        key = make_key(task=self.task, context=self, parameters=self.parameters)
        if key is not None:
            self.task_run.cache_key = key if isinstance(key, str) else str(key)

    def failed(self, exc: BaseException, before_call: bool = False) -> S.State | None:
        """Answer a failed attempt. Return the final state, or ``None`` to retry
        (after ``self.retry_delay`` seconds)."""
        run = self.task_run
        if self.flow_context.unfinished:  # nested runs that could not end themselves
            end_unfinished(self.flow_context)
        ended = self.ended_by_flow()
        if ended is not None:
            return ended  # the crashing flow run ended it first: its state stays
        label = task_extra(self)
        if not isinstance(exc, Exception):
            crashed = S.Crashed(message=f"Execution was interrupted by {type(exc).__name__}.", data=exc)
            # the Finished line and on_crashed, before re-raising
            self.finish_logs(finish_run(self.flow_context, run, crashed))
            raise exc
        where = "cache key computation" if before_call else "execution"
        if isinstance(exc, TaskTimeout):
            state = S.TimedOut(message=str(exc), data=exc)
        else:
            state = S.Failed(message=f"Task run encountered an exception during {where}: "
                                     f"{describe(exc)}", data=exc)
        logged = logged_in(exc)
        if logged is None:
            task_logger.error("Encountered exception during %s:", where,
                              exc_info=for_log(exc, label["run_label"]), extra=label)
        else:  # one traceback per failure: the (nested) run that raised it logged it already
            task_logger.error("Encountered exception during %s: %s (raised in %s; its "
                              "traceback is logged there)", where, describe(exc), logged, extra=label)
        if isinstance(exc, TaskNestingError):
            # Deterministic: retrying (at every level of the nesting) would only repeat it.
            answer = state
        else:
            try:
                answer = self.policy.propose_failed(self, exc, state)
            except Exception as policy_exc:
                answer = S.Failed(message=f"The retry policy of task {self.task.name!r} raised "
                                          f"{type(policy_exc).__name__}: {policy_exc}", data=policy_exc)
                task_logger.error("Retry policy failed:", exc_info=policy_exc, extra=label)
            else:
                answer = self._checked_failed_answer(answer, exc)
        if answer.type is S.StateType.SCHEDULED:
            won = _transition_unless_final(self.flow_context, run, answer)
            if won is not answer:
                return won
            self.retries_done += 1
            delay = self.retry_delay(answer)
            if task_logger.isEnabledFor(_INFO):
                task_logger.info("Retry %d/%d will start %s second(s) from now", self.retries_done,
                                 self.task.spec.retries, _secs(delay), extra=label)
            return None
        self.error = exc
        return finish_run(self.flow_context, run, answer)

    def retry_delay(self, awaiting: S.State) -> float:
        scheduled = awaiting.state_details.scheduled_time
        if scheduled is None:
            return 0.0
        return max(0.0, scheduled.timestamp() - time.time())

    def completed(self, value: Any) -> S.State:
        run = self.task_run
        if self.flow_context.unfinished:  # nested runs that could not end themselves
            end_unfinished(self.flow_context)
        ended = self.ended_by_flow()
        if ended is not None:
            return ended  # finished in the background after its flow run crashed
        if isinstance(value, S.State):  # a task may return a state of its own making
            state = value
        else:
            state = S.Completed(data=value)
            try:
                if run.cache_key is not None or self.persists():
                    self._persist(value)
            except (StoreError, ConfigurationError) as exc:
                # Unusable storage or an unknown serializer is a setup mistake, not a
                # flaky attempt: fail now, with the error naming the setting, no retries.
                task_logger.error("Could not persist the result: %s", exc, extra=task_extra(self))
                state = S.Failed(message=f"Task run could not persist its result: {exc}", data=exc)
                self.error = exc
            else:
                answer = self.policy.propose_completed(self, state)
                state = answer if isinstance(answer, S.State) and answer.type in _FINAL else \
                    self._bad_answer("propose_completed", answer, "a final state (the proposed "
                                     "Completed, or Failed to reject the result)")
        return finish_run(self.flow_context, run, state)

    # -- checking the policy's answers ----------------------------------------------------------

    def propose_running(self) -> S.State | None:
        """The policy's answer before an attempt: None to run it, or a final state (a
        cache hit); any other answer is a Failed state naming the policy."""
        early = self.policy.propose_running(self)
        if early is not None and (not isinstance(early, S.State) or early.type not in _FINAL):
            early = self._bad_answer("propose_running", early, "None (to run the attempt) "
                                     "or a final state such as Cached")
        return early

    def _checked_failed_answer(self, answer: Any, exc: BaseException) -> S.State:
        """``answer`` to a failed attempt if the engine can act on it, else a Failed state
        naming the policy. A retry is an answer of type SCHEDULED that says when: an
        ``AwaitingRetry`` (without a ``scheduled_time``: at once) or any SCHEDULED state
        with a ``scheduled_time``. A final state ends the run as it is (``Completed``
        included: a policy may accept a failure, and the run is logged as such)."""
        if isinstance(answer, S.State):
            kind = answer.type
            if kind is S.StateType.SCHEDULED:
                if answer.name == "AwaitingRetry" or answer.state_details.scheduled_time is not None:
                    return answer
            elif kind in S.FINAL_TYPES:
                if kind is S.StateType.COMPLETED:
                    task_logger.warning("State policy %s answered the failed attempt with %s: the "
                                        "run is recorded as completed", _policy_name(self.policy),
                                        answer, extra=task_extra(self))
                return answer
        return self._bad_answer("propose_failed", answer, "the proposed Failed state, another final "
                                "state, or AwaitingRetry (with its scheduled_time) to retry", exc)

    def _bad_answer(self, method: str, answer: Any, expected: str,
                    exc: BaseException | None = None) -> S.State:
        """The Failed state that ends a run whose policy answered what the engine cannot
        act on: a run left Scheduled or Running would look alive forever, and ``None`` as a
        result would pass a failure off as a success."""
        shown = repr(answer)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        message = (f"State policy {_policy_name(self.policy)} answered {method}() with {shown} for "
                   f"task run {self.task_run.name!r}; expected {expected}")
        if exc is not None:
            message += f" (the attempt failed with {describe(exc)})"
        error = ConfigurationError(message)
        error.__cause__ = exc
        self.error = error
        task_logger.error("%s", message, extra=task_extra(self))
        return S.Failed(message=message, data=error)

    def crash(self, exc: BaseException) -> S.State:
        """End the run Crashed by ``exc`` (an error outside the body, or an interrupt) and
        return its final state; a run that is final already keeps its state."""
        run = self.task_run
        if run.state is not None and run.state.is_final():
            return run.state
        reason = describe(exc)
        state = S.Crashed(message=f"Task run crashed: {reason}", data=exc)
        if isinstance(exc, Exception):
            task_logger.error("Crashed:", exc_info=exc, extra=task_extra(self))
        return finish_run(self.flow_context, run, state)

    def persists(self) -> bool:
        wanted = self.task.spec.persist_result
        if wanted is None:
            flow = self.flow_context.flow
            wanted = bool(flow is not None and flow.spec.persist_result)
        return wanted

    def _persist(self, value: Any) -> None:
        run = self.task_run
        key = f"cache-{run.cache_key}" if run.cache_key is not None else f"run-{run.id}"
        serializer = self.task.spec.result_serializer or DEFAULT_SERIALIZER
        try:
            run.result_location, size, digest = unpack_written(self.result_store.write(key, value, serializer))
            run.stash[RESULT_SIZE] = size  # for the cache index (`headwater cache ls`)
            if digest is not None:  # recorded in the cache entry, checked on every hit
                run.stash[RESULT_DIGEST] = digest
        except ResultNotPersisted as exc:
            task_logger.warning("Result of type %s was not persisted (so not cached): %s",
                                type(value).__name__, exc, extra=task_extra(self))

    def finish_logs(self, state: S.State) -> None:
        run = self.task_run
        state._ended_run(run.flow_run_id, run.id)  # the final state tells which run it ended
        if task_logger.isEnabledFor(_INFO):
            log_line(task_logger, _INFO, "Finished in state %s", (state,), task_extra(self))
        callbacks = _callbacks_for(self.task.spec, state)
        if callbacks:
            _run_callbacks(callbacks, self.task, self.task_run, state, task_logger, task_extra(self))

    # -- calling the body ---------------------------------------------------------------------

    def call(self) -> Any:
        task = self.task
        args, kwargs = task.binder.call_args(self.parameters)
        fn = task.fn
        wrapped = self.flow_context.bindings.task_run_call
        if wrapped is not None:
            self.task_run._body = lambda: fn(*args, **kwargs)
            return wrapped(task_run=self.task_run)
        return fn(*args, **kwargs)

    def call_with_timeout(self) -> Any:
        timeout = self.policy.timeout_seconds
        if timeout is None:
            return self.call()
        return call_in_thread(self.call, timeout, f"Task run {self.task_run.name!r}")


def _policy_name(policy: Any) -> str:
    cls = type(policy)
    return f"{cls.__module__}.{cls.__qualname__}"


def _callbacks_for(spec: Any, state: S.State) -> list[Callable[..., Any]]:
    if state.type is S.StateType.COMPLETED:
        return spec.on_completion
    if state.type is S.StateType.FAILED:
        return spec.on_failure
    if state.type is S.StateType.CRASHED:
        return spec.on_crashed
    return []


def _run_callbacks(callbacks: list[Callable[..., Any]], owner: Any, run: Any, state: S.State,
                   logger: logging.Logger, extra: dict[str, Any]) -> None:
    for callback in callbacks:
        try:
            callback(owner, run, state)
        except Exception as exc:  # a callback must not change the run's outcome
            logger.error("State callback %r raised %s: %s", getattr(callback, "__name__", callback),
                         type(exc).__name__, exc, exc_info=exc, extra=extra)


def _wait_before_retry(ex: TaskExecution, delay: float) -> None:
    try:
        time.sleep(delay)
    except BaseException as exc:
        # Interrupted while AwaitingRetry: end the run Crashed (failed() re-raises it)
        # rather than leave it waiting forever in the history.
        ex.failed(exc)
        raise


def _crashed(ex: TaskExecution, exc: BaseException) -> None:
    """An exception escaped the run loop (the engine, the store or a policy failed, or
    an interrupt): end the run Crashed, unless it is final already, so no caller (a
    direct call, a worker, a remote one) leaves it Running in the history."""
    try:
        ex.crash(exc)
    except Exception as record_exc:  # the store failing again: the first error matters more
        task_logger.error("Could not record the crash of %s: %s: %s", ex.task_run.name,
                          type(record_exc).__name__, record_exc, extra=task_extra(ex))


async def _await_retry(ex: TaskExecution, delay: float) -> None:
    """The async twin of :func:`_wait_before_retry`."""
    import anyio

    try:
        await anyio.sleep(delay)
    except BaseException as exc:  # cancelled while AwaitingRetry: Crashed, then obey
        ex.failed(exc)
        raise


def execute_sync(ex: TaskExecution) -> S.State:
    """Run the attempts of one task run in this thread; return its final state."""
    token = task_run_ctx.set(ex)
    wants_prints = ex.task.spec.log_prints  # None: as the flow says
    prints = log_prints_var.set(wants_prints) if wants_prints is not None else None
    try:
        while True:
            final = ex.begin_attempt()
            if final is not None:
                if final.type is S.StateType.SCHEDULED:  # retry after a failed cache key
                    delay = ex.retry_delay(final)
                    if delay:
                        _wait_before_retry(ex, delay)
                    continue
                break
            try:
                value = ex.call_with_timeout()
            except BaseException as exc:
                final = ex.failed(exc)
                if final is None:
                    delay = ex.retry_delay(ex.task_run.state)
                    if delay:
                        _wait_before_retry(ex, delay)
                    continue
                break
            final = ex.completed(value)
            break
    except BaseException as exc:
        # Noted first (one append, the cheapest step): with Python's recursion limit
        # reached the calls below fail too, and an enclosing run (with stack to spare)
        # ends it from this note.
        ex.flow_context.unfinished.append((ex, exc, _get_ident()))
        _crashed(ex, exc)
        raise
    finally:
        if prints is not None:
            log_prints_var.reset(prints)
        task_run_ctx.reset(token)
        if ex.nesting:
            ex.flow_context.nested.pop(ex.task_run.id, None)
    ex.finish_logs(final)
    return final


async def execute_async(ex: TaskExecution) -> S.State:
    """The async twin of :func:`execute_sync`."""
    token = task_run_ctx.set(ex)
    wants_prints = ex.task.spec.log_prints  # None: as the flow says
    prints = log_prints_var.set(wants_prints) if wants_prints is not None else None
    try:
        while True:
            final = ex.begin_attempt()
            if final is not None:
                if final.type is S.StateType.SCHEDULED:  # retry after a failed cache key
                    await _await_retry(ex, ex.retry_delay(final))
                    continue
                break
            try:
                timeout = ex.policy.timeout_seconds
                if timeout is None:
                    value = await ex.call()
                else:
                    value = await call_with_deadline(ex.call, timeout, f"Task run {ex.task_run.name!r}")
            except BaseException as exc:
                final = ex.failed(exc)
            else:
                final = ex.completed(value)
                break
            if final is None:
                await _await_retry(ex, ex.retry_delay(ex.task_run.state))
                continue
            break
    except BaseException as exc:
        # Noted first (one append, the cheapest step): with Python's recursion limit
        # reached the calls below fail too, and an enclosing run (with stack to spare)
        # ends it from this note.
        ex.flow_context.unfinished.append((ex, exc, _get_ident()))
        _crashed(ex, exc)
        raise
    finally:
        if prints is not None:
            log_prints_var.reset(prints)
        task_run_ctx.reset(token)
        if ex.nesting:
            ex.flow_context.nested.pop(ex.task_run.id, None)
    ex.finish_logs(final)
    return final


# -- runs that could not end themselves ---------------------------------------------------


def end_unfinished(fctx: FlowRunContext, every_thread: bool = False) -> None:
    """End the runs that could not record their own end (this thread hit Python's
    recursion limit while recording it): called on the way out by an enclosing task run
    in the same thread, or by the flow run (``every_thread``: its tasks are done), which
    have stack to spare. Runs that are final by now are only dropped."""
    me = _get_ident()
    for entry in list(fctx.unfinished):
        ex, exc, thread = entry
        if thread != me and not every_thread:
            continue  # its own thread may be ending it right now
        state = ex.task_run.state
        if state is None or (state.is_pending() and not state.has_ended()):
            never_started(ex, exc)
        elif not state.has_ended():
            reason = describe(exc)
            kind = S.Failed if isinstance(exc, Exception) else S.Crashed
            ex.finish_logs(finish_run(fctx, ex.task_run, kind(
                message=f"Task run encountered an exception during execution: {reason}", data=exc)))
        try:
            fctx.unfinished.remove(entry)
        except ValueError:  # another caller (the flow run) took it meanwhile
            pass


def never_started(ex: TaskExecution, exc: BaseException) -> None:
    """End a run that ``exc`` (an interrupt, a failing store) stopped before its attempt
    loop began: ``Cancelled``, unless it is final already, so no created run is left
    without a final state."""
    current = ex.task_run.state
    if current is not None and (not current.is_pending() or current.has_ended()):
        return  # started or ended (NotReady stays): the attempt loop, or end_unfinished, ends it
    reason = describe(exc)
    state = S.Cancelled(message=f"The task run was stopped by {reason} before it started.", data=exc)
    try:
        finish_run(ex.flow_context, ex.task_run, state)
    except Exception:  # noqa: S110 - the store failing again: the first error is raised
        pass
