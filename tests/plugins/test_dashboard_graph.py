"""The dashboard's dependency graph layout and SVG, and the short ids it shows: plain
functions, no server."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("markdown_it", reason='the dashboard needs its extra: pip install "headwater[ui]"')

from headwater.plugins.dashboard.graph import MAX_ROWS, graph_svg, layers, layout  # noqa: E402
from headwater.plugins.dashboard.short_ids import short_suffixes  # noqa: E402


def test_a_node_sits_one_layer_right_of_its_furthest_upstream_node() -> None:
    """A diamond with a shortcut: d waits for b and c, c for b, so d is in layer 3."""
    edges = [["a", "b"], ["b", "c"], ["b", "d"], ["c", "d"], ["a", "d"]]
    assert layers(["a", "b", "c", "d", "e"], edges) == {"a": 0, "b": 1, "c": 2, "d": 3, "e": 0}


def test_nodes_on_a_cycle_still_get_a_place() -> None:
    """Recorded runs cannot wait for each other in a circle; if a store says they do,
    the graph still draws every node."""
    assert layers(["a", "b", "c"], [["a", "b"], ["b", "a"]]) == {"c": 0, "a": 1, "b": 1}


def test_a_column_of_many_runs_wraps_and_downstream_runs_follow_their_upstream() -> None:
    """A map over 50 items wraps into columns of at most MAX_ROWS; each reduce step sits
    next to the row of its own upstream run."""
    ids = [f"m{i}" for i in range(50)] + ["late", "early"]
    edges = [["m49", "late"], ["m0", "early"]]
    placed, columns, rows = layout(ids, edges)
    firsts = {placed[f"m{i}"].column for i in range(50)}
    assert len(firsts) == 3 and rows == 17 <= MAX_ROWS  # 50 runs in three balanced columns
    assert placed["early"].column == placed["late"].column == 3
    assert placed["early"].row < placed["late"].row


def test_the_svg_links_every_node_to_its_task_run_coloured_by_state() -> None:
    """One link per node to its task run, classed by state (Retrying and Crashed
    included), one path per edge, and names escaped."""
    nodes = [{"id": "t1", "name": "<b>extract</b>", "state": {"type": "RUNNING", "name": "Retrying"}},
             {"id": "t2", "name": "load", "state": {"type": "CRASHED", "name": "Crashed", "message": "gone"}}]
    svg = graph_svg({"nodes": nodes, "edges": [["t1", "t2"]]})
    assert re.findall(r'<a href="(/task-runs/[^"]+)" class="node state-(\w+)"', svg) == [
        ("/task-runs/t1", "retrying"), ("/task-runs/t2", "crashed")]
    assert svg.count('class="edge"') == 1 and "<b>" not in svg and "&lt;b&gt;extract" in svg
    assert "load: Crashed (gone)" in svg


def test_short_suffixes_tell_time_ordered_ids_apart() -> None:
    """Ids made in the same millisecond share their first characters: the suffixes
    shown are the shortest that differ, never under four characters."""
    ids = ["019a1b2c-3d4e-7f00-8000-0000000a0001", "019a1b2c-3d4e-7f00-8000-0000000b0001",
           "019a1b2c-3d4e-7f00-8000-0000000a0002"]
    assert short_suffixes(ids) == {ids[0]: "a0001", ids[1]: "b0001", ids[2]: "a0002"}
    assert set(short_suffixes(["abcdef12", "00000013"]).values()) == {"ef12", "0013"}
    assert short_suffixes([]) == {}
