"""headwater.futures.wait and as_completed: waiting for several futures at once."""

from __future__ import annotations

import threading
import time

import pytest

from headwater import flow, task
from headwater.errors import RunFailed
from headwater.futures import DoneAndNotDoneFutures, as_completed, wait
from headwater.task_runners import ConcurrentTaskRunner


@task
def released(event_name: str, events: dict, value: int) -> int:
    events[event_name].wait(5)
    return value


@task
def explode():
    raise ValueError("boom")


def test_as_completed_yields_in_the_order_runs_finish():
    """Futures come back in the order their runs finish, not the order submitted."""
    events = {name: threading.Event() for name in "abc"}

    @flow
    def ordered():
        futures = [released.submit(name, events, i) for i, name in enumerate("abc")]
        results = []
        iterator = as_completed(futures)
        for name in "cab":
            events[name].set()
            results.append(next(iterator).result())
        return results

    assert ordered() == [2, 0, 1]


def test_as_completed_yields_finished_futures_first_in_the_given_order_once_each():
    """Futures already done come first, in the order given; duplicates appear once."""

    @task
    def quick(i):
        return i

    @flow
    def done_already():
        futures = [quick.submit(i) for i in range(3)]
        wait(futures)
        return [f.result() for f in as_completed([futures[2], futures[0], futures[2], futures[1]])]

    assert done_already() == [2, 0, 1]


def test_as_completed_raises_timeout_error_naming_how_many_are_unfinished():
    """After the timeout, TimeoutError says how many (of how many) did not finish; the
    finished ones were yielded before it."""
    events = {"slow": threading.Event(), "fast": threading.Event()}
    events["fast"].set()

    @flow
    def timing_out():
        futures = [released.submit("fast", events, 1), released.submit("slow", events, 2)]
        got = []
        try:
            for future in as_completed(futures, timeout=0.3):
                got.append(future.result())
        except TimeoutError as exc:
            message = str(exc)
        events["slow"].set()
        return got, message

    got, message = timing_out()
    assert got == [1]
    assert message == "1 (of 2) futures unfinished after 0.3 s"


def test_wait_returns_done_and_not_done_sets():
    """Without a timeout everything is done; with one, the unfinished runs are in
    not_done and wait returns after about the timeout instead of raising."""
    events = {"slow": threading.Event(), "fast": threading.Event()}
    events["fast"].set()

    @flow
    def waiting():
        fast = released.submit("fast", events, 1)
        slow = released.submit("slow", events, 2)
        started = time.monotonic()
        partial = wait([fast, slow], timeout=0.3)
        waited = time.monotonic() - started
        events["slow"].set()
        full = wait([fast, slow, fast])
        return partial, waited, full, fast, slow

    partial, waited, full, fast, slow = waiting()
    assert isinstance(partial, DoneAndNotDoneFutures)
    assert partial.done == {fast} and partial.not_done == {slow}
    assert 0.25 <= waited < 3
    done, not_done = full
    assert done == {fast, slow} and not_done == set()


def test_wait_does_not_count_as_reading_a_failure():
    """A failed run that was only waited for still fails the flow: wait reads no
    outcome, so a failure cannot pass silently."""

    @flow
    def only_waited():
        wait([explode.submit()])

    with pytest.raises(RunFailed):
        only_waited()


def test_a_task_can_wait_for_its_own_submissions_on_a_single_worker():
    """A task holding the pool's only worker waits for tasks it submitted with
    as_completed and wait: it runs them itself instead of deadlocking."""

    @task
    def child(i):
        return i * 10

    @task
    def parent():
        futures = [child.submit(i) for i in range(3)]
        done, _ = wait(futures[:1])
        return sorted(f.result() for f in as_completed(futures)), len(done)

    @flow(task_runner=ConcurrentTaskRunner(max_workers=1))
    def nested():
        return parent.submit().result(timeout=10)

    assert nested() == ([0, 10, 20], 1)


@pytest.mark.parametrize("call", [wait, as_completed])
@pytest.mark.parametrize("bad, message", [
    ([1], r"takes futures from \.submit\(\) or \.map\(\), got 1 \(int\)"),
    ("abc", r"takes a list of futures \(from \.submit\(\) or \.map\(\)\), got 'abc'"),
])
def test_bad_input_is_a_clear_error(call, bad, message):
    """Anything but a list of futures is a TypeError naming the value."""
    with pytest.raises(TypeError, match=message):
        call(bad)


@pytest.mark.parametrize("call", [wait, as_completed])
def test_a_negative_timeout_is_a_clear_error(call):
    """timeout=-1 is a ValueError naming it."""
    with pytest.raises(ValueError, match=r"timeout=-1\): expected None or a number of seconds"):
        call([], timeout=-1)
