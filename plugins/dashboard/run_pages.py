"""A flow run's page and a task run's page.

A flow run's page reads a bounded amount whatever the size of the run: its task runs
counted by state (the progress bar and the state filter), one page of task runs drawn
as a timeline, its first subflow runs, one page of log lines, and its dependency graph
up to ``data.GRAPH_LIMIT`` task runs. Paging and filters are links (``?state=failed``,
``?offset=100``, ``?level=error``, ``?log_offset=200``), so the pages need no script.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from . import data as D
from .graph import graph_svg
from .html_parts import (OWN_COLOURS, STATE_KINDS, cache_badge, code_or, duration, esc, flow_link, layout, legend,
                         level_links, logs_table, number, pager, params_table, retries_badge, reused_badge, run_link,
                         state_badge, state_kind, states_table, tags, task_link, type_kind, when)

#: Each colour's label, by kind.
_LABELS = dict(STATE_KINDS)


def _href(path: str, query: dict[str, Any], anchor: str = "") -> str:
    """``path`` with the non-empty values of ``query`` (a default offset left out)."""
    kept = {k: v for k, v in query.items() if v not in (None, "", 0)}
    return path + (f"?{urlencode(kept)}" if kept else "") + (f"#{anchor}" if anchor else "")


def _queries(run: dict[str, Any]) -> dict[str, Any]:
    """The flow run page's current query, the pages' defaults left out."""
    tasks, lines = run["task_runs_page"], run["logs_page"]
    return {"state": tasks["state"], "offset": tasks["offset"],
            "limit": tasks["limit"] if tasks["limit"] != D.TASK_PAGE else None,
            "level": lines["level"], "log_offset": lines["offset"],
            "log_limit": lines["limit"] if lines["limit"] != D.LOG_PAGE else None}


def _kind_counts(counts: dict[str, Any]) -> list[tuple[str, str, int]]:
    """Task runs counted by colour, in the legend's order: (kind, label, count)."""
    by_kind: dict[str, int] = {}
    for state_type, n in counts["by_type"].items():
        by_kind[type_kind(state_type)] = by_kind.get(type_kind(state_type), 0) + n
    # A name with a colour of its own is taken out of its type's count.
    for name, (kind, state_type) in OWN_COLOURS.items():
        n = counts["by_name"].get(name, 0)
        if n:
            by_kind[type_kind(state_type)] -= n
            by_kind[kind] = by_kind.get(kind, 0) + n
    out = [(kind, label, by_kind[kind]) for kind, label in STATE_KINDS if by_kind.get(kind)]
    if by_kind.get("none"):
        out.append(("none", "no state yet", by_kind["none"]))
    return out


def _filters(counts: dict[str, Any]) -> list[tuple[str, str, str, int, list[tuple[str, str, str, int]]]]:
    """The state filters worth offering: each state type present, (filter, kind, label,
    count), with the names of that type that have a colour of their own, in the same
    form (``completed 5 (cache hit 2)``: a filter by type finds its cache hits too)."""
    out = []
    for kind, label in STATE_KINDS:
        if any(own_kind == kind for own_kind, _ in OWN_COLOURS.values()):
            continue  # listed under its type
        n = sum(c for t, c in counts["by_type"].items() if type_kind(t) == kind)
        if not n:
            continue
        named = [(name, own_kind, _LABELS[own_kind], counts["by_name"][name])
                 for name, (own_kind, state_type) in OWN_COLOURS.items()
                 if type_kind(state_type) == kind and counts["by_name"].get(name)]
        out.append((kind.upper(), kind, label, n, named))
    return out


