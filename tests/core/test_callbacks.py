"""Lifecycle callbacks (on_completion, on_failure, on_crashed) and headwater_state_changed."""

from __future__ import annotations

import pytest

from headwater import Session, flow, hookimpl, task


def test_flow_callbacks_run_for_their_final_state():
    """on_completion runs after success, on_failure after failure, with flow, run, state."""
    seen = []

    def done(flow_obj, run, state):
        seen.append(("done", flow_obj.name, run.name, state.name))

    def failed(flow_obj, run, state):
        seen.append(("failed", flow_obj.name, run.name, state.name))

    @flow(flow_run_name="cb-{fail}", on_completion=[done], on_failure=[failed])
    def watched(fail: bool):
        if fail:
            raise ValueError("asked")

    watched(False)
    watched(True, return_state=True)
    assert seen == [("done", "watched", "cb-False", "Completed"),
                    ("failed", "watched", "cb-True", "Failed")]


def test_on_crashed_runs_when_a_flow_is_interrupted():
    """on_crashed runs for a Crashed flow run; the interrupt still reaches the caller."""
    seen = []

    @flow(on_crashed=[lambda f, run, state: seen.append(state.name)])
    def interrupted():
        raise KeyboardInterrupt()

    with pytest.raises(KeyboardInterrupt):
        interrupted()
    assert seen == ["Crashed"]


def test_task_callbacks_run_for_their_final_state():
    """Task on_completion / on_failure receive the task, its run and the state."""
    seen = []

    @task(on_completion=[lambda t, run, s: seen.append((t.name, s.name))],
          on_failure=[lambda t, run, s: seen.append((t.name, s.name, s.message))])
    def job(ok):
        if not ok:
            raise RuntimeError("job broke")

    @flow
    def jobs():
        job(True)
        job(False, return_state=True)

    jobs()
    assert seen[0] == ("job", "Completed")
    assert seen[1][:2] == ("job", "Failed") and "job broke" in seen[1][2]


def test_a_raising_callback_is_logged_and_does_not_change_the_outcome(capsys):
    """A callback's exception is logged, naming the callback; the run stays Completed."""

    def noisy_callback(flow_obj, run, state):
        raise RuntimeError("callback broke")

    @flow(on_completion=[noisy_callback])
    def fine():
        return 1

    assert fine() == 1
    err = capsys.readouterr().err
    assert "noisy_callback" in err and "callback broke" in err


class Recorder:
    """A plugin that records every transition it is told about."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str | None, str]] = []
        self.ids: list[tuple[str, str]] = []

    @hookimpl
    def headwater_state_changed(self, run, previous, state):
        self.seen.append((run.kind, run.name, previous.name if previous else None, state.name))
        self.ids.append((run.id, state.name))


def test_state_changed_sees_every_transition_of_flows_and_tasks():
    """A plugin's headwater_state_changed is called for every transition, in order."""
    recorder = Recorder()

    @task(retries=1, retry_delay_seconds=0, task_run_name="flaky-run")
    def flaky():
        if not calls:
            calls.append(1)
            raise ValueError("first")

    calls: list = []

    @flow(flow_run_name="observed")
    def observed_flow():
        flaky()

    with Session(plugins=[recorder]):
        observed_flow()
    flow_moves = [(p, s) for kind, _, p, s in recorder.seen if kind == "flow"]
    task_moves = [(p, s) for kind, name, p, s in recorder.seen if kind == "task"]
    assert flow_moves == [(None, "Pending"), ("Pending", "Running"), ("Running", "Completed")]
    assert task_moves == [(None, "Pending"), ("Pending", "Running"), ("Running", "AwaitingRetry"),
                          ("AwaitingRetry", "Retrying"), ("Retrying", "Completed")]


def test_state_changed_matches_the_recorded_history():
    """What the hook saw equals what the run store recorded, for every run."""
    recorder = Recorder()

    @task
    def one():
        return 1

    @flow
    def child():
        return one()

    @flow
    def parent():
        return child() + one()

    with Session(plugins=[recorder]) as session:
        parent()
        store = session.store
        store.flush()
        runs = store.read_flow_runs()
        tasks = store.read_task_runs()
        for run in [*runs, *tasks]:
            history = [s.name for s in store.read_states(run.id)]
            seen = [s for run_id, s in recorder.ids if run_id == run.id]
            assert seen == history
    assert len(runs) == 2 and len(tasks) == 2


def test_state_changed_sees_task_runs_ended_by_a_crashing_flow():
    """When a flow crashes with submitted tasks still running, the hook sees them end too."""
    import threading

    recorder = Recorder()
    started, finished = threading.Event(), threading.Event()

    @task(task_run_name="left-running")
    def slow():
        started.set()
        threading.Event().wait(0.3)
        finished.set()  # the body outlives its crashed flow run; its end must not count

    @flow
    def crashes_with_work_in_flight():
        slow.submit()
        started.wait(5)
        raise KeyboardInterrupt()

    with Session(plugins=[recorder]):
        with pytest.raises(KeyboardInterrupt):
            crashes_with_work_in_flight()
        assert finished.wait(5)
        threading.Event().wait(0.1)  # let the worker thread return from the task body
    task_moves = [s for kind, name, _, s in recorder.seen if name == "left-running"]
    assert task_moves[:2] == ["Pending", "Running"]
    assert task_moves[2:] == ["Crashed"]  # and nothing after: Crashed is final


def test_task_on_crashed_runs_when_a_task_is_interrupted():
    """A task interrupted by SystemExit calls its on_crashed callbacks; SystemExit propagates."""
    seen = []

    @task(on_crashed=[lambda t, run, state: seen.append((t.name, state.name))])
    def exits():
        raise SystemExit(3)

    @flow
    def exiting():
        exits()

    with pytest.raises(SystemExit):
        exiting()
    assert seen == [("exits", "Crashed")]
