"""The active flow run and task run, held in context variables.

Context variables (not thread-locals) so that async tasks, and worker threads started
with a copy of the context, see the run that started them. The flow run variable holds
the engine's ``FlowRunContext``, the task run variable the run's
:class:`~headwater.policy.TaskRunContext`. They live at the bottom of the layers so that
``TaskRunContext.get()`` can read them; the engine sets them (``headwater.engine.context``).
"""

from __future__ import annotations

import contextvars
from typing import Any

flow_run_ctx: contextvars.ContextVar[Any] = contextvars.ContextVar("headwater_flow_run", default=None)
task_run_ctx: contextvars.ContextVar[Any] = contextvars.ContextVar("headwater_task_run", default=None)
