"""FlowSpec and TaskSpec: decorator options, validated once at decoration time.

Validation is strict: decorator options are Python values written in code, so ``"3"``
is not silently taken for ``3`` nor ``True`` for ``1``. A bad option fails with one
:class:`~headwater.errors.ConfigurationError` naming the option, the value and what was
expected.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import inspect
import math
import warnings
from typing import Any, Callable, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from .errors import ConfigurationError

Callback = Callable[..., Any]

#: The longest retry delay or timeout, in seconds (one year). Longer values are mistakes
#: (milliseconds for seconds) that would only fail after the body ran: a thread wait
#: overflows past ``threading.TIMEOUT_MAX`` (about 292 years) and a scheduled time past
#: the year 9999.
MAX_SECONDS = 365 * 24 * 3600.0
#: The longest ``cache_expiration``: its end must be a date the run store can record.
MAX_CACHE_EXPIRATION = _dt.timedelta(days=100 * 365)


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, frozen=True, strict=True)

    name: str = Field(min_length=1)
    description: Optional[str] = None
    retries: int = Field(0, ge=0)
    retry_delay_seconds: Union[float, list[float]] = 0
    timeout_seconds: Optional[float] = None
    persist_result: Optional[bool] = None
    log_prints: Optional[bool] = None
    on_completion: list[Callback] = []
    on_failure: list[Callback] = []
    on_crashed: list[Callback] = []
    on_cancellation: list[Callback] = []
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
    def _delays_in_range(cls, value: Any) -> Any:
        delays = value if isinstance(value, list) else [value]
        # nan compares False with everything: test for the good range, not the bad one.
        if not delays or not all(0 <= d <= MAX_SECONDS for d in delays):
            raise ValueError("out of range")  # reported with _EXPECTED's text
        return value

    @field_validator("timeout_seconds")
    @classmethod
    def _timeout_in_range(cls, value: Optional[float]) -> Optional[float]:
        if value == math.inf:
            return None  # an infinite timeout is no timeout (docs/concepts.md, "Timeouts")
        if value is not None and not 0 < value <= MAX_SECONDS:
            raise ValueError("out of range")
        return value

    @field_validator("on_completion", "on_failure", "on_crashed", "on_cancellation", mode="before")
    @classmethod
    def _callbacks(cls, value: Any) -> Any:
        if value is None:
            return []
        if callable(value):
            return [value]
        if isinstance(value, tuple):
            return list(value)
        return value


def _name_template_not_blank(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        raise ValueError("blank")  # a run needs a name; None gives a generated one
    return value


class FlowSpec(_Spec):
    """The options of ``@flow``, checked once when the flow is decorated."""

    version: Optional[str] = None
    flow_run_name: Union[str, Callback, None] = None
    task_runner: Any = None
    validate_parameters: bool = True

    _flow_run_name_not_blank = field_validator("flow_run_name")(_name_template_not_blank)


class TaskSpec(_Spec):
    """The options of ``@task``, checked once when the task is decorated."""

    task_run_name: Union[str, Callback, None] = None
    retry_jitter_factor: Optional[float] = None
    retry_condition_fn: Optional[Callback] = None
    cache_key_fn: Union[Callback, str, None] = None  # a function, or a registered name
    cache_expiration: Optional[_dt.timedelta] = None
    refresh_cache: bool = False
    result_serializer: Optional[str] = None
    cache_policy: Any = None  # headwater.cache_policies: INPUTS, TASK_SOURCE + INPUTS, ...
    result_storage_key: Optional[str] = Field(None, min_length=1)
    cache_result_in_memory: bool = True

    _task_run_name_not_blank = field_validator("task_run_name")(_name_template_not_blank)

    @field_validator("retry_delay_seconds", mode="before")
    @classmethod
    def _delays_from_callable(cls, value: Any, info: ValidationInfo) -> Any:
        # exponential_backoff(...) and other callables: called with the number of
        # retries, they give the list of delays (as in Prefect). None of it when retries
        # is 0: a list of no delays means no wait.
        if callable(value):
            retries = info.data.get("retries", 0)
            try:
                value = value(retries)
            except Exception as exc:
                raise ValueError(f"calling it with retries={retries} raised {type(exc).__name__}: {exc}") from None
            if isinstance(value, (list, tuple)) and not value:
                return 0
        return list(value) if isinstance(value, tuple) else value

    @field_validator("cache_policy")
    @classmethod
    def _is_cache_policy(cls, value: Any) -> Any:
        if value is not None and not callable(getattr(value, "compute_key", None)):
            raise ValueError("not a cache policy")  # reported with _EXPECTED's text
        return value

    @field_validator("cache_expiration", mode="before")
    @classmethod
    def _expiration_in_range(cls, value: Any) -> Any:
        if value is not None and (not isinstance(value, _dt.timedelta)
                                  or not _dt.timedelta(0) < value <= MAX_CACHE_EXPIRATION):
            raise ValueError("out of range")
        return value

    @field_validator("retry_jitter_factor")
    @classmethod
    def _jitter_in_range(cls, value: Optional[float], info: ValidationInfo) -> Optional[float]:
        if value is None:
            return value
        # retry_delay_seconds is declared first, so it is validated already (absent if bad).
        delays = info.data.get("retry_delay_seconds", 0)
        longest = max(delays) if isinstance(delays, list) else delays
        if not 0 <= value < math.inf or longest * (1 + value) > MAX_SECONDS:
            raise ValueError("out of range")
        return value


#: What an option accepts, for options whose pydantic message would be unclear (unions,
#: ranges where nan or inf would read oddly).
_EXPECTED = {
    "retry_delay_seconds": "a number of seconds from 0 to 31536000 (one year), or a non-empty "
                           "list of them (one per retry, the last repeats)",
    "timeout_seconds": "a number of seconds above 0 and at most 31536000 (one year), "
                       "or None (or math.inf) for no timeout",
    "retries": "a whole number >= 0",
    "retry_jitter_factor": "a finite number >= 0 that keeps the longest retry delay times "
                           "(1 + retry_jitter_factor) within 31536000 seconds (one year)",
    "cache_expiration": "a datetime.timedelta above 0 and at most 100 years, "
                        "or None for entries that never expire",
    "cache_policy": "a cache policy from headwater.cache_policies (INPUTS, TASK_SOURCE, "
                    "FLOW_PARAMETERS, RUN_ID, DEFAULT, NO_CACHE, combined with +, or "
                    "CacheKeyFnPolicy(cache_key_fn=...)), or None",
    "result_storage_key": "a non-empty format string such as 'report-{parameters[day]}.pickle', or None",
    "flow_run_name": "a non-empty format string such as '{name}-run' or a callable returning a string",
    "task_run_name": "a non-empty format string such as '{name}-run' or a callable returning a string",
    "on_completion": "a callable or a list of callables",
    "on_failure": "a callable or a list of callables",
    "on_crashed": "a callable or a list of callables",
    "on_cancellation": "a callable or a list of callables",
}


def check_decorated(fn: Any, decorator: str) -> None:
    """Refuse anything but a function for ``@flow`` / ``@task``, with one clear line.

    A class is callable, so without this check it would be accepted and every call would
    record a run that merely builds an instance.
    """
    if inspect.isclass(fn):
        raise TypeError(f"{decorator} decorates a function, got the class {fn.__qualname__!r}; "
                        f"decorate a function or a method instead")
    if not callable(fn) or not isinstance(getattr(fn, "__name__", None), str):
        raise TypeError(f"{decorator} decorates a function, got {fn!r}; "
                        f"decorate a function defined with def (or a lambda)")


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
    if isinstance(spec, TaskSpec):
        check_cache_options(spec, owner)
        if not caches(spec):
            _warn_cache_options_unused(spec, owner)
    return spec


def caches(spec: TaskSpec) -> bool:
    """Whether runs of the task look up and write cache entries: it has a
    ``cache_key_fn``, a ``cache_policy`` other than ``NO_CACHE``, or (as in Prefect 3,
    where it is the cache key) a ``result_storage_key`` without ``NO_CACHE``."""
    policy = spec.cache_policy
    if spec.cache_key_fn is not None:
        return True
    if policy is not None:
        return bool(getattr(policy, "caches", True))
    return spec.result_storage_key is not None


def _named(fn: Any) -> str:
    name = getattr(fn, "__qualname__", None)
    return name if isinstance(name, str) else repr(fn)


def check_cache_options(spec: TaskSpec, owner: str) -> None:
    """Refuse cache options that contradict each other, naming both."""
    policy = spec.cache_policy
    if spec.cache_key_fn is not None and policy is not None:
        raise ConfigurationError(
            f"invalid options for {owner}: cache_key_fn={_named(spec.cache_key_fn)} and "
            f"cache_policy={policy!r} both say how to key the cache; give one (a key "
            f"function as a policy: CacheKeyFnPolicy(cache_key_fn=...) + other policies)")
    if spec.persist_result is False and (spec.cache_key_fn is not None or
                                         (policy is not None and getattr(policy, "caches", True))):
        what = (f"cache_key_fn={_named(spec.cache_key_fn)}" if spec.cache_key_fn is not None
                else f"cache_policy={policy!r}")
        raise ConfigurationError(
            f"invalid options for {owner}: {what} caches the result, which needs it persisted, "
            f"but persist_result=False; remove one of them")
    if spec.persist_result is False and not spec.cache_result_in_memory:
        raise ConfigurationError(
            f"invalid options for {owner}: cache_result_in_memory=False keeps the result only "
            f"in the result store, but persist_result=False keeps it out; remove one of them")
    key = spec.result_storage_key
    if key is None:
        return
    if spec.cache_key_fn is not None or (policy is not None and getattr(policy, "caches", True)):
        other = (f"cache_key_fn={_named(spec.cache_key_fn)}" if spec.cache_key_fn is not None
                 else f"cache_policy={policy!r}")
        raise ConfigurationError(
            f"invalid options for {owner}: result_storage_key={key!r} is the task's cache key, "
            f"so {other} would not be used; give one of them, or cache_policy=NO_CACHE to "
            f"only name where the result is written")
    if spec.persist_result is False:
        raise ConfigurationError(
            f"invalid options for {owner}: result_storage_key={key!r} names where the result "
            f"is persisted, but persist_result=False; remove one of them")


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
