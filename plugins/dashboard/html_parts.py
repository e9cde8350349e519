"""The pieces every dashboard page is built from: the page shell, escaping, markdown,
times, state badges and colours, links, pagers, and the states and logs tables.

Every value from the run store goes through ``html.escape``; flow descriptions go
through markdown-it with raw HTML turned off, so markup in a description is shown as
text. Pages carry no inline script or style (the server's Content-Security-Policy
forbids both): bars and graphs are SVG whose geometry lives in attributes.
"""

from __future__ import annotations

import datetime as dt
import functools
import html
import string
import time
from importlib import resources
from typing import Any
from urllib.parse import quote, urlencode

from headwater.stores import LOG_LEVELS

from . import data as D


def esc(value: Any) -> str:
    """Text for HTML (attributes included): ``None`` becomes an empty string."""
    return "" if value is None else html.escape(str(value), quote=True)


@functools.lru_cache(maxsize=1)
def _markdown() -> Any:
    from markdown_it import MarkdownIt

    # "commonmark" with html off: raw HTML in the source is escaped, and markdown-it's link
    # validation drops javascript: and other unsafe URLs.
    return MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable("table")


def markdown(text: str | None) -> str:
    """A flow description rendered from markdown (raw HTML shown as text)."""
    if not text:
        return ""
    return _markdown().render(text)


@functools.lru_cache(maxsize=1)
def _template() -> string.Template:
    source = resources.files(__package__).joinpath("templates", "page.html").read_text(encoding="utf-8")
    return string.Template(source)


def layout(title: str, body: str, *, active: str = "", refresh: bool = False, store: str = "") -> str:
    """The page shell: navigation, title, and a self-refresh while something is live."""
    nav = "".join(
        f'<a href="{href}"{" class=active" if key == active else ""}>{label}</a>'
        for key, href, label in (("flows", "/", "Flows"), ("runs", "/runs", "Flow runs"),
                                 ("cache", "/cache", "Cache entries")))
    meta = ('<meta http-equiv="refresh" content="2">' if refresh else "")
    live = ('<span class="live" title="This page reloads every 2 seconds while runs are live">'
            'live</span>' if refresh else "")
    return _template().substitute(title=esc(title), refresh=meta, nav=nav, body=body, live=live,
                                  store=esc(store))


# -- small pieces ----------------------------------------------------------------------------


def when(ts: float | None) -> str:
    if ts is None:
        return "-"
    stamp = dt.datetime.fromtimestamp(ts)
    return (f'<time datetime="{esc(D.iso(ts))}">{stamp:%Y-%m-%d %H:%M:%S}</time>')


def duration(start: float | None, end: float | None) -> str:
    if start is None:
        return "-"
    seconds = (end if end is not None else time.time()) - start
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.2f}s"
    return f"{seconds / 60:.1f}m"


#: Every colour a state can have, in the order the legend lists them: (kind, label).
STATE_KINDS = (("pending", "pending"), ("scheduled", "scheduled"), ("waiting", "awaiting retry"),
               ("running", "running"), ("retrying", "retrying"), ("completed", "completed"),
               ("cached", "cache hit"), ("failed", "failed"), ("crashed", "crashed"),
               ("cancelled", "cancelled"), ("paused", "paused"), ("notready", "not ready"))
#: State names with a colour of their own, and their type; other states take their type's.
OWN_COLOURS = {"Cached": ("cached", "COMPLETED"), "Retrying": ("retrying", "RUNNING"),
               "AwaitingRetry": ("waiting", "SCHEDULED"), "NotReady": ("notready", "PENDING")}


def type_kind(state_type: str) -> str:
    """The colour of a state type: ``COMPLETED`` -> ``completed`` (``NONE``: no state)."""
    return "cancelled" if state_type == "CANCELLING" else state_type.lower()


def state_kind(state: dict[str, Any] | None) -> str:
    """The colour class of a state (``state-<kind>``): its name's, else its type's."""
    if state is None:
        return "none"
    own = OWN_COLOURS.get(state["name"])
    return own[0] if own else type_kind(state["type"])


def state_badge(state: dict[str, Any] | None) -> str:
    if state is None:
        return '<span class="state state-none">-</span>'
    title = f' title="{esc(state["message"])}"' if state.get("message") else ""
    return f'<span class="state state-{esc(state_kind(state))}"{title}>{esc(state["name"])}</span>'


def legend(kinds: tuple[tuple[str, str], ...] = STATE_KINDS) -> str:
    """The colour of every state, as the timeline, graph and progress bar use them."""
    keys = "".join(f'<span class="item"><span class="key state-{kind}"></span>{esc(label)}</span>'
                   for kind, label in kinds)
    return f'<p class="legend">{keys}</p>'


def number(n: int) -> str:
    """A count with thousands separators: ``20,000``."""
    return f"{n:,}"


