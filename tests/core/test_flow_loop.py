"""The flow run loop (core/engine/flow_loop.py): outcomes, retries, logs, plugin independence."""

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


def test_a_flow_runs_without_the_naming_retries_and_runner_plugins(tmp_path):
    """With run_naming, retries and both runner plugins disabled, a flow (retried once,
    submitting a task) still runs: named by its id (the last resort), its task runs
    inline, and core imports none of those plugins."""
    import os
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import sys
        from headwater import flow, task
        from headwater.runtime import flow_run

        attempts = []

        @task
        def double(x):
            return 2 * x

        @flow(retries=1, retry_delay_seconds=0)
        def doubled():
            attempts.append(1)
            if len(attempts) == 1:
                raise ValueError("first attempt fails")
            return double.submit(21).result(), flow_run.name, flow_run.id

        # Retries are the retries plugin's: without it a failed flow run is final.
        state = doubled(return_state=True)
        assert state.is_failed() and len(attempts) == 1, (state, attempts)
        value, name, run_id = doubled()
        assert value == 42, value
        assert name == run_id, (name, run_id)
        loaded = sorted(m for m in sys.modules if m.startswith("headwater.plugins.")
                        and m.rsplit(".", 1)[1] in ("run_naming", "retries", "sequential_runner",
                                                     "concurrent_runner"))
        assert not loaded, loaded
        print("ok")
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}
    env.update(HEADWATER_HOME=str(tmp_path / "home"), HEADWATER_DISABLE_PLUGIN_AUTOLOAD="1",
               HEADWATER_DISABLE_PLUGINS="run_naming,retries,sequential_runner,concurrent_runner")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"
