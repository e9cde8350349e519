"""headwater: flows and tasks with retries, caching, concurrency and a full state
history, and no server to run.

Everything here is imported on first use, so ``import headwater`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "flow",
    "task",
    "unmapped",
    "allow_failure",
    "get_run_logger",
    "get_store",
    "retry_run",
    "retry_run_async",
    "tags",
    "hookimpl",
    "Session",
    "Flow",
    "Task",
    "State",
    "StateType",
]

_LAZY = {
    "flow": ("headwater.flows", "flow"),
    "Flow": ("headwater.flows", "Flow"),
    "task": ("headwater.tasks", "task"),
    "Task": ("headwater.tasks", "Task"),
    "unmapped": ("headwater.utilities.annotations", "unmapped"),
    "allow_failure": ("headwater.utilities.annotations", "allow_failure"),
    "get_run_logger": ("headwater.run_logging", "get_run_logger"),
    "hookimpl": ("headwater.plugin_manager", "hookimpl"),
    "Session": ("headwater.session", "Session"),
    "retry_run": ("headwater.retry", "retry_run"),
    "retry_run_async": ("headwater.retry", "retry_run_async"),
    "tags": ("headwater.run_tags", "tags"),
    "State": ("headwater.states", "State"),
    "StateType": ("headwater.states", "StateType"),
}

if TYPE_CHECKING:
    from .flows import Flow, flow
    from .futures import unmapped
    from .utilities.annotations import allow_failure
    from .plugin_manager import hookimpl
    from .retry import retry_run, retry_run_async
    from .run_logging import get_run_logger
    from .run_tags import tags
    from .session import Session
    from .states import State, StateType
    from .stores import RunStore
    from .tasks import Task, task


def get_store() -> RunStore:
    """The run store of the active session (read API: ``read_flow_runs``, ...)."""
    # import time: ``import headwater`` loads no session (tests/core/test_import_light.py)
    from .session import Session

    return Session.current().store


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'headwater' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(target[0]), target[1])
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
