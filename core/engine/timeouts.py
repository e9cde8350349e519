"""Calling with a time limit: ``timeout_seconds`` of tasks and flows.

A thread cannot be interrupted, so a sync call over its limit is left to finish in the
background and its result is discarded; an async call is cancelled at its deadline
(docs/concepts.md, "Timeouts").
"""

from __future__ import annotations

import threading
from typing import Any, Awaitable, Callable

from ..errors import TaskTimeout


def secs(value: float) -> str:
    """Seconds as log lines and messages show them: ``1.5``, ``0.25``, ``30``."""
    return f"{round(value, 2):g}"


def call_in_thread(fn: Callable[[], Any], timeout: float, what: str,
                   abandoned: set[int] | None = None) -> Any:
    """Call ``fn`` in a daemon thread and wait at most ``timeout`` seconds.

    A thread cannot be interrupted: on timeout it is left to finish in the background
    and its result is discarded (docs/concepts.md, "Timeouts"). Its thread id is kept in
    ``abandoned`` until it ends, so the engine can refuse to start new runs from it.
    """
    import contextvars

    outcome: list[Any] = []
    done = threading.Event()
    context = contextvars.copy_context()

    def target() -> None:
        try:
            outcome.append((True, context.run(fn)))
        except BaseException as exc:  # handed to the waiting thread
            outcome.append((False, exc))
        finally:
            with lock:
                done.set()
                if abandoned:
                    abandoned.discard(threading.get_ident())  # the id may be reused now

    lock = threading.Lock()
    thread = threading.Thread(target=target, daemon=True, name="headwater-timeout")
    thread.start()
    if not done.wait(timeout):
        with lock:  # never leave the id of a thread that has just ended in the set
            if abandoned is not None and not done.is_set() and thread.ident is not None:
                abandoned.add(thread.ident)
        raise TaskTimeout(f"{what} exceeded its timeout of {secs(timeout)} second(s)")
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


async def call_with_deadline(call: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
    """Await ``call()`` for at most ``timeout`` seconds (the async twin of
    :func:`call_in_thread`).

    Raises :class:`TaskTimeout` when the deadline cancelled the call, or when the call
    ran past it anyway (blocking code that never yielded to the event loop cannot be
    cancelled; it overran all the same, so its outcome is not kept). Anything else the
    call raises, a ``TimeoutError`` of its own included, propagates unchanged.
    """
    import anyio

    scope = anyio.CancelScope(deadline=anyio.current_time() + timeout)
    try:
        with scope:
            value = await call()
    except Exception:
        if anyio.current_time() <= scope.deadline:
            raise
        value = None  # raised after the deadline: the timeout is the outcome
    if scope.cancelled_caught or anyio.current_time() > scope.deadline:
        raise TaskTimeout(f"{what} exceeded its timeout of {secs(timeout)} second(s)")
    return value
