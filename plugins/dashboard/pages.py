"""The dashboard's listing pages: flows, flow runs (searched and filtered), cache
entries, and the error page. A flow run's and a task run's own pages are in
``run_pages``; the pieces all pages share in ``html_parts``.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

from . import data as D
from .html_parts import (duration, esc, flow_link, layout, markdown, number, run_link, state_badge, tags, task_link,
                         when)

# -- pages -----------------------------------------------------------------------------------


def flows_page(model: dict[str, Any], store: str) -> str:
    flows = model["flows"]
    if not flows:
        body = ('<h1>Flows</h1><div class="empty"><p>No flow runs recorded yet.</p>'
                '<p>Run a flow (for example <code>make demo</code>) and this page fills in.</p></div>')
        return layout("Flows", body, active="flows", store=store)
    cards = []
    for flow in flows:
        counts = " ".join(
            f'<span class="count state-{esc(k.lower())}" title="{esc(k)}">{esc(k.lower())} {v}</span>'
            for k, v in sorted(flow["state_counts"].items()))
        last = flow["last_run"]
        last_html = (f'{state_badge(last["state"])} {run_link(last)} <span class="muted">'
                     f'{when(last["start_ts"])}</span>' if last else '<span class="muted">none</span>')
        version = flow["version"]
        version_html = (f'<code title="{esc(version)}">{esc(version[:12])}</code>' if version
                        else '<span class="muted">-</span>')
        description = markdown(flow["description"]) or '<p class="muted">No description.</p>'
        cards.append(
            f'<section class="flow card"><header><h2>{flow_link(flow["name"])}</h2>'
            f'<span class="runs-total">{flow["run_count"]} run{"" if flow["run_count"] == 1 else "s"}</span>'
            f'</header><div class="description markdown">{description}</div>'
            f'<dl class="facts"><dt>version</dt><dd>{version_html}</dd><dt>tags</dt><dd>{tags(flow["tags"])}</dd>'
            f'<dt>last run</dt><dd>{last_html}</dd><dt>runs</dt><dd>{counts or "-"}</dd></dl></section>')
    return layout("Flows", "<h1>Flows</h1>" + "".join(cards), active="flows", store=store)


def _runs_href(filters: dict[str, Any], **changes: Any) -> str:
    """The runs list's URL with ``filters`` (list values repeat their parameter) and ``changes``."""
    query = []
    for key, value in {**filters, **changes}.items():
        for item in (value if isinstance(value, list) else [value]):
            if item not in (None, "", False):
                query.append((key, "1" if item is True else item))
    return "/runs" + (f"?{urlencode(query)}" if query else "")


def _filter_form(filters: dict[str, Any], flow_names: list[str]) -> str:
    chosen = filters.get("flow") or []
    options = "".join(f'<option value="{esc(n)}"{" selected" if n in chosen else ""}>{esc(n)}</option>'
                      for n in flow_names)
    state = (filters.get("state") or "").lower()
    states = "".join(f'<option value="{value}"{" selected" if value.lower() == state else ""}>{label}</option>'
                     for value, label in _STATE_CHOICES)
    top = " checked" if filters.get("top") else ""
    parent = (f'<input type="hidden" name="parent" value="{esc(filters["parent"])}">'
              if filters.get("parent") else "")
    return (f'<form class="filters" method="get" action="/runs">'
            f'<label>search <input type="search" name="q" value="{esc(filters.get("q"))}" '
            f'placeholder="run or flow name"></label> '
            f'<label>flow <select name="flow"><option value="">all</option>{options}</select></label> '
            f'<label>state <select name="state"><option value="">all</option>{states}</select></label> '
            f'<label>tag <input type="text" name="tag" value="{esc(", ".join(filters.get("tag") or []))}" '
            f'placeholder="a, b" size="12"></label> '
            f'<label>started from <input type="date" name="since" value="{esc(filters.get("since"))}"></label> '
            f'<label>to <input type="date" name="until" value="{esc(filters.get("until"))}"></label> '
            f'<label><input type="checkbox" name="top" value="1"{top}> without subflow runs</label> '
            f'{parent}<button type="submit">Filter</button>'
            f' <a href="/runs">clear</a></form>')


_STATE_CHOICES = [("COMPLETED", "completed"), ("Cached", "cached"), ("FAILED", "failed"), ("CRASHED", "crashed"),
                  ("CANCELLED", "cancelled"), ("RUNNING", "running"), ("PENDING", "pending"),
                  ("SCHEDULED", "scheduled"), ("PAUSED", "paused")]


#: How the engine words a run that raised; a failure caused upstream nests the upstream
#: run's message, so the last one is the root cause.
_RAISED = re.compile(r"encountered an exception(?: during execution)?: ")


def reason(message: str | None) -> str:
    """The gist of a state's message for a listing: its first line, and for a run that
    raised, the innermost exception (``ValueError: ...``) rather than the wrapping text."""
    first = (message or "").strip().splitlines()[0] if (message or "").strip() else ""
    causes = list(_RAISED.finditer(first))
    if causes:
        nested = len(causes) > 1
        first = first[causes[-1].end():]
        if nested:  # cut where the quoted upstream message closes
            first = re.split(r"['\"]\)", first, maxsplit=1)[0]
    return first if len(first) <= 160 else first[:159] + "…"


