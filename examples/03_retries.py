"""Retries: a task that fails twice, then succeeds; and one that never does."""

from headwater import flow, task

attempts = {"flaky": 0}


@task(retries=3, retry_delay_seconds=[0.1, 0.2])
def flaky_download() -> str:
    attempts["flaky"] += 1
    if attempts["flaky"] < 3:
        raise ConnectionError(f"attempt {attempts['flaky']}: connection reset")
    return "payload"


@task(retries=2, retry_delay_seconds=0)
def always_fails() -> None:
    raise ValueError("bad code")


@flow
def download_flow() -> str:
    return flaky_download()


@flow
def doomed_flow() -> None:
    always_fails()


if __name__ == "__main__":
    print("result:", download_flow(), "after", attempts["flaky"], "attempts")
    state = doomed_flow(return_state=True)
    print("doomed flow ended:", repr(state))
