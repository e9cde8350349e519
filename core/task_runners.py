"""Task runners: where submitted task runs execute (docs/task-runners.md).

The interface is small. A runner gets each submitted task run as a
:class:`~headwater.futures.Work` (``from headwater.futures import Work``) whose
upstream futures are already done (unless it sets ``handles_dependencies``), and must
call ``work.run()`` for a sync task, or await ``work.arun()`` for an async one, exactly
once, anywhere it likes::

    class InlineRunner(TaskRunner):
        def submit(self, work):
            work.run()

Register it by name with ``registry.add_task_runner("inline", InlineRunner)`` in
``headwater_register_components`` and use ``@flow(task_runner="inline")``.

A task waiting on a future may run that work itself if nobody has claimed it yet (so
nested submits cannot deadlock a full pool). A runner that must run every task its own
way (another process, another machine) calls ``work.claim()`` in ``submit`` first.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .engine.context import FlowRunContext
    from .engine.futures import Work

__all__ = ["TaskRunner", "InlineTaskRunner", "SequentialTaskRunner", "ConcurrentTaskRunner", "ThreadPoolTaskRunner"]


class TaskRunner:
    """Base class of task runners: override ``submit`` (and ``start`` / ``shutdown`` to
    manage workers). One instance serves one flow run; ``duplicate`` makes it from the
    template given as ``@flow(task_runner=...)``."""

    #: True when the runner orders work by its upstream futures itself (e.g. Dask):
    #: then ``submit`` is called at once, with ``work.upstream`` possibly unfinished.
    handles_dependencies: bool = False

    @property
    def name(self) -> str:
        return type(self).__name__

    def duplicate(self) -> TaskRunner:
        """A fresh, unstarted copy: the instance on a decorator is a template per flow run."""
        return copy.copy(self)

    def start(self, context: FlowRunContext | None = None) -> None:
        """Called once when the flow run starts, before any submit."""

    def submit(self, work: Work) -> None:
        """Arrange for ``work.run()`` (or ``await work.arun()`` if ``work.is_async``)."""
        raise NotImplementedError

    def shutdown(self, wait: bool = True) -> None:
        """Called once when the flow run ends, after every future is done (or on a crash,
        with ``wait=False``)."""

    def __repr__(self) -> str:
        return f"{self.name}()"


class InlineTaskRunner(TaskRunner):
    """Runs each submitted task at once, in the submitting thread. Core's own runner:
    the one a flow run uses when no plugin makes one (the runner plugins disabled)."""

    @property
    def name(self) -> str:
        return "inline"

    def submit(self, work: Work) -> None:
        work.run()


def __getattr__(name: str) -> Any:
    if name in ("SequentialTaskRunner", "ConcurrentTaskRunner", "ThreadPoolTaskRunner"):
        # Named here (their public path), imported only when asked for.
        # layering: the built-in runners are default plugins, above core
        from headwater.plugins import concurrent_runner, sequential_runner

        return getattr(sequential_runner if name == "SequentialTaskRunner" else concurrent_runner, name)
    raise AttributeError(f"module 'headwater.task_runners' has no attribute {name!r}")
