"""What runs on a Ray worker: one task run's attempts, returned as pickled bytes.

Imported by reference on the workers, so ``headwater`` and ``headwater-ray`` must be
installed there. The task itself arrives pickled (by value for the user's own modules),
once per flow run and task, as a Ray object every run of it shares.
"""

from __future__ import annotations

import pickle
import threading
from typing import Any

import cloudpickle

from headwater import states
from headwater.remote import Outcome, RemoteError, fill_upstream, make_sendable, run_detached

#: Returned instead of an outcome when an upstream run did not complete: the flow
#: process then records ``NotReady`` for the run, as with every other runner.
NOT_READY = b"headwater-not-ready"

# Unpickled tasks and policies, per flow run and task, so a thousand runs of one task
# unpickle it once per worker. Small and cleared when full: a cache, not a registry.
_tasks: dict[str, tuple[Any, Any, Any]] = {}
_tasks_lock = threading.Lock()
_MAX_TASKS = 512


def _task_and_policy(token: str, blob: bytes) -> tuple[Any, Any, Any]:
    entry = _tasks.get(token)
    if entry is None:
        entry = pickle.loads(blob)
        with _tasks_lock:
            if len(_tasks) >= _MAX_TASKS:
                _tasks.clear()
            _tasks[token] = entry
    return entry


def run_task(token: str, task_blob: bytes, run_blob: bytes, *upstream: bytes) -> bytes:
    """Run one detached task run; ``upstream`` are the pickled outcomes of the runs it
    depends on (Ray resolves their object refs here), in the order of its
    ``UpstreamRef`` indexes.

    Never raises: a task or argument that cannot be loaded here (a module the worker
    cannot import, say) fails the run with a message that says so."""
    try:
        task, policy, facts = _task_and_policy(token, task_blob)
    except BaseException as exc:
        return _cannot_load("the task", exc)
    results = []
    for blob in upstream:
        outcome = pickle.loads(blob) if blob != NOT_READY else None
        if not isinstance(outcome, Outcome) or not outcome.final.is_completed():
            return NOT_READY
        results.append(outcome.final.data)
    try:
        detached = pickle.loads(run_blob)
    except BaseException as exc:
        return _cannot_load(f"the arguments of task {task.name!r}", exc)
    if results:
        detached.parameters = {k: fill_upstream(v, results) for k, v in detached.parameters.items()}
    outcome = run_detached(task, policy, detached, facts)
    _keep_traceback(outcome.final.data)
    return make_sendable(outcome, cloudpickle.dumps, repr(detached.name))


def _keep_traceback(error: Any) -> None:
    """Make the task's exception pickle with its traceback, so the flow process re-raises
    it with the user's frames (pickle drops tracebacks otherwise)."""
    if isinstance(error, BaseException) and error.__traceback__ is not None:
        from tblib import pickling_support

        pickling_support.install(error)


def _cannot_load(what: str, exc: BaseException) -> bytes:
    import socket

    error = RemoteError(f"{what} could not be loaded on the Ray worker on {socket.gethostname()}: "
                        f"{type(exc).__name__}: {exc}. Install the packages the task needs on "
                        f"every worker (see docs/distributed.md)")
    failed = states.Failed(message=f"Task run encountered an exception before it started: {error}", data=error)
    return cloudpickle.dumps(Outcome(task_run_id="", states=[failed], end_ts=failed.ts))
