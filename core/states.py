"""States: what a flow run or task run is doing, and what it ended with.

A state has a ``type`` (one of :class:`StateType`, what the engine reasons about) and a
``name`` (what people read: ``Cached`` and ``Completed`` are both of type COMPLETED).
States are small slotted objects because a task run creates three or more of them.
"""

from __future__ import annotations

import datetime as _dt
import enum
import time
from typing import Any

from .errors import CancelledRun, CrashedRun, FailedRun, UpstreamFailed

__all__ = [
    "StateType",
    "StateDetails",
    "State",
    "Scheduled",
    "Pending",
    "Running",
    "Completed",
    "Cached",
    "AwaitingRetry",
    "Retrying",
    "Failed",
    "TimedOut",
    "Crashed",
    "Cancelled",
    "Cancelling",
    "Paused",
    "Late",
    "NotReady",
]


class StateType(str, enum.Enum):
    """What the engine reasons about; a state's ``name`` is what people read."""

    SCHEDULED = "SCHEDULED"
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    CRASHED = "CRASHED"
    PAUSED = "PAUSED"
    CANCELLING = "CANCELLING"

    def __repr__(self) -> str:
        return self.name

    __str__ = __repr__


FINAL_TYPES = frozenset(
    {StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED, StateType.CRASHED}
)


class StateDetails:
    """Identifiers and scheduling facts attached to a state."""

    __slots__ = (
        "flow_run_id",
        "task_run_id",
        "cache_key",
        "cache_expiration",
        "scheduled_time",
        "reused_from",
    )

    def __init__(
        self,
        flow_run_id: str | None = None,
        task_run_id: str | None = None,
        cache_key: str | None = None,
        cache_expiration: _dt.datetime | None = None,
        scheduled_time: _dt.datetime | None = None,
        reused_from: str | None = None,
    ) -> None:
        self.flow_run_id = flow_run_id
        self.task_run_id = task_run_id
        self.cache_key = cache_key
        self.cache_expiration = cache_expiration
        self.scheduled_time = scheduled_time
        #: The task run of an earlier attempt whose result a retried flow run reused
        #: (``headwater runs retry``), on that ``Cached`` state.
        self.reused_from = reused_from

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for key in self.__slots__:
            value = getattr(self, key)
            if value is not None:
                out[key] = value.isoformat() if isinstance(value, _dt.datetime) else value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StateDetails:
        details = cls()
        for key in cls.__slots__:
            value = data.get(key)
            if value is not None and key in ("cache_expiration", "scheduled_time"):
                value = _dt.datetime.fromisoformat(value)
            setattr(details, key, value)
        return details

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items())
        return f"StateDetails({inner})"


