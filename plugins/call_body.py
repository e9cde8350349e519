"""Calls flow and task bodies: the innermost implementation that wrappers wrap.

When this is the only implementation the engine calls bodies directly and skips it.
"""

from __future__ import annotations

from typing import Any

from headwater.plugin_manager import hookimpl


@hookimpl(trylast=True)
def headwater_flow_run_call(flow_run: Any) -> Any:
    return flow_run.call_body()


@hookimpl(trylast=True)
def headwater_task_run_call(task_run: Any) -> Any:
    return task_run.call_body()
