"""Cache policies: what a task's cache key is made of, as in Prefect 3.

``@task(cache_policy=INPUTS + TASK_SOURCE)`` caches a task by the policy's key. The
policies answer ``compute_key(task_ctx, inputs, flow_parameters)`` with a string or
``None`` (no key: the call runs uncached); the ``caching`` plugin asks them through the
``headwater_task_cache_key`` hook, so a policy keys the same cache index, with the same
expiration, refresh and trust rules, as a ``cache_key_fn``.

- ``INPUTS``: the task's arguments (``INPUTS - "name"`` leaves one out);
- ``TASK_SOURCE``: the task's source text, from its ``def`` line;
- ``FLOW_PARAMETERS``: the parameters of the flow run the task belongs to;
- ``RUN_ID``: the id of that flow run (of the task run itself outside a flow);
- ``DEFAULT`` = ``INPUTS + TASK_SOURCE + RUN_ID``;
- ``NO_CACHE``: never cached (adding it to a policy changes nothing);
- ``CacheKeyFnPolicy(cache_key_fn=f)``: the key ``f(context, parameters)`` returns.

``a + b`` is a :class:`CompoundCachePolicy`: a hash of the keys of its parts that have
one. Write a policy of your own by subclassing :class:`CachePolicy`.

Values are hashed by ``task_input_hash``'s canonical rules, so a key is the same in
every process. An argument that cannot be hashed makes the whole key ``None`` (one
warning, the call runs uncached), never a key that silently ignores it.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import re
from typing import Any, Callable, Iterable, Optional

from .errors import ConfigurationError
from .reuse import inputs_hash
from .run_logging import task_extra

__all__ = [
    "DEFAULT",
    "FLOW_PARAMETERS",
    "INPUTS",
    "NONE",
    "NO_CACHE",
    "RUN_ID",
    "TASK_SOURCE",
    "CacheKeyFnPolicy",
    "CachePolicy",
    "CompoundCachePolicy",
    "FlowParameters",
    "Inputs",
    "NoCache",
    "RunId",
    "TaskSource",
    "UnhashableInputs",
]

logger = logging.getLogger("headwater.task_runs")
_DEF_LINE = re.compile(r"^[ \t]*(async[ \t]+)?def[ \t]", re.MULTILINE)
_source_hashes: dict[Any, Optional[str]] = {}


class UnhashableInputs(ValueError):
    """An argument (or flow parameter) that no canonical hash exists for: the key would
    not identify the call, so the call runs uncached."""

    def __init__(self, what: str, name: str, value: Any) -> None:
        super().__init__(f"cannot hash {what} {name!r} (a value of type {type(value).__qualname__}); "
                         f"leave it out (INPUTS - {name!r}), or give the task cache_policy=NO_CACHE")
        self.what = what
        self.name = name


class CachePolicy:
    """A recipe for a task run's cache key. Subclass it and implement
    :meth:`compute_key`; combine policies with ``+``.

    ``caches`` is False for a policy that never gives a key (``NO_CACHE``): a task with
    it is not cached at all, and costs what an uncached task costs.
    """

    caches: bool = True

    def compute_key(self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> Optional[str]:
        """The key for one task run, or ``None`` (this call is not cached).

        ``task_ctx`` is the run's :class:`~headwater.policy.TaskRunContext` (``task``,
        ``task_run``, ``flow_run``, ``parameters``), ``inputs`` its arguments by name,
        ``flow_parameters`` the parameters of its flow run (``{}`` outside a flow)."""
        raise NotImplementedError(f"{type(self).__qualname__} does not implement compute_key")

    @classmethod
    def from_cache_key_fn(cls, cache_key_fn: Callable[[Any, dict[str, Any]], Any]) -> CacheKeyFnPolicy:
        """``CacheKeyFnPolicy(cache_key_fn=cache_key_fn)``."""
        return CacheKeyFnPolicy(cache_key_fn)

    def configure(self, key_storage: Any = None, lock_manager: Any = None,
                  isolation_level: Any = None) -> CachePolicy:
        """Refused with a clear error: Prefect 3's separate key storage, locks and
        isolation levels have no place here (cache entries live in the run store's cache
        index, written atomically, so concurrent writers each finish correctly)."""
        given = {k: v for k, v in (("key_storage", key_storage), ("lock_manager", lock_manager),
                                   ("isolation_level", isolation_level)) if v is not None}
        if not given:
            return self
        raise ConfigurationError(
            f"{self!r}.configure({', '.join(f'{k}={v!r}' for k, v in given.items())}): headwater keeps "
            f"cache entries in the run store's cache index (docs/caching.md, 'Many processes'); "
            f"remove configure(...)")

    def __add__(self, other: CachePolicy) -> CachePolicy:
        if not isinstance(other, CachePolicy):
            return NotImplemented
        if not other.caches:
            return self
        return CompoundCachePolicy([self, other])

    def __sub__(self, name: str) -> CachePolicy:
        """Leave the argument ``name`` out of the key (a policy that has no inputs in its
        key is unchanged)."""
        if not isinstance(name, str):
            raise TypeError(f"only a parameter name (a str) can be subtracted from a cache policy, "
                            f"got {name!r}")
        return self

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and vars(other) == vars(self)

    def __hash__(self) -> int:
        return hash(type(self))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _hash_keys(keys: Iterable[str]) -> str:
    h = hashlib.sha256()
    for key in keys:
        data = key.encode("utf-8", "surrogatepass")
        h.update(b"%d:" % len(data) + data)  # length-prefixed: ("ab", "c") is not ("a", "bc")
    return h.hexdigest()


class CompoundCachePolicy(CachePolicy):
    """Two or more policies: the key is a hash of the keys of the parts that give one,
    or ``None`` when none does. Nested compounds are flattened, and several ``Inputs``
    parts become one that leaves out what any of them left out."""

    def __init__(self, policies: list[CachePolicy]) -> None:
        flat: list[CachePolicy] = []
        for policy in policies:
            flat.extend(policy.policies if isinstance(policy, CompoundCachePolicy) else [policy])
        inputs = [p for p in flat if isinstance(p, Inputs)]
        flat = [p for p in flat if not isinstance(p, Inputs) and p.caches]
        if inputs:
            flat.append(Inputs(exclude=sorted({name for p in inputs for name in p.exclude})))
        self.policies = flat

    def compute_key(self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> Optional[str]:
        keys = []
        for policy in self.policies:
            key = policy.compute_key(task_ctx, inputs, flow_parameters, **kwargs)
            if key is not None:
                keys.append(key if isinstance(key, str) else _key_text(key))
        return _hash_keys(keys) if keys else None

    def __add__(self, other: CachePolicy) -> CachePolicy:
        if not isinstance(other, CachePolicy):
            return NotImplemented
        return CompoundCachePolicy([self, other]) if other.caches else self

    def __sub__(self, name: str) -> CachePolicy:
        CachePolicy.__sub__(self, name)  # the type check
        if not any(isinstance(p, Inputs) for p in self.policies):
            return self
        return CompoundCachePolicy([p - name if isinstance(p, Inputs) else p for p in self.policies])

    def __repr__(self) -> str:
        return " + ".join(repr(p) for p in self.policies) or "CompoundCachePolicy([])"


class NoCache(CachePolicy):
    """Never a key: the task is not cached (``NO_CACHE``). Adding it to a policy leaves
    that policy as it was."""

    caches = False

    def compute_key(self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> Optional[str]:
        return None

    def __add__(self, other: CachePolicy) -> CachePolicy:
        if not isinstance(other, CachePolicy):
            return NotImplemented
        return other

    def __repr__(self) -> str:
        return "NO_CACHE"


class Inputs(CachePolicy):
    """The task run's arguments, by value, except those named in ``exclude``
    (``INPUTS - "client"``). A task run without arguments has no key from it."""

    def __init__(self, exclude: Iterable[str] = ()) -> None:
        self.exclude = tuple(exclude)

    def compute_key(self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> Optional[str]:
        exclude = self.exclude
        kept = {name: value for name, value in (inputs or {}).items() if name not in exclude}
        if not kept:
            return None
        return _hash_or_raise(kept, "argument")

    def __sub__(self, name: str) -> CachePolicy:
        CachePolicy.__sub__(self, name)  # the type check
        return Inputs(exclude=(*self.exclude, name))

    def __repr__(self) -> str:
        return "INPUTS" + "".join(f" - {name!r}" for name in self.exclude)


class TaskSource(CachePolicy):
    """The task's source text from its ``def`` line (as ``task_input_hash`` reads it):
    editing the body changes the key, tuning the decorator's options does not. A task
    whose source cannot be read (a REPL) has no key from it."""

    def compute_key(self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> Optional[str]:
        task = getattr(task_ctx, "task", None)
        return source_hash(task.fn) if task is not None else None

    def __repr__(self) -> str:
        return "TASK_SOURCE"


def source_hash(fn: Any) -> Optional[str]:
    """A hash of ``fn``'s source text from its ``def`` line, or ``None`` without source."""
    code = getattr(fn, "__code__", fn)
    if code in _source_hashes:
        return _source_hashes[code]
    try:
        text = inspect.getsource(fn)
    except (OSError, TypeError):
        digest = None
    else:
        match = _DEF_LINE.search(text)
        if match is not None:
            text = text[match.start():]
        digest = hashlib.sha256(inspect.cleandoc(text).encode("utf-8", "surrogatepass")).hexdigest()
    if len(_source_hashes) > 10_000:  # bounded: tasks made in a loop must not grow it forever
        _source_hashes.clear()
    _source_hashes[code] = digest
    return digest