def progress(run: dict[str, Any]) -> str:
    """Done / total task runs, a bar coloured by state, and each state's count as a link
    that lists those task runs; the page reloads while the run is live."""
    counts = run["task_run_counts"]
    total = counts["total"]
    if total == 0:
        return ""
    kinds = _kind_counts(counts)
    # Every state present gets a sliver at least: 4 failed of 20,000 must show.
    widths = [max(n / total * 100, 0.6) for _, _, n in kinds]
    scale = 100 / sum(widths)
    x = 0.0
    rects = []
    for (kind, label, n), share in zip(kinds, widths):
        width = share * scale
        rects.append(f'<rect class="state-{kind}" x="{x:.3f}%" width="{width:.3f}%" y="0" height="12">'
                     f'<title>{esc(label)}: {number(n)}</title></rect>')
        x += width
    path = f"/runs/{quote(run['id'])}"
    query = _queries(run)
    chosen = (run["task_runs_page"]["state"] or "").lower()

    def link(value: str, kind: str, label: str, n: int) -> str:
        cls = ' class="chosen"' if value.lower() == chosen else ""
        href = _href(path, {**query, "state": value, "offset": 0}, "task-runs")
        return f'<a{cls} href="{esc(href)}"><span class="key state-{kind}"></span>{esc(label)} {number(n)}</a>'

    links = []
    for value, kind, label, n, named in _filters(counts):
        inner = ", ".join(link(*x) for x in named)
        links.append(f'<span class="group">{link(value, kind, label, n)}{f" ({inner})" if inner else ""}</span>')
    everything = _href(path, {**query, "state": None, "offset": 0}, "task-runs")
    links.insert(0, f'<span class="group"><a{"" if chosen else " class=chosen"} href="{esc(everything)}">'
                    f'all {number(total)}</a></span>')
    still = total - counts["done"]
    headline = (f'{number(counts["done"])} of {number(total)} task runs done'
                + (f', {number(still)} not yet' if still else ""))
    if run["live"]:
        headline += " (so far: more may be created)"
    return (f'<div class="progress"><p class="done">{headline}</p>'
            f'<svg class="bar" width="100%" height="12" role="img" aria-label="{esc(headline)}">{"".join(rects)}</svg>'
            f'<p class="filters counts">{" ".join(links)}</p></div>')


def _bounds(run: dict[str, Any]) -> tuple[float, float]:
    """The time the timeline spans: from the run's first state to its last (or now)."""
    tasks, subflows = run["task_runs"], run["subflow_runs"]
    starts = [s["ts"] for s in run["states"]] + [t["start_ts"] for t in tasks if t["start_ts"]]
    starts += [t["states"][0]["ts"] for t in tasks if t.get("states")]
    starts += [f["start_ts"] for f in subflows if f["start_ts"]]
    origin = min(starts) if starts else run["now"]
    ends = [run["now"]] if run["live"] else []
    ends += [s["ts"] for s in run["states"]] + [t["end_ts"] or 0 for t in tasks]
    ends += [s["ts"] for t in tasks for s in t.get("states", [])] + [f["end_ts"] or 0 for f in subflows]
    return origin, max(max(ends, default=origin) - origin, 1e-3)


class _Bars:
    """Bars on the run's time axis, as SVG rectangles placed in percent."""

    def __init__(self, origin: float, span: float) -> None:
        self.origin, self.span = origin, span

    def pct(self, ts: float) -> float:
        return max(0.0, min(100.0, (ts - self.origin) / self.span * 100))

    def rect(self, start: float, stop: float, cls: str, title: str, minimum: float = 0.4) -> str:
        x = self.pct(start)
        width = max(self.pct(stop) - x, minimum)
        x = min(x, 100 - width)
        return (f'<rect x="{x:.3f}%" width="{width:.3f}%" y="2" height="14" rx="2" class="{cls}">'
                f'<title>{esc(title)}</title></rect>')


def _task_row(task: dict[str, Any], bars: _Bars, now: float) -> str:
    states = task.get("states") or []
    rects = []
    for i, s in enumerate(states):
        final = s["type"] in ("COMPLETED", "FAILED", "CANCELLED", "CRASHED")
        stop = states[i + 1]["ts"] if i + 1 < len(states) else (now if task["live"] else s["ts"])
        label = f'{s["name"]} at +{s["ts"] - bars.origin:.3f}s' + (f': {s["message"]}' if s.get("message") else "")
        if s["type"] == "RUNNING":
            rects.append(bars.rect(s["ts"], stop, f"seg seg-running{' seg-retry' if s['name'] == 'Retrying' else ''}",
                                   label))
        elif s["name"] == "AwaitingRetry":
            rects.append(bars.rect(s["ts"], stop, "seg seg-waiting", label))
        elif final or s["name"] == "NotReady":
            rects.append(bars.rect(s["ts"], s["ts"], f"seg seg-final state-{state_kind(s)}", label, minimum=0.8))
    return (f'<tr><td class="tl-name">{task_link(task)} <code class="muted" title="{esc(task["id"])}">'
            f'{esc(task.get("short_id", ""))}</code></td><td>{state_badge(task["state"])} {retries_badge(task)}'
            f'{cache_badge(task)}{reused_badge(task, task.get("reused_from_attempt"))}</td>'
            f'<td class="num">{duration(task["start_ts"], task["end_ts"])}</td>'
            f'<td class="tl-cell"><svg class="tl" width="100%" height="18" role="img" '
            f'aria-label="{esc(task["name"])} timeline">{"".join(rects)}</svg></td></tr>')


