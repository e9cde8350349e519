"""Flow: a function whose calls become named, recorded flow runs."""

from __future__ import annotations

import functools
import hashlib
import inspect
from typing import Any, Callable, Generic, TypeVar, overload

from .errors import ConfigurationError
from .identity import source_dir_of
from .parameters import Binder, ParameterValidator
from .specs import FlowSpec, build_spec, check_decorated
from .task_runners import TaskRunner

R = TypeVar("R")

__all__ = ["Flow", "flow"]


class Flow(Generic[R]):
    """A decorated function. Calling it runs it as a flow run."""

    def __init__(self, fn: Callable[..., R], **options: Any) -> None:
        check_decorated(fn, "@flow")
        self.fn = fn
        self._options = options
        default_name = fn.__name__.replace("_", "-")
        defaults = {"name": default_name, "description": inspect.getdoc(fn)}
        merged = {**defaults, **{k: v for k, v in options.items() if not (k in defaults and v is None)}}
        self.spec: FlowSpec = build_spec(FlowSpec, f"@flow {fn.__name__!r}", merged)
        _check_task_runner(self.spec.task_runner, fn.__name__)
        self.name = self.spec.name
        self.description = self.spec.description
        self.tags = self.spec.tags
        self.is_async = inspect.iscoroutinefunction(fn)
        self.binder = Binder(fn, f"flow {self.name!r}")
        self.source_dir = source_dir_of(fn)
        self._validator: ParameterValidator | None = None
        self._version: str | None = self.spec.version
        functools.update_wrapper(self, fn)

    @property
    def version(self) -> str | None:
        """The given version, else a hash of the source file defining the flow (or None)."""
        if self._version is None:
            self._version = _source_hash(self.fn)
        return self._version

    @property
    def validator(self) -> ParameterValidator:
        if self._validator is None:
            self._validator = ParameterValidator(self.fn, f"flow {self.name!r}")
        return self._validator

    def __getattr__(self, name: str) -> Any:
        spec = self.__dict__.get("spec")
        if spec is not None and name in type(spec).model_fields:
            return getattr(spec, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __call__(self, *args: Any, return_state: bool = False, **kwargs: Any) -> Any:
        # layering: calling a flow starts the engine (a higher layer than the decorators)
        from .engine import flow_loop

        if self.is_async:
            return flow_loop.run_flow_async(self, args, kwargs, return_state)
        return flow_loop.run_flow(self, args, kwargs, return_state)

    def with_options(self, **changes: Any) -> Flow[R]:
        """A copy with some options changed, validated again."""
        return Flow(self.fn, **{**self._options, **changes})

    def __repr__(self) -> str:
        return f"Flow(name={self.name!r})"


def _check_task_runner(value: Any, fn_name: str) -> None:
    if value is None or isinstance(value, (str, TaskRunner)):
        return
    if isinstance(value, type) and issubclass(value, TaskRunner):
        return
    raise ConfigurationError(
        f"invalid options for @flow {fn_name!r}: task_runner={value!r}; expected a TaskRunner "
        f"instance or class, or a registered name such as 'concurrent' or 'sequential'"
    )


def _source_hash(fn: Callable[..., Any]) -> str | None:
    try:
        path = inspect.getsourcefile(fn)
        if not path:
            return None
        with open(path, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()[:32]
    except (OSError, TypeError):
        return None


@overload
def flow(__fn: Callable[..., R]) -> Flow[R]: ...
@overload
def flow(**options: Any) -> Callable[[Callable[..., R]], Flow[R]]: ...


def flow(__fn: Callable[..., Any] | None = None, **options: Any) -> Any:
    """Make a function a flow: ``@flow`` or ``@flow(name=..., retries=..., task_runner=...)``."""
    if __fn is None:
        return lambda fn: Flow(fn, **options)
    return Flow(__fn, **options)
