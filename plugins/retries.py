"""Retries: the default state policy.

A failed attempt is answered ``AwaitingRetry`` (with its ``scheduled_time``) while
retries remain and ``retry_condition_fn`` (if any) agrees; otherwise it stays ``Failed``.
``retry_delay_seconds`` is a number or a list (one per retry, the last repeats);
``retry_jitter_factor`` spreads each delay by up to that fraction, never below zero.

The policy reads ``ctx.retries_done`` (how many retries this run had so far),
``ctx.task`` and ``ctx.task_run`` (for ``retry_condition_fn``) from the context the
engine passes (:class:`headwater.context.TaskRunContext`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from headwater.plugin_manager import hookimpl
from headwater.policy import StatePolicy, delay_for
from headwater.errors import RunFailed
from headwater.states import AwaitingRetry, Failed, State

__all__ = ["RetryPolicy", "delay_for", "headwater_make_state_policy"]


class RetryPolicy(StatePolicy):
    """The default state policy of a task: its ``retries`` (with ``retry_delay_seconds``,
    ``retry_jitter_factor`` and ``retry_condition_fn``) and its ``timeout_seconds``, read
    from the task's options once. Made per task per flow run; stateless between runs."""

    def __init__(self, task: Any) -> None:
        spec = task.spec
        self.retries = spec.retries
        self.delays = spec.retry_delay_seconds
        self.jitter = spec.retry_jitter_factor
        self.condition = spec.retry_condition_fn
        self.timeout_seconds = spec.timeout_seconds

    def propose_failed(self, ctx: Any, exc: BaseException, state: State) -> State:
        # ``ctx`` is a TaskRunContext (or any object with these attributes, in a test):
        # ``retries_done``, ``task`` and ``task_run`` are what this policy reads.
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
