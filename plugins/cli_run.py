"""``headwater run FILE:FLOW -p key=value``: load a file, find the flow, turn the ``-p``
texts into its parameters, run it, print its final state (exit status 1 unless it
completed). Wired up by ``cli_commands``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .cli_text import shown


def cmd_run(args: argparse.Namespace) -> int:
    import importlib.util
    from pathlib import Path

    target = args.target
    if ":" not in target:
        print(f"headwater: error: expected FILE:FLOW, e.g. examples/hello.py:hello_flow, got {target!r}",
              file=sys.stderr)
        return 2
    file_name, flow_name = target.rsplit(":", 1)
    path = Path(file_name)
    if not path.is_file():
        print(f"headwater: error: no such file {file_name!r}", file=sys.stderr)
        return 2
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.resolve().parent))
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # SystemExit and KeyboardInterrupt keep their meaning
        print(f"headwater: error: {shown(load_error(file_name, exc))}", file=sys.stderr)
        return 1
    flow_obj = getattr(module, flow_name, None)
    from headwater.flows import Flow

    if not isinstance(flow_obj, Flow):
        flows = [n for n, v in vars(module).items() if isinstance(v, Flow)]
        print(f"headwater: error: {flow_name!r} in {shown(file_name)} is not a flow; flows there: "
              f"{', '.join(flows) or 'none'}", file=sys.stderr)
        return 2
    params, problem = _cli_parameters(flow_obj, args.param or [])
    if problem is not None:
        print(f"headwater: error: {shown(problem)}", file=sys.stderr)
        return 2
    state = flow_obj(**params, return_state=True)
    print(shown(repr(state)))  # repr escapes the message, not a custom state's name
    return 0 if state.is_completed() else 1


def load_error(file_name: str, exc: BaseException) -> str:
    """One line for a file that could not be imported: the error and where it was raised,
    through the user's own frames only (not importlib's, the standard library's, installed
    packages' or headwater's), e.g. ``cannot load etl.py: ZeroDivisionError: division by
    zero (at etl.py:3 > helpers.py:8 in load)``."""
    import traceback

    places = [f"{_shown_path(f.filename)}:{f.lineno}" + ("" if f.name == "<module>" else f" in {f.name}")
              for f in traceback.extract_tb(exc.__traceback__) if _is_user_file(f.filename)]
    if isinstance(exc, SyntaxError):
        # Raised by the compiler, not by a frame: the place is on the exception itself.
        message = exc.msg
        if exc.filename and exc.lineno:
            places.append(f"{_shown_path(exc.filename)}:{exc.lineno}")
    else:
        message = str(exc)
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    where = f" (at {' > '.join(places)})" if places else ""
    return f"cannot load {file_name}: {_one_line(text)}{where}"


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(lines)


def _shown_path(file_name: str) -> str:
    """A path relative to the current directory when it is below it, else as given."""
    import os

    try:
        relative = os.path.relpath(file_name)
    except ValueError:  # another drive (Windows)
        return file_name
    return file_name if relative.startswith(os.pardir) else relative


def _is_user_file(file_name: str) -> bool:
    """Whether a frame's file is the user's: not frozen (importlib), not in the standard
    library or an installed package, not headwater's own."""
    import os
    import sysconfig

    import headwater

    if file_name.startswith("<"):
        return False
    path = os.path.abspath(file_name)
    paths = sysconfig.get_paths()
    # headwater and headwater.plugins: separate folders in a source checkout.
    roots = {os.path.dirname(headwater.__file__), os.path.dirname(__file__)}
    roots.update(paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths)
    return not any(path.startswith(os.path.abspath(root) + os.sep) for root in roots)


def _cli_parameters(flow_obj: Any, items: list[str]) -> tuple[dict[str, Any], str | None]:
    """Turn ``-p key=value`` items into flow parameters; ``(params, None)`` or ``({}, error)``.

    The text is handed over as typed wherever the flow's own validation can coerce it, so
    that ``-p version=1.10`` stays ``"1.10"`` for a ``str`` parameter and a bad value is
    reported as the user typed it. See ``_cli_value`` for the rules.
    """
    from headwater.parameters import resolved_hints

    binder = flow_obj.binder
    names = [n for n in binder.names if n not in (binder.var_positional, binder.var_keyword)]
    hints = resolved_hints(flow_obj.fn)
    validated = bool(flow_obj.spec.validate_parameters)
    params: dict[str, Any] = {}
    given: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            return {}, f"-p takes key=value, got {item!r}"
        key, raw = item.split("=", 1)
        if key in given:
            return {}, (f"parameter {key!r} given twice (-p {key}={given[key]} and -p {item}); "
                        f"give each parameter once")
        if key not in names and binder.var_keyword is None:
            return {}, (f"flow {flow_obj.name!r} has no parameter {key!r}; its parameters: "
                        f"{', '.join(names) or 'none'}")
        given[key] = raw
        try:
            params[key] = _cli_value(raw, hints.get(key), validated)
        except json.JSONDecodeError as exc:
            hint = ("" if key in hints else
                    f"; to pass the text itself, annotate {key!r} as str or quote it as a JSON string")
            at = "the end" if exc.pos >= len(exc.doc) else f"character {exc.pos + 1}"
            return {}, (f"parameter {key!r}: -p {item!r} is malformed JSON ({exc.msg} at {at}); "
                        f"expected a JSON list or object such as [1, 2] or "
                        f"{{\"a\": 1}}{hint}")
    return params, None


def _is_text_annotation(annotation: Any) -> bool:
    """``str``, ``Optional[str]``, ``Literal["a", "b"]`` (also inside ``Annotated``)."""
    import typing

    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _is_text_annotation(typing.get_args(annotation)[0])
    if annotation is str:
        return True
    if origin is typing.Literal:
        return all(isinstance(a, str) for a in typing.get_args(annotation))
    args = typing.get_args(annotation)
    if args and (origin is typing.Union or type(annotation).__name__ == "UnionType"):
        rest = [a for a in args if a is not type(None)]
        return len(rest) == 1 and _is_text_annotation(rest[0])
    return False


def _cli_value(raw: str, annotation: Any, validated: bool) -> Any:
    """One ``-p`` value.

    - annotated ``str`` (or ``Optional[str]``, a ``Literal`` of strings): the text as typed;
    - otherwise text starting with ``[`` or ``{`` must be JSON (``json.JSONDecodeError``);
    - any other annotation (checked by the flow's parameter validation): a JSON list,
      object or ``null`` is decoded, anything else is passed as typed and the validation
      coerces it (``"3"`` to an int, ``"1.10"`` to a float, ``"true"`` to a bool, dates);
    - unannotated (or validation turned off): JSON lists, objects, strings, ``true``,
      ``false``, ``null`` and numbers that read back exactly as typed (``3``, ``0.5``) are
      decoded; other text, ``1.10`` and ``1e3`` included, stays text.
    """
    import typing

    if annotation is not None and _is_text_annotation(annotation):
        return raw
    try:
        value = json.loads(raw)
    except ValueError:
        if raw.lstrip()[:1] in ("[", "{"):
            raise  # meant as a list or object: passing the text on would hide the typo
        return raw
    if annotation is not None and annotation is not typing.Any and validated:
        return value if value is None or isinstance(value, (list, dict)) else raw
    if isinstance(value, (int, float)) and not isinstance(value, bool) and json.dumps(value) != raw.strip():
        return raw  # 1.10 would silently become 1.1: keep what was typed
    return value
