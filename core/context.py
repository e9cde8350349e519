"""The active runs, for code running inside them: the context variables that hold
the active flow run's :class:`FlowRunContext` and the active task run's
:class:`~headwater.policy.TaskRunContext`.

Most code reads ``headwater.runtime.flow_run`` / ``headwater.runtime.task_run``
instead; plugins that need the whole context read these.
"""

from __future__ import annotations

from .engine.context import FlowRunContext, flow_run_ctx, task_run_ctx
from .policy import TaskRunContext

__all__ = ["FlowRunContext", "TaskRunContext", "flow_run_ctx", "task_run_ctx"]
