"""FlowSpec and TaskSpec: decorator options, validated once at decoration time.

Validation is strict: decorator options are Python values written in code, so ``"3"``
is not silently taken for ``3`` nor ``True`` for ``1``. A bad option fails with one
:class:`~headwater.errors.ConfigurationError` naming the option, the value and what was
expected.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import warnings
from typing import Any, Callable, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigurationError

Callback = Callable[..., Any]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, frozen=True, strict=True)

    name: str = Field(min_length=1)
    description: Optional[str] = None
    retries: int = Field(0, ge=0)
    retry_delay_seconds: Union[float, list[float]] = 0
    timeout_seconds: Optional[float] = Field(None, gt=0)
    persist_result: Optional[bool] = None
    log_prints: Optional[bool] = None
    on_completion: list[Callback] = []
    on_failure: list[Callback] = []
    on_crashed: list[Callback] = []
    tags: frozenset[str] = frozenset()

    @field_validator("tags", mode="before")
    @classmethod
    def _tags_are_strings(cls, value: Any) -> Any:
        if isinstance(value, str) or not isinstance(value, (list, tuple, set, frozenset)):
            raise ValueError("tags must be a list of strings, e.g. tags=['etl']")
        if not all(isinstance(tag, str) for tag in value):
            raise ValueError("every tag must be a string")
        return frozenset(value)

    @field_validator("retry_delay_seconds", mode="before")
    @classmethod
    def _delays_tuple_is_list(cls, value: Any) -> Any:
        return list(value) if isinstance(value, tuple) else value

    @field_validator("retry_delay_seconds")
    @classmethod
    def _delays_not_negative(cls, value: Any) -> Any:
        delays = value if isinstance(value, list) else [value]
        if any(d < 0 for d in delays):
            raise ValueError("delays must be >= 0")
        return value

    @field_validator("on_completion", "on_failure", "on_crashed", mode="before")
    @classmethod
    def _callbacks(cls, value: Any) -> Any:
        if value is None:
            return []
        if callable(value):
            return [value]
        if isinstance(value, tuple):
            return list(value)
        return value


class FlowSpec(_Spec):
    version: Optional[str] = None
    flow_run_name: Union[str, Callback, None] = None
    task_runner: Any = None
    validate_parameters: bool = True


class TaskSpec(_Spec):
    task_run_name: Union[str, Callback, None] = None
    retry_jitter_factor: Optional[float] = Field(None, ge=0)
    retry_condition_fn: Optional[Callback] = None
    cache_key_fn: Union[Callback, str, None] = None  # a function, or a registered name
    cache_expiration: Optional[_dt.timedelta] = None
    refresh_cache: bool = False
    result_serializer: Optional[str] = None

    @field_validator("cache_expiration", mode="before")
    @classmethod
    def _expiration_is_timedelta(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, _dt.timedelta):
            raise ValueError("cache_expiration must be a datetime.timedelta")
        return value


#: What an option accepts, for options whose pydantic message would be unclear (unions).
_EXPECTED = {
    "retry_delay_seconds": "a number of seconds >= 0, or a list of them (one per retry)",
    "flow_run_name": "a format string such as '{name}-run' or a callable returning a string",
    "task_run_name": "a format string such as '{name}-run' or a callable returning a string",
    "on_completion": "a callable or a list of callables",
    "on_failure": "a callable or a list of callables",
    "on_crashed": "a callable or a list of callables",
}


def build_spec(model: type[_Spec], owner: str, options: dict[str, Any]) -> Any:
    """Validate ``options`` for ``owner`` (e.g. ``"@task 'load'"``), raising one clear error."""
    try:
        spec = model(**options)
    except ValidationError as exc:
        problems: list[str] = []
        seen: set[str] = set()
        for err in exc.errors():
            option = ".".join(str(p) for p in err["loc"][:1]) or "?"
            if option in seen:
                continue  # a union reports once per alternative; one line per option is enough
            seen.add(option)
            value = options.get(option, err.get("input"))
            if err["type"] == "extra_forbidden":
                allowed = sorted(model.model_fields)
                close = difflib.get_close_matches(option, allowed, n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                problems.append(f"unknown option {option}={value!r}{hint} "
                                f"(expected one of: {', '.join(allowed)})")
            elif option in _EXPECTED:
                problems.append(f"{option}={value!r}: expected {_EXPECTED[option]}")
            else:
                message = err["msg"].removeprefix("Value error, ")
                problems.append(f"{option}={value!r}: {message}")
        raise ConfigurationError(f"invalid options for {owner}: " + "; ".join(problems)) from None
    if isinstance(spec, TaskSpec) and spec.cache_key_fn is None:
        _warn_cache_options_unused(spec, owner)
    return spec


def _warn_cache_options_unused(spec: TaskSpec, owner: str) -> None:
    unused = [f"cache_expiration={spec.cache_expiration!r}"] if spec.cache_expiration is not None else []
    if spec.refresh_cache:
        unused.append("refresh_cache=True")
    if unused:
        warnings.warn(f"{owner}: {' and '.join(unused)} has no effect without a cache_key_fn "
                      f"(the task is not cached); add cache_key_fn=task_input_hash "
                      f"(from headwater.tasks) to cache it", UserWarning, stacklevel=_outside_headwater())


def _outside_headwater() -> int:
    """The ``stacklevel`` that points a warning at the first frame outside this package
    (the user's ``@task(...)`` line), however deep the decorator's call chain is."""
    import os
    import sys

    here = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(here):
        frame, level = frame.f_back, level + 1
    return level
