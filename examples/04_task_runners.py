"""Task runners: submit tasks to a runner and pass futures from one task to the next.

``first_task.submit(num)`` returns a future at once; passing it to ``second_task.submit``
makes the second task wait for the first and receive its result. The same flow runs
with the sequential runner (one task after another, in the flow's thread) and with the
concurrent runner (the default: worker threads), and then a map fans out over a list.
"""

import time

from headwater import flow, task, unmapped
from headwater.task_runners import ConcurrentTaskRunner, SequentialTaskRunner


@task
def first_task(num: int) -> int:
    return num + num


@task
def second_task(num: int) -> int:
    return num * num


@flow(name="My Example Flow", task_runner=SequentialTaskRunner())
def my_flow(num: int) -> None:
    plusnum = first_task.submit(num)
    sqnum = second_task.submit(plusnum)
    print(f"add: {plusnum.result()}, square: {sqnum.result()}")


@task
def download(page: int, delay: float) -> str:
    time.sleep(delay)  # stands in for waiting on the network
    return f"page-{page}"


@flow(task_runner=ConcurrentTaskRunner(max_workers=8))
def fetch_all(pages: int) -> list[str]:
    futures = download.map(range(pages), delay=unmapped(0.2))
    return [future.result() for future in futures]


if __name__ == "__main__":
    my_flow(5)
    my_flow.with_options(task_runner="concurrent")(5)

    started = time.perf_counter()
    fetched = fetch_all(8)
    took = time.perf_counter() - started
    print(f"fetched {len(fetched)} pages of 0.2 s each in {took:.1f} s: {fetched[0]} .. {fetched[-1]}")
