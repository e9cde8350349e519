"""The active task run: ``id, name, task_name, parameters, tags, run_count``."""

from __future__ import annotations

from typing import Any

from ..engine.context import task_run_ctx

_EMPTY: dict[str, Any] = {
    "id": None,
    "name": None,
    "task_name": None,
    "parameters": {},
    "tags": [],
    "run_count": 0,
}

__all__ = list(_EMPTY)


def __getattr__(name: str) -> Any:
    if name not in _EMPTY:
        raise AttributeError(f"headwater.runtime.task_run has no attribute {name!r}; "
                             f"available: {', '.join(_EMPTY)}")
    context = task_run_ctx.get()
    if context is None:
        empty = _EMPTY[name]
        return empty.copy() if isinstance(empty, (dict, list)) else empty
    run = context.task_run
    if name == "parameters":
        return dict(run.parameters)
    if name == "tags":
        return sorted(run.tags)
    value = getattr(run, name)
    return value if value or name != "name" else None  # unnamed until naming ends
