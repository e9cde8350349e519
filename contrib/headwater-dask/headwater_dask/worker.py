"""What runs on a Dask worker: one task run's attempts, returned as pickled bytes
(``headwater.remote_worker.run_packed``).

Imported by reference on the workers, so ``headwater`` and ``headwater-dask`` must be
installed there. The task itself arrives pickled (by value for the user's own modules).
"""

from __future__ import annotations

from headwater.remote_worker import NOT_READY, run_packed

__all__ = ["NOT_READY", "run_task"]


def run_task(token: str, task_blob: bytes, run_blob: bytes, *upstream: bytes) -> bytes:
    """Run one detached task run; ``upstream`` are the pickled outcomes of the runs it
    depends on (Dask delivers them), in the order of its ``UpstreamRef`` indexes. Never
    raises: a run that cannot be loaded here fails with a message that says so."""
    return run_packed("Dask", token, lambda: task_blob, run_blob, upstream)