def _axis(span: float) -> str:
    return f'<th class="tl-axis"><span class="axis"><span>0s</span><span>{span:.2f}s</span></span></th>'


def _timeline(run: dict[str, Any], bars: _Bars) -> str:
    tasks = run["task_runs"]
    facts = run["task_runs_page"]
    if not tasks:
        if facts["state"]:
            return f'<p class="muted">No task runs in state {esc(facts["state"])}.</p>'
        return '<p class="muted">No task runs.</p>'
    attempts = run.get("attempts") or []
    grouped = len(attempts) > 1
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
        rows.append(_task_row(task, bars, run["now"]))
    return (f'<table class="timeline"><thead><tr><th>run</th><th>state</th><th>duration</th>{_axis(bars.span)}'
            f'</tr></thead><tbody>{"".join(rows)}</tbody></table>')


def _subflows(run: dict[str, Any], bars: _Bars) -> str:
    subflows = run["subflow_runs"]
    if not subflows:
        return ""
    rows = []
    for sub in subflows:
        start = sub["start_ts"] or bars.origin
        stop = sub["end_ts"] or (run["now"] if sub["live"] else start)
        bar = bars.rect(start, stop, f"seg seg-subflow state-{esc(state_kind(sub['state']))}",
                        f'subflow {sub["name"]} ({sub["flow_name"]})')
        rows.append(
            f'<tr class="subflow"><td class="tl-name"><span class="badge">subflow</span> {run_link(sub)} '
            f'<span class="muted">{esc(sub["flow_name"])}</span></td><td>{state_badge(sub["state"])}</td>'
            f'<td class="num">{duration(sub["start_ts"], sub["end_ts"])}</td>'
            f'<td class="tl-cell"><svg class="tl" width="100%" height="18" role="img">{bar}</svg></td></tr>')
    total = run["subflow_runs_total"]
    more = ""
    if total > len(subflows):
        more = (f'<p class="muted">The first {len(subflows)} of {number(total)} subflow runs: '
                f'<a href="/runs?{urlencode({"parent": run["id"]})}">list them all</a>.</p>')
    return (f'<h2 id="subflow-runs">Subflow runs <span class="muted">({number(total)})</span></h2>'
            f'<table class="subflows"><thead><tr><th>run</th><th>state</th><th>duration</th>'
            f'{_axis(bars.span)}</tr></thead><tbody>{"".join(rows)}</tbody></table>{more}')


