"""Retries: a task that fails twice then succeeds, one that never does, and a flow retry.

Every retry is recorded: the state history of the flaky task run reads
Pending → Running → AwaitingRetry → Retrying → AwaitingRetry → Retrying → Completed.
"""

from headwater import flow, get_store, task

attempts = {"flaky": 0, "flow": 0}


@task(retries=3, retry_delay_seconds=[0.1, 0.2])  # one delay per retry; the last repeats
def flaky_download() -> str:
    attempts["flaky"] += 1
    if attempts["flaky"] < 3:
        raise ConnectionError(f"attempt {attempts['flaky']}: connection reset")
    return "payload"


@task(retries=2, retry_delay_seconds=0)
def always_fails() -> None:
    raise ValueError("bad code")  # runs three times in all, then the flow fails


@flow
def download_flow() -> str:
    return flaky_download()


@flow
def doomed_flow() -> None:
    always_fails()


@flow(retries=1, retry_delay_seconds=0)
def second_time_lucky() -> str:
    # A flow retry runs the whole body again: its tasks and child flows too.
    attempts["flow"] += 1
    if attempts["flow"] == 1:
        raise RuntimeError("the first attempt of the flow fails")
    return download_flow()


def history(flow_name: str) -> str:
    store = get_store()
    store.flush()
    run = store.read_flow_runs(flow_name=flow_name, limit=1)[0]
    task_run = store.read_task_runs(flow_run_id=run.id)[0]
    return " → ".join(s.name for s in store.read_states(task_run.id))


if __name__ == "__main__":
    print("result:", download_flow(), "after", attempts["flaky"], "attempts")
    print("task run history:", history("download-flow"))
    state = doomed_flow(return_state=True)
    print("doomed flow ended:", repr(state))
    print("second_time_lucky returned:", second_time_lucky(), "after", attempts["flow"], "flow attempts")