def _message(state: dict[str, Any] | None) -> str:
    text = (state or {}).get("message") or ""
    return f'<td class="message" title="{esc(text[:2000])}">{esc(reason(text))}</td>'


def _run_row(r: dict[str, Any]) -> str:
    parent = r.get("parent")
    sub = ""
    if r["parent_flow_run_id"]:
        of = (f' of <a href="/runs/{esc(parent["id"])}">{esc(parent["name"])}</a>' if parent else "")
        sub = f' <span class="badge">subflow</span><span class="muted">{of}</span>'
    return (f'<tr><td>{run_link(r)}{sub}</td><td>{flow_link(r["flow_name"])}</td><td>{state_badge(r["state"])}</td>'
            f'{_message(r["state"])}<td>{when(r["start_ts"])}</td>'
            f'<td class="num">{duration(r["start_ts"], r["end_ts"])}</td><td class="num">{r["run_count"]}</td>'
            f'<td>{tags(r["tags"])}</td><td><code title="{esc(r["id"])}">{esc(r["short_id"])}</code></td></tr>')


def runs_page(model: dict[str, Any], flow_names: list[str], store: str) -> str:
    filters = model["filters"]
    runs = model["flow_runs"]
    if runs:
        rows = "".join(_run_row(r) for r in runs)
        table = (f'<table class="runs"><thead><tr><th>name</th><th>flow</th><th>state</th><th>message</th>'
                 f'<th>start</th><th>duration</th><th>attempts</th><th>tags</th><th>id</th></tr></thead>'
                 f'<tbody>{rows}</tbody></table>')
    else:
        table = '<div class="empty"><p>No flow runs match.</p></div>'
    pager = ""
    if model["pages"] > 1:
        base = dict(filters)
        if model["per_page"] != D.PER_PAGE_DEFAULT:
            base["per_page"] = model["per_page"]
        prev_link = (f'<a rel="prev" href="{esc(_runs_href(base, page=model["page"] - 1))}">&larr; newer</a>'
                     if model["page"] > 1 else "")
        next_link = (f'<a rel="next" href="{esc(_runs_href(base, page=model["page"] + 1))}">older &rarr;</a>'
                     if model["page"] < model["pages"] else "")
        pager = (f'<nav class="pager">{prev_link} <span>page {model["page"]} of {model["pages"]} '
                 f'({number(model["total"])} runs)</span> {next_link}</nav>')
    elif runs:
        plural = "" if model["total"] == 1 else "s"
        pager = f'<nav class="pager"><span>{number(model["total"])} run{plural}</span></nav>'
    live = any(r["live"] for r in runs)
    flows = filters.get("flow") or []
    title = f"Flow runs of {' or '.join(flows)}" if flows else "Flow runs"
    if filters.get("q"):
        title += f" matching “{filters['q']}”"
    if model.get("parent"):
        title = f"Subflow runs of {model['parent']['name']}"
    return layout(title, f"<h1>{esc(title)}</h1>{_filter_form(filters, flow_names)}{table}{pager}",
                  active="runs", refresh=live, store=store)


def _utc(iso_text: str | None, default: str = "-") -> str:
    return esc(iso_text[:19].replace("T", " ")) if iso_text else default


def _clipped(text: str | None, length: int = 24) -> str:
    """Long text as ``<code>`` of its first characters, the whole in the tooltip."""
    text = text or ""
    return f'<code title="{esc(text)}">{esc(text[:length])}{"…" if len(text) > length else ""}</code>'


def _cache_row(e: dict[str, Any]) -> str:
    key = _clipped(e["key"])
    writer = "-"
    if e["task_run_id"]:
        shown = e["task_run_name"] or e["task_run_short_id"]
        writer = (f'{task_link({"id": e["task_run_id"], "name": shown})} '
                  f'<code class="muted" title="{esc(e["task_run_id"])}">{esc(e["task_run_short_id"])}</code>')
    expires = ('<span class="expired">expired</span> ' if e["expired"] else "") + _utc(e["expires"], "never")
    size = "-" if e["size"] is None else e["size"]
    return (f'<tr><td>{key}</td><td>{esc(e["task_name"])}</td><td>{writer}</td><td>{_utc(e["created"])}</td>'
            f'<td>{expires}</td><td class="num">{size}</td><td>{_clipped(e["location"])}</td></tr>')


def cache_page(model: dict[str, Any], store: str) -> str:
    entries = model["cache_entries"]
    if not entries:
        return layout("Cache entries", '<h1>Cache entries</h1><div class="empty"><p>The cache is empty.</p></div>',
                      active="cache", store=store)
    rows = "".join(_cache_row(e) for e in entries)
    table = (f'<table class="cache"><thead><tr><th>key</th><th>task</th><th>task run</th><th>created (UTC)</th>'
             f'<th>expires (UTC)</th><th>bytes</th><th>location</th></tr></thead><tbody>{rows}</tbody></table>')
    return layout("Cache entries", f"<h1>Cache entries</h1>{table}", active="cache", store=store)


def error_page(status: int, message: str, store: str) -> str:
    titles = {400: "Bad request", 404: "Not found", 405: "Not allowed", 500: "Error"}
    title = titles.get(status, "Error")
    return layout(title, f'<h1>{esc(title)}</h1><p class="error">{esc(message)}</p>'
                         f'<p><a href="/">Back to the flows</a></p>', store=store)
