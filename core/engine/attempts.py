"""The decisions of a run's attempts, as generators that do no I/O themselves.

A task run's attempts and a flow run's attempts are each one generator. It yields a
command when it needs the outside world, and is sent the answer back:

* :data:`CALL_BODY`: call the body (with its timeout); the driver sends the return
  value, or throws the exception the body raised;
* :data:`WAIT_FOR_FUTURES`: block until every task run the flow submitted is done
  (flow runs only); the driver sends ``None``;
* :class:`Wait`: sleep ``seconds`` before a retry (never yielded for zero seconds);
  the driver sends ``None``, or throws the interrupt that cut the sleep short.

It returns the run's final state (``StopIteration.value``). Recording states and asking
the state policy happen inside, through the execution object (``TaskExecution`` or
``FlowExecution``): those are quick, in-thread steps, the same for sync and async runs.
The drivers in :mod:`headwater.engine.drivers` do the rest, one sync and one async; a
test drives a generator with ``send``/``throw`` alone, without threads or sleeps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generator, Union

from ..states import State, StateType

if TYPE_CHECKING:
    from .flow_loop import FlowExecution
    from .task_loop import TaskExecution


class _Command:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: Call the run's body once; send back its value or throw its exception.
CALL_BODY = _Command("CALL_BODY")
#: Wait until every task run the flow run submitted has finished (flow runs only).
WAIT_FOR_FUTURES = _Command("WAIT_FOR_FUTURES")


class Wait:
    """Sleep ``seconds`` (more than zero) before the next attempt."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __repr__(self) -> str:
        return f"Wait({self.seconds:g})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Wait) and other.seconds == self.seconds


Command = Union[_Command, Wait]
Attempts = Generator[Command, Any, State]

_SCHEDULED = StateType.SCHEDULED


def task_attempts(execution: TaskExecution) -> Attempts:
    """One task run's attempts, from ``Pending`` to its final state (returned).

    Each attempt: propose Running (the policy may answer a cache hit, a failed cache key
    may schedule a retry), call the body, then let the policy answer the failure
    (retry, or a final state) or the result. An interrupt thrown in (while the body
    runs, or during a retry's wait) ends the run Crashed and is raised again.
    """
    while True:
        final = execution.begin_attempt()
        if final is None:
            try:
                value = yield CALL_BODY
            except BaseException as exc:
                final = execution.failed(exc)  # raises again what is not an Exception
                if final is not None:
                    return final
            else:
                return execution.completed(value)
        elif final.type is not _SCHEDULED:
            return final
        # A retry is due (after a failed attempt, or a cache key that failed).
        delay = execution.retry_delay(execution.task_run.state)
        if delay > 0:
            try:
                yield Wait(delay)
            except BaseException as exc:
                # Interrupted while AwaitingRetry: end the run Crashed (failed() raises
                # it again) rather than leave it waiting forever in the history.
                execution.failed(exc)
                raise


def flow_attempts(execution: FlowExecution) -> Attempts:
    """One flow run's attempts: run the body, wait for what it submitted, settle the
    outcome, and retry while the flow's policy answers so. Returns the settled state
    (recorded later, by ``FlowExecution.finish``)."""
    while True:
        execution.begin_attempt()
        try:
            value = yield CALL_BODY
            yield WAIT_FOR_FUTURES
            delay = execution.body_returned(value)
        except BaseException as exc:
            if isinstance(exc, Exception):
                yield WAIT_FOR_FUTURES  # its tasks still end (and are recorded) first
            delay = execution.failed(exc)  # raises again what is not an Exception
        if delay is None:
            assert execution.final is not None
            return execution.final
        if delay > 0:
            yield Wait(delay)
