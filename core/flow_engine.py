"""The run loop for flows: name the run, start its task runner, run the body (with
retries), wait for every submitted task, and settle the final state.

A flow run fails when its body raises, when it returns a failed state, or when a task
it submitted failed and the flow never looked at that task's outcome.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import states as S
from .context import FlowRunContext, flow_run_ctx, task_run_ctx
from .engine import _callbacks_for, _run_callbacks, end_unfinished, finish_run, transition
from .errors import ParameterError, RunFailed, RunNameError, StoreError, TaskTimeout
from .futures import Future
from .ids import random_id
from .policy import delay_for
from .run_logging import activate, deactivate, engine_logger, flow_extra, flow_logger, log_prints_var
from .runs import FlowRun
from .session import Session
from .task_runners import InlineTaskRunner
from .timeouts import call_in_thread, call_with_deadline, secs as _secs
from .tracebacks import describe, for_log, logged_in, without_headwater_frames

if TYPE_CHECKING:
    from .flows import Flow

_INFO = logging.INFO


class FlowExecution(FlowRunContext):
    """One flow run, from creation to its final state."""

    def __init__(self, flow: Flow, parameters: dict[str, Any], session: Session) -> None:
        parent = flow_run_ctx.get()
        parent_task = task_run_ctx.get()
        if parent is not None and parent.abandoned and threading.get_ident() in parent.abandoned:
            raise TaskTimeout(f"{parent.label} timed out; its body, still running in the background, "
                              f"starts no new subflow runs (flow {flow.name!r} was not run)")
        run = FlowRun(random_id(), flow.name, "", parameters, flow.spec.tags, flow.version,
                      parent.flow_run.id if parent is not None and parent.flow_run is not None else None,
                      parent_task.task_run.id if parent_task is not None else None)
        super().__init__(flow, run, session, session.bindings_for(flow.source_dir))
        self.retries_done = 0
        self.final: S.State | None = None
        self.closed = False
        self.recorded: S.State | None = None  # the final state, once recorded
        self._tokens: list[Any] = []

    # -- setup ------------------------------------------------------------------------------

    def enter(self) -> None:
        self._tokens.append(flow_run_ctx.set(self))
        self._tokens.append(task_run_ctx.set(None))
        if self.flow.spec.log_prints is not None:
            self._tokens.append(log_prints_var.set(self.flow.spec.log_prints))
        activate(self)

    def exit(self) -> None:
        deactivate(self)
        if len(self._tokens) == 3:
            log_prints_var.reset(self._tokens.pop())
        task_run_ctx.reset(self._tokens.pop())
        flow_run_ctx.reset(self._tokens.pop())

    def create(self) -> S.State | None:
        """Validate the parameters, then name and record the run (so a name template sees
        the coerced values: a date given as text formats as a date). Return a final
        state on failure."""
        run = self.flow_run
        problem: BaseException | None = None
        if self.flow.spec.validate_parameters:
            try:
                run.parameters = self.flow.validator.validate(run.parameters)
            except ParameterError as exc:
                problem = exc
        try:
            run.name = self._name()
        except Exception as exc:
            run.name = run.id  # the last resort, so the failed run can still be found
            problem = problem or exc
        self.label = f"Flow run {run.name!r}"
        self.store.create_flow_run(run)
        transition(self, run, S.Pending())
        if engine_logger.isEnabledFor(_INFO):
            # flow_run_id (no run_label, so the console still names the logger) files the
            # line under the run in the run store.
            engine_logger.info("Created flow run %r for flow %r", run.name, self.flow.name,
                               extra={"flow_run_id": run.id})
        if problem is not None:
            return self.fail_early(problem)
        return None

    def _name(self) -> str:
        namer = self.bindings.flow_run_name
        name = namer(flow=self.flow, parameters=self.flow_run.parameters) if namer else None
        if name is None:
            return self.flow_run.id  # the last resort: no plugin named it
        if not isinstance(name, str):
            raise RunNameError(f"flow run name for {self.flow.name!r} must be a string, got {name!r}")
        if not name.strip():  # a run no one could find by its name
            raise RunNameError(f"flow run name for {self.flow.name!r} must not be blank, got {name!r}")
        return name

    def fail_early(self, exc: BaseException) -> S.State:
        state = S.Failed(message=f"Flow run could not start: {exc}", data=exc)
        flow_logger.error("%s", state.message, extra=flow_extra(self))
        self.settle(state)
        return state

    def start_runner(self) -> S.State | None:
        """Make and start the task runner. A bad ``task_runner`` (unknown name, wrong
        type) or a runner that cannot start fails the run before its body: return that
        final state."""
        make = self.bindings.make_task_runner
        try:
            runner = make(flow=self.flow, session=self.session) if make else None
            if runner is None:  # no runner plugin (all disabled): run submitted tasks inline
                runner = InlineTaskRunner()
            self.task_runner = runner
            runner.start(self)
        except Exception as exc:
            self.task_runner = None
            return self.fail_early(exc)
        if flow_logger.isEnabledFor(_INFO):
            flow_logger.info("Using task runner %r", runner.name, extra=flow_extra(self))
        return None

    # -- attempts ---------------------------------------------------------------------------

    def begin_attempt(self) -> None:
        run = self.flow_run
        state = S.Retrying() if self.retries_done else S.Running()
        run.run_count += 1
        if run.start_ts is None:
            run.start_ts = state.ts
        transition(self, run, state)
        if run.run_count == 1:
            self._durable()

    def _durable(self) -> None:
        """Wait until the run's row (Running) is committed, before the body's first line:
        a process killed at any moment after leaves the run on record (shown Crashed once
        its process is gone), not nothing. A store that cannot record it (read-only, say)
        fails the call here, before any work is done; nothing more is recorded then."""
        try:
            self.store.flush()
        except StoreError:
            self.final = S.Crashed(message="The run could not be recorded.")
            self.closed = True
            if self.task_runner is not None:
                self.task_runner.shutdown(wait=False)
                self.task_runner = None
            raise

    def call_body(self) -> Any:
        flow = self.flow
        args, kwargs = flow.binder.call_args(self.flow_run.parameters)
        wrapped = self.bindings.flow_run_call
        if wrapped is not None:
            self.flow_run._body = lambda: flow.fn(*args, **kwargs)
            return wrapped(flow_run=self.flow_run)
        return flow.fn(*args, **kwargs)

    def failed(self, exc: BaseException) -> float | None:
        """Answer a failed attempt: a delay to retry after, or None when final."""
        if not isinstance(exc, Exception):
            self.crash(exc)
            raise exc
        if isinstance(exc, TaskTimeout):
            state = S.TimedOut(message=str(exc), data=exc)
        else:
            state = S.Failed(message=f"Flow run encountered an exception: {describe(exc)}",
                             data=exc)
            logged = logged_in(exc)
            if logged is None:
                flow_logger.error("Encountered exception during execution:",
                                  exc_info=for_log(exc, self.label), extra=flow_extra(self))
            else:  # one traceback per failure: the run that raised it logged it already
                flow_logger.error("Encountered exception during execution: %s (raised in %s; "
                                  "its traceback is logged there)", describe(exc), logged,
                                  extra=flow_extra(self))
        return self._retry_or_settle(state)

    def _retry_or_settle(self, state: S.State) -> float | None:
        spec = self.flow.spec
        if self.retries_done < spec.retries:
            delay = delay_for(spec.retry_delay_seconds, self.retries_done, None)
            self.retries_done += 1
            transition(self, self.flow_run, S.AwaitingRetry(
                message=state.message,
                scheduled_time=_dt_from_ts(time.time() + delay)))
            flow_logger.info("Retry %d/%d will start %s second(s) from now", self.retries_done,
                             spec.retries, _secs(delay), extra=flow_extra(self))
            with self._lock:  # the next attempt counts its own task runs
                self.pending.clear()
                self.failures.clear()
                self.submitted = 0
            return delay
        self.settle(state)
        return None

    def body_returned(self, value: Any) -> float | None:
        """Settle a body that returned: wait for its futures, then judge the outcome."""
        self.wait_for_futures()
        returned_state: S.State | None = None
        if isinstance(value, Future):
            returned_state = value.wait()
        elif isinstance(value, S.State):
            returned_state = value
        if returned_state is not None and not returned_state.is_completed():
            return self._retry_or_settle(S.Failed(
                message=f"Flow run returned a state that is not completed: {returned_state}",
                data=returned_state.result(raise_on_failure=False)))
        if returned_state is not None:
            value = returned_state.data
        unobserved = self.unobserved_failures()
        if unobserved:
            total = self.submitted
            # A NotReady run did not fail, it never ran (its upstream failed): not counted.
            failed = sum(1 for f in self.failures if not f._state.is_pending())
            message = (f"{failed}/{total} states failed." if failed
                       else f"{len(self.failures)}/{total} states did not complete.")
            names = ", ".join(repr(f.task_run_name) for f in unobserved[:5])
            exc = RunFailed(f"{message} Task runs that failed without being handled: {names}")
            return self._retry_or_settle(S.Failed(message=message, data=exc))
        self.settle(S.Completed(message="All states completed.", data=value))
        return None

    def wait_for_futures(self) -> None:
        while True:
            with self._lock:
                pending = list(self.pending)
            if not pending:
                return
            for future in pending:
                future._wait_quietly()

    def crash(self, exc: BaseException) -> None:
        """End the run Crashed; end its unfinished task runs too, so none stays Running."""
        self.crashed = True
        with self._lock:
            pending = list(self.pending)
        for future in pending:
            work = future.work
            run = work.run_obj if work is not None else None
            if run is None:
                continue
            state = S.Cancelled(message="The flow run crashed before this task run finished.")
            if run.state is not None and run.state.is_running():
                state = S.Crashed(message=f"The flow run was interrupted by {type(exc).__name__}.")
            # Recorded and seen by state_changed hooks, unless a worker finished it first.
            # Whoever holds the future (an interactive session) must not wait forever.
            future.set_state(finish_run(self, run, state))
        for ex in list(self.nested.values()):  # runs tasks called, in the flow's threads
            run = ex.task_run
            if run.state is not None and run.state.has_ended():  # finish_run leaves final ones too
                continue  # ended without running: it stays NotReady
            state = S.Cancelled(message="The flow run crashed before this task run finished.")
            if run.state is not None and run.state.is_running():
                state = S.Crashed(message=f"The flow run was interrupted by {type(exc).__name__}.")
            finish_run(self, run, state)
        if self.task_runner is not None:
            try:
                self.task_runner.shutdown(wait=False)
            except Exception:
                pass
            self.task_runner = None
        self.settle(S.Crashed(message=f"Execution was interrupted by {type(exc).__name__}.", data=exc))

    # -- the end ------------------------------------------------------------------------------

    def settle(self, state: S.State) -> None:
        """Make ``state`` the run's final state. It is recorded by :meth:`finish`, after
        the task runner stopped and the state callbacks ran, so an interrupt meanwhile
        can still make it Crashed: a history holds one final state, and it is the one
        the caller saw."""
        if self.unfinished:  # task runs that could not record their own end
            try:
                end_unfinished(self, every_thread=True)
            except Exception as exc:  # the store failing: the flow run's end matters more
                flow_logger.error("Could not end %d task run(s): %s: %s", len(self.unfinished),
                                  type(exc).__name__, exc, extra=flow_extra(self))
        state.state_details.flow_run_id = self.flow_run.id
        self.final = state

    def _record_final(self) -> None:
        state = self.final
        if state is None or self.recorded is state:
            return
        self.recorded = state
        run = self.flow_run
        run.end_ts = state.ts
        transition(self, run, state)

    def finish(self) -> S.State:
        assert self.final is not None
        self.closed = True
        try:
            if self.task_runner is not None:
                self.task_runner.shutdown(wait=True)
            state = self.final
            if flow_logger.isEnabledFor(_INFO):
                flow_logger.info("Finished in state %s", state, extra=flow_extra(self))
            callbacks = _callbacks_for(self.flow.spec, state)
            if callbacks:
                _run_callbacks(callbacks, self.flow, self.flow_run, state, flow_logger, flow_extra(self))
            # Everything recorded before the final state (the Finished line hands the
            # run's buffered task lines to the store; callbacks may log): the caller reads
            # the store as soon as the call returns. An interrupt here still ends the run
            # Crashed, so the last flush, which no interrupt can undo, stays short.
            self.store.flush()
        except BaseException as exc:
            if not isinstance(exc, Exception):
                self.interrupted_while_finishing(exc)  # the caller sees the interrupt: Crashed
            self._record_final()
            self.store.flush()
            raise
        self._record_final()
        self._flush_final()
        return self.final

    def _flush_final(self) -> None:
        """Write the final state. Once queued it is written whatever comes, so the first
        Ctrl-C landing in this last short write is not raised: the call returns as the run
        is recorded, and a warning says so at once. A second Ctrl-C (the store may be
        slow: locked by another process, say) is raised, as the user wants out."""
        try:
            self.store.flush()
        except KeyboardInterrupt:
            flow_logger.warning("Ctrl-C came while the run's final state was being written: the run "
                                "ended %s and the call returns so once it is written; press Ctrl-C "
                                "again to stop now", self.final, extra=flow_extra(self))
            self.store.flush()

    def interrupted_while_finishing(self, exc: BaseException) -> None:
        """An interrupt (Ctrl-C) after the run settled, before its final state was
        recorded (while the task runner stopped, in a state callback), reaches the
        caller: the run ends Crashed instead, naming the state its body ended in."""
        state = self.final
        if state is None or state.is_crashed() or self.recorded is not None:
            return  # recorded already: a final state is never replaced
        name = type(exc).__name__
        self.final = S.Crashed(message=f"Execution was interrupted by {name} while the run was "
                                       f"finishing (its body had ended in state {state.name}).", data=exc)
        self.final.state_details.flow_run_id = self.flow_run.id
        flow_logger.error("%s", self.final.message, extra=flow_extra(self))


def _dt_from_ts(ts: float) -> Any:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc)


def _result(state: S.State, return_state: bool) -> Any:
    return state if return_state else state.result()


def _start(flow: Flow, args: tuple[Any, ...], kwargs: dict[str, Any]) -> FlowExecution:
    """Bind the arguments, create and name the run, start its task runner. A run that
    fails here (bad parameters, a bad runner) has its final state set already."""
    fx = FlowExecution(flow, flow.binder.bind(args, kwargs), Session.current())
    fx.enter()
    try:
        if fx.create() is None:
            fx.start_runner()
    except BaseException as exc:
        _interrupted(fx, exc)
        fx.exit()
        raise
    return fx


def _interrupted(fx: FlowExecution, exc: BaseException) -> None:
    """End a run that an exception escaped from: Crashed, runner stopped, logged. An
    interrupt after the run settled (while it finished) reaches the caller all the
    same, so it is recorded Crashed too."""
    if fx.final is None:
        fx.crash(exc)
    elif not isinstance(exc, Exception) and exc is not fx.final.data:  # (not the outcome re-raised)
        fx.interrupted_while_finishing(exc)
    if not fx.closed:
        fx.finish()


def run_flow(flow: Flow, args: tuple[Any, ...], kwargs: dict[str, Any], return_state: bool) -> Any:
    """``my_flow(...)`` for a sync flow."""
    fx = _start(flow, args, kwargs)
    try:
        if fx.final is not None:  # failed before the body could run
            return _result(fx.finish(), return_state)
        timeout = flow.spec.timeout_seconds
        while True:
            fx.begin_attempt()
            try:
                if timeout is None:
                    value = fx.call_body()
                else:
                    value = call_in_thread(fx.call_body, timeout, f"Flow run {fx.flow_run.name!r}",
                                           fx.abandoned)
                delay = fx.body_returned(value)
            except BaseException as exc:
                if isinstance(exc, Exception):
                    fx.wait_for_futures()
                delay = fx.failed(exc)
            if delay is None:
                break
            if delay:
                time.sleep(delay)
        return _result(fx.finish(), return_state)
    except BaseException as exc:
        _interrupted(fx, exc)
        # The caller's traceback shows its own frames and the flow's, not the run loop's.
        raise without_headwater_frames(exc)
    finally:
        fx.exit()


async def run_flow_async(flow: Flow, args: tuple[Any, ...], kwargs: dict[str, Any],
                         return_state: bool) -> Any:
    """``await my_flow(...)`` for an async flow."""
    import anyio

    fx = _start(flow, args, kwargs)
    try:
        if fx.final is not None:  # failed before the body could run
            return _result(fx.finish(), return_state)
        timeout = flow.spec.timeout_seconds
        while True:
            fx.begin_attempt()
            try:
                if timeout is None:
                    value = await fx.call_body()
                else:
                    value = await call_with_deadline(fx.call_body, timeout, f"Flow run {fx.flow_run.name!r}")
                await anyio.to_thread.run_sync(fx.wait_for_futures)
                delay = fx.body_returned(value)
            except BaseException as exc:
                if isinstance(exc, Exception):
                    await anyio.to_thread.run_sync(fx.wait_for_futures)
                delay = fx.failed(exc)
            if delay is None:
                break
            await anyio.sleep(delay)
        return _result(fx.finish(), return_state)
    except BaseException as exc:
        _interrupted(fx, exc)
        # The caller's traceback shows its own frames and the flow's, not the run loop's.
        raise without_headwater_frames(exc)
    finally:
        fx.exit()


def source_dir_of(fn: Any) -> Path | None:
    import inspect

    try:
        path = inspect.getsourcefile(fn)
    except TypeError:
        return None
    if not path or path.startswith("<"):
        return None
    return Path(path).resolve().parent
