"""The headwater plugin: registers the task runner name ``"dask"``.

Loaded by headwater through the ``headwater.plugins`` entry point. It imports nothing
from dask: the runner class (and so dask) is imported only when a flow uses it.
"""

from __future__ import annotations

from typing import Any

from headwater.plugin_manager import hookimpl


def _make_dask_runner(*args: Any, **kwargs: Any) -> Any:
    from headwater_dask.runner import DaskTaskRunner

    return DaskTaskRunner(*args, **kwargs)


@hookimpl
def headwater_register_components(registry: Any) -> None:
    registry.add_task_runner("dask", _make_dask_runner, source="headwater-dask")
