"""The two drivers of the attempt generators (:mod:`headwater.engine.attempts`): one
for sync runs, one for async runs. They only do the I/O a command asks for (call the
body, wait for the flow's futures, sleep) and hand back its outcome; every decision is
the generator's.
"""

from __future__ import annotations

import time
from typing import Any, Awaitable, Callable

from ..states import State
from .attempts import CALL_BODY, WAIT_FOR_FUTURES, Attempts


def drive(attempts: Attempts, call_body: Callable[[], Any],
          wait_for_futures: Callable[[], None] | None = None) -> State:
    """Run ``attempts`` to its end in this thread; return the final state."""
    try:
        command = next(attempts)
        while True:
            try:
                if command is CALL_BODY:
                    answer = call_body()
                elif command is WAIT_FOR_FUTURES:
                    answer = wait_for_futures() if wait_for_futures is not None else None
                else:
                    answer = time.sleep(command.seconds)  # type: ignore[union-attr]
            except BaseException as exc:
                command = attempts.throw(exc)
            else:
                command = attempts.send(answer)
    except StopIteration as done:
        return done.value


async def drive_async(attempts: Attempts, call_body: Callable[[], Awaitable[Any]],
                      wait_for_futures: Callable[[], Awaitable[None]] | None = None) -> State:
    """Run ``attempts`` to its end on this event loop; return the final state."""
    import anyio  # import time: only async runs need it

    try:
        command = next(attempts)
        while True:
            try:
                if command is CALL_BODY:
                    answer = await call_body()
                elif command is WAIT_FOR_FUTURES:
                    answer = await wait_for_futures() if wait_for_futures is not None else None
                else:
                    answer = await anyio.sleep(command.seconds)  # type: ignore[union-attr]
            except BaseException as exc:
                command = attempts.throw(exc)
            else:
                command = attempts.send(answer)
    except StopIteration as done:
        return done.value
