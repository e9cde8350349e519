"""``task_input_hash``: a cache key from a task's identity, its body and its inputs.

The hash is canonical: the same inputs give the same key in every process, whatever
the dict or set order or ``PYTHONHASHSEED``, and however the flow's file was started
(script, ``headwater run``, import). It covers where the task is defined (its file
relative to the project root, see ``headwater.identity``), its qualified name, its
task name and its source text from its ``def`` line (so editing the body changes keys;
moving it down a few lines, or changing the decorator's options, does not).
Supported inputs: None, bool, int, float, complex, str, bytes, lists, tuples, dicts,
sets, datetimes, dates, times, timedeltas, paths, enums, UUIDs, decimals, pydantic
models, dataclasses, and array-likes with ``dtype``, ``shape`` and ``tobytes()``
(numpy). Anything else gets one warning naming the parameter, and the call runs
uncached.

A quoted argument (``quote(x)``, also nested in a list or dict) is opaque: only its
type's name counts, never its value, so a large or unhashable value costs nothing and
warns nothing, and calls that differ only in a quoted value share one key.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import hashlib
import inspect
import logging
import pathlib
import re
import uuid
from typing import Any, Callable

from headwater.identity import function_origin, type_name
from headwater.plugin_manager import hookimpl
from headwater.utilities.annotations import QUOTED_ARGUMENTS, quote

logger = logging.getLogger("headwater.task_runs")
_warned: set[tuple[str, str, str]] = set()
_body_hashes: dict[Any, str] = {}
_prefixes: dict[tuple[Any, str], bytes] = {}  # (function's code, task name) -> hashed identity
_DEF_LINE = re.compile(r"^[ \t]*(async[ \t]+)?def[ \t]", re.MULTILINE)


class Unhashable(TypeError):
    """A value (at ``path`` inside a parameter) that has no canonical, stable hash."""

    def __init__(self, path: str, value: Any) -> None:
        super().__init__(f"{path}: cannot hash a value of type {type(value).__qualname__}")
        self.path = path
        self.value = value


def _feed(update: Callable[[bytes], None], value: Any, path: str, depth: int = 0) -> None:
    if depth > 64:
        raise Unhashable(path, value)
    t = type(value)
    if value is None or t is bool:
        update(f"{t.__name__}:{value!r};".encode())
    elif t in (int, float, complex):
        update(f"{t.__name__}:{value!r};".encode())
    elif t is str:
        data = value.encode("utf-8", "surrogatepass")
        update(b"s%d:" % len(data) + data)
    elif t in (bytes, bytearray, memoryview):
        data = bytes(value)
        update(b"b%d:" % len(data) + data)
    elif t in (list, tuple):
        update(b"l(" if t is list else b"t(")
        for i, item in enumerate(value):
            _feed(update, item, f"{path}[{i}]", depth + 1)
        update(b")")
    elif t is dict:
        parts = sorted((_digest(k, f"{path} key", depth + 1), _digest(v, f"{path}[{k!r}]", depth + 1))
                       for k, v in value.items())
        update(b"d(" + b"".join(k + v for k, v in parts) + b")")
    elif t in (set, frozenset):
        parts = sorted(_digest(item, f"{path} item", depth + 1) for item in value)
        update(b"S(" + b"".join(parts) + b")")
    elif isinstance(value, enum.Enum):
        update(f"e:{type_name(t)}:".encode("utf-8", "surrogatepass"))
        _feed(update, value.value, path, depth + 1)
    elif isinstance(value, (dt.datetime, dt.date, dt.time)):
        update(f"{t.__name__}:{value.isoformat()};".encode())
    elif isinstance(value, dt.timedelta):
        update(f"td:{value.days},{value.seconds},{value.microseconds};".encode())
    elif isinstance(value, pathlib.PurePath):
        update(f"p:{value.as_posix()};".encode())
    elif isinstance(value, (uuid.UUID, decimal.Decimal)):
        update(f"{t.__name__}:{value};".encode())
    elif isinstance(value, (str, int, float, bytes, tuple, list, dict)):
        # Subclasses (e.g. str enums, named tuples): class name plus the base value.
        update(f"sub:{type_name(t)}:".encode("utf-8", "surrogatepass"))
        base = next(b for b in (str, int, float, bytes, tuple, list, dict) if isinstance(value, b))
        _feed(update, base(value), path, depth + 1)
    elif hasattr(value, "model_dump") and hasattr(type(value), "model_fields"):
        update(f"m:{type_name(t)}:".encode("utf-8", "surrogatepass"))
        _feed(update, value.model_dump(mode="python"), path, depth + 1)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        update(f"dc:{type_name(t)}:".encode("utf-8", "surrogatepass"))
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        _feed(update, fields, path, depth + 1)
    elif hasattr(value, "tobytes") and hasattr(value, "dtype") and hasattr(value, "shape"):
        if str(getattr(value, "dtype", "")) == "object":
            raise Unhashable(path, value)
        update(f"a:{type_name(t)}:{value.dtype}:{tuple(value.shape)}:".encode("utf-8", "surrogatepass"))
        data = value.tobytes()
        update(b"%d:" % len(data) + data)
    elif t is quote:
        # Opaque by request: the type says what kind of value it was, not which one.
        update(f"q:{type_name(type(value.value))};".encode("utf-8", "surrogatepass"))
    else:
        raise Unhashable(path, value)


def _digest(value: Any, path: str, depth: int) -> bytes:
    h = hashlib.sha256()
    _feed(h.update, value, path, depth)
    return h.digest()


def stable_hash(value: Any, path: str = "value") -> str:
    """A hex digest of ``value`` that is the same in every process."""
    h = hashlib.sha256()
    _feed(h.update, value, path)
    return h.hexdigest()


def _body_hash(fn: Any) -> str:
    key = getattr(fn, "__code__", fn)
    cached = _body_hashes.get(key)
    if cached is None:
        try:
            text = inspect.getsource(fn)
            # From the ``def`` line on: the body counts, the decorator's options (retries,
            # expiration, ...) do not, so tuning them keeps the cache.
            match = _DEF_LINE.search(text)
            if match is not None:
                text = text[match.start():]
            blob = inspect.cleandoc(text).encode()
        except (OSError, TypeError):
            code = getattr(fn, "__code__", None)
            # (Not repr(fn): it holds a memory address, different in every process.)
            blob = code.co_code if code is not None else type(fn).__qualname__.encode()
        cached = hashlib.sha256(blob).hexdigest()[:16]
        _body_hashes[key] = cached
    return cached


def _prefix(task: Any) -> bytes:
    """What identifies the task in its keys: where it is defined (not its module name,
    which depends on how the file was started), its qualified name, its name, its body."""
    fn = task.fn
    key = (getattr(fn, "__code__", fn), task.name)
    prefix = _prefixes.get(key)
    if prefix is None:
        qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
        text = f"{function_origin(fn)}:{qualname}:{task.name}:{_body_hash(fn)}"
        prefix = text.encode("utf-8", "surrogatepass")
        if len(_prefixes) > 10_000:  # bounded: tasks made in a loop must not grow it forever
            _prefixes.clear()
        _prefixes[key] = prefix
    return prefix


def _log_extra(context: Any) -> dict[str, Any]:
    try:
        from headwater.run_logging import task_extra

        return task_extra(context)
    except AttributeError:  # a context made by hand, e.g. in a test of a key function
        return {}


def _quoted_arguments(context: Any) -> dict[str, Any] | None:
    """The run's arguments with their ``quote(...)`` wrappers, if it was given any: the
    task's parameters hold the unwrapped values (the engine keeps this view aside)."""
    run = getattr(context, "task_run", None)
    stash = getattr(run, "stash", None)
    return stash.get(QUOTED_ARGUMENTS, None) if stash is not None else None


