"""The active runs, for code running inside them: :func:`get_run_context`, and the
context variables that hold the active flow run's :class:`FlowRunContext` and the
active task run's :class:`~headwater.policy.TaskRunContext`.

Most code reads ``headwater.runtime.flow_run`` / ``headwater.runtime.task_run``
instead (they never raise); plugins that need the whole context read the variables.
"""

from __future__ import annotations

from .engine.context import FlowRunContext, flow_run_ctx, task_run_ctx
from .errors import HeadwaterError
from .policy import TaskRunContext
from .run_tags import tags

__all__ = ["FlowRunContext", "MissingContextError", "TaskRunContext", "flow_run_ctx", "get_run_context",
           "tags", "task_run_ctx"]


class MissingContextError(HeadwaterError, RuntimeError):
    """Run context was asked for outside any flow run or task run."""


def get_run_context() -> TaskRunContext | FlowRunContext:
    """The context of the run this code is in.

    Inside a task: its :class:`~headwater.policy.TaskRunContext` (``task_run`` with its
    ``name``, ``id``, ``tags``, ``run_count`` and ``parameters``; ``task``; ``flow_run``,
    ``None`` for a task called outside a flow). Inside a flow (not in one of its tasks):
    its :class:`FlowRunContext` (``flow_run``, ``flow``, ``task_runner``). Outside any
    run, :class:`MissingContextError`.
    """
    task_context = task_run_ctx.get()
    if task_context is not None:
        return task_context
    flow_context = flow_run_ctx.get()
    if flow_context is not None and flow_context.flow_run is not None:
        return flow_context
    raise MissingContextError("get_run_context() was called outside a flow run or task run; call it in the "
                              "body of a @flow or @task (headwater.runtime reads empty values instead of raising)")
