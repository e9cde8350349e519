"""Binding call arguments to a function's parameters, fast, and validating flow parameters."""

from __future__ import annotations

import inspect
from typing import Any, Callable

from .errors import ParameterError

_EMPTY = inspect.Parameter.empty
_SIMPLE_KINDS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


class Binder:
    """Turns ``(args, kwargs)`` into an ordered ``{name: value}`` with defaults applied.

    Built once per function. Functions with only plain parameters take a fast path;
    others go through ``inspect.Signature.bind``. Errors name the function and argument.
    """

    def __init__(self, fn: Callable[..., Any], owner: str) -> None:
        self.owner = owner
        self.signature = inspect.signature(fn)
        params = list(self.signature.parameters.values())
        self.names = [p.name for p in params]
        self.defaults = {p.name: p.default for p in params if p.default is not _EMPTY}
        self.simple = all(p.kind in _SIMPLE_KINDS for p in params)
        self.positional = [p.name for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
        self.var_positional = next((p.name for p in params if p.kind is inspect.Parameter.VAR_POSITIONAL), None)
        self.var_keyword = next((p.name for p in params if p.kind is inspect.Parameter.VAR_KEYWORD), None)
        # Every parameter passed by position (the usual task call): a zip is the binding.
        self._all_by_position = len(self.names) if self.simple and self.positional == self.names else -1

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        if not kwargs and len(args) == self._all_by_position:
            return dict(zip(self.names, args))
        if self.simple and len(args) <= len(self.positional):
            bound = dict(zip(self.positional, args))
            for key, value in kwargs.items():
                if key in bound or key not in self.names:
                    return self._slow(args, kwargs)
                bound[key] = value
            if len(bound) == len(self.names):
                return bound if list(bound) == self.names else {n: bound[n] for n in self.names}
            out = {}
            for name in self.names:
                if name in bound:
                    out[name] = bound[name]
                elif name in self.defaults:
                    out[name] = self.defaults[name]
                else:
                    return self._slow(args, kwargs)
            return out
        return self._slow(args, kwargs)

    def _slow(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        if self.var_keyword is None:
            # Checked first: Signature.bind reports a missing argument before an unknown
            # one, which hides a misspelt keyword behind "missing a required argument".
            unknown = [k for k in kwargs if k not in self.names or k == self.var_positional]
            if unknown:
                raise ParameterError(
                    f"{self.owner}: got an unexpected keyword argument {unknown[0]!r}; "
                    f"parameters: {', '.join(self.names) or 'none'} (signature: {self.signature})"
                )
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise ParameterError(f"{self.owner}: {exc} (signature: {self.signature})") from None
        bound.apply_defaults()
        return dict(bound.arguments)

    def call_args(self, parameters: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Split bound parameters back into ``(args, kwargs)`` for calling the function."""
        if self.simple:
            return (), parameters
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for param in self.signature.parameters.values():
            if param.name not in parameters:
                continue
            value = parameters[param.name]
            if param.kind is inspect.Parameter.VAR_POSITIONAL:
                args.extend(value)
            elif param.kind is inspect.Parameter.VAR_KEYWORD:
                kwargs.update(value)
            elif param.kind is inspect.Parameter.POSITIONAL_ONLY:
                args.append(value)
            elif param.kind is inspect.Parameter.KEYWORD_ONLY or kwargs:
                kwargs[param.name] = value
            else:
                args.append(value)
        return tuple(args), kwargs


class ParameterValidator:
    """Validates and coerces bound parameters against annotations, with pydantic.

    Built on first use per flow. Parameters without annotations pass through unchanged.
    """

    def __init__(self, fn: Callable[..., Any], owner: str) -> None:
        from pydantic import ConfigDict, create_model

        self.owner = owner
        hints = resolved_hints(fn)
        fields: dict[str, Any] = {}
        for param in inspect.signature(fn).parameters.values():
            if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                continue
            if param.name in hints:
                default = ... if param.default is _EMPTY else param.default
                fields[param.name] = (_optional_if_none(hints[param.name], default), default)
        self.names = set(fields)
        self.model = (create_model(f"{fn.__name__}_parameters",
                                   __config__=ConfigDict(arbitrary_types_allowed=True), **fields)
                      if fields else None)

    def validate(self, parameters: dict[str, Any]) -> dict[str, Any]:
        if self.model is None:
            return parameters
        from pydantic import ValidationError

        subset = {k: v for k, v in parameters.items() if k in self.names}
        try:
            validated = self.model.model_validate(subset)
        except ValidationError as exc:
            problems = "; ".join(
                f"parameter {'.'.join(str(p) for p in err['loc'])!s}={err.get('input')!r}: {err['msg']}"
                for err in exc.errors()
            )
            raise ParameterError(f"{self.owner}: invalid parameters: {problems}") from None
        out = dict(parameters)
        for name in self.names:
            out[name] = getattr(validated, name)
        return out


def _optional_if_none(annotation: Any, default: Any) -> Any:
    """``x: int = None`` means ``Optional[int]``, as Prefect users (and PEP 484 before 2018)
    write it: a None default makes the annotation accept None, so the default itself
    validates (``Optional`` of an annotation that accepts None already is the same one)."""
    if default is not None:
        return annotation
    from typing import Optional

    try:
        return Optional[annotation]
    except TypeError:  # not a type (an odd annotation): leave it to pydantic as written
        return annotation


def resolved_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    """``fn``'s parameter annotations as types (``Annotated`` kept); a parameter whose
    annotation cannot be resolved is left out, so it goes unvalidated."""
    import typing

    try:
        hints = typing.get_type_hints(fn, include_extras=True)  # keep Annotated constraints
    except Exception:
        # An unresolvable forward reference (e.g. a class local to a function, under
        # ``from __future__ import annotations``): resolve the others one by one and
        # leave that parameter unvalidated rather than skip validation altogether.
        hints = {}
        namespace = getattr(fn, "__globals__", {})
        for key, value in getattr(fn, "__annotations__", {}).items():
            if isinstance(value, str):
                try:
                    value = eval(value, namespace)  # noqa: S307 - the function's own annotation
                except Exception:
                    continue
            hints[key] = value
    hints.pop("return", None)
    return hints
