"""How the SQLite run store writes values it cannot store as they are: parameters as
JSON (anything JSON cannot encode as a readable stand-in, huge values as a summary),
tags, the state details worth a column, and text SQLite cannot take (``safe_text``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from headwater.states import StateDetails

from .sqlite_tuning import MAX_PARAMETER_CHARS, MAX_REPR_CHARS


def readable(value: Any) -> Any:
    """A JSON stand-in for a value json cannot encode (called by ``json.dumps``)."""
    import dataclasses
    import datetime as _dt
    import enum
    import uuid

    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, (Path, uuid.UUID)):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value if isinstance(value.value, (str, int, float, bool)) else value.name
    if isinstance(value, (set, frozenset)):
        try:
            return sorted(value)
        except TypeError:
            return list(value)
    dump = getattr(value, "model_dump", None)  # pydantic models
    if callable(dump):
        try:
            return dump(mode="json")
        except Exception:
            pass
    try:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return dataclasses.asdict(value)
        text = repr(value)
    except Exception as exc:  # noqa: BLE001 - user code: the run is recorded all the same
        return f"<{type(value).__qualname__} object: repr() raised {type(exc).__name__}>"
    return text if len(text) <= MAX_REPR_CHARS else text[:MAX_REPR_CHARS - 3] + "..."


_ENCODER = json.JSONEncoder(default=readable)
# The C encoder behind JSONEncoder, made once: ``encode`` builds one per call, which cost
# more than encoding a task's usual few parameters. No circular check (a loop ends in
# RecursionError, and the checking encoder below then says so).
_make_c_encoder = getattr(json.encoder, "c_make_encoder", None)
_FAST = (_make_c_encoder(None, readable, json.encoder.encode_basestring_ascii, None, ": ", ", ",
                         False, False, True) if _make_c_encoder is not None else None)


def to_json(value: Any) -> str:
    """Parameters as JSON: common types in their JSON form, anything else as its repr."""
    if _FAST is not None and type(value) is dict:
        try:
            return "".join(_FAST(value, 0))
        except (TypeError, ValueError, RecursionError):
            pass  # the checking encoder and the fallbacks below
    try:
        return _ENCODER.encode(value)
    except (TypeError, ValueError):  # e.g. non-string dict keys mixed with odd values
        if isinstance(value, dict):
            try:
                return json.dumps({str(k): v for k, v in value.items()}, default=readable)
            except (TypeError, ValueError):  # e.g. a value that contains itself
                return json.dumps({str(k): v if isinstance(v, (str, int, float, bool, type(None))) else readable(v)
                                   for k, v in value.items()})
        return json.dumps(readable(value))


def parameters_json(parameters: Any) -> str:
    """``to_json(parameters)`` with each value longer than ``MAX_PARAMETER_CHARS`` as JSON
    replaced by a summary such as ``"<list of 1000000 items, 6.9 MB as JSON: not stored>"``."""
    text = to_json(parameters)
    if "\\ud" in text:  # maybe a lone surrogate: stored by the rule every text follows
        parameters = escape_surrogates(parameters)
        text = to_json(parameters)
    # The usual small parameters: one encode, nothing more.
    if len(text) <= MAX_PARAMETER_CHARS or not isinstance(parameters, dict):
        return text
    capped = {}
    for key, value in parameters.items():
        size = len(to_json(value))
        capped[str(key)] = value if size <= MAX_PARAMETER_CHARS else parameter_summary(value, size)
    return to_json(capped)


def parameter_summary(value: Any, size: int) -> str:
    """What a parameter value too large to store was: its type, length and JSON size."""
    amount = f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB"
    kind = type(value).__name__
    if isinstance(value, str):
        return f"<str of {len(value)} characters: not stored>"
    if isinstance(value, (list, tuple, set, frozenset, dict)):
        unit = "keys" if isinstance(value, dict) else "items"
        return f"<{kind} of {len(value)} {unit}, {amount} as JSON: not stored>"
    return f"<{kind}, {amount} as JSON: not stored>"


def tags_json(tags: Iterable[str]) -> str:
    # The usual empty tags need no encoder.
    if not tags:
        return "[]"
    text = json.dumps(sorted(tags))
    return json.dumps(sorted(map(safe_text, tags))) if "\\ud" in text else text


def escape_surrogates(value: Any) -> Any:
    """``value`` with every text in it (dict keys too, inside lists, tuples and dicts)
    passed through ``safe_text``. JSON's escapes could keep a lone surrogate, but a high
    and a low one side by side would come back joined into one character; the rule of
    every other recorded text (each lone surrogate as its backslash escape) reads back
    the same everywhere."""
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, dict):
        return {escape_surrogates(k) if isinstance(k, str) else k: escape_surrogates(v)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [escape_surrogates(item) for item in value]
    return value


def details_json(details: StateDetails) -> str | None:
    """The state details worth a column: cache and scheduling facts. The run ids every
    final state carries are the row's own ``run_id`` (and its run's flow run), so they
    are not written again; most states then need no JSON at all."""
    if (details.cache_key is None and details.cache_expiration is None and details.scheduled_time is None
            and details.reused_from is None):
        return None
    text = json.dumps(details.to_dict())
    return json.dumps(escape_surrogates(details.to_dict())) if "\\ud" in text else text


def safe_text(text: str) -> str:
    """``text`` as SQLite can store it. Text without lone surrogates is returned as it is
    (NUL characters included); each lone surrogate (what ``os.listdir`` gives for a file
    name that is not UTF-8, e.g. ``"report-\\udcff.csv"``) becomes its backslash escape,
    the six characters ``\\udcff``: UTF-8, which SQLite's text must be, cannot encode it."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


#: The largest integer SQLite stores as an integer.
_INT_MAX = (1 << 63) - 1


def plain_values(value: Any) -> Any:
    """A queue entry (nested tuples of plain values) with every value made storable:
    text through ``safe_text``, an integer beyond 64 bits and any value of a type SQLite
    does not take (a state message that is not text, say) as text. Used only for a batch
    that failed to write, so the usual batch pays nothing for it."""
    if isinstance(value, str):
        return safe_text(value)
    if type(value) is tuple:
        return tuple(plain_values(item) for item in value)
    if value is None or isinstance(value, (float, bytes)):
        return value
    if isinstance(value, int):
        return int(value) if -_INT_MAX - 1 <= value <= _INT_MAX else str(value)
    try:
        return safe_text(str(value))
    except Exception:  # noqa: BLE001 - a __str__ that raises: its type is something
        return f"<{type(value).__name__}>"