class State:
    """One state of a run. ``data`` holds the result, or the exception of a failure."""

    __slots__ = ("type", "name", "message", "ts", "_details", "data", "_run_ids")

    def __init__(
        self,
        type: StateType,
        name: str | None = None,
        message: str | None = None,
        data: Any = None,
        state_details: StateDetails | None = None,
        ts: float | None = None,
    ) -> None:
        self.type = type
        self.name = name or type.value.capitalize()
        self.message = message
        self.data = data
        self._details = state_details
        self.ts = time.time() if ts is None else ts
        # (flow_run_id, task_run_id) of the run a final state ended, kept as a plain
        # tuple until someone reads ``state_details``: most final states are never
        # asked, and a details object per task run was one more object for the
        # garbage collector to walk for every future a flow holds.
        self._run_ids: tuple[str | None, str | None] | None = None

    @property
    def timestamp(self) -> _dt.datetime:
        return _dt.datetime.fromtimestamp(self.ts, tz=_dt.timezone.utc)

    @property
    def state_details(self) -> StateDetails:
        # Created on first use: most states never need details.
        details = self._details
        if details is None:
            details = self._details = StateDetails()
        # After the details exist (``note_ended_run`` may run in another thread meanwhile);
        # getattr: a State pickled by an older headwater has no ``_run_ids``.
        ids = getattr(self, "_run_ids", None)
        if ids is not None and details.task_run_id is None and details.flow_run_id is None:
            details.flow_run_id, details.task_run_id = ids
        return details

    @property
    def details_if_made(self) -> StateDetails | None:
        """The details if anything made them, else ``None`` (reading this, unlike
        ``state_details``, makes none: a store writing thousands of states skips them)."""
        return self._details

    def note_ended_run(self, flow_run_id: str | None, task_run_id: str | None) -> None:
        """Note which run this final state ended (engine only)."""
        self._run_ids = (flow_run_id, task_run_id)
        details = self._details
        if details is not None:
            details.flow_run_id, details.task_run_id = flow_run_id, task_run_id

    def result(self, raise_on_failure: bool = True) -> Any:
        """The run's return value; for a failed or crashed state, raise its exception.

        With ``raise_on_failure=False`` a failed state returns its exception instead.
        """
        if self.type in (StateType.FAILED, StateType.CRASHED, StateType.CANCELLED):
            exc = self.data
            if not isinstance(exc, BaseException):
                kind = (CancelledRun if self.type is StateType.CANCELLED else
                        CrashedRun if self.type is StateType.CRASHED else FailedRun)
                exc = kind(f"Run ended in state {self}: {self.message or ''}".strip())
            if raise_on_failure:
                # import time: tracebacks needs logging and traceback (~10 ms); only failures raise
                from .tracebacks import without_headwater_frames

                # The caller sees its own frames and the run's, not the run loop's.
                raise without_headwater_frames(exc)
            return exc
        if self.type is StateType.PENDING and self.name == "NotReady":
            exc = UpstreamFailed(self.message or "An upstream task run failed.")
            if raise_on_failure:
                raise exc
            return exc
        return self.data

    def is_scheduled(self) -> bool:
        return self.type is StateType.SCHEDULED

    def is_pending(self) -> bool:
        return self.type is StateType.PENDING

    def is_running(self) -> bool:
        return self.type is StateType.RUNNING

    def is_completed(self) -> bool:
        return self.type is StateType.COMPLETED

    def is_failed(self) -> bool:
        return self.type is StateType.FAILED

    def is_crashed(self) -> bool:
        return self.type is StateType.CRASHED

    def is_cancelled(self) -> bool:
        return self.type is StateType.CANCELLED

    def is_paused(self) -> bool:
        return self.type is StateType.PAUSED

    def is_final(self) -> bool:
        return self.type in FINAL_TYPES

    def has_ended(self) -> bool:
        """Whether the run in this state is over: a final state, or ``NotReady``.

        ``NotReady`` is of type PENDING but the run never goes on (an upstream run did
        not complete, so it never runs): nothing may end it again, crash detection never
        takes it for unfinished, and the dashboard shows it as not live. The one place
        this rule is written in Python; the SQLite store's ``UNFINISHED_SQL``
        (``plugins/sqlite_liveness.py``) is its twin in SQL.
        """
        return self.type in FINAL_TYPES or (self.type is StateType.PENDING and self.name == "NotReady")

    def shows_type(self) -> bool:
        """Whether the name alone does not say the type (``Cached`` is COMPLETED): then
        ``str(state)`` adds ``type=...``."""
        return self.name.upper() != self.type.value

    def __repr__(self) -> str:
        parts = [f"message={self.message!r}", f"type={self.type.name}"]
        if self.type is StateType.COMPLETED:
            try:
                parts.append(f"result={self.data!r}")
            except Exception as exc:  # noqa: BLE001 - the user's value: the state still shows
                parts.append(f"result=<{type(self.data).__qualname__} object: repr() raised {type(exc).__name__}>")
        return f"{self.name}({', '.join(parts)})"

    def __str__(self) -> str:
        parts = [repr(self.message)] if self.message else []
        if self.shows_type():
            parts.append(f"type={self.type.name}")
        return f"{self.name}({', '.join(parts)})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, State):
            return NotImplemented
        return (self.type, self.name, self.message, self.ts) == (
            other.type,
            other.name,
            other.message,
            other.ts,
        )

    __hash__ = object.__hash__


def _maker(type_: StateType, name: str):
    def make(message: str | None = None, data: Any = None, **details: Any) -> State:
        return State(type_, name, message, data, StateDetails(**details) if details else None)

    make.__name__ = name
    make.__doc__ = f"A new ``{name}`` state (type {type_.name})."
    return make


Scheduled = _maker(StateType.SCHEDULED, "Scheduled")
Pending = _maker(StateType.PENDING, "Pending")
NotReady = _maker(StateType.PENDING, "NotReady")
Running = _maker(StateType.RUNNING, "Running")
Retrying = _maker(StateType.RUNNING, "Retrying")
Completed = _maker(StateType.COMPLETED, "Completed")
Cached = _maker(StateType.COMPLETED, "Cached")
AwaitingRetry = _maker(StateType.SCHEDULED, "AwaitingRetry")
Failed = _maker(StateType.FAILED, "Failed")
TimedOut = _maker(StateType.FAILED, "TimedOut")
Crashed = _maker(StateType.CRASHED, "Crashed")
Cancelled = _maker(StateType.CANCELLED, "Cancelled")
Cancelling = _maker(StateType.CANCELLING, "Cancelling")
Paused = _maker(StateType.PAUSED, "Paused")
Late = _maker(StateType.SCHEDULED, "Late")
