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
