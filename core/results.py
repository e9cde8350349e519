"""Where persisted results live: the ResultStore interface and the serializers.

A result store turns a value into bytes with a named serializer and keeps the bytes
under a location string that it alone interprets.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from .errors import HeadwaterError, UnknownComponentError
from .stash import StashKey

#: Size in bytes of the result the engine just persisted for a task run (in ``run.stash``).
RESULT_SIZE: StashKey[int] = StashKey()

#: The serializer of a task without ``result_serializer``.
DEFAULT_SERIALIZER = "cloudpickle"


class ResultNotPersisted(HeadwaterError):
    """The value could not be serialized or written; the run keeps it in memory only."""


class ResultMissing(HeadwaterError):
    """No readable result at the location (deleted, truncated or corrupted)."""


class Serializer(Protocol):
    def dumps(self, value: Any) -> bytes: ...
    def loads(self, data: bytes) -> Any: ...


class CloudpickleSerializer:
    """Any Python object cloudpickle can pickle. Trusted, local data only."""

    def dumps(self, value: Any) -> bytes:
        import cloudpickle

        return cloudpickle.dumps(value)

    def loads(self, data: bytes) -> Any:
        import pickle

        return pickle.loads(data)


class JSONSerializer:
    """JSON-compatible values only; readable by any tool."""

    def dumps(self, value: Any) -> bytes:
        return json.dumps(value).encode()

    def loads(self, data: bytes) -> Any:
        return json.loads(data)


class ResultStore:
    """Subclass and return an instance from ``headwater_make_result_store``."""

    def write(self, key: str, value: Any, serializer: str = DEFAULT_SERIALIZER) -> tuple[str, int]:
        """Serialize and store ``value`` under ``key``; return ``(location, size in bytes)``.

        Raise :class:`ResultNotPersisted` when the value cannot be serialized or written,
        :class:`~headwater.errors.UnknownComponentError` for an unknown serializer name and
        :class:`~headwater.errors.StoreError` when the storage itself cannot be used.
        """
        raise NotImplementedError

    def read(self, location: str) -> Any:
        """Return the value at ``location``; raise :class:`ResultMissing` if unreadable."""
        raise NotImplementedError

    def delete(self, location: str) -> None:
        """Remove the result at ``location``; a missing one is not an error."""
        raise NotImplementedError


def unknown_serializer(name: str, known: Any) -> UnknownComponentError:
    """The error for a ``result_serializer`` nobody registered."""
    return UnknownComponentError(
        f"result_serializer={name!r} is not a registered serializer; expected one of: "
        f"{', '.join(repr(n) for n in sorted(known))} (plugins add more with "
        f"registry.add_serializer)")


class MemoryResultStore(ResultStore):
    """Keeps serialized results in a dict; for tests."""

    def __init__(self, serializers: dict[str, Serializer] | None = None) -> None:
        self.data: dict[str, tuple[str, bytes]] = {}
        self.serializers = serializers or {"cloudpickle": CloudpickleSerializer(), "json": JSONSerializer()}

    def write(self, key: str, value: Any, serializer: str = DEFAULT_SERIALIZER) -> tuple[str, int]:
        if serializer not in self.serializers:
            raise unknown_serializer(serializer, self.serializers)
        try:
            blob = self.serializers[serializer].dumps(value)
        except Exception as exc:
            raise ResultNotPersisted(f"{type(exc).__name__}: {exc}") from exc
        self.data[key] = (serializer, blob)
        return key, len(blob)

    def read(self, location: str) -> Any:
        try:
            serializer, blob = self.data[location]
            return self.serializers[serializer].loads(blob)
        except Exception as exc:
            raise ResultMissing(f"no readable result at {location!r}: {exc}") from exc

    def delete(self, location: str) -> None:
        self.data.pop(location, None)