def task_input_hash(context: Any, parameters: dict[str, Any]) -> str | None:
    """Cache key function: the same task with the same inputs gives the same key.

    Use it as ``@task(cache_key_fn=task_input_hash)``. Returns ``None`` (run uncached,
    after one warning) when an input cannot be hashed. A ``quote(...)`` argument counts
    by its type's name only.
    """
    task = context.task
    h = hashlib.sha256()
    h.update(_prefix(task))
    quoted = _quoted_arguments(context)
    for name in sorted(parameters):
        h.update(f"|{name}=".encode())
        value = parameters[name] if quoted is None else quoted.get(name, parameters[name])
        try:
            _feed(h.update, value, name)
        except Unhashable as exc:
            # One warning per flow run, task, parameter and type: a map over a thousand
            # such inputs says it once, and the next flow run says it again.
            flow_run = getattr(context, "flow_run", None)
            marker = (getattr(flow_run, "id", None), task.name, name, type(exc.value).__qualname__)
            if marker not in _warned:
                if len(_warned) > 10_000:  # bounded: a long-lived process must not grow
                    _warned.clear()
                _warned.add(marker)
                logger.warning(
                    "task_input_hash cannot hash parameter %r of task %r (%s); this call runs "
                    "uncached. Pass hashable inputs or give the task its own cache_key_fn.",
                    name, task.name, exc, extra=_log_extra(context))
            return None
    return h.hexdigest()


def call_hash(task: Any, parameters: dict[str, Any]) -> str | None:
    """The hash of one call of ``task``: where it is defined, its source from its ``def``
    line and its inputs, by the rules of :func:`task_input_hash`; ``None`` (and no
    warning) when an input cannot be hashed. A retried flow run matches its calls to
    earlier task runs by it (``headwater.reuse``), so an edited task runs again."""
    h = hashlib.sha256()
    h.update(_prefix(task))
    for name in sorted(parameters):
        h.update(f"|{name}=".encode())
        try:
            _feed(h.update, parameters[name], name)
        except (Unhashable, RecursionError, ValueError):
            return None
    return h.hexdigest()


@hookimpl
def headwater_register_components(registry: Any) -> None:
    registry.add_cache_policy("task_input_hash", task_input_hash, source="input_hash")
