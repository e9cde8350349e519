"""The flow loop: name the run, start its task runner, run the body (with retries),
wait for every submitted task, and settle the final state.

:class:`FlowExecution` holds the steps; :func:`headwater.engine.attempts.flow_attempts`
strings them into attempts; :func:`run_flow` and :func:`run_flow_async` drive that with
the sync or async driver. Retries are the flow's state policy's answer
(``headwater_make_flow_state_policy``; the retries plugin by default).

A flow run fails when its body raises, when it returns a failed state, or when a task
it submitted failed and the flow never looked at that task's outcome. It ends Cancelled
when it returns a Cancelled state, and with the message of a Completed state it made
itself (``return Completed(message="...")``).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from .. import states
from ..errors import ParameterError, RetryError, RunFailed, RunNameError, StoreError, TaskTimeout
from ..ids import random_id
from ..policy import (FlowRunAttempts, PolicyAnswerError, StatePolicy, WrappingPolicy, answering_policy,
                      check_failed_answer, is_retry, policy_name)
from ..run_logging import (FLOW_FINISHED, activate, deactivate, enable_log_prints, engine_logger, flow_extra,
                           flow_logger, flow_run_ended, log_line, log_prints_var)
from ..results import DEFAULT_SERIALIZER, ResultMissing, read_result, unpack_written
from ..reuse import ReusePlan, entry_point_of, inputs_hash
from ..run_tags import tags_var
from ..runs import FlowRun
from ..stores import FlowInfo
from ..session import Session
from ..task_lines import FINISHED
from ..task_runners import InlineTaskRunner
from ..tracebacks import describe, for_log, logged_in, without_headwater_frames
from .attempts import flow_attempts
from .context import FlowRunContext, flow_run_ctx, task_run_ctx
from .drivers import drive, drive_async
from .futures import Future
from .task_loop import callbacks_for, end_unfinished, finish_run, retry_count, run_callbacks, transition
from .timeouts import call_in_thread, call_with_deadline, secs

if TYPE_CHECKING:
    from ..flows import Flow

_INFO = logging.INFO


class FlowExecution(FlowRunContext):
    """One flow run, from creation to its final state."""

    def __init__(self, flow: Flow, parameters: dict[str, Any], session: Session,
                 resume: FlowRun | None = None) -> None:
        parent = flow_run_ctx.get()
        parent_task = task_run_ctx.get()
        if parent is not None and parent.abandoned and threading.get_ident() in parent.abandoned:
            raise TaskTimeout(f"{parent.label} timed out; its body, still running in the background, "
                              f"starts no new subflow runs (flow {flow.name!r} was not run)")
        if resume is not None:  # a retry: a new attempt of a recorded run (headwater.retry)
            run = resume
            run.parameters = parameters
        else:
            # The flow's own tags and those of the enclosing ``with tags(...)`` blocks.
            run = FlowRun(random_id(), flow.name, "", parameters, flow.spec.tags | tags_var.get(), flow.version,
                          parent.flow_run.id if parent is not None and parent.flow_run is not None else None,
                          parent_task.task_run.id if parent_task is not None else None)
        super().__init__(flow, run, session, session.bindings_for(flow.source_dir))
        self.resumed = resume is not None
        #: A subflow persists results as its parent does, unless its flow says otherwise.
        self._parent_persisting: bool | None = getattr(parent, "persisting", None)
        #: What the flow's state policy sees of the run (``retries_done`` among it).
        self.policy_context = FlowRunAttempts(flow, run)
        self.final: states.State | None = None
        self.closed = False
        self.recorded: states.State | None = None  # the final state, once recorded
        self._tokens: list[Any] = []
        self._flow_policy: StatePolicy | None = None

    # -- setup ------------------------------------------------------------------------------

    def enter(self) -> None:
        self._tokens.append(flow_run_ctx.set(self))
        self._tokens.append(task_run_ctx.set(None))
        if self.flow.spec.log_prints is not None:
            if self.flow.spec.log_prints:
                enable_log_prints()  # print goes through the run logger from now on (once per process)
            self._tokens.append(log_prints_var.set(self.flow.spec.log_prints))
        activate(self)

    def __enter__(self) -> FlowExecution:
        return self

    def __exit__(self, kind: Any, exc: BaseException | None, traceback: Any) -> bool:
        """An exception that escaped the run ends it (``_interrupted``: Crashed, runner
        stopped) and goes on to the caller, showing its own frames and the flow's, not
        the run loop's; the run stops being the active one either way."""
        try:
            if exc is not None:
                _interrupted(self, exc)
                without_headwater_frames(exc)
        finally:
            self.exit()
        return False

    def exit(self) -> None:
        deactivate(self)
        if len(self._tokens) == 3:
            log_prints_var.reset(self._tokens.pop())
        task_run_ctx.reset(self._tokens.pop())
        flow_run_ctx.reset(self._tokens.pop())

    def create(self) -> states.State | None:
        """Validate the parameters, then name and record the run (so a name template sees
        the coerced values: a date given as text formats as a date). Return a final
        state on failure."""
        run = self.flow_run
        if self.resumed:
            return self._reopen()
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
        flow = self.flow
        run.flow_info = FlowInfo(flow.name, flow.description, flow.version, sorted(flow.spec.tags or ()),
                                 time.time())
        # What a retry needs (headwater.retry): where the flow is defined, and a hash that
        # tells whether its recorded parameters read back exactly (and matches subflow calls).
        run.entry_point = entry_point_of(flow)
        run.inputs_hash = inputs_hash(run.parameters) if problem is None else None
        self.store.create_flow_run(run)
        transition(self, run, states.Pending())
        if engine_logger.isEnabledFor(_INFO):
            # flow_run_id (no run_label, so the console still names the logger) files the
            # line under the run in the run store.
            engine_logger.info("Created flow run %r for flow %r", run.name, self.flow.name,
                               extra={"flow_run_id": run.id})
        if problem is not None:
            return self.fail_early(problem)
        if self.persisting:
            run.parameters_location = self._persist(f"flow-run-{run.id}-parameters", run.parameters,
                                                    "parameters")
        return None

    def _reopen(self) -> states.State | None:
        """Begin a new attempt of a recorded run (a retry): reopen it in the store
        (AwaitingRetry), and plan what the attempt reuses of the earlier ones."""
        run = self.flow_run
        self.label = f"Flow run {run.name!r}"
        run.entry_point = entry_point_of(self.flow) or run.entry_point
        plan = ReusePlan.build(self.store, run)
        self.reuse = plan
        previous = run.state
        state = states.AwaitingRetry(message=f"Retried from where attempt {run.run_count} ended "
                                             f"({previous.name if previous is not None else 'no state'})")
        try:
            self.store.reopen_flow_run(run, state)
        except Exception as exc:
            # Nothing of this attempt is recorded, and nothing may be: the run may be
            # another process's now (a retry started at the same time).
            self.final = self.recorded = states.Failed(message=str(exc), data=exc)
            self.closed = True
            raise RetryError(f"flow run {run.name!r} could not be retried: {exc}") from exc
        run.state = state
        run.end_ts = None
        changed = self.bindings.state_changed
        if changed is not None:
            changed(run=run, previous=previous, state=state)
        if engine_logger.isEnabledFor(_INFO):
            engine_logger.info("Retrying flow run %r of flow %r: attempt %d, reusing up to %d completed task "
                               "run(s) of earlier attempts", run.name, self.flow.name, run.run_count + 1,
                               len(plan.tasks), extra={"flow_run_id": run.id})
        if plan.lost:
            flow_logger.warning("%s", plan.describe_lost(), extra=flow_extra(self))
        return None

    @property
    def persisting(self) -> bool:
        """Whether this run persists results by default (its flow's ``persist_result``,
        else its parent flow run's choice, else ``HEADWATER_PERSIST_RESULTS``): then its
        tasks' results, its parameters and a subflow run's return value are persisted,
        for a retry."""
        said = self.flow.spec.persist_result
        if said is not None:
            return bool(said)
        if self._parent_persisting is not None:
            return self._parent_persisting
        return bool(getattr(self.session.settings, "persist_results", False))

    def _persist(self, key: str, value: Any, what: str) -> str | None:
        """Write ``value`` to the result store under ``key``; its location, or ``None``
        (with a warning) when it cannot be written: the run goes on."""
        try:
            location, _, _ = unpack_written(self.result_store.write(key, value, DEFAULT_SERIALIZER))
            return location
        except Exception as exc:  # noqa: BLE001 - a retry needs it; the run itself does not
            flow_logger.warning("The run's %s were not persisted, so a retry cannot read them back: %s: %s",
                                what, type(exc).__name__, exc, extra=flow_extra(self))
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

    def fail_early(self, exc: BaseException) -> states.State:
        state = states.Failed(message=f"Flow run could not start: {exc}", data=exc)
        flow_logger.error("%s", state.message, extra=flow_extra(self))
        self.settle(state)
        return state

    def start_runner(self) -> states.State | None:
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
        state = states.Retrying() if self.policy_context.retries_done or run.run_count else states.Running()
        if self.reuse is not None:
            self.reuse.next_attempt()
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
            self.final = states.Crashed(message="The run could not be recorded.")
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
            self.flow_run.set_body(lambda: flow.fn(*args, **kwargs))
            return wrapped(flow_run=self.flow_run)
        return flow.fn(*args, **kwargs)

    def call_body_with_timeout(self) -> Any:
        """:meth:`call_body`, in a thread given up after the flow's timeout (if any)."""
        timeout = self.flow.spec.timeout_seconds
        if timeout is None:
            return self.call_body()
        return call_in_thread(self.call_body, timeout, self.label, self.abandoned)

    async def call_body_async(self) -> Any:
        """Await an async flow's body once, within the flow's timeout (if any)."""
        timeout = self.flow.spec.timeout_seconds
        if timeout is None:
            return await self.call_body()
        return await call_with_deadline(self.call_body, timeout, self.label)

    async def wait_for_futures_async(self) -> None:
        """:meth:`wait_for_futures` in a worker thread, so the event loop runs on."""
        import anyio  # import time: only async flows need it

        await anyio.to_thread.run_sync(self.wait_for_futures)

    def failed(self, exc: BaseException) -> float | None:
        """Answer a failed attempt: a delay to retry after, or None when final."""
        if not isinstance(exc, Exception):
            self.crash(exc)
            raise exc
        if isinstance(exc, TaskTimeout):
            state = states.TimedOut(message=str(exc), data=exc)
        else:
            state = states.Failed(message=f"Flow run encountered an exception: {describe(exc)}",
                             data=exc)
            logged = logged_in(exc)
            if logged is None:
                flow_logger.error("Encountered exception during execution:",
                                  exc_info=for_log(exc, self.label), extra=flow_extra(self))
            else:  # one traceback per failure: the run that raised it logged it already
                flow_logger.error("Encountered exception during execution: %s (raised in %s; "
                                  "its traceback is logged there)", describe(exc), logged,
                                  extra=flow_extra(self))
        return self._retry_or_settle(exc, state)

    @property
    def policy(self) -> StatePolicy:
        """The flow's state policy (``headwater_make_flow_state_policy``), made on the
        first failure: a run that never fails never asks for it."""
        policy = self._flow_policy
        if policy is None:
            make = self.bindings.make_flow_state_policy
            policy = make(flow=self.flow, session=self.session) if make else None
            if policy is None:
                policy = StatePolicy()
                if self.flow.spec.retries:
                    flow_logger.warning("No plugin made a flow state policy (is the retries plugin "
                                        "disabled?): retries=%d of flow %r do not apply",
                                        self.flow.spec.retries, self.flow.name, extra=flow_extra(self))
            elif not isinstance(policy, StatePolicy):
                policy = WrappingPolicy(policy)  # the missing methods answer as the do-nothing policy
            self._flow_policy = policy
        return policy

    def _retry_or_settle(self, exc: BaseException, state: states.State) -> float | None:
        """Ask the flow's policy about a failed attempt: a retry (return the delay in
        seconds) or a final state (settled; return None)."""
        answer = self._answer_to_failure(exc, state)
        if not is_retry(answer):
            self.settle(answer)
            return None
        policy_context = self.policy_context
        policy_context.retries_done += 1
        scheduled = answer.state_details.scheduled_time
        delay = max(0.0, scheduled.timestamp() - time.time()) if scheduled is not None else 0.0
        transition(self, self.flow_run, answer)
        flow_logger.info("Retry %s will start %s second(s) from now",
                         retry_count(policy_context.retries_done, self.flow.spec.retries), secs(delay),
                         extra=flow_extra(self))
        with self._lock:  # the next attempt counts its own task runs
            self.pending.clear()
            self.failures.clear()
            self.submitted = 0
        return delay

    def _answer_to_failure(self, exc: BaseException, state: states.State) -> states.State:
        """The policy's checked answer; a policy that raises or answers what the engine
        cannot act on fails the run with an error naming it."""
        try:
            policy = self.policy
            answer = policy.propose_failed(self.policy_context, exc, state)
        except Exception as policy_exc:
            flow_logger.error("Retry policy failed:", exc_info=policy_exc, extra=flow_extra(self))
            return states.Failed(message=f"The retry policy of flow {self.flow.name!r} raised "
                                         f"{type(policy_exc).__name__}: {policy_exc}", data=policy_exc)
        try:
            answer = check_failed_answer(policy, answer, f"flow run {self.flow_run.name!r}")
        except PolicyAnswerError as error:
            flow_logger.error("%s", error, extra=flow_extra(self))
            return states.Failed(message=str(error), data=error)
        if answer.type is states.StateType.COMPLETED:
            flow_logger.warning("State policy %s answered the failed attempt with %s: the run is "
                                "recorded as completed", policy_name(answering_policy(policy, "propose_failed")),
                                answer, extra=flow_extra(self))
        return answer

    def body_returned(self, value: Any) -> float | None:
        """Settle a body that returned: wait for its futures, then judge the outcome."""
        returned_state: states.State | None = None
        if isinstance(value, Future):
            returned_state = value.wait()
        elif isinstance(value, states.State):
            returned_state = value
        if returned_state is not None and returned_state.type is states.StateType.CANCELLED:
            # Cancelled is not a failure to retry: the run ends so, and on_cancellation runs.
            self.settle(states.Cancelled(message=returned_state.message or "Flow run returned a Cancelled state.",
                                         data=returned_state.data))
            return None
        if returned_state is not None and not returned_state.is_completed():
            data = returned_state.result(raise_on_failure=False)
            # ``return Failed(message="...")`` ends the run with that message; a task's or
            # subflow's failed state is named as what the body returned.
            message = (returned_state.message if returned_state.message and _made_by_user(returned_state)
                       else f"Flow run returned a state that is not completed: {returned_state}")
            error = data if isinstance(data, BaseException) else RunFailed(message)
            return self._retry_or_settle(error, states.Failed(message=message, data=data))
        message = "All states completed."
        if returned_state is not None:
            value = returned_state.data
            if returned_state.message and _made_by_user(returned_state):
                message = returned_state.message  # ``return Completed(message="...")``
        unobserved = self.unobserved_failures()
        if unobserved:
            total = self.submitted
            # A NotReady run did not fail, it never ran (its upstream failed): not counted.
            failed = sum(1 for f in self.failures if not f.final_state.is_pending())
            message = (f"{failed}/{total} states failed." if failed
                       else f"{len(self.failures)}/{total} states did not complete.")
            names = ", ".join(repr(f.task_run_name) for f in unobserved[:5])
            exc = RunFailed(f"{message} Task runs that failed without being handled: {names}")
            return self._retry_or_settle(exc, states.Failed(message=message, data=exc))
        self.settle(states.Completed(message=message, data=value))
        return None

    def wait_for_futures(self) -> None:
        while True:
            with self._lock:
                pending = list(self.pending)
            if not pending:
                return
            for future in pending:
                future.wait_quietly()

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
            state = states.Cancelled(message="The flow run crashed before this task run finished.")
            if run.state is not None and run.state.is_running():
                state = states.Crashed(message=f"The flow run was interrupted by {type(exc).__name__}.")
            # Recorded and seen by state_changed hooks, unless a worker finished it first.
            # Whoever holds the future (an interactive session) must not wait forever.
            future.set_state(finish_run(self, run, state))
        for execution in list(self.nested.values()):  # runs tasks called, in the flow's threads
            run = execution.task_run
            if run.state is not None and run.state.has_ended():  # finish_run leaves final ones too
                continue  # ended without running: it stays NotReady
            state = states.Cancelled(message="The flow run crashed before this task run finished.")
            if run.state is not None and run.state.is_running():
                state = states.Crashed(message=f"The flow run was interrupted by {type(exc).__name__}.")
            finish_run(self, run, state)
        if self.task_runner is not None:
            try:
                self.task_runner.shutdown(wait=False)
            except Exception:
                pass
            self.task_runner = None
        self.settle(states.Crashed(message=f"Execution was interrupted by {type(exc).__name__}.", data=exc))

    # -- the end ------------------------------------------------------------------------------

    def settle(self, state: states.State) -> None:
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
        if run.parent_flow_run_id is not None and state.is_completed() and self.persisting:
            # A retried parent reuses a completed subflow run whole: its return value.
            run.result_location = self._persist(f"flow-run-{run.id}", state.data, "return value")
        run.end_ts = state.ts
        transition(self, run, state)

    def finish(self) -> states.State:
        assert self.final is not None
        self.closed = True
        try:
            if self.task_runner is not None:
                self.task_runner.shutdown(wait=True)
            state = self.final
            if flow_logger.isEnabledFor(_INFO):
                log_line(flow_logger, _INFO, FINISHED, (state,), flow_extra(self),
                         FLOW_FINISHED, state)
            elif self.flow_run is not None:
                flow_run_ended(flow_logger, self.flow_run.id)
            callbacks = callbacks_for(self.flow.spec, state)
            if callbacks:
                run_callbacks(callbacks, self.flow, self.flow_run, state, flow_logger, flow_extra(self))
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
        self.final = states.Crashed(message=f"Execution was interrupted by {name} while the run was "
                                       f"finishing (its body had ended in state {state.name}).", data=exc)
        self.final.state_details.flow_run_id = self.flow_run.id
        flow_logger.error("%s", self.final.message, extra=flow_extra(self))


