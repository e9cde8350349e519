"""Read-only views of the active run: ``from headwater.runtime import flow_run, task_run``.

Outside a run every attribute reads as an empty value (``None``, ``{}``, ``0``) and
never raises, so run-name callables and logging helpers can use them anywhere.
"""

from . import flow_run, task_run

__all__ = ["flow_run", "task_run"]
