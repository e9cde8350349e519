"""The sequential task runner: each submitted task runs to completion, in order, in the
flow's own thread."""

from __future__ import annotations

from typing import Any

from headwater.plugin_manager import hookimpl
from headwater.futures import Work
from headwater.task_runners import TaskRunner


class SequentialTaskRunner(TaskRunner):
    """Runs every submitted task immediately, before ``submit`` returns."""

    def submit(self, work: Work) -> None:
        work.run()


@hookimpl
def headwater_register_components(registry: Any) -> None:
    registry.add_task_runner("sequential", SequentialTaskRunner, source="sequential_runner")