class FlowParameters(CachePolicy):
    """The parameters of the flow run the task run belongs to (defaults included); no key
    outside a flow or for a flow without parameters."""

    def compute_key(self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> Optional[str]:
        if not flow_parameters:
            return None
        return _hash_or_raise(flow_parameters, "flow parameter")

    def __repr__(self) -> str:
        return "FLOW_PARAMETERS"


class RunId(CachePolicy):
    """The id of the flow run the task run belongs to, or of the task run itself outside
    a flow: calls repeated within one flow run (its retries included) hit."""

    def compute_key(self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> Optional[str]:
        run = getattr(task_ctx, "task_run", None)
        if run is None:
            return None
        return str(run.flow_run_id or run.id)

    def __repr__(self) -> str:
        return "RUN_ID"


class CacheKeyFnPolicy(CachePolicy):
    """A key function as a policy: ``cache_key_fn(context, parameters)``, exactly as
    ``@task(cache_key_fn=...)`` calls it (so it combines with other policies)."""

    def __init__(self, cache_key_fn: Callable[[Any, dict[str, Any]], Any]) -> None:
        if not callable(cache_key_fn):
            raise TypeError(f"CacheKeyFnPolicy(cache_key_fn={cache_key_fn!r}): expected a function "
                            f"(context, parameters) -> key")
        self.cache_key_fn = cache_key_fn

    def compute_key(self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> Optional[str]:
        # As answered: the caching plugin turns it into the key string as it does for a
        # cache_key_fn (4 -> "4"), a compound by _key_text.
        return self.cache_key_fn(task_ctx, inputs)

    def __repr__(self) -> str:
        name = getattr(self.cache_key_fn, "__qualname__", None) or repr(self.cache_key_fn)
        return f"CacheKeyFnPolicy(cache_key_fn={name})"


def _key_text(key: Any) -> str:
    # A part's key that is not a string (a key function may answer a number or a
    # structure): a number by str(), anything else by its canonical hash.
    if isinstance(key, (int, float)):
        return str(key)
    return _hash_or_raise({"key": key}, "key function answer")


def _hash_or_raise(values: dict[str, Any], what: str) -> str:
    digest = inputs_hash(values)
    if digest is not None:
        return digest
    for name, value in values.items():  # the slow path, only to name the culprit
        if inputs_hash({name: value}) is None:
            raise UnhashableInputs(what, name, value)
    raise UnhashableInputs(what, "?", values)  # not reached: one of them failed


def warn_unhashable(task_ctx: Any, error: UnhashableInputs, said: set[Any]) -> None:
    """Say once per flow run, task and argument that a call runs uncached."""
    flow_run = getattr(task_ctx, "flow_run", None)
    task = getattr(task_ctx, "task", None)
    marker = (getattr(flow_run, "id", None), getattr(task, "name", None), error.name)
    if marker in said:
        return
    if len(said) > 10_000:  # bounded: a long-lived process must not grow
        said.clear()
    said.add(marker)
    try:
        extra = task_extra(task_ctx)
    except AttributeError:  # a context made by hand, e.g. in a test of a policy
        extra = {}
    logger.warning("The cache policy of task %r %s; this call runs uncached.",
                   getattr(task, "name", None), error, extra=extra)


INPUTS = Inputs()
TASK_SOURCE = TaskSource()
FLOW_PARAMETERS = FlowParameters()
RUN_ID = RunId()
NO_CACHE = NoCache()
#: Prefect 3's name for ``NO_CACHE``.
NONE = NO_CACHE
DEFAULT = INPUTS + TASK_SOURCE + RUN_ID
