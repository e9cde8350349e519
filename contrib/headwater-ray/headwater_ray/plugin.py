"""The headwater plugin: registers the task runner name ``"ray"``.

Loaded by headwater through the ``headwater.plugins`` entry point. It imports nothing
from ray: the runner class (and so ray) is imported only when a flow uses it.
"""

from __future__ import annotations

from typing import Any

from headwater.plugin_manager import hookimpl


def make_ray_runner(*args: Any, **kwargs: Any) -> Any:
    """Build a ``RayTaskRunner``, importing it (and ray) only now."""
    from headwater_ray.runner import RayTaskRunner

    return RayTaskRunner(*args, **kwargs)


@hookimpl
def headwater_register_components(registry: Any) -> None:
    registry.add_task_runner("ray", make_ray_runner, source="headwater-ray")
