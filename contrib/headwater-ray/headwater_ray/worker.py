"""What runs on a Ray worker: one task run's attempts, returned as pickled bytes
(``headwater.remote_worker.run_packed``).

Imported by reference on the workers, so ``headwater`` and ``headwater-ray`` must be
installed there. The task itself arrives pickled (by value for the user's own modules)
with each run, or, when large, as a Ray object every run of it shares; a worker
unpickles it once per flow run.
"""

from __future__ import annotations

from typing import Any

from headwater.remote import Outcome
from headwater.remote_worker import NOT_READY, run_packed

__all__ = ["NOT_READY", "run_task"]


def run_task(token: str, task: bytes | list[Any], run_blob: bytes, *upstream: bytes) -> bytes:
    """Run one detached task run. ``task`` is the pickled task, or (a large one) a list
    holding its object ref, fetched only when this worker meets ``token`` first;
    ``upstream`` are the pickled outcomes of the runs it depends on (Ray resolves their
    object refs here), in the order of its ``UpstreamRef`` indexes. Never raises: a run
    that cannot be loaded here fails with a message that says so."""
    return run_packed("Ray", token, lambda: _task_blob(task), run_blob, upstream, _keep_traceback)


def _task_blob(task: bytes | list[Any]) -> bytes:
    if isinstance(task, bytes):
        return task
    import ray

    return ray.get(task[0])


def _keep_traceback(outcome: Outcome) -> None:
    """Make the task's exception pickle with its traceback, so the flow process re-raises
    it with the user's frames (pickle drops tracebacks otherwise)."""
    error: Any = outcome.final.data
    if isinstance(error, BaseException) and error.__traceback__ is not None:
        from tblib import pickling_support

        pickling_support.install(error)
