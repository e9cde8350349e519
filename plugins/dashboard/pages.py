"""HTML pages of the dashboard, rendered on the server from the read model (``data``).

Every value from the run store goes through ``html.escape``; flow descriptions go
through markdown-it with raw HTML turned off, so markup in a description is shown as
text. Pages carry no inline script or style (the server's Content-Security-Policy
forbids both): timelines are SVG whose geometry lives in attributes.
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

from headwater.states import StateType

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


def state_badge(state: dict[str, Any] | None) -> str:
    if state is None:
        return '<span class="state state-none">-</span>'
    kind = state["type"].lower()
    if state["name"] == "Cached":
        kind = "cached"
    title = f' title="{esc(state["message"])}"' if state.get("message") else ""
    return f'<span class="state state-{esc(kind)}"{title}>{esc(state["name"])}</span>'


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


def logs_table(lines: list[dict[str, Any]], task_names: dict[str, str] | None = None) -> str:
    if not lines:
        return '<p class="muted">No log lines recorded.</p>'
    rows = []
    for line in lines:
        where = ""
        if task_names is not None:
            task_id = line.get("task_run_id")
            where = (f'<td><a href="/task-runs/{quote(task_id)}">{esc(task_names.get(task_id, task_id))}</a></td>'
                     if task_id else '<td class="muted">flow</td>')
        stamp = dt.datetime.fromtimestamp(line["ts"]).strftime("%H:%M:%S.%f")[:-3] if line.get("ts") else "-"
        rows.append(f'<tr class="log-{esc(str(line.get("level", "")).lower())}"><td class="num">{stamp}</td>'
                    f'<td>{esc(line.get("level"))}</td>{where}<td><pre>{esc(line.get("message"))}</pre></td></tr>')
    head = "<th>time</th><th>level</th>" + ("<th>run</th>" if task_names is not None else "") + "<th>message</th>"
    return f'<table class="logs"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


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


def runs_page(model: dict[str, Any], flow_names: list[str], store: str) -> str:
    filters = model["filters"]
    options = "".join(f'<option value="{esc(n)}"{" selected" if n == filters["flow"] else ""}>{esc(n)}</option>'
                      for n in flow_names)
    states = "".join(f'<option value="{t.value}"{" selected" if (filters["state"] or "").upper() == t.value else ""}>'
                     f'{t.value.lower()}</option>' for t in StateType)
    form = (f'<form class="filters" method="get" action="/runs"><label>flow <select name="flow">'
            f'<option value="">all</option>{options}</select></label> <label>state <select name="state">'
            f'<option value="">all</option>{states}</select></label> <button type="submit">Filter</button></form>')
    runs = model["flow_runs"]
    if runs:
        rows = "".join(
            f'<tr><td>{run_link(r)}{" <span class=badge>subflow</span>" if r["parent_flow_run_id"] else ""}</td>'
            f'<td>{flow_link(r["flow_name"])}</td><td>{state_badge(r["state"])}</td>'
            f'<td>{when(r["start_ts"])}</td><td class="num">{duration(r["start_ts"], r["end_ts"])}</td>'
            f'<td class="num">{r["run_count"]}</td><td><code>{esc(r["id"][:8])}</code></td></tr>' for r in runs)
        table = (f'<table class="runs"><thead><tr><th>name</th><th>flow</th><th>state</th><th>start</th>'
                 f'<th>duration</th><th>attempts</th><th>id</th></tr></thead><tbody>{rows}</tbody></table>')
    else:
        table = '<div class="empty"><p>No flow runs match.</p></div>'
    pager = ""
    if model["pages"] > 1:
        base = {k: v for k, v in filters.items() if v}
        if model["per_page"] != D.PER_PAGE_DEFAULT:
            base["per_page"] = model["per_page"]
        prev_link = (f'<a rel="prev" href="/runs?{urlencode(dict(base, page=model["page"] - 1))}">&larr; newer</a>'
                     if model["page"] > 1 else "")
        next_link = (f'<a rel="next" href="/runs?{urlencode(dict(base, page=model["page"] + 1))}">older &rarr;</a>'
                     if model["page"] < model["pages"] else "")
        pager = (f'<nav class="pager">{prev_link} <span>page {model["page"]} of {model["pages"]} '
                 f'({model["total"]} runs)</span> {next_link}</nav>')
    live = any(r["live"] for r in runs)
    title = f"Flow runs of {filters['flow']}" if filters["flow"] else "Flow runs"
    return layout(title, f"<h1>{esc(title)}</h1>{form}{table}{pager}", active="runs", refresh=live, store=store)


def _timeline(run: dict[str, Any]) -> str:
    tasks = run["task_runs"][:D.TIMELINE_LIMIT]
    subflows = run["subflow_runs"]
    if not tasks and not subflows:
        return '<p class="muted">No task runs.</p>'
    starts = [s["ts"] for s in run["states"]] + [t["start_ts"] for t in tasks if t["start_ts"]]
    starts += [t["states"][0]["ts"] for t in tasks if t.get("states")]
    starts += [f["start_ts"] for f in subflows if f["start_ts"]]
    origin = min(starts) if starts else run["now"]
    ends = [run["now"]] if run["live"] else []
    ends += [s["ts"] for s in run["states"]] + [t["end_ts"] or 0 for t in tasks]
    ends += [s["ts"] for t in tasks for s in t.get("states", [])] + [f["end_ts"] or 0 for f in subflows]
    span = max(max(ends) - origin, 1e-3)

    def pct(ts: float) -> float:
        return max(0.0, min(100.0, (ts - origin) / span * 100))

    def rect(start: float, stop: float, cls: str, title: str, minimum: float = 0.4) -> str:
        x = pct(start)
        width = max(pct(stop) - x, minimum)
        x = min(x, 100 - width)
        return (f'<rect x="{x:.3f}%" width="{width:.3f}%" y="2" height="14" rx="2" class="{cls}">'
                f'<title>{esc(title)}</title></rect>')

    attempts = run.get("attempts") or []
    grouped = len(attempts) > 1
    attempt_of = {t["id"]: t.get("attempt") for t in run["task_runs"]}
    if grouped:
        # Sorted by attempt (stable, so creation order within one) to head each group once.
        tasks = sorted(tasks, key=lambda t: t.get("attempt") or 0)
    by_number = {a["number"]: a for a in attempts}
    rows = []
    group: int | None = -1
    for task in tasks:
        if grouped and task.get("attempt") != group:
            group = task.get("attempt")
            rows.append(_attempt_heading(by_number.get(group)))
        states = task.get("states") or []
        rects = []
        for i, s in enumerate(states):
            final = s["type"] in ("COMPLETED", "FAILED", "CANCELLED", "CRASHED")
            stop = states[i + 1]["ts"] if i + 1 < len(states) else (run["now"] if task["live"] else s["ts"])
            label = f'{s["name"]} at +{s["ts"] - origin:.3f}s' + (f': {s["message"]}' if s.get("message") else "")
            if s["type"] == "RUNNING":
                rects.append(rect(s["ts"], stop, f"seg seg-running{' seg-retry' if s['name'] == 'Retrying' else ''}",
                                  label))
            elif s["name"] == "AwaitingRetry":
                rects.append(rect(s["ts"], stop, "seg seg-waiting", label))
            elif final:
                kind = "cached" if s["name"] == "Cached" else s["type"].lower()
                rects.append(rect(s["ts"], s["ts"], f"seg seg-final state-{kind}", label, minimum=0.8))
        rows.append(
            f'<tr><td class="tl-name">{task_link(task)}</td><td>{state_badge(task["state"])} {retries_badge(task)}'
            f'{cache_badge(task)}{reused_badge(task, attempt_of.get(task.get("reused_from") or ""))}</td>'
            f'<td class="num">{duration(task["start_ts"], task["end_ts"])}</td>'
            f'<td class="tl-cell"><svg class="tl" width="100%" height="18" role="img" '
            f'aria-label="{esc(task["name"])} timeline">{"".join(rects)}</svg></td></tr>')
    if grouped and subflows:
        rows.append('<tr class="attempt-group"><th colspan="4">Subflow runs</th></tr>')
    for sub in subflows:
        kind = (sub["state"] or {}).get("type", "PENDING").lower()
        start = sub["start_ts"] or origin
        stop = sub["end_ts"] or (run["now"] if sub["live"] else start)
        bar = rect(start, stop, f"seg seg-subflow state-{esc(kind)}", f'subflow {sub["name"]} ({sub["flow_name"]})')
        rows.append(
            f'<tr class="subflow"><td class="tl-name"><span class="badge">subflow</span> {run_link(sub)} '
            f'<span class="muted">{esc(sub["flow_name"])}</span></td><td>{state_badge(sub["state"])}</td>'
            f'<td class="num">{duration(sub["start_ts"], sub["end_ts"])}</td>'
            f'<td class="tl-cell"><svg class="tl" width="100%" height="18" role="img">{bar}</svg></td></tr>')
    more = (f'<p class="muted">Showing the first {D.TIMELINE_LIMIT} of {len(run["task_runs"])} task runs; '
            f'the API lists them all.</p>' if len(run["task_runs"]) > D.TIMELINE_LIMIT else "")
    legend = ('<p class="legend"><span class="key seg-running"></span> running '
              '<span class="key seg-waiting"></span> awaiting retry '
              '<span class="key state-completed"></span> completed '
              '<span class="key state-cached"></span> cache hit '
              '<span class="key state-failed"></span> failed</p>')
    return (f'{legend}<table class="timeline"><thead><tr><th>run</th><th>state</th><th>duration</th>'
            f'<th class="tl-axis"><span class="axis"><span>0s</span><span>{span:.2f}s</span></span></th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>{more}')


def _attempt_heading(attempt: dict[str, Any] | None) -> str:
    if attempt is None:  # task runs of a flow run whose history has no Running state
        return '<tr class="attempt-group"><th colspan="4">Outside any attempt</th></tr>'
    reused = f', {attempt["reused"]} reused' if attempt["reused"] else ""
    return (f'<tr class="attempt-group" id="attempt-{attempt["number"]}-tasks"><th colspan="4">'
            f'Attempt {attempt["number"]} <span class="muted">{attempt["task_runs"]} task '
            f'{"run" if attempt["task_runs"] == 1 else "runs"}{reused}</span> '
            f'{state_badge(attempt["state"])}</th></tr>')


def attempts_table(run: dict[str, Any]) -> str:
    """The attempts of a flow run retried at least once; nothing for a run with one."""
    attempts = run.get("attempts") or []
    if len(attempts) < 2:
        return ""
    rows = []
    for a in attempts:
        count = (f'<a href="#attempt-{a["number"]}-tasks">{a["task_runs"]}</a>' if a["task_runs"]
                 else "0")
        rows.append(
            f'<tr id="attempt-{a["number"]}"><td class="num">{a["number"]}</td><td>{when(a["started_ts"])}</td>'
            f'<td class="num">{duration(a["started_ts"], a["ended_ts"])}</td>'
            f'<td>{state_badge(a["state"])} <span class="message">{esc((a["state"] or {}).get("message"))}</span>'
            f'</td><td class="num">{count}</td><td class="num">{a["reused"]}</td></tr>')
    return (f'<h2>Attempts <span class="muted">({len(attempts)})</span></h2>'
            f'<table class="attempts"><thead><tr><th>attempt</th><th>started</th><th>duration</th><th>ended in</th>'
            f'<th>task runs</th><th>reused</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')


def run_page(run: dict[str, Any], store: str) -> str:
    parent = ""
    if run["parent_flow_run_id"]:
        parent = (f'<dt>parent</dt><dd><a href="/runs/{quote(run["parent_flow_run_id"])}">'
                  f'{esc(run["parent_flow_run_id"][:8])}</a></dd>')
    summary = (
        f'<dl class="facts"><dt>flow</dt><dd>{flow_link(run["flow_name"])}</dd>'
        f'<dt>state</dt><dd>{state_badge(run["state"])} <span class="message">'
        f'{esc((run["state"] or {}).get("message"))}</span></dd>'
        f'<dt>started</dt><dd>{when(run["start_ts"])}</dd>'
        f'<dt>duration</dt><dd>{duration(run["start_ts"], run["end_ts"])}</dd>'
        f'<dt>attempts</dt><dd>{run["run_count"]}</dd>'
        f'<dt>tags</dt><dd>{tags(run["tags"])}</dd>'
        f'<dt>id</dt><dd><code>{esc(run["id"])}</code></dd>{parent}</dl>')
    task_names = {t["id"]: t["name"] for t in run["task_runs"]}
    body = (f'<h1><span class="kind">Flow run</span> {esc(run["name"])}</h1>{summary}'
            f'<h2>Parameters</h2>{params_table(run["parameters"])}{attempts_table(run)}'
            f'<h2>Task runs <span class="muted">({len(run["task_runs"])})</span></h2>{_timeline(run)}'
            f'<h2>State history</h2>{states_table(run["states"])}'
            f'<h2>Logs</h2>{logs_table(run["logs"], task_names)}')
    live = run["live"] or bool(run["task_runs_live"])
    return layout(f"Flow run {run['name']}", body, active="runs", refresh=live, store=store)


def task_page(task: dict[str, Any], store: str) -> str:
    flow_run = task["flow_run"]
    parent = (f'<dt>flow run</dt><dd>{run_link(flow_run)} <span class="muted">{esc(flow_run["flow_name"])}'
              f'</span></dd>' if flow_run else "")
    earlier = task.get("reused_from_run")
    retry_facts = ""
    if earlier is not None:
        attempt = f' <span class="muted">(attempt {earlier["attempt"]})</span>' if earlier["attempt"] else ""
        retry_facts = f'<dt>reused from</dt><dd>{task_link(earlier)}{attempt}</dd>'
    elif task.get("reused_from"):
        retry_facts = f'<dt>reused from</dt><dd><code>{esc(task["reused_from"])}</code> (no longer recorded)</dd>'
    if task.get("attempt") and (task["flow_run"] or {}).get("run_count", 1) > 1:
        retry_facts += f'<dt>flow run attempt</dt><dd>{task["attempt"]}</dd>'
    summary = (
        f'<dl class="facts">{parent}<dt>task</dt><dd>{esc(task["task_name"])}</dd>'
        f'<dt>state</dt><dd>{state_badge(task["state"])} {retries_badge(task)}{cache_badge(task)}</dd>'
        f'{retry_facts}'
        f'<dt>started</dt><dd>{when(task["start_ts"])}</dd>'
        f'<dt>duration</dt><dd>{duration(task["start_ts"], task["end_ts"])}</dd>'
        f'<dt>attempts</dt><dd>{task["run_count"]}</dd>'
        f'<dt>tags</dt><dd>{tags(task["tags"])}</dd>'
        f'<dt>cache key</dt><dd>{code_or(task["cache_key"], "-")}</dd>'
        f'<dt>result</dt><dd>{code_or(task["result_location"], "not persisted")}</dd>'
        f'<dt>id</dt><dd><code>{esc(task["id"])}</code></dd></dl>')
    body = (f'<h1><span class="kind">Task run</span> {esc(task["name"])}</h1>{summary}'
            f'<h2>Parameters</h2>{params_table(task["parameters"])}'
            f'<h2>State history</h2>{states_table(task["states"])}'
            f'<h2>Logs</h2>{logs_table(task["logs"])}')
    return layout(f"Task run {task['name']}", body, active="runs", refresh=task["live"], store=store)


def _utc(iso_text: str | None, default: str = "-") -> str:
    return esc(iso_text[:19].replace("T", " ")) if iso_text else default


def _cache_row(e: dict[str, Any]) -> str:
    key = f'<code title="{esc(e["key"])}">{esc(e["key"][:24])}{"…" if len(e["key"]) > 24 else ""}</code>'
    writer = task_link({"id": e["task_run_id"], "name": e["task_run_id"][:8]}) if e["task_run_id"] else "-"
    expires = ('<span class="expired">expired</span> ' if e["expired"] else "") + _utc(e["expires"], "never")
    size = "-" if e["size"] is None else e["size"]
    return (f'<tr><td>{key}</td><td>{esc(e["task_name"])}</td><td>{writer}</td><td>{_utc(e["created"])}</td>'
            f'<td>{expires}</td><td class="num">{size}</td><td><code>{esc(e["location"])}</code></td></tr>')


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
