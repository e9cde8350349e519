"""The headwater plugin: serves ``HEADWATER_RESULT_STORAGE`` URLs of fsspec's writable
file systems (:data:`SCHEMES`) with :class:`~headwater_fsspec.store.FsspecResultStore`.

Loaded by headwater through the ``headwater.plugins`` entry point. It imports nothing
from fsspec: the store (and so fsspec) is imported when a flow first persists or reads
a result.
"""

from __future__ import annotations

from typing import Any

from headwater.plugin_manager import hookimpl

#: The schemes served: fsspec's file systems that can write (``http://``, ``zip://`` and
#: the like only read). ``local://`` stays the local store's (its ownership checks).
SCHEMES = ("file", "memory", "s3", "s3a", "gcs", "gs", "az", "abfs", "abfss", "hdfs", "sftp", "ssh", "smb")


def make_fsspec_store(url: str, session: Any) -> Any:
    """The result store at ``url``, with the session's serializers (a registry
    ``result_store`` factory)."""
    from headwater_fsspec.store import FsspecResultStore  # import time: fsspec, when used

    serializers = {name: s for name, s, _ in session.registry.items("serializer")}
    return FsspecResultStore.from_url(url, serializers)


@hookimpl
def headwater_register_components(registry: Any) -> None:
    for scheme in SCHEMES:
        registry.add_result_store(scheme, make_fsspec_store, source="headwater-fsspec")