def _made_by_user(state: states.State) -> bool:
    """Whether ``state`` was made by the flow's code, not taken from a run it started (a
    task's or subflow's final state notes which run it ended)."""
    details = state.state_details
    return details.flow_run_id is None and details.task_run_id is None


def _result(state: states.State, return_state: bool) -> Any:
    return state if return_state else state.result()


#: The file a retry is loading its flow from, while it does (``headwater.retry``): a
#: flow called by that file's top-level code would start a new, unwanted flow run.
loading_for_retry: str | None = None


def _start(flow: Flow, args: tuple[Any, ...], kwargs: dict[str, Any], resume: FlowRun | None = None,
           parameters: dict[str, Any] | None = None) -> FlowExecution:
    """Bind the arguments, create and name the run (or reopen ``resume``, a recorded run
    retried), start its task runner. A run that fails here (bad parameters, a bad runner)
    has its final state set already."""
    if loading_for_retry is not None:
        raise RetryError(f"{loading_for_retry} calls flow {flow.name!r} when it is imported, so a retry "
                         f"cannot load it without starting a new flow run: put the calls under "
                         f"`if __name__ == \"__main__\":`")
    if parameters is None:
        parameters = flow.binder.bind(args, kwargs)
    execution = FlowExecution(flow, parameters, Session.current(), resume)
    execution.enter()
    try:
        if execution.create() is None:
            execution.start_runner()
    except BaseException as exc:
        _interrupted(execution, exc)
        execution.exit()
        raise
    return execution


