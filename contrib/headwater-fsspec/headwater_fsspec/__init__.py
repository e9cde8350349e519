"""headwater's persisted results on any fsspec file system (``HEADWATER_RESULT_STORAGE``).

The plugin (:mod:`headwater_fsspec.plugin`) registers the store for the URL schemes it
serves; :class:`~headwater_fsspec.store.FsspecResultStore` is the store itself.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FsspecResultStore"]


def __getattr__(name: str) -> Any:
    # The store imports fsspec: loaded when asked for, not with the plugin.
    if name == "FsspecResultStore":
        from headwater_fsspec.store import FsspecResultStore

        return FsspecResultStore
    raise AttributeError(f"module 'headwater_fsspec' has no attribute {name!r}")
