"""headwater-ray: run headwater task runs on a Ray cluster.

``RayTaskRunner`` is imported lazily, so loading the plugin (which every headwater
session does through the entry point) never imports ray.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["RayTaskRunner", "RayRunnerError"]

if TYPE_CHECKING:
    from .runner import RayRunnerError, RayTaskRunner


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'headwater_ray' has no attribute {name!r}")