def pager(facts: dict[str, Any], href: Any, noun: str) -> str:
    """Where a page of a listing sits, "showing 101–150 of 20,000 task runs", with links
    to the previous and next pages; ``href(offset)`` gives a page's URL."""
    total, offset, limit = facts["total"], facts["offset"], facts["limit"] or facts["total"]
    if total == 0:
        return ""
    shown = min(offset + limit, total)
    where = (f'showing {number(offset + 1)}–{number(shown)} of {number(total)} {esc(noun)}'
             if offset < total else f'nothing past {number(total)} {esc(noun)}')
    prev_link = (f'<a rel="prev" href="{esc(href(max(0, offset - limit)))}">&larr; previous</a>'
                 if offset > 0 else '<span class="muted">&larr; previous</span>')
    next_link = (f'<a rel="next" href="{esc(href(offset + limit))}">next &rarr;</a>'
                 if offset + limit < total else '<span class="muted">next &rarr;</span>')
    if total <= limit and offset == 0:
        return f'<nav class="pager"><span class="where">{where}</span></nav>'
    return f'<nav class="pager">{prev_link} <span class="where">{where}</span> {next_link}</nav>'


def run_link(run: dict[str, Any]) -> str:
    return f'<a href="/runs/{quote(run["id"])}">{esc(run["name"])}</a>'


def task_link(task: dict[str, Any]) -> str:
    return f'<a href="/task-runs/{quote(task["id"])}">{esc(task["name"])}</a>'


def flow_link(name: str) -> str:
    return f'<a href="/runs?{urlencode({"flow": name})}">{esc(name)}</a>'


def tags(values: list[str]) -> str:
    return " ".join(f'<span class="tag">{esc(t)}</span>' for t in values) or '<span class="muted">-</span>'


def retries_badge(task: dict[str, Any]) -> str:
    n = task.get("retries", 0)
    if not n:
        return ""
    return f'<span class="badge retried">{n} {"retry" if n == 1 else "retries"}</span>'


def cache_badge(task: dict[str, Any]) -> str:
    return '<span class="badge cache-hit">cache hit</span>' if task.get("cache_hit") else ""


def reused_badge(task: dict[str, Any], attempt: int | None) -> str:
    """A link to the earlier task run whose result ``task`` reused (``attempt`` is that run's)."""
    earlier = task.get("reused_from")
    if not earlier:
        return ""
    label = f"reused from attempt {attempt}" if attempt else "reused"
    return (f'<a class="badge reused" href="/task-runs/{quote(earlier)}" '
            f'title="{esc((task.get("state") or {}).get("message"))}">{esc(label)}</a>')


def code_or(value: str | None, default: str) -> str:
    return f"<code>{esc(value)}</code>" if value else default


def params_table(parameters: dict[str, Any]) -> str:
    if not parameters:
        return '<p class="muted">No parameters.</p>'
    import json

    rows = "".join(f"<tr><th>{esc(k)}</th><td><code>{esc(json.dumps(v, default=repr))}</code></td></tr>"
                   for k, v in parameters.items())
    return f'<table class="kv">{rows}</table>'


def states_table(states: list[dict[str, Any]]) -> str:
    if not states:
        return '<p class="muted">No states recorded.</p>'
    origin = states[0]["ts"]
    rows = "".join(
        f'<tr><td class="num">+{s["ts"] - origin:.3f}s</td><td>{state_badge(s)}</td>'
        f'<td>{esc(s["type"])}</td><td class="message">{esc(s.get("message"))}</td></tr>' for s in states)
    return (f'<table class="states"><thead><tr><th>at</th><th>state</th><th>type</th><th>message</th>'
            f'</tr></thead><tbody>{rows}</tbody></table>')


def logs_table(lines: list[dict[str, Any]], with_run: bool = True) -> str:
    """Log lines with time and level; ``with_run`` adds the task run each came from."""
    if not lines:
        return '<p class="muted">No log lines recorded.</p>'
    rows = []
    for line in lines:
        where = ""
        if with_run:
            task_id = line.get("task_run_id")
            where = (f'<td><a href="/task-runs/{quote(task_id)}">{esc(line.get("task_run_name") or task_id)}</a></td>'
                     if task_id else '<td class="muted">flow</td>')
        stamp = dt.datetime.fromtimestamp(line["ts"]).strftime("%H:%M:%S.%f")[:-3] if line.get("ts") else "-"
        rows.append(f'<tr class="log-{esc(str(line.get("level", "")).lower())}"><td class="num">{stamp}</td>'
                    f'<td>{esc(line.get("level"))}</td>{where}<td><pre>{esc(line.get("message"))}</pre></td></tr>')
    head = "<th>time</th><th>level</th>" + ("<th>run</th>" if with_run else "") + "<th>message</th>"
    return f'<table class="logs"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def level_links(chosen: str | None, href: Any) -> str:
    """Links that filter log lines by level (that level and above); ``href(level)``."""
    links = [(None, "all")] + [(level, level.lower() + "+") for level in LOG_LEVELS[1:]]
    out = []
    for level, label in links:
        cls = ' class="chosen"' if level == chosen else ""
        out.append(f'<a{cls} href="{esc(href(level))}">{esc(label)}</a>')
    return f'<p class="filters">level: {" ".join(out)}</p>'
