"""The dashboard's URL values, checked: ids in paths, and query parameters.

Every bad value is a :class:`BadRequest` (HTTP 400) whose one-line message names the
parameter, the value and what was expected; so is a query parameter the page does not
know (``?ofset=50``), which would otherwise be ignored without a word.
"""

from __future__ import annotations

import datetime as dt
import re

from headwater.states import StateType
from headwater.stores import LOG_LEVELS

#: Run ids (uuid text, or the first characters of one) and run names in URLs.
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
#: A state filter: a state type (``FAILED``) or a state name (``AwaitingRetry``).
STATE_FILTER = re.compile(r"^[A-Za-z]{1,32}$")
MAX_NAME = 200
MAX_PAGE = 1_000_000
MAX_OFFSET = 100_000_000


class BadRequest(ValueError):
    """A URL part or query value that is not what the dashboard expects (HTTP 400)."""


class NotFound(LookupError):
    """Nothing in the run store under that id (HTTP 404)."""


class Query:
    """The query string of one request: the values given for each name, read through the
    checks below. ``expect`` refuses names the route does not know."""

    def __init__(self, values: dict[str, list[str]] | None = None) -> None:
        self.values = values or {}

    def expect(self, *names: str) -> Query:
        """Raise ``BadRequest`` for a parameter not among ``names``; return the query."""
        for name in self.values:
            if name not in names:
                known = ", ".join(names) if names else "none"
                raise BadRequest(f"unknown query parameter {name[:60]!r}: expected one of {known}")
        return self

    def get(self, name: str) -> str | None:
        """The last value given for ``name`` (an empty one is ``None``)."""
        given = self.values.get(name)
        return given[-1] if given and given[-1] != "" else None

    def all(self, name: str) -> list[str]:
        """Every non-empty value given for ``name``, in order."""
        return [v for v in self.values.get(name, []) if v != ""]


def check_run_id(value: str, what: str = "flow run id") -> str:
    """Return ``value`` when it can be a run id or name, else raise ``BadRequest``."""
    if not RUN_ID.match(value):
        raise BadRequest(f"{what} {value[:120]!r} is not valid: expected letters, digits, '-', '_' "
                         f"or '.', at most 100 characters")
    return value


def check_text(value: str | None, what: str) -> str | None:
    """Printable text of at most ``MAX_NAME`` characters (flow names, search text, tags)."""
    if value is None or value == "":
        return None
    if len(value) > MAX_NAME or not value.isprintable():
        raise BadRequest(f"{what} {value[:120]!r} is not valid: expected printable text of at "
                         f"most {MAX_NAME} characters")
    return value


def check_flow_name(value: str | None) -> str | None:
    """Return a flow name filter, or raise ``BadRequest`` for control characters or length."""
    return check_text(value, "flow name")


def check_state(value: str | None, what: str = "state") -> str | None:
    """Return a state filter (type or name), or raise ``BadRequest``."""
    if value is None or value == "":
        return None
    if not STATE_FILTER.match(value):
        raise BadRequest(f"{what} {value[:120]!r} is not valid: expected a state type such as "
                         f"{', '.join(t.value for t in StateType)} or a state name such as Cached")
    return value


def check_level(value: str | None) -> str | None:
    """Return a log level (upper case), or raise ``BadRequest``."""
    if value is None or value == "":
        return None
    if value.upper() not in LOG_LEVELS:
        raise BadRequest(f"level {value[:60]!r} is not valid: expected one of {', '.join(LOG_LEVELS)} "
                         f"(that level and above)")
    return value.upper()


def check_int(value: str | None, what: str, default: int, maximum: int) -> int:
    """Parse a positive integer query value within ``1..maximum``."""
    if value is None or value == "":
        return default
    if not value.isdigit() or not 1 <= int(value) <= maximum:
        raise BadRequest(f"{what} {value[:40]!r} is not valid: expected a whole number from 1 to {maximum}")
    return int(value)


def check_offset(value: str | None, what: str = "offset") -> int:
    """Parse an offset: a whole number from 0 (the first item)."""
    if value is None or value == "":
        return 0
    if not value.isdigit() or int(value) > MAX_OFFSET:
        raise BadRequest(f"{what} {value[:40]!r} is not valid: expected a whole number from 0 to {MAX_OFFSET}")
    return int(value)


def check_date(value: str | None, what: str, end: bool = False) -> float | None:
    """A date (``2026-12-03``, this machine's time zone) or date and time (ISO 8601, a
    zone optional) as epoch seconds. With ``end``, a date alone means the end of that
    day, so ``since=D&until=D`` is the whole day."""
    if value is None or value == "":
        return None
    try:
        if len(value) == 10:
            day = dt.date.fromisoformat(value)
            moment = dt.datetime.combine(day + dt.timedelta(days=1 if end else 0), dt.time())
        else:
            moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise BadRequest(f"{what} {value[:40]!r} is not valid: expected a date such as 2026-12-03 or a "
                         f"date and time such as 2026-12-03T14:30") from None
    return moment.timestamp()
