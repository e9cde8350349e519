"""Where persisted results live: the ResultStore and Serializer interfaces, digests,
errors, and the in-memory result store.

A result store turns a value into bytes with a named serializer and keeps the bytes
under a location string that it alone interprets. A store may also return a digest of
the bytes it wrote; the cache entry records it, and a later read with that digest
refuses bytes that changed since (docs/caching.md).
"""

from __future__ import annotations

import hashlib
from typing import Any, Protocol

from .errors import HeadwaterError, UnknownComponentError
from .stash import StashKey
from .states import State

#: Size in bytes of the result the engine just persisted for a task run (in ``run.stash``).
RESULT_SIZE: StashKey[int] = StashKey()

#: Digest of the bytes the engine just persisted for a task run, when its store gives one.
RESULT_DIGEST: StashKey[str] = StashKey()

#: The serializer of a task without ``result_serializer``.
DEFAULT_SERIALIZER = "cloudpickle"


class ResultNotPersisted(HeadwaterError):
    """The value could not be serialized or written; the run keeps it in memory only."""


class ResultMissing(HeadwaterError):
    """No readable result at the location (deleted, truncated, corrupted, changed since
    it was written, or not trusted)."""


def digest_of(data: bytes) -> str:
    """``"sha256:<hex>"`` of ``data``: what the built-in stores record and check."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_digest(data: bytes, expected: str | None, where: str) -> None:
    """Raise :class:`ResultMissing` when ``data`` does not have the digest ``expected``
    (``None``: nothing to check). Called before the bytes are deserialized."""
    if expected is None:
        return
    algorithm, _, _ = expected.partition(":")
    try:
        found = digest_of(data) if algorithm == "sha256" else \
            f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"
    except ValueError:
        raise ResultMissing(f"{where}: its cache entry has a digest of unknown kind {expected!r}") from None
    if found != expected:
        raise ResultMissing(f"{where} does not match the digest its cache entry recorded: it was "
                            f"changed or damaged after it was written")


def unpack_written(written: tuple[Any, ...]) -> tuple[str, int, str | None]:
    """``(location, size, digest)`` from what a store's ``write`` returned: three values,
    or two from a store that gives no digest (its results are not checked)."""
    if len(written) == 2:
        return written[0], written[1], None
    return written[0], written[1], written[2]


_takes_digest: dict[type, bool] = {}


def read_result(store: ResultStore, location: str, digest: str | None) -> Any:
    """``store.read(location, digest=digest)``; a store whose ``read`` has no ``digest``
    parameter (written before digests existed) is called as ``read(location)``."""
    if digest is None:
        return store.read(location)
    kind = type(store)
    takes = _takes_digest.get(kind)
    if takes is None:
        import inspect

        try:
            takes = "digest" in inspect.signature(store.read).parameters
        except (TypeError, ValueError):
            takes = False
        _takes_digest[kind] = takes
    return store.read(location, digest=digest) if takes else store.read(location)


class Serializer(Protocol):
    """Turns values into bytes and back; registered by name with
    ``registry.add_serializer`` and chosen by ``@task(result_serializer=name)``. The
    built-in ``"cloudpickle"`` and ``"json"`` are in ``headwater.plugins.local_results``."""

    def dumps(self, value: Any) -> bytes: ...
    def loads(self, data: bytes) -> Any: ...


class ResultStore:
    """Keeps persisted results: ``write`` a value under a key, ``read`` it back by the
    location ``write`` returned, ``delete`` it. Subclass and return an instance from
    ``headwater_make_result_store``; :class:`MemoryResultStore` is the in-memory one,
    ``headwater.plugins.local_results.LocalResultStore`` the default."""

    def write(self, key: str, value: Any,
              serializer: str = DEFAULT_SERIALIZER) -> tuple[str, int] | tuple[str, int, str]:
        """Serialize and store ``value`` under ``key``; return ``(location, size in bytes,
        digest)``, the digest a string naming its algorithm such as ``"sha256:<hex>"``
        (:func:`digest_of`) of the bytes stored. A store may return only ``(location,
        size)``: then its cache entries have no digest and reads are not checked.

        Raise :class:`ResultNotPersisted` when the value cannot be serialized or written,
        :class:`~headwater.errors.UnknownComponentError` for an unknown serializer name and
        :class:`~headwater.errors.StoreError` when the storage itself cannot be used.
        """
        raise NotImplementedError

    def read(self, location: str, digest: str | None = None) -> Any:
        """Return the value at ``location``; raise :class:`ResultMissing` if unreadable,
        and, given the ``digest`` that ``write`` returned, if the stored bytes no longer
        have it (check before deserializing: :func:`check_digest`)."""
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
    """The in-memory double of :class:`ResultStore`: serialized results in a dict (``data``:
    location -> (serializer name, bytes)), with digests, for tests. Its locations are the
    keys. ``serializers`` maps names to serializers; by default the built-in
    ``"cloudpickle"`` and ``"json"``."""

    def __init__(self, serializers: dict[str, Serializer] | None = None) -> None:
        self.data: dict[str, tuple[str, bytes]] = {}
        if serializers is None:
            # layering: the serializers are local_results'; core loads no plugin when imported
            from headwater.plugins.local_results import builtin_serializers

            serializers = builtin_serializers()
        self.serializers = serializers

    def write(self, key: str, value: Any, serializer: str = DEFAULT_SERIALIZER) -> tuple[str, int, str]:
        if serializer not in self.serializers:
            raise unknown_serializer(serializer, self.serializers)
        try:
            blob = self.serializers[serializer].dumps(value)
        except Exception as exc:
            raise ResultNotPersisted(f"{type(exc).__name__}: {exc}") from exc
        self.data[key] = (serializer, blob)
        return key, len(blob), digest_of(blob)

    def read(self, location: str, digest: str | None = None) -> Any:
        try:
            serializer, blob = self.data[location]
        except KeyError:
            raise ResultMissing(f"no result at {location!r}") from None
        check_digest(blob, digest, f"the result at {location!r}")
        try:
            return self.serializers[serializer].loads(blob)
        except Exception as exc:
            raise ResultMissing(f"no readable result at {location!r}: {exc}") from exc

    def delete(self, location: str) -> None:
        self.data.pop(location, None)


class StoredResultState(State):
    """A final state whose result is not kept in memory (``cache_result_in_memory=False``):
    ``data`` (and so ``result()``) reads it from the result store each time it is asked,
    and nothing holds the value in between. ``repr`` names where it is stored."""

    __slots__ = ("store", "location", "digest")

    @property  # type: ignore[override]
    def data(self) -> Any:
        store = getattr(self, "store", None)
        if store is None:  # made by State.__init__, before the location is set
            return None
        return read_result(store, self.location, self.digest)

    @data.setter
    def data(self, value: Any) -> None:
        pass  # the result lives in the store only (State.__init__ and unpickling set it)

    def __repr__(self) -> str:
        return (f"{self.name}(message={self.message!r}, type={self.type.name}, "
                f"result=<stored at {self.location!r}>)")


def stored_result_state(state: State, store: ResultStore, location: str, digest: str | None) -> State:
    """``state`` (a completed one) as a :class:`StoredResultState` whose result is read
    back from ``store`` at ``location`` (checked against ``digest``) when asked; its
    name, message, time and details are ``state``'s."""
    stored = StoredResultState(state.type, state.name, state.message, None, state.details_if_made, state.ts)
    stored.store, stored.location, stored.digest = store, location, digest
    return stored
