"""The flow run loop (core/flow_engine.py): outcomes, retries, logs, plugin independence."""

from __future__ import annotations

from headwater import flow, task


def test_a_retried_flow_counts_the_task_runs_of_its_last_attempt(headwater_session):
    """A flow retried once that submits 4 tasks per attempt, one failing, reports
    '1/4 states failed.': the earlier attempt's runs are not counted again."""

    @task
    def check(i):
        if i == 3:
            raise ValueError("bad item")
        return i

    @flow(retries=1, retry_delay_seconds=0)
    def checks():
        for i in range(4):
            check.submit(i)

    state = checks(return_state=True)
    assert state.is_failed()
    assert state.message == "1/4 states failed."


def test_every_log_line_is_in_the_store_when_the_flow_call_returns(headwater_session):
    """Right after a flow call returns, the run store has all its lines (the task's, and
    the flow's own 'Finished in state' line) without an explicit flush."""
    from headwater import get_run_logger

    @task
    def step():
        get_run_logger().info("step working")

    @flow
    def logs():
        step()

    state = logs(return_state=True)
    store = headwater_session.store
    (run,) = store.read_flow_runs(flow_name="logs")
    messages = [line["message"] for line in store.read_logs(flow_run_id=run.id)]
    assert "step working" in messages
    assert "Finished in state Completed()" in messages
    assert f"Finished in state {state}" in messages
