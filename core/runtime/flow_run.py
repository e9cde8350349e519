"""The active flow run: ``id, name, flow_name, parameters, run_count, tags, start_time``.

Inside a task, these describe the flow run that the task belongs to.
"""

from __future__ import annotations

from typing import Any

from ..engine.context import flow_run_ctx

_EMPTY: dict[str, Any] = {
    "id": None,
    "name": None,
    "flow_name": None,
    "parameters": {},
    "run_count": 0,
    "tags": [],
    "start_time": None,
}

__all__ = list(_EMPTY)


def __getattr__(name: str) -> Any:
    if name not in _EMPTY:
        raise AttributeError(f"headwater.runtime.flow_run has no attribute {name!r}; "
                             f"available: {', '.join(_EMPTY)}")
    context = flow_run_ctx.get()
    if context is None or context.flow_run is None:
        empty = _EMPTY[name]
        return empty.copy() if isinstance(empty, (dict, list)) else empty
    run = context.flow_run
    if name == "parameters":
        return dict(run.parameters)
    if name == "tags":
        return sorted(run.tags)
    return getattr(run, name)
