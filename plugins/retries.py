"""Retries: the default state policy, for task runs and flow runs alike.

A failed attempt is answered ``AwaitingRetry`` (with its ``scheduled_time``) while
retries remain and ``retry_condition_fn`` (tasks only; if any) agrees; otherwise it
stays ``Failed``. ``retry_delay_seconds`` is a number or a list (one per retry, the last
repeats); ``retry_jitter_factor`` (tasks only) spreads each delay by up to that
fraction, never below zero.

The policy reads ``ctx.retries_done`` (how many retries this run had so far), and for
``retry_condition_fn`` ``ctx.task`` and ``ctx.task_run``, from the context the engine
passes (:class:`headwater.policy.TaskRunContext`, or
:class:`headwater.policy.FlowRunAttempts` for a flow run).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from headwater.errors import RunFailed
from headwater.plugin_manager import hookimpl
from headwater.policy import StatePolicy, delay_for
from headwater.states import AwaitingRetry, Failed, State

__all__ = ["RetryPolicy", "delay_for", "headwater_make_flow_state_policy", "headwater_make_state_policy"]


class RetryPolicy(StatePolicy):
    """Retry a failed attempt while the task's (or flow's) ``retries`` allow and its
    ``retry_condition_fn`` agrees, after ``retry_delay_seconds`` (spread by
    ``retry_jitter_factor``). Also carries the task's ``timeout_seconds``.

    ``RetryPolicy(task)`` or ``RetryPolicy(flow)``: anything with a ``spec`` holding
    those options (a flow's spec has no jitter and no condition)."""

    def __init__(self, task: Any) -> None:
        spec = task.spec
        self.retries = spec.retries
        self.delays = spec.retry_delay_seconds
        self.jitter = getattr(spec, "retry_jitter_factor", None)
        self.condition = getattr(spec, "retry_condition_fn", None)
        self.timeout_seconds = spec.timeout_seconds

    def propose_failed(self, ctx: Any, exc: BaseException, state: State) -> State:
        done = ctx.retries_done  # retries already scheduled for this run
        if done >= self.retries:
            return state
        if self.condition is not None:
            try:
                should = self.condition(ctx.task, ctx.task_run, state)
            except Exception as cond_exc:
                # Fail now, naming the function: retrying blindly could hide the bug, and
                # the caller should see which function broke, not a bare KeyError.
                name = getattr(self.condition, "__name__", None) or repr(self.condition)
                message = (f"retry_condition_fn {name!r} of task {ctx.task.name!r} raised "
                           f"{type(cond_exc).__name__}: {cond_exc} (while deciding whether to "
                           f"retry after {type(exc).__name__}: {exc})")
                error = RunFailed(message)
                error.__cause__ = cond_exc
                return Failed(message=message, data=error)
            if not should:
                return state
        delay = delay_for(self.delays, done, self.jitter)
        when = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=delay)
        return AwaitingRetry(message=state.message, scheduled_time=when)


@hookimpl(trylast=True)
def headwater_make_state_policy(task: Any, session: Any) -> StatePolicy:
    return RetryPolicy(task)


@hookimpl(trylast=True)
def headwater_make_flow_state_policy(flow: Any, session: Any) -> StatePolicy:
    return RetryPolicy(flow)
