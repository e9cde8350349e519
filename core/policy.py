"""StatePolicy: the rules that answer a run's proposed states.

The engine proposes; the policy answers. It is the one place where retries, cache hits
and timeouts are decided, so a plugin can change any of them by returning its own
policy from ``headwater_make_state_policy`` or by wrapping the default one.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .context import TaskRunContext
    from .states import State


def delay_for(delays: float | list[float], retry_index: int, jitter: float | None) -> float:
    """The delay in seconds before retry number ``retry_index`` (0-based): ``delays`` is
    a number or a list (one per retry, the last repeats); ``jitter`` spreads it by up to
    that fraction, never below zero. Task retries (the retries plugin) and flow
    retries (the engine) both use it."""
    if isinstance(delays, list):
        base = float(delays[min(retry_index, len(delays) - 1)]) if delays else 0.0
    else:
        base = float(delays)
    if jitter:
        base = max(0.0, base + random.uniform(-jitter * base, jitter * base))
    return base


class StatePolicy:
    """The do-nothing policy: run once, no cache, no timeout.

    Subclass it, or wrap another policy and delegate to it.
    """

    #: Seconds a single attempt may take, or None.
    timeout_seconds: float | None = None
    #: Whether the engine must compute a cache key (and persist results).
    uses_cache: bool = False

    def propose_running(self, ctx: TaskRunContext) -> State | None:
        """Before an attempt: return a final state (e.g. ``Cached``) to skip the call,
        or ``None`` to run it. ``ctx.task_run.cache_key`` is set when the task has a key.

        ``ctx`` is the :class:`~headwater.context.TaskRunContext`, the same for every
        method: ``ctx.task``, ``ctx.task_run``, ``ctx.parameters``, ``ctx.retries_done``
        (retries scheduled so far), ``ctx.store`` (the run store) and
        ``ctx.result_store``. Any other answer than ``None`` or a final state ends the
        run ``Failed`` with an error naming the policy's class."""
        return None

    def propose_failed(self, ctx: TaskRunContext, exc: BaseException, state: State) -> State:
        """After a failed attempt: return ``state`` (or another final state) to end the
        run, or ``AwaitingRetry`` (with ``scheduled_time``; without one: at once) to run
        again; any SCHEDULED state with a ``scheduled_time`` is a retry at that time.
        A ``Completed`` answer accepts the failure: the run is recorded completed (with
        a warning in its log). Anything else (``Scheduled()`` without a time,
        ``Pending``, ``Running``, ``None``, not a state) ends the run ``Failed`` with an
        error naming the policy's class."""
        return state

    def propose_completed(self, ctx: TaskRunContext, state: State) -> State:
        """After a successful attempt: return the final state (``state``, or e.g. a
        ``Failed`` one to reject the result). A caching policy records the result under
        the run's cache key here. A non-final answer ends the run ``Failed`` with an
        error naming the policy's class."""
        return state


class WrappingPolicy(StatePolicy):
    """A policy that adds to another one; every method delegates unless overridden."""

    def __init__(self, inner: StatePolicy) -> None:
        self.inner = inner
        self.timeout_seconds = inner.timeout_seconds
        self.uses_cache = inner.uses_cache

    def propose_running(self, ctx: TaskRunContext) -> State | None:
        return self.inner.propose_running(ctx)

    def propose_failed(self, ctx: TaskRunContext, exc: BaseException, state: State) -> State:
        return self.inner.propose_failed(ctx, exc, state)

    def propose_completed(self, ctx: TaskRunContext, state: State) -> State:
        return self.inner.propose_completed(ctx, state)

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet (unpickling, copying): no endless recursion
            raise AttributeError(name)
        return getattr(self.inner, name)
