"""headwater-dask: run headwater task runs on a Dask cluster.

``DaskTaskRunner`` is imported lazily, so loading the plugin (which every headwater
session does through the entry point) never imports dask.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["DaskTaskRunner"]

if TYPE_CHECKING:
    from .runner import DaskTaskRunner


def __getattr__(name: str) -> Any:
    if name == "DaskTaskRunner":
        from .runner import DaskTaskRunner

        return DaskTaskRunner
    raise AttributeError(f"module 'headwater_dask' has no attribute {name!r}")
