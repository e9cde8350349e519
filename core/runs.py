"""FlowRun and TaskRun: one execution of a flow or a task.

The engine creates them; the run store records them and gives them back from its read
API (then without a live body to call). ``stash`` holds plugins' own per-run values.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Callable

from .stash import Stash
from .states import State


def _dt_or_none(timestamp: float | None) -> _dt.datetime | None:
    return None if timestamp is None else _dt.datetime.fromtimestamp(timestamp, tz=_dt.timezone.utc)


class _Run:
    __slots__ = (
        "id",
        "name",
        "parameters",
        "tags",
        "state",
        "start_ts",
        "end_ts",
        "run_count",
        "_stash",
        "_body",
    )
    kind = "run"

    def __init__(self, id: str, name: str = "", parameters: dict[str, Any] | None = None,
                 tags: frozenset[str] = frozenset()) -> None:
        self.id = id
        self.name = name
        self.parameters = parameters if parameters is not None else {}
        self.tags = tags
        self.state: State | None = None
        self.start_ts: float | None = None
        self.end_ts: float | None = None
        self.run_count = 0
        self._stash: Stash | None = None
        self._body: Callable[[], Any] | None = None

    @property
    def stash(self) -> Stash:
        if self._stash is None:
            self._stash = Stash()
        return self._stash

    @property
    def start_time(self) -> _dt.datetime | None:
        return _dt_or_none(self.start_ts)

    @property
    def end_time(self) -> _dt.datetime | None:
        return _dt_or_none(self.end_ts)

    @property
    def duration(self) -> float | None:
        if self.start_ts is None:
            return None
        end = self.end_ts or (self.state.ts if self.state else self.start_ts)
        return end - self.start_ts

    def set_body(self, body: Callable[[], Any] | None) -> None:
        """Set what :meth:`call_body` calls (engine only: the run's bound call)."""
        self._body = body

    def drop_live_parts(self) -> None:
        """Forget the bound call and the stash: what stays in this process when the run
        is sent to another one."""
        self._body = None
        self._stash = None

    def call_body(self) -> Any:
        """Call the run's function with its bound arguments (one attempt)."""
        if self._body is None:
            raise RuntimeError(f"{self.kind} run {self.name!r} has no body to call here")
        return self._body()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r}, name={self.name!r}, state={self.state!s})"


class FlowRun(_Run):
    """One run of a flow: its id, name, parameters, current state, and the parent
    flow run and task run when it is a subflow."""

    __slots__ = ("flow_name", "flow_version", "parent_flow_run_id", "parent_task_run_id", "flow_info",
                 "entry_point", "inputs_hash", "parameters_location", "result_location")
    kind = "flow"

    def __init__(self, id: str, flow_name: str, name: str = "", parameters: dict[str, Any] | None = None,
                 tags: frozenset[str] = frozenset(), flow_version: str | None = None,
                 parent_flow_run_id: str | None = None, parent_task_run_id: str | None = None) -> None:
        super().__init__(id, name, parameters, tags)
        self.flow_name = flow_name
        self.flow_version = flow_version
        self.parent_flow_run_id = parent_flow_run_id
        self.parent_task_run_id = parent_task_run_id
        #: What the flow says about itself (``headwater.stores.FlowInfo``), set by the
        #: engine when it creates the run, for the store to record; else ``None``.
        self.flow_info: Any = None
        #: Where the flow is defined, as JSON (``headwater.reuse.EntryPoint``): what
        #: ``headwater runs retry`` loads. None when it cannot be loaded again.
        self.entry_point: str | None = None
        #: A hash of the parameters (``headwater.reuse.inputs_hash``), None when they
        #: cannot be hashed: a retried parent matches its subflow runs by it.
        self.inputs_hash: str | None = None
        #: Where the exact parameters are persisted (with persisted results), else None.
        self.parameters_location: str | None = None
        #: Where a subflow run's return value is persisted (with persisted results).
        self.result_location: str | None = None


class TaskRun(_Run):
    """One run of a task: its id, name, parameters, current state, its flow run, the
    runs it waited for, and its cache key and result location once known."""

    __slots__ = ("task_name", "task_key", "flow_run_id", "cache_key", "result_location",
                 "upstream_ids", "inputs_hash")
    kind = "task"

    def __init__(self, id: str, task_name: str, task_key: str = "", name: str = "",
                 parameters: dict[str, Any] | None = None, tags: frozenset[str] = frozenset(),
                 flow_run_id: str | None = None) -> None:
        super().__init__(id, name, parameters, tags)
        self.task_name = task_name
        self.task_key = task_key
        self.flow_run_id = flow_run_id
        self.cache_key: str | None = None
        self.result_location: str | None = None
        self.upstream_ids: tuple[str, ...] = ()
        #: A hash of the arguments, set when the result is persisted: a retried flow run
        #: reuses this run for a call of the same task with the same inputs.
        self.inputs_hash: str | None = None
