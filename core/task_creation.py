"""Creating task runs: the task's key, the run's name, its record as Pending.

``task(...)``, ``.submit`` and ``.map`` (``task_calls``) create every task run here, then
hand it to the run loop (``engine``).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from typing import TYPE_CHECKING, Any

from . import states as S
from .context import FlowRunContext, task_run_ctx
from .engine import MAX_TASK_NESTING, TaskExecution, never_started, transition
from .errors import RunNameError, TaskNestingError, TaskTimeout
from .futures import Future
from .ids import time_ordered_id
from .run_logging import flow_logger, log_line
from .runs import TaskRun

if TYPE_CHECKING:
    from .tasks import Task

_INFO = logging.INFO
_get_ident = threading.get_ident


def task_key(task: Task) -> str:
    """A stable 8-hex key for a task: same in every process, unaffected by line numbers,
    and by how its file was started (script, ``headwater run``, import): the defining
    file relative to the project root, the qualified name and the task name
    (``headwater.identity``; docs/caching.md)."""
    from .identity import function_origin

    fn = task.fn
    qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    ident = f"{function_origin(fn)}:{qualname}:{task.name}"
    return hashlib.sha1(ident.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def create_task_run(task: Task, fctx: FlowRunContext, parameters: dict[str, Any],
                    upstream: list[Future]) -> TaskExecution:
    """Create, name and record a Pending task run."""
    if fctx.abandoned and threading.get_ident() in fctx.abandoned:
        raise TaskTimeout(f"{fctx.label} timed out; its body, still running in the background, "
                          f"starts no new task runs (task {task.name!r} was not run)")
    parent = task_run_ctx.get()
    nesting = 0 if parent is None else parent.nesting + 1
    if nesting >= MAX_TASK_NESTING:
        raise TaskNestingError(f"task {task.name!r} was not run: task runs are nested {nesting} deep, "
                               f"the limit (headwater.engine.MAX_TASK_NESTING); does a task call "
                               f"itself without end?")
    run = TaskRun(time_ordered_id(), task.name, task.task_key, "", parameters, task.spec.tags,
                  fctx.flow_run.id if fctx.flow_run is not None else None)
    if upstream:
        run.upstream_ids = tuple(f.task_run_id for f in upstream)
    ex = TaskExecution(task, run, fctx, parameters)
    if nesting:
        # Called by a task, maybe in a worker thread: known to the flow run, which ends
        # it should it crash meanwhile (submitted runs it knows by their futures).
        ex.nesting = nesting
        fctx.nested[run.id] = ex
    run.name = _task_run_name(ex, fctx) or run.id  # the last resort: no plugin named it
    try:
        fctx.store.create_task_run(run)
        transition(ex.flow_context, run, S.Pending())
        if fctx.flow_run is not None and flow_logger.isEnabledFor(_INFO):
            log_line(flow_logger, _INFO, "Created task run %r for task %r", (run.name, task.name),
                     {"run_label": fctx.label, "flow_run_id": fctx.flow_run.id, "task_run_id": run.id})
    except BaseException as exc:
        # Interrupted (or the store failed) between creating the run and recording its
        # first state: the store would keep a run with no state at all.
        fctx.unfinished.append((ex, exc, _get_ident()))  # see execute_sync
        never_started(ex, exc)
        raise
    return ex


def _task_run_name(ex: TaskExecution, fctx: FlowRunContext) -> str | None:
    bindings = fctx.bindings
    namer = bindings.task_run_name
    if namer is None:
        return None
    index = fctx.next_index(ex.task.task_key)
    if ex.task.spec.task_run_name is None and "task_run_name" in bindings.default_bound:
        # run_naming's own function alone and no template: it reads no headwater.runtime
        # and answers a string, so the context switch and the checks are saved, and it
        # is called positionally (keywords cost about 0.1 us more per task run).
        return namer(ex.task, ex.parameters, index)
    token = task_run_ctx.set(ex)  # so naming callables can read headwater.runtime.task_run
    try:
        name = namer(task=ex.task, parameters=ex.parameters, index=index)
    finally:
        task_run_ctx.reset(token)
    if name is not None and not isinstance(name, str):
        raise RunNameError(f"the task run name for {ex.task.name!r} must be a string, got {name!r}")
    if name is not None and not name.strip():  # a run no one could find by its name
        raise RunNameError(f"the task run name for {ex.task.name!r} must not be blank, got {name!r}")
    return name


def standalone_context(task: Task) -> FlowRunContext:
    """The context for a task called outside any flow: no flow run, the task's own hooks."""
    from .session import Session

    session = Session.current()
    return FlowRunContext(None, None, session, session.bindings_for(task.source_dir))
