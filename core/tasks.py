"""Task: a function whose calls become recorded, retried, cached task runs.

Also home of ``task_input_hash`` for ``from headwater.tasks import task_input_hash``.
"""

from __future__ import annotations

import functools
import inspect
import string
from typing import Any, Callable, Generic, TypeVar, overload

from .errors import ConfigurationError
from .identity import source_dir_of, task_key
from .parameters import Binder
from .specs import TaskSpec, build_spec, check_decorated

R = TypeVar("R")

__all__ = ["Task", "exponential_backoff", "task", "task_input_hash"]


class Task(Generic[R]):
    """A decorated function. Call it, ``submit`` it, or ``map`` it inside a flow."""

    def __init__(self, fn: Callable[..., R], **options: Any) -> None:
        check_decorated(fn, "@task")
        self.fn = fn
        self._options = options
        defaults = {"name": fn.__name__, "description": inspect.getdoc(fn)}
        merged = {**defaults, **{k: v for k, v in options.items() if not (k in defaults and v is None)}}
        self.spec: TaskSpec = build_spec(TaskSpec, f"@task {fn.__name__!r}", merged)
        self.name = self.spec.name
        self.description = self.spec.description
        self.tags = self.spec.tags
        self.is_async = inspect.iscoroutinefunction(fn)
        self.binder = Binder(fn, f"task {self.name!r}")
        self.task_key = task_key(self)
        self.source_dir = source_dir_of(fn)
        if self.spec.result_storage_key is not None:
            check_storage_key(self.spec.result_storage_key, fn, f"@task {fn.__name__!r}")
        functools.update_wrapper(self, fn)

    def __getattr__(self, name: str) -> Any:
        # Options read like attributes: my_task.retries, my_task.cache_key_fn, ...
        spec = self.__dict__.get("spec")
        if spec is not None and name in type(spec).model_fields:
            return getattr(spec, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __call__(self, *args: Any, return_state: bool = False, wait_for: Any = None, **kwargs: Any) -> Any:
        return (_calls or _load_calls()).call_task(self, args, kwargs, return_state, wait_for)

    def submit(self, *args: Any, wait_for: Any = None, **kwargs: Any) -> Any:
        """Run on the flow's task runner; returns a future (``.result()``, ``.wait()``)."""
        return (_calls or _load_calls()).submit_task(self, args, kwargs, wait_for)

    def map(self, *args: Any, wait_for: Any = None, **kwargs: Any) -> Any:
        """Submit one run per element; wrap constant arguments in ``unmapped(...)``. Returns
        a :class:`~headwater.futures.FutureList`: a list of futures with ``wait()`` and
        ``result()``."""
        return (_calls or _load_calls()).map_task(self, args, kwargs, wait_for)

    def with_options(self, **changes: Any) -> Task[R]:
        """A copy with some options changed, validated again."""
        return Task(self.fn, **{**self._options, **changes})

    def __repr__(self) -> str:
        return f"Task(name={self.name!r})"


#: ``headwater.engine.calls``, imported on the first call of a task (not at ``import
#: headwater``); kept here because an import statement per call cost a microsecond.
_calls: Any = None


def _load_calls() -> Any:
    global _calls
    # layering: calling a task starts the engine (a higher layer than the decorators)
    from .engine import calls

    _calls = calls
    return calls


class ExponentialBackoff:
    """``retry_delay_seconds`` that doubles: called with the number of retries, it gives
    ``backoff_factor * 2**n`` for retry ``n`` (0-based). Made by :func:`exponential_backoff`."""

    __slots__ = ("backoff_factor",)

    def __init__(self, backoff_factor: float) -> None:
        self.backoff_factor = backoff_factor

    def __call__(self, retries: int) -> list[float]:
        # At most 50 delays, as in Prefect: 2**50 seconds is past any useful retry anyway.
        return [self.backoff_factor * 2 ** n for n in range(min(retries, 50))]

    def __repr__(self) -> str:
        return f"exponential_backoff(backoff_factor={self.backoff_factor!r})"


def exponential_backoff(backoff_factor: float) -> ExponentialBackoff:
    """Retry delays that double, for ``@task(retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=10))``: 10, 20 and 40 seconds.
    ``retry_jitter_factor`` spreads each of them as usual."""
    if isinstance(backoff_factor, bool) or not isinstance(backoff_factor, (int, float)) \
            or not 0 <= backoff_factor < float("inf"):
        raise ValueError(f"exponential_backoff(backoff_factor={backoff_factor!r}): expected a "
                         f"number of seconds >= 0")
    return ExponentialBackoff(backoff_factor)


def check_storage_key(template: str, fn: Callable[..., Any], owner: str) -> None:
    """Refuse a ``result_storage_key`` whose format fields cannot exist in any run of
    ``fn``: a syntax error, a field other than ``parameters``, ``flow_run`` and
    ``task_run``, or ``parameters[name]`` for a name ``fn`` has no parameter for."""
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
    except ValueError as exc:
        raise ConfigurationError(f"invalid options for {owner}: result_storage_key={template!r}: {exc}") from None
    signature = inspect.signature(fn)
    takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    for field in fields:
        root = field.split(".", 1)[0].split("[", 1)[0]
        if root not in ("parameters", "flow_run", "task_run"):
            raise ConfigurationError(
                f"invalid options for {owner}: result_storage_key={template!r} has the field "
                f"{{{field}}}; expected fields of parameters (e.g. {{parameters[day]}}), flow_run "
                f"or task_run (e.g. {{flow_run.name}}, {{task_run.id}})")
        if root == "parameters" and field.startswith("parameters[") and not takes_any:
            name = field[len("parameters["):].split("]", 1)[0]
            if name not in signature.parameters:
                raise ConfigurationError(
                    f"invalid options for {owner}: result_storage_key={template!r} has the field "
                    f"{{{field}}}, but {fn.__name__}() has no parameter {name!r}; expected one of: "
                    f"{', '.join(signature.parameters) or '(none)'}")


@overload
def task(__fn: Callable[..., R]) -> Task[R]: ...
@overload
def task(**options: Any) -> Callable[[Callable[..., R]], Task[R]]: ...


def task(__fn: Callable[..., Any] | None = None, **options: Any) -> Any:
    """Make a function a task: ``@task`` or ``@task(retries=2, cache_key_fn=...)``."""
    if __fn is None:
        return lambda fn: Task(fn, **options)
    return Task(__fn, **options)


def __getattr__(name: str) -> Any:
    if name == "task_input_hash":
        # layering: a documented name whose home is the input_hash plugin, above core
        from headwater.plugins.input_hash import task_input_hash

        return task_input_hash
    raise AttributeError(f"module 'headwater.tasks' has no attribute {name!r}")
