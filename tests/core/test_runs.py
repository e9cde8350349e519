"""FlowRun / TaskRun values the read API and listings show."""

from __future__ import annotations

from headwater.runs import TaskRun
from headwater.states import Completed


def test_duration_uses_the_end_time_even_without_a_state():
    """A run with a start and an end time lasts end - start, whether or not its state
    was loaded."""
    run = TaskRun("id", "t")
    run.start_ts, run.end_ts = 100.0, 105.0
    assert run.duration == 5.0


def test_duration_of_an_unfinished_run_runs_to_its_latest_state():
    """Without an end time, a run lasts until its latest state; without either, 0."""
    run = TaskRun("id", "t")
    run.start_ts = 100.0
    assert run.duration == 0.0
    run.state = Completed()
    run.state.ts = 102.5
    assert run.duration == 2.5
    assert TaskRun("id", "t").duration is None
