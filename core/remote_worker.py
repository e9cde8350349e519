"""What runs on a remote runner's worker: one task run's attempts, returned as pickled
bytes (an :class:`headwater.remote.Outcome`).

A runner's worker module (``headwater_dask.worker``, ``headwater_ray.worker``) has a
``run_task`` function the engine calls by reference; it hands its arguments to
:func:`run_packed`. The task arrives pickled (by value for the user's own modules), once
per flow run and task, with a token naming it, so a thousand runs of one task unpickle
it once per worker process.
"""

from __future__ import annotations

import pickle
import socket
import threading
from typing import Any, Callable

import cloudpickle

from . import states
from .remote import Outcome, RemoteError, fill_upstream, make_sendable, run_detached
from .remote_pickling import dumps

__all__ = ["NOT_READY", "cannot_load", "run_packed"]

#: Returned instead of an outcome when an upstream run did not complete: the flow
#: process then records ``NotReady`` for the run, as with every other runner.
NOT_READY = b"headwater-not-ready"

# Unpickled tasks and policies, per flow run and task. Small and cleared when full: a
# cache, not a registry.
_tasks: dict[str, tuple[Any, Any, Any]] = {}
_tasks_lock = threading.Lock()
_MAX_TASKS = 512


def _task_and_policy(token: str, load: Callable[[], bytes]) -> tuple[Any, Any, Any]:
    entry = _tasks.get(token)
    if entry is None:
        entry = pickle.loads(load())
        with _tasks_lock:
            if len(_tasks) >= _MAX_TASKS:
                _tasks.clear()
            _tasks[token] = entry
    return entry


def run_packed(engine: str, token: str, load_task: Callable[[], bytes], run_blob: bytes,
               upstream: tuple[bytes, ...],
               before_sending: Callable[[Outcome], None] | None = None) -> bytes:
    """Run one detached task run. ``load_task`` gives the pickled ``(task, policy, flow
    facts)`` the first time this process meets ``token``; ``upstream`` are the pickled
    outcomes of the runs it depends on, in the order of its ``UpstreamRef`` indexes;
    ``before_sending`` may adjust the outcome before it is pickled.

    Never raises: a task or argument that cannot be loaded here (a module the worker
    cannot import, say) fails the run with a message that says so (``engine`` names
    the worker in it)."""
    try:
        task, policy, facts = _task_and_policy(token, load_task)
    except BaseException as exc:
        return cannot_load(engine, "the task", exc)
    results = []
    for blob in upstream:
        outcome = pickle.loads(blob) if blob != NOT_READY else None
        if not isinstance(outcome, Outcome) or not outcome.final.is_completed():
            return NOT_READY
        results.append(outcome.final.data)
    try:
        detached = pickle.loads(run_blob)
    except BaseException as exc:
        return cannot_load(engine, f"the arguments of task {task.name!r}", exc)
    if results:
        detached.parameters = {k: fill_upstream(v, results) for k, v in detached.parameters.items()}
    outcome = run_detached(task, policy, detached, facts)
    if before_sending is not None:
        before_sending(outcome)
    return make_sendable(outcome, dumps, repr(detached.name))


def cannot_load(engine: str, what: str, exc: BaseException) -> bytes:
    """A failed outcome, pickled: ``what`` could not be loaded on this worker."""
    error = RemoteError(f"{what} could not be loaded on the {engine} worker on {socket.gethostname()}: "
                        f"{type(exc).__name__}: {exc}. Install the packages the task needs on "
                        f"every worker (see docs/distributed.md)")
    failed = states.Failed(message=f"Task run encountered an exception before it started: {error}", data=error)
    return cloudpickle.dumps(Outcome(task_run_id="", states=[failed], end_ts=failed.ts))