def _interrupted(execution: FlowExecution, exc: BaseException) -> None:
    """End a run that an exception escaped from: Crashed, runner stopped, logged. An
    interrupt after the run settled (while it finished) reaches the caller all the
    same, so it is recorded Crashed too."""
    if execution.final is None:
        execution.crash(exc)
    elif not isinstance(exc, Exception) and exc is not execution.final.data:  # (not the outcome re-raised)
        execution.interrupted_while_finishing(exc)
    if not execution.closed:
        execution.finish()


def _earlier_subflow(flow: Flow, args: tuple[Any, ...],
                     kwargs: dict[str, Any]) -> tuple[states.State | None, FlowRun | None]:
    """In a retried flow run, the earlier run of this subflow call, if any: its final
    state when it completed with a persisted result (reused whole, not run), else the
    run itself, to retry (``(None, run)``). ``(None, None)``: run it as a new subflow."""
    parent = flow_run_ctx.get()
    if parent is None or parent.reuse is None:
        return None, None
    try:
        parameters = flow.binder.bind(args, kwargs)
        if flow.spec.validate_parameters:
            parameters = flow.validator.validate(parameters)
    except Exception:  # noqa: BLE001 - the call fails as a new run, where it is reported
        return None, None
    digest = inputs_hash(parameters)
    earlier = parent.reuse.match_subflow(flow.name, digest) if digest is not None else None
    if earlier is None:
        return None, None
    state = earlier.state
    # Reused whole only if its flow is as it was (its version: the given one, else a hash
    # of its file); else retried, its task runs matched one by one.
    if state is not None and state.is_completed() and earlier.result_location and \
            earlier.flow_version == flow.version:
        try:
            value = read_result(parent.result_store, earlier.result_location, None)
        except ResultMissing as exc:
            flow_logger.warning("The result of subflow run %r cannot be read (%s); running it again",
                                earlier.name, exc, extra=flow_extra(parent))
            return None, earlier
        flow_logger.info("Reused subflow run %r: it completed in an earlier attempt", earlier.name,
                         extra=flow_extra(parent))
        reused = states.Completed(message=f"Reused subflow run {earlier.name!r} of an earlier attempt",
                                  data=value)
        reused.state_details.flow_run_id = earlier.id
        return reused, None
    return None, earlier