def graph_section(run: dict[str, Any], graph: dict[str, Any] | None) -> str:
    """The dependency graph with its legend, or why it is not drawn."""
    total = run["task_run_counts"]["total"]
    if graph is None or total == 0:
        return ""
    if not graph["drawn"]:
        return (f'<h2 id="graph">Dependency graph</h2><p class="muted graph-fallback">The graph is drawn for '
                f'runs of up to {number(graph["limit"])} task runs; this one has {number(total)}. The task runs '
                f'are listed above, by state; <code>/api/flow-runs/{esc(run["id"])}/task-runs</code> gives each '
                f'one\'s <code>upstream_ids</code>.</p>')
    note = ("" if graph["edges"] else
            '<p class="muted">No task run of this flow run waited for another (none was passed another\'s '
            'result or future, or named in <code>wait_for</code>).</p>')
    return (f'<h2 id="graph">Dependency graph <span class="muted">({number(len(graph["nodes"]))} task runs, '
            f'{number(len(graph["edges"]))} dependencies)</span></h2>{legend()}{note}'
            f'<div class="graph-scroll">{graph_svg(graph)}</div>')


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
    limit = run["task_runs_page"]["limit"] or D.TASK_PAGE
    path, query = f"/runs/{quote(run['id'])}", _queries(run)
    first = 0  # attempts follow each other, so their task runs do in creation order
    for a in attempts:
        # The page holding the attempt's first task run (of the unfiltered list).
        href = _href(path, {**query, "state": None, "offset": first // limit * limit}, f"attempt-{a['number']}-tasks")
        first += a["task_runs"]
        count = f'<a href="{esc(href)}">{a["task_runs"]}</a>' if a["task_runs"] else "0"
        rows.append(
            f'<tr id="attempt-{a["number"]}"><td class="num">{a["number"]}</td><td>{when(a["started_ts"])}</td>'
            f'<td class="num">{duration(a["started_ts"], a["ended_ts"])}</td>'
            f'<td>{state_badge(a["state"])} <span class="message">{esc((a["state"] or {}).get("message"))}</span>'
            f'</td><td class="num">{count}</td><td class="num">{a["reused"]}</td></tr>')
    return (f'<h2>Attempts <span class="muted">({len(attempts)})</span></h2>'
            f'<table class="attempts"><thead><tr><th>attempt</th><th>started</th><th>duration</th><th>ended in</th>'
            f'<th>task runs</th><th>reused</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')


def _summary(run: dict[str, Any]) -> str:
    parent = ""
    if run["parent_flow_run_id"]:
        shown = run["parent"]["name"] if run.get("parent") else run["parent_flow_run_id"]
        parent = f'<dt>parent</dt><dd><a href="/runs/{quote(run["parent_flow_run_id"])}">{esc(shown)}</a></dd>'
    return (f'<dl class="facts"><dt>flow</dt><dd>{flow_link(run["flow_name"])}</dd>{parent}'
            f'<dt>state</dt><dd>{state_badge(run["state"])} <span class="message">'
            f'{esc((run["state"] or {}).get("message"))}</span></dd>'
            f'<dt>started</dt><dd>{when(run["start_ts"])}</dd>'
            f'<dt>duration</dt><dd>{duration(run["start_ts"], run["end_ts"])}</dd>'
            f'<dt>attempts</dt><dd>{run["run_count"]}</dd>'
            f'<dt>tags</dt><dd>{tags(run["tags"])}</dd>'
            f'<dt>id</dt><dd><code>{esc(run["id"])}</code></dd></dl>')


def _task_runs_heading(run: dict[str, Any]) -> str:
    facts = run["task_runs_page"]
    total = run["task_run_counts"]["total"]
    count = number(total)
    if facts["state"]:
        count = f'{number(facts["total"])} {esc(facts["state"])} of {number(total)}'
    return f'<h2 id="task-runs">Task runs <span class="muted">({count})</span></h2>'


def _logs_section(model: dict[str, Any], path: str, with_run: bool = True, query: dict[str, Any] | None = None) -> str:
    facts = model["logs_page"]
    query = query if query is not None else {"level": facts["level"], "log_offset": facts["offset"],
                                             "log_limit": facts["limit"] if facts["limit"] != D.LOG_PAGE else None}
    levels = level_links(facts["level"], lambda level: _href(path, {**query, "level": level, "log_offset": 0}, "logs"))
    nav = pager(facts, lambda offset: _href(path, {**query, "log_offset": offset}, "logs"), "log lines")
    return f'{levels}{nav}{logs_table(model["logs"], with_run)}{nav}'


def _task_runs_section(run: dict[str, Any], bars: _Bars, path: str, query: dict[str, Any]) -> str:
    """The page of task runs as a timeline with its pager; for a run whose only
    children are subflow runs, nothing (they have their own section)."""
    if run["task_run_counts"]["total"] == 0:
        return "" if run["subflow_runs"] else '<h2 id="task-runs">Task runs</h2><p class="muted">No task runs.</p>'
    nav = pager(run["task_runs_page"], lambda offset: _href(path, {**query, "offset": offset}, "task-runs"),
                "task runs")
    return (f'{_task_runs_heading(run)}{legend()}{nav}{_timeline(run, bars)}'
            f'{nav if len(run["task_runs"]) > 10 else ""}')


def run_page(run: dict[str, Any], store: str, graph: dict[str, Any] | None = None) -> str:
    path = f"/runs/{quote(run['id'])}"
    query = _queries(run)
    bars = _Bars(*_bounds(run))
    body = (f'<h1><span class="kind">Flow run</span> {esc(run["name"])}</h1>{_summary(run)}{progress(run)}'
            f'<h2>Parameters</h2>{params_table(run["parameters"])}{attempts_table(run)}'
            f'{_task_runs_section(run, bars, path, query)}'
            f'{_subflows(run, bars)}{graph_section(run, graph)}'
            f'<h2>State history</h2>{states_table(run["states"])}'
            f'<h2 id="logs">Logs</h2>{_logs_section(run, path, query=query)}')
    live = run["live"] or bool(run["task_runs_live"])
    return layout(f"Flow run {run['name']}", body, active="runs", refresh=live, store=store)


def task_page(task: dict[str, Any], store: str) -> str:
    path = f"/task-runs/{quote(task['id'])}"
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
            f'<h2 id="logs">Logs</h2>{_logs_section(task, path, with_run=False)}')
    return layout(f"Task run {task['name']}", body, active="runs", refresh=task["live"], store=store)


