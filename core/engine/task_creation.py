"""Creating task runs: the run's name, its record as Pending.

``task(...)``, ``.submit`` and ``.map`` (``calls``) create every task run here, then
hand it to the task loop (``task_loop``).
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from .. import states
from ..errors import RunNameError, TaskNestingError, TaskTimeout
from ..ids import time_ordered_id
from ..run_logging import TASK_CREATED, log_line, task_logger
from ..run_tags import tags_var
from ..runs import TaskRun
from ..session import Session
from ..task_lines import CREATED
from .context import FlowRunContext, task_run_ctx
from .futures import Future
from .task_loop import TaskExecution, never_started, transition

if TYPE_CHECKING:
    from ..tasks import Task

#: How deep task runs may nest (a task calling a task calling a task ...), counted from
#: the flow run (or the outermost task run): a task that calls itself without end then
#: fails with one clear error long before Python's recursion limit, which would strike
#: inside the engine while it records the runs.
MAX_TASK_NESTING = 50


_INFO = logging.INFO
_get_ident = threading.get_ident


def create_task_run(task: Task, flow_context: FlowRunContext, parameters: dict[str, Any],
                    upstream: list[Future]) -> TaskExecution:
    """Create, name and record a Pending task run."""
    if flow_context.abandoned and threading.get_ident() in flow_context.abandoned:
        raise TaskTimeout(f"{flow_context.label} timed out; its body, still running in the background, "
                          f"starts no new task runs (task {task.name!r} was not run)")
    parent = task_run_ctx.get()
    nesting = 0 if parent is None else parent.nesting + 1
    if nesting >= MAX_TASK_NESTING:
        raise TaskNestingError(f"task {task.name!r} was not run: task runs are nested {nesting} deep, "
                               f"the limit (headwater.engine.task_creation.MAX_TASK_NESTING); does a task call "
                               f"itself without end?")
    run_tags = task.spec.tags
    in_block = tags_var.get()  # ``with tags(...)``: mostly empty, so one read is all it costs
    if in_block:
        run_tags = run_tags | in_block
    run = TaskRun(time_ordered_id(), task.name, task.task_key, "", parameters, run_tags,
                  flow_context.flow_run.id if flow_context.flow_run is not None else None)
    if upstream:
        run.upstream_ids = tuple(f.task_run_id for f in upstream)
    execution = TaskExecution(task, run, flow_context, parameters)
    if nesting:
        # Called by a task, maybe in a worker thread: known to the flow run, which ends
        # it should it crash meanwhile (submitted runs it knows by their futures).
        execution.context.nesting = nesting
        flow_context.nested[run.id] = execution
    run.name = _task_run_name(execution, flow_context) or run.id  # the last resort: no plugin named it
    try:
        flow_context.store.create_task_run(run)
        transition(execution.flow_context, run, states.Pending())
        if flow_context.flow_run is not None and task_logger.isEnabledFor(_INFO):
            # On the task runs' logger (a line per task run), labelled with the flow run.
            log_line(task_logger, _INFO, CREATED, (run.name, task.name),
                     {"run_label": flow_context.label, "flow_run_id": flow_context.flow_run.id, "task_run_id": run.id},
                     TASK_CREATED)
    except BaseException as exc:
        # Interrupted (or the store failed) between creating the run and recording its
        # first state: the store would keep a run with no state at all.
        flow_context.unfinished.append((execution, exc, _get_ident()))  # see execute_sync
        never_started(execution, exc)
        raise
    return execution


def _task_run_name(execution: TaskExecution, flow_context: FlowRunContext) -> str | None:
    bindings = flow_context.bindings
    namer = bindings.task_run_name
    if namer is None:
        return None
    index = flow_context.next_index(execution.task.task_key)
    if execution.task.spec.task_run_name is None and "task_run_name" in bindings.default_bound:
        # run_naming's own function alone and no template: it reads no headwater.runtime
        # and answers a string, so the context switch and the checks are saved, and it
        # is called positionally (keywords cost about 0.1 us more per task run).
        return namer(execution.task, execution.context.parameters, index)
    token = task_run_ctx.set(execution.context)  # so naming callables can read headwater.runtime.task_run
    try:
        name = namer(task=execution.task, parameters=execution.context.parameters, index=index)
    finally:
        task_run_ctx.reset(token)
    if name is not None and not isinstance(name, str):
        raise RunNameError(f"the task run name for {execution.task.name!r} must be a string, got {name!r}")
    if name is not None and not name.strip():  # a run no one could find by its name
        raise RunNameError(f"the task run name for {execution.task.name!r} must not be blank, got {name!r}")
    return name


def standalone_context(task: Task) -> FlowRunContext:
    """The context for a task called outside any flow: no flow run, the task's own hooks."""
    session = Session.current()
    return FlowRunContext(None, None, session, session.bindings_for(task.source_dir))