def run_flow(flow: Flow, args: tuple[Any, ...], kwargs: dict[str, Any], return_state: bool) -> Any:
    """``my_flow(...)`` for a sync flow."""
    reused, resume = _earlier_subflow(flow, args, kwargs)
    if reused is not None:
        return _result(reused, return_state)
    with _start(flow, args, kwargs, resume) as execution:
        if execution.final is None:  # else it failed before the body could run
            drive(flow_attempts(execution), execution.call_body_with_timeout, execution.wait_for_futures)
        return _result(execution.finish(), return_state)


async def run_flow_async(flow: Flow, args: tuple[Any, ...], kwargs: dict[str, Any],
                         return_state: bool) -> Any:
    """``await my_flow(...)`` for an async flow."""
    reused, resume = _earlier_subflow(flow, args, kwargs)
    if reused is not None:
        return _result(reused, return_state)
    with _start(flow, args, kwargs, resume) as execution:
        if execution.final is None:  # else it failed before the body could run
            await drive_async(flow_attempts(execution), execution.call_body_async,
                              execution.wait_for_futures_async)
        return _result(execution.finish(), return_state)


def resume_flow(flow: Flow, run: FlowRun, parameters: dict[str, Any]) -> states.State:
    """A new attempt of the recorded run ``run`` of a sync flow (``headwater.retry``);
    returns its final state."""
    with _start(flow, (), {}, run, parameters) as execution:
        if execution.final is None:
            drive(flow_attempts(execution), execution.call_body_with_timeout, execution.wait_for_futures)
        return execution.finish()


async def resume_flow_async(flow: Flow, run: FlowRun, parameters: dict[str, Any]) -> states.State:
    """:func:`resume_flow` for an async flow."""
    with _start(flow, (), {}, run, parameters) as execution:
        if execution.final is None:
            await drive_async(flow_attempts(execution), execution.call_body_async,
                              execution.wait_for_futures_async)
        return execution.finish()
