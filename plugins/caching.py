"""Caching: cache keys from ``cache_key_fn``, and cache hits answered as ``Cached``.

When a task has a ``cache_key_fn``, the engine computes the key before proposing
``Running``. If the run store's cache index has an unexpired entry for the key (and
``refresh_cache`` is off) and its result can be read, the run ends ``Cached`` with that
result and the function is not called. A result whose bytes no longer match the digest
its entry recorded, or that the result store does not trust (another user's file), is a
miss: one warning, and the task runs again. After a successful call the result is
persisted and only then is the cache entry written, with the digest of the bytes.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import logging
import time
import uuid
from typing import Any

from headwater.errors import ConfigurationError, HeadwaterError
from headwater.plugin_manager import hookimpl
from headwater.policy import StatePolicy, WrappingPolicy
from headwater.results import DEFAULT_SERIALIZER, RESULT_DIGEST, RESULT_SIZE, ResultMissing, read_result
from headwater.states import Cached, State
from headwater.stores import CacheEntry, CacheIndex, has_part


class CacheKeyError(HeadwaterError):
    """A task's cache key function raised, or returned a value with no stable string
    form; the attempt fails (retries apply) and nothing is cached."""


logger = logging.getLogger("headwater.task_runs")
MAX_KEY_LENGTH = 512


def key_to_string(task_name: str, key: Any) -> str | None:
    """Turn whatever a key function returned into the key string (``None`` stays None).

    - a ``str`` is used as it is;
    - an ``int``, ``float``, ``bool``, ``Decimal`` or ``UUID`` by ``str()`` (``4`` → ``"4"``);
    - any other value that ``task_input_hash`` can hash (lists, dicts, sets, tuples,
      datetimes, dataclasses, ...) by ``"sha256:"`` plus its canonical hash, the same in
      every process whatever the dict or set order;
    - anything else is a :class:`CacheKeyError` naming the task and the type.

    Keys longer than 512 characters are replaced by ``"sha256:"`` plus a hash of them,
    so huge keys stay cheap to store and look up; so are keys with lone surrogates, which
    no store could keep apart from the same text with the surrogate escaped.
    """
    if key is None:
        return None
    if isinstance(key, str):
        text = key
    elif isinstance(key, (int, float, decimal.Decimal, uuid.UUID)):  # bool is an int
        text = str(key)
    else:
        from headwater.plugins.input_hash import Unhashable, stable_hash

        try:
            return "sha256:" + stable_hash(key, "key")
        except Unhashable:
            raise CacheKeyError(
                f"the cache_key_fn of task {task_name!r} returned a value of type "
                f"{type(key).__qualname__}; expected a string, a number, or a value "
                f"task_input_hash can hash (list, dict, set, dataclass, ...)") from None
    if len(text) > MAX_KEY_LENGTH or not _storable(text):
        text = "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return text


def _storable(text: str) -> bool:
    """False for text with lone surrogates (a file name ``os.listdir`` gave for bytes that
    are not UTF-8): stored as it is, a store would write them escaped, and the key
    ``"report-\\udcff.csv"`` would then be the key of ``"report-\udcff.csv"`` too."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class CachePolicy(WrappingPolicy):
    """Adds cache lookups and cache writes to another policy."""

    def __init__(self, inner: StatePolicy, task: Any) -> None:
        super().__init__(inner)
        self.uses_cache = True
        self.task = task
        self.refresh = task.spec.refresh_cache
        self.expiration = task.spec.cache_expiration
        # Reasons a hit was refused, said once per task and flow run: a storage directory
        # others can write refuses every entry, and a map must not repeat it a thousand times.
        self.said: set[str] = set()

    def propose_running(self, ctx: Any) -> State | None:
        run = ctx.task_run
        key = run.cache_key
        if key is None or self.refresh:
            return self.inner.propose_running(ctx)
        entry = ctx.store.read_cache_entry(key)
        if entry is None or entry.is_expired():
            return self.inner.propose_running(ctx)
        try:
            value = read_result(ctx.result_store, entry.location, entry.digest)
        except ResultMissing as exc:
            message = str(exc)
            if message not in self.said:  # e.g. a storage directory others can write: once
                if len(self.said) < 1000:
                    self.said.add(message)
                logger.warning("Cache entry for key %r cannot be read (%s); running the task again",
                               key, message, extra=_extra(ctx))
            return self.inner.propose_running(ctx)
        run.result_location = entry.location
        expires = (dt.datetime.fromtimestamp(entry.expiration, tz=dt.timezone.utc)
                   if entry.expiration is not None else None)
        return Cached(data=value, cache_key=key, cache_expiration=expires,
                      task_run_id=run.id)

    def result_key(self, ctx: Any) -> str | None:
        """A run with a cache key keeps its result under that key (the entry points to
        it); without one (a key function that answered None), as the inner policy says."""
        key = ctx.task_run.cache_key
        return f"cache-{key}" if key is not None else self.inner.result_key(ctx)

    def propose_completed(self, ctx: Any, state: State) -> State:
        state = self.inner.propose_completed(ctx, state)
        run = ctx.task_run
        if run.cache_key is None or run.result_location is None or not state.is_completed():
            return state
        now = time.time()
        expiration = now + self.expiration.total_seconds() if self.expiration is not None else None
        ctx.store.write_cache_entry(CacheEntry(
            key=run.cache_key, task_name=self.task.name, task_run_id=run.id,
            location=run.result_location, serializer=self.task.spec.result_serializer or DEFAULT_SERIALIZER,
            created=now, expiration=expiration, size=run.stash.get(RESULT_SIZE, None),
            digest=run.stash.get(RESULT_DIGEST, None)))
        details = state.state_details
        details.cache_key = run.cache_key
        if expiration is not None:
            details.cache_expiration = dt.datetime.fromtimestamp(expiration, tz=dt.timezone.utc)
        return state


def _extra(ctx: Any) -> dict[str, Any]:
    from headwater.run_logging import task_extra

    return task_extra(ctx)


@hookimpl(wrapper=True)
def headwater_make_state_policy(task: Any, session: Any) -> Any:
    """Wrap the policy of every task that has a ``cache_key_fn`` in a :class:`CachePolicy`."""
    policy = yield
    if task.spec.cache_key_fn is not None and policy is not None:
        store = session.store
        if not has_part(store, CacheIndex):
            # Running it uncached would silently break what cache_key_fn promises.
            raise ConfigurationError(
                f"task {task.name!r} was not run: it has a cache_key_fn, but the run store "
                f"{type(store).__qualname__} has no cache index (headwater.stores.CacheIndex); "
                f"use a store with one, or remove cache_key_fn")
        return CachePolicy(policy, task)
    return policy


@hookimpl(trylast=True)
def headwater_task_cache_key(task: Any, context: Any, parameters: dict[str, Any]) -> str | None:
    """Call the task's ``cache_key_fn`` and turn its answer into a key string."""
    key_fn = task.spec.cache_key_fn
    if key_fn is None:
        return None
    if isinstance(key_fn, str):  # a name from the registry, e.g. "task_input_hash"
        try:
            key_fn = context.session.registry.get("cache_policy", key_fn, wanted_for=f"task {task.name!r}")
        except KeyError as exc:
            raise CacheKeyError(str(exc)) from None
    try:
        key = key_fn(context, parameters)
    except Exception as exc:
        name = getattr(key_fn, "__qualname__", repr(key_fn))
        raise CacheKeyError(f"cache_key_fn {name!r} of task {task.name!r} raised "
                            f"{type(exc).__name__}: {exc}") from exc
    return key_to_string(task.name, key)
