"""Caching: cache keys from ``cache_key_fn``, ``cache_policy`` or ``result_storage_key``,
and cache hits answered as ``Cached``.

When a task has a ``cache_key_fn``, a ``cache_policy`` (``headwater.cache_policies``)
other than ``NO_CACHE``, or a ``result_storage_key`` (its formatted text is the key, as
in Prefect 3), the engine computes the key before proposing ``Running``. If the run
store's cache index has an unexpired entry for the key (and ``refresh_cache`` is off)
and its result can be read, the run ends ``Cached`` with that result and the function
is not called. A result whose bytes no longer match the digest its entry recorded, or
that the result store does not trust (another user's file), is a miss: one warning, and
the task runs again. After a successful call the result is
persisted and only then is the cache entry written, with the digest of the bytes.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import logging
import string
import time
import uuid
from typing import Any

from headwater.cache_policies import UnhashableInputs, warn_unhashable
from headwater.errors import ConfigurationError, HeadwaterError
from headwater.plugin_manager import hookimpl
from headwater.policy import StatePolicy, WrappingPolicy
from headwater.results import (DEFAULT_SERIALIZER, RESULT_DIGEST, RESULT_SIZE, ResultMissing, read_result,
                               stored_result_state)
from headwater.specs import caches
from headwater.states import Cached, State
from headwater.stores import CacheEntry, CacheIndex, has_part


class CacheKeyError(HeadwaterError):
    """A task's cache key function raised, or returned a value with no stable string
    form; the attempt fails (retries apply) and nothing is cached."""


class ResultStorageKeyError(ConfigurationError):
    """A task's ``result_storage_key`` names a field the run does not have; the message
    names the template and the field."""


logger = logging.getLogger("headwater.task_runs")
MAX_KEY_LENGTH = 512
_unhashable_said: set[Any] = set()


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
        self.storage_key = task.spec.result_storage_key
        self.in_memory = task.spec.cache_result_in_memory
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
        hit = Cached(data=value, cache_key=key, cache_expiration=expires, task_run_id=run.id)
        if not self.in_memory:  # read again by whoever asks for it, not kept
            hit = stored_result_state(hit, ctx.result_store, entry.location, entry.digest)
        return hit

    def result_key(self, ctx: Any) -> str | None:
        """A task with a ``result_storage_key`` keeps its result under that key, formatted;
        a run with a cache key under ``cache-<key>`` (the entry points to it); without one
        (a key function that answered None), as the inner policy says."""
        if self.storage_key is not None:
            return format_storage_key(self.storage_key, ctx)
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


class _Fields:
    """The attributes of a run as ``result_storage_key`` templates read them
    (``{flow_run.name}``, ``{task_run.id}``): those of ``headwater.runtime``."""

    def __init__(self, run: Any, names: tuple[str, ...], what: str) -> None:
        self._run, self._names, self._what = run, names, what

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in self._names:
            raise AttributeError(f"{self._what}.{name}")
        if self._run is None:
            return None
        value = getattr(self._run, name, None)
        return sorted(value) if name == "tags" else value


_TASK_RUN_FIELDS = ("id", "name", "task_name", "parameters", "tags", "run_count")
_FLOW_RUN_FIELDS = ("id", "name", "flow_name", "parameters", "run_count", "tags", "start_time")


def format_storage_key(template: str, ctx: Any) -> str:
    """``template`` formatted with the run's ``parameters`` and the ``flow_run`` and
    ``task_run`` fields of ``headwater.runtime``; a field the run does not have is a
    :class:`ResultStorageKeyError` naming the template and the field."""
    task_run = _Fields(ctx.task_run, _TASK_RUN_FIELDS, "task_run")
    flow_run = _Fields(ctx.flow_run, _FLOW_RUN_FIELDS, "flow_run")
    try:
        return template.format(parameters=ctx.parameters, task_run=task_run, flow_run=flow_run)
    except (KeyError, AttributeError, IndexError) as exc:
        field = exc.args[0] if exc.args else "?"
        if isinstance(exc, KeyError) and field not in ("parameters", "task_run", "flow_run"):
            field = f"parameters[{field}]" if field in _names_in(template, "parameters") else field
        raise ResultStorageKeyError(
            f"result_storage_key {template!r} of task {ctx.task.name!r} cannot be formatted: no "
            f"field {field!r} (parameters: {', '.join(sorted(ctx.parameters)) or 'none'}; runtime: "
            f"flow_run.{{{', '.join(_FLOW_RUN_FIELDS)}}}, task_run.{{{', '.join(_TASK_RUN_FIELDS)}}})") from None
    except (ValueError, TypeError) as exc:
        raise ResultStorageKeyError(f"result_storage_key {template!r} of task {ctx.task.name!r} "
                                    f"cannot be formatted: {exc}") from None


def _names_in(template: str, root: str) -> set[str]:
    names = set()
    for _, field, _, _ in string.Formatter().parse(template):
        if field and field.startswith(root + "["):
            names.add(field[len(root) + 1:].split("]", 1)[0])
    return names


@hookimpl(wrapper=True)
def headwater_make_state_policy(task: Any, session: Any) -> Any:
    """Wrap the policy of every task that is cached (a ``cache_key_fn``, a
    ``cache_policy`` other than ``NO_CACHE``, a ``result_storage_key``) in a
    :class:`CachePolicy`."""
    policy = yield
    spec = task.spec
    if policy is None:
        return policy
    if caches(spec):
        store = session.store
        if not has_part(store, CacheIndex):
            # Running it uncached would silently break what cache_key_fn promises.
            option = "cache_key_fn" if spec.cache_key_fn is not None else \
                "cache_policy" if spec.cache_policy is not None else "result_storage_key"
            raise ConfigurationError(
                f"task {task.name!r} was not run: it has a {option}, but the run store "
                f"{type(store).__qualname__} has no cache index (headwater.stores.CacheIndex); "
                f"use a store with one, or remove {option}")
        return CachePolicy(policy, task)
    if spec.result_storage_key is not None:  # NO_CACHE: only where the result goes
        return CachePolicy(policy, task)
    return policy


@hookimpl(trylast=True)
def headwater_task_cache_key(task: Any, context: Any, parameters: dict[str, Any]) -> str | None:
    """The run's key from the task's ``cache_key_fn``, its ``cache_policy`` or its
    ``result_storage_key``, as a key string."""
    spec = task.spec
    key_fn = spec.cache_key_fn
    if key_fn is None:
        if spec.cache_policy is not None:
            return _key_from_policy(task, spec.cache_policy, context, parameters)
        if spec.result_storage_key is not None:
            return key_to_string(task.name, format_storage_key(spec.result_storage_key, context))
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


def _key_from_policy(task: Any, policy: Any, context: Any, parameters: dict[str, Any]) -> str | None:
    """Ask a cache policy for the key: an argument it cannot hash means no key (one
    warning, the call runs uncached); any other error fails the attempt, as a raising
    ``cache_key_fn`` does."""
    if not getattr(policy, "caches", True):  # NO_CACHE beside a result_storage_key
        return None
    flow_run = getattr(context, "flow_run", None)
    flow_parameters = flow_run.parameters if flow_run is not None else {}
    try:
        key = policy.compute_key(context, parameters, flow_parameters)
    except UnhashableInputs as exc:
        warn_unhashable(context, exc, _unhashable_said)
        return None
    except Exception as exc:
        raise CacheKeyError(f"cache_policy {policy!r} of task {task.name!r} raised "
                            f"{type(exc).__name__}: {exc}") from exc
    return key_to_string(task.name, key)
