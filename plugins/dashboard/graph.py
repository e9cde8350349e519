"""A flow run's task dependency graph, laid out and drawn as SVG on the server.

No script and nothing to build: the page gets a finished ``<svg>`` (the dashboard's
Content-Security-Policy allows no script anyway). Task runs flow from left to right in
layers: a run sits one column right of its furthest upstream run, so every edge points
right. Within a column, runs are ordered by where their upstream runs sit (the mean of
their rows), which keeps most edges short and uncrossed; a column taller than
``MAX_ROWS`` wraps into several, so a map over 300 items stays a block, not a strip
10,000 pixels high. Each node links to its task run and is coloured by its state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from .html_parts import esc, state_kind

MAX_ROWS = 20
NODE_W, NODE_H = 160, 24
COL_GAP, ROW_GAP = 48, 10
MARGIN = 8
LABEL_CHARS = 22


@dataclass
class Placed:
    """Where a node is drawn: its column and row in the grid."""

    column: int
    row: float


def layers(ids: list[str], edges: list[list[str]]) -> dict[str, int]:
    """Each node's layer: 0 for a node without upstream nodes, else one more than its
    furthest upstream node's. Nodes on a cycle (which recorded runs cannot form) are
    put one layer right of everything else."""
    upstream: dict[str, list[str]] = {i: [] for i in ids}
    downstream: dict[str, list[str]] = {i: [] for i in ids}
    for up, down in edges:
        upstream[down].append(up)
        downstream[up].append(down)
    waiting = {i: len(upstream[i]) for i in ids}
    ready = [i for i in ids if waiting[i] == 0]
    layer: dict[str, int] = {}
    while ready:
        node = ready.pop()
        layer[node] = max((layer[u] + 1 for u in upstream[node]), default=0)
        for down in downstream[node]:
            waiting[down] -= 1
            if waiting[down] == 0:
                ready.append(down)
    last = max(layer.values(), default=-1) + 1
    for i in ids:
        layer.setdefault(i, last)
    return layer


def layout(ids: list[str], edges: list[list[str]]) -> tuple[dict[str, Placed], int, int]:
    """Grid positions of the nodes (``ids`` in creation order), and the grid's columns
    and rows."""
    layer = layers(ids, edges)
    order = {i: n for n, i in enumerate(ids)}
    upstream: dict[str, list[str]] = {i: [] for i in ids}
    for up, down in edges:
        upstream[down].append(up)
    by_layer: dict[int, list[str]] = {}
    for i in ids:
        by_layer.setdefault(layer[i], []).append(i)
    row_of: dict[str, float] = {}
    columns: list[list[str]] = []
    for number in sorted(by_layer):
        members = by_layer[number]

        def centre(node: str) -> tuple[float, int]:
            rows = [row_of[u] for u in upstream[node] if u in row_of]
            return (sum(rows) / len(rows) if rows else -1.0, order[node])

        members.sort(key=centre)
        count = math.ceil(len(members) / MAX_ROWS)
        per_column = math.ceil(len(members) / count)
        for start in range(0, len(members), per_column):
            column = members[start:start + per_column]
            for row, node in enumerate(column):
                row_of[node] = row
            columns.append(column)
    height = max((len(c) for c in columns), default=0)
    placed = {}
    for x, column in enumerate(columns):
        shift = (height - len(column)) / 2  # a short column sits in the middle
        for row, node in enumerate(column):
            placed[node] = Placed(x, row + shift)
    return placed, len(columns), height


def _label(text: str) -> str:
    return text if len(text) <= LABEL_CHARS else text[:LABEL_CHARS - 1] + "…"


def graph_svg(model: dict[str, Any]) -> str:
    """The graph of ``data.graph``'s model as an ``<svg>`` element (empty text for a run
    without task runs)."""
    nodes = model["nodes"]
    if not nodes:
        return ""
    placed, columns, rows = layout([n["id"] for n in nodes], model["edges"])
    width = 2 * MARGIN + columns * NODE_W + max(columns - 1, 0) * COL_GAP
    height = 2 * MARGIN + rows * NODE_H + max(rows - 1, 0) * ROW_GAP

    def corner(node_id: str) -> tuple[float, float]:
        at = placed[node_id]
        return MARGIN + at.column * (NODE_W + COL_GAP), MARGIN + at.row * (NODE_H + ROW_GAP)

    paths = []
    for up, down in model["edges"]:
        (x1, y1), (x2, y2) = corner(up), corner(down)
        x1, y1, y2 = x1 + NODE_W, y1 + NODE_H / 2, y2 + NODE_H / 2
        bend = max((x2 - x1) / 2, 12)
        paths.append(f'<path class="edge" d="M{x1:.0f} {y1:.1f} C{x1 + bend:.0f} {y1:.1f} '
                     f'{x2 - bend:.0f} {y2:.1f} {x2:.0f} {y2:.1f}"/>')
    boxes = []
    for node in nodes:
        x, y = corner(node["id"])
        state = node["state"]
        title = f'{node["name"]}: {state["name"] if state else "no state"}'
        if state and state.get("message"):
            title += f' ({state["message"][:300]})'
        boxes.append(
            f'<a href="/task-runs/{quote(node["id"])}" class="node state-{esc(state_kind(state))}" '
            f'data-id="{esc(node["id"])}"><title>{esc(title)}</title>'
            f'<rect x="{x:.0f}" y="{y:.1f}" width="{NODE_W}" height="{NODE_H}" rx="4"/>'
            f'<text x="{x + 8:.0f}" y="{y + NODE_H / 2 + 4:.1f}">{esc(_label(node["name"]))}</text></a>')
    return (f'<svg class="graph" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="task dependency graph, {len(nodes)} task runs, {len(model["edges"])} dependencies">'
            f'<g class="edges">{"".join(paths)}</g><g class="nodes">{"".join(boxes)}</g></svg>')
