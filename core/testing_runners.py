"""The task runner conformance suite: what every task runner must do the same way.

A runner author subclasses :class:`RunnerConformance` in a test module and gives the
runner under test as the ``task_runner`` fixture; pytest then runs every case below
against it (docs/task-runners.md, "Testing a task runner")::

    from headwater.testing import RunnerConformance

    class TestMyRunner(RunnerConformance):
        @pytest.fixture
        def task_runner(self):
            return MyRunner()

The cases assert what a flow's author sees, never how a runner works inside: results,
states and their history in the run store, errors, and timings only where they are the
behaviour (a retry waits its delay). Two cases run a script in a child process (tasks
defined in ``__main__``, Ctrl-C; :mod:`headwater.testing_scripts`); the runner travels
there pickled with cloudpickle.

Imported by :mod:`headwater.testing` only when asked for, so a plain pytest run does
not pay for it. The tasks live here, at module level, so that runners which send tasks
elsewhere import them by name.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import traceback
import uuid
from pathlib import Path
from typing import Any, ClassVar

import pytest

from headwater import allow_failure, flow, get_store, task, unmapped
from headwater.errors import TaskTimeout, UpstreamFailed
from headwater.futures import Future
from headwater.remote import NotPicklable
from headwater.runtime import task_run
from headwater.states import StateType
from headwater.task_runners import SequentialTaskRunner, ThreadPoolTaskRunner
from headwater.tasks import task_input_hash
from headwater.testing_scripts import HOLD_SECONDS, INTERRUPT_SCRIPT, MAIN_SCRIPT, child_store, run_script
from headwater.utilities.annotations import quote

__all__ = ["RunnerConformance"]


# -- the tasks the cases run ----------------------------------------------------------------


@task
def add(x: int, y: int) -> int:
    return x + y


@task
def affine(value: int, factor: int, offset: int = 0) -> int:
    return value * factor + offset


@task
def count_items(items: Any, extra: list[int]) -> int:
    return len(items) + len(extra)


@task
def combine(values: list[int], named: dict[str, Any]) -> int:
    return sum(values) + sum(sum(v) if isinstance(v, list) else v for v in named.values())


@task
def identity(value: Any) -> Any:
    return value


@task
def pause(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@task
def explode(x: Any) -> None:
    raise ValueError(f"bad input {x}")


@task
def received(value: Any) -> str:
    """What the task got: an exception's repr, or the value's type names."""
    if isinstance(value, BaseException):
        return f"exception {value!r}"
    if isinstance(value, dict):
        return "dict " + ",".join(f"{k}={type(v).__name__}" for k, v in value.items())
    if isinstance(value, list):
        return "list " + ",".join(type(v).__name__ for v in value)
    return type(value).__name__


@task(retries=2, retry_delay_seconds=0.3)
def fails_twice(x: int) -> int:
    if task_run.run_count < 3:
        raise ConnectionError(f"attempt {task_run.run_count} failed")
    return x


@task(retries=1, retry_delay_seconds=0)
def always_fails() -> None:
    raise ConnectionError(f"attempt {task_run.run_count} failed")


@task(timeout_seconds=0.3)
def dawdle(seconds: float) -> str:
    # Sleeps in steps: a thread over its limit is abandoned, not stopped, so keep it short.
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)
    return "finished"


@task(timeout_seconds=0.3)
async def adawdle(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "finished"


@task(cache_key_fn=task_input_hash, cache_expiration=dt.timedelta(minutes=10))
def fresh_token(label: str) -> str:
    """A value that differs on every call: equal tokens mean the second run was a hit."""
    return f"{label}-{uuid.uuid4().hex}"


@task
async def asquare(x: int) -> int:
    await asyncio.sleep(0.01)
    return x * x


@task
def spread(n: int) -> int:
    """A task that submits tasks and waits for them."""
    futures = add.map(range(n), unmapped(1))
    return sum(future.result() for future in futures)


@task
def increment(x: int) -> int:
    return x + 1


# -- reading what was recorded ----------------------------------------------------------------


def _task_runs(flow_run_id: str) -> dict[str, list[Any]]:
    """The flow run's task runs, by task name, in the order they were created."""
    store = get_store()
    store.flush()
    runs: dict[str, list[Any]] = {}
    for run in store.read_task_runs(flow_run_id=flow_run_id):
        runs.setdefault(run.task_name, []).append(run)
    return runs


def _history(run_id: str) -> list[str]:
    return [state.name for state in get_store().read_states(run_id)]


def _flow_run_id(state: Any) -> str:
    return state.state_details.flow_run_id


class RunnerConformance:
    """The conformance suite for task runners, as a pytest test class to subclass.

    Name the subclass ``Test...`` and override the ``task_runner`` fixture to return the
    runner under test: anything ``@flow(task_runner=...)`` takes (an instance, used as a
    template per flow run, a class, or a registered name). It may use other fixtures,
    such as a cluster. Two cases send it to a child process with cloudpickle, so it must
    pickle (a runner that connects to a cluster by address pickles as its address).

    Every case runs in its own :class:`~headwater.Session` over a temporary
    ``HEADWATER_HOME`` (the ``headwater_session`` fixture).
    """

    #: How many trivial tasks the fan-out case maps. Lower it in a subclass for a runner
    #: whose per-task cost makes 10,000 too slow for a test run, and say so there.
    fan_out_size: ClassVar[int] = 10_000

    @pytest.fixture
    def task_runner(self) -> Any:
        """The runner under test: override this fixture in the subclass."""
        raise NotImplementedError(
            f"{type(self).__name__} must override the 'task_runner' fixture to return the "
            f"runner under test, e.g. @pytest.fixture def task_runner(self): return MyRunner()")

    @pytest.fixture(autouse=True)
    def conformance_session(self, headwater_session: Any) -> Any:
        """Every case in its own session and HEADWATER_HOME."""
        return headwater_session

    # -- submitting and mapping ---------------------------------------------------------

    def test_submit_returns_a_future_of_the_result(self, task_runner: Any) -> None:
        """submit() returns a Future; its result is the task's return value and
        the run is recorded Pending -> Running -> Completed."""

        @flow(task_runner=task_runner)
        def submitting() -> tuple[bool, int]:
            future = add.submit(1, 2)
            return isinstance(future, Future), future.result()

        state = submitting(return_state=True)
        assert state.result() == (True, 3)
        (run,) = _task_runs(_flow_run_id(state))["add"]
        assert run.state.is_completed()
        assert _history(run.id) == ["Pending", "Running", "Completed"]

    def test_map_zips_iterables_and_passes_unmapped_whole(self, task_runner: Any) -> None:
        """map() runs once per element, in order; several iterables are zipped; an
        unmapped value (even a list) and a default go whole to every run; futures from
        another map are mapped over, element by element."""

        @flow(task_runner=task_runner)
        def mapping() -> tuple[list[int], list[int], list[int]]:
            doubled = affine.map([1, 2, 3], unmapped(2))
            shifted = affine.map(doubled, unmapped(1), [10, 20, 30])
            counted = count_items.map(["ab", "cde"], unmapped([7, 8, 9]))
            return ([f.result() for f in doubled], [f.result() for f in shifted],
                    [f.result() for f in counted])

        assert mapping() == ([2, 4, 6], [12, 24, 36], [5, 6])

    def test_map_over_a_future_and_over_nothing(self, task_runner: Any) -> None:
        """map() over a future maps over its result; over an empty list it submits
        nothing."""

        @flow(task_runner=task_runner)
        def mapping_futures() -> tuple[list[int], list[Any]]:
            values = identity.submit([3, 4])
            return [f.result() for f in affine.map(values, unmapped(10))], affine.map([], unmapped(1))

        assert mapping_futures() == ([30, 40], [])

    def test_futures_nested_in_lists_and_dicts_become_their_results(self, task_runner: Any) -> None:
        """Futures inside lists and dicts (nested too) reach the task as their results,
        and each is recorded as an upstream run."""

        @flow(task_runner=task_runner)
        def nesting() -> int:
            a, b, c, d = (add.submit(i, i) for i in range(1, 5))
            return combine.submit([a, b], {"c": c, "d": [d, 100]}).result()

        state = nesting(return_state=True)
        assert state.result() == 2 + 4 + 6 + 8 + 100
        runs = _task_runs(_flow_run_id(state))
        (combined,) = runs["combine"]
        assert sorted(combined.upstream_ids) == sorted(run.id for run in runs["add"])

    def test_wait_for_orders_runs_without_passing_data(self, task_runner: Any) -> None:
        """wait_for=[...] starts a run only after its upstream runs ended, passes it no
        data, and records them as upstream runs; a failed one in wait_for stops it."""

        @flow(task_runner=task_runner)
        def ordering() -> tuple[int, str]:
            first = pause.submit(0.2)
            second = add.submit(1, 1, wait_for=[first])
            stopped = add.submit(2, 2, wait_for=[explode.submit(0)])
            return second.result(), stopped.wait().name

        state = ordering(return_state=True)
        assert state.result() == (2, "NotReady")
        runs = _task_runs(_flow_run_id(state))
        (first,) = runs["pause"]
        second = next(run for run in runs["add"] if run.parameters["x"] == 1)
        assert second.upstream_ids == (first.id,)
        assert second.start_ts >= first.end_ts, "the run started before the run it waited for ended"

    # -- failures ----------------------------------------------------------------------------

    def test_a_failure_reaches_the_future_and_stops_downstream_runs(self, task_runner: Any) -> None:
        """A task's exception is raised by its future as itself, with the task's frame in
        its traceback; a run depending on it ends NotReady without running and its
        future raises UpstreamFailed naming the failed run."""

        @flow(task_runner=task_runner)
        def failing() -> dict[str, Any]:
            bad = explode.submit(3)
            downstream = add.submit(bad, 1)
            seen: dict[str, Any] = {}
            try:
                bad.result()
            except ValueError as exc:
                seen["error"] = str(exc)
                seen["frames"] = [frame.name for frame in traceback.extract_tb(exc.__traceback__)]
            try:
                downstream.result()
            except UpstreamFailed as exc:
                seen["upstream"] = str(exc)
            seen["states"] = (bad.state.name, downstream.state.name)
            seen["bad_name"] = bad.task_run_name
            return seen

        state = failing(return_state=True)
        seen = state.result()
        assert seen["error"] == "bad input 3"
        assert "explode" in seen["frames"], f"the task's frame is missing: {seen['frames']}"
        assert seen["states"] == ("Failed", "NotReady")
        assert seen["bad_name"] in seen["upstream"]
        runs = _task_runs(_flow_run_id(state))
        assert _history(runs["explode"][0].id) == ["Pending", "Running", "Failed"]
        assert _history(runs["add"][0].id) == ["Pending", "NotReady"]

    def test_an_unread_failure_fails_the_flow(self, task_runner: Any) -> None:
        """A submitted task that failed and was never read fails the flow run; the other
        runs complete."""

        @flow(task_runner=task_runner)
        def careless() -> None:
            add.submit(1, 1)
            explode.submit(1)

        state = careless(return_state=True)
        assert state.is_failed()
        assert state.message == "1/2 states failed."
        runs = _task_runs(_flow_run_id(state))
        assert runs["add"][0].state.is_completed() and runs["explode"][0].state.is_failed()

    def test_allow_failure_runs_the_downstream_with_the_exception(self, task_runner: Any) -> None:
        """allow_failure(future) runs the downstream whatever the upstream's outcome, giving
        it the exception (in a list, a dict and wait_for too); the failure so read does not
        fail the flow."""

        @flow(task_runner=task_runner)
        def tolerant() -> tuple[str, str, str, str]:
            bad, good = explode.submit(1), add.submit(2, 3)
            return (received.submit(allow_failure(bad)).result(),
                    received.submit(allow_failure([bad, good])).result(),
                    received.submit({"bad": allow_failure(bad), "good": good}).result(),
                    identity.submit("cleaned", wait_for=[allow_failure(bad)]).result())

        state = tolerant(return_state=True)
        assert state.is_completed(), state
        assert state.result() == ("exception ValueError('bad input 1')", "list ValueError,int",
                                  "dict bad=ValueError,good=int", "cleaned")

    def test_quote_passes_the_value_untouched(self, task_runner: Any) -> None:
        """quote(x) gives the task x itself, never the wrapper, with no upstream run
        recorded; futures inside it are never resolved: the task receives the futures,
        or, for a runner that cannot send a future, submit() raises NotPicklable saying so."""

        @flow(task_runner=task_runner)
        def quoting() -> tuple[str, Any]:
            plain = received.submit(quote({"rows": [1, 2], "name": "x"})).result()
            pending = add.submit(1, 1)
            pending.wait()
            try:
                with_future = received.submit(quote([pending, 2])).result()
            except NotPicklable as exc:
                with_future = exc
            return plain, with_future

        state = quoting(return_state=True)
        plain, with_future = state.result()
        assert plain == "dict rows=list,name=str"
        if isinstance(with_future, NotPicklable):
            assert "quote(...)" in str(with_future), with_future
        else:
            assert with_future == "list Future,int"
            runs = _task_runs(_flow_run_id(state))
            assert all(run.upstream_ids == () for run in runs["received"])

    # -- retries, timeouts, caching --------------------------------------------------------------

    def test_retries_wait_their_delay(self, task_runner: Any) -> None:
        """A task that fails twice with retries=2 completes on its third attempt, each
        retry starting at least retry_delay_seconds after the failure; the whole history
        is recorded. One that runs out of retries ends Failed."""

        @flow(task_runner=task_runner)
        def retrying() -> tuple[int, str]:
            return fails_twice.submit(7).result(), always_fails.submit().wait().name

        state = retrying(return_state=True)
        assert state.result() == (7, "Failed")
        runs = _task_runs(_flow_run_id(state))
        (run,) = runs["fails_twice"]
        assert run.run_count == 3
        history = get_store().read_states(run.id)
        assert [s.name for s in history] == ["Pending", "Running", "AwaitingRetry", "Retrying",
                                             "AwaitingRetry", "Retrying", "Completed"]
        gaps = [later.ts - earlier.ts for earlier, later in zip(history, history[1:])
                if earlier.name == "AwaitingRetry"]
        assert all(gap >= 0.25 for gap in gaps), f"retried sooner than its 0.3 s delay: {gaps}"
        (exhausted,) = runs["always_fails"]
        assert exhausted.run_count == 2 and exhausted.state.is_failed()

    def test_timeouts_end_runs_timed_out(self, task_runner: Any) -> None:
        """A sync or async task over its timeout_seconds ends TimedOut (a Failed state)
        without the flow waiting for it to finish; its future raises TaskTimeout, a
        TimeoutError. A task within its limit completes."""

        @flow(task_runner=task_runner)
        def timing_out() -> tuple[str, str, str, bool]:
            sync_run, async_run = dawdle.submit(3.0), adawdle.submit(3.0)
            quick = dawdle.submit(0.01)
            try:
                sync_run.result()
                raised = False
            except TimeoutError as exc:
                raised = isinstance(exc, TaskTimeout)
            return sync_run.state.name, async_run.wait().name, quick.result(), raised

        started = time.monotonic()
        assert timing_out() == ("TimedOut", "TimedOut", "finished", True)
        assert time.monotonic() - started < 2.7, "the flow waited for tasks past their timeout"

    def test_a_result_cached_under_one_runner_is_a_hit_under_another(self, task_runner: Any) -> None:
        """A result cached by a run on this runner is a cache hit (state Cached, the same
        value) for a flow on the sequential runner; one cached on the thread-pool runner
        is a hit on this runner."""

        def cached_flow(runner: Any) -> Any:
            @flow(task_runner=runner)
            def caching(label: str) -> str:
                return fresh_token.submit(label).result()

            return caching

        here = cached_flow(task_runner)("here", return_state=True)
        there = cached_flow(SequentialTaskRunner())("here", return_state=True)
        assert here.result() == there.result()
        elsewhere = cached_flow(ThreadPoolTaskRunner())("elsewhere", return_state=True)
        back_here = cached_flow(task_runner)("elsewhere", return_state=True)
        assert elsewhere.result() == back_here.result()
        assert here.result() != elsewhere.result()
        for state, expected in ((here, "Completed"), (there, "Cached"), (elsewhere, "Completed"),
                                (back_here, "Cached")):
            (run,) = _task_runs(_flow_run_id(state))["fresh_token"]
            assert run.state.name == expected, f"{state.result()}: {run.state!r}, expected {expected}"

    # -- async, nesting, scale -----------------------------------------------------------------

    def test_async_tasks_run_from_sync_and_async_flows(self, task_runner: Any) -> None:
        """Async tasks can be submitted and mapped from a sync flow and an async one, mixed
        with sync tasks and their futures."""

        @flow(task_runner=task_runner)
        def sync_flow() -> tuple[int, list[int]]:
            upstream = add.submit(1, 2)
            return asquare.submit(upstream).result(), [f.result() for f in asquare.map([1, 2, 3])]

        @flow(task_runner=task_runner)
        async def async_flow() -> int:
            squares = asquare.map([1, 2, 3])
            return add.submit(squares[0], squares[2]).result()

        assert sync_flow() == (9, [1, 4, 9])
        assert asyncio.run(async_flow()) == 1 + 9

    def test_a_task_can_submit_tasks(self, task_runner: Any) -> None:
        """A task that maps a task and waits for the results works, also twice at once;
        the runs it submitted are recorded under the same flow run."""

        @flow(task_runner=task_runner)
        def nested() -> list[int]:
            return [f.result() for f in spread.map([3, 4])]

        state = nested(return_state=True)
        assert state.result() == [1 + 2 + 3, 1 + 2 + 3 + 4]
        runs = _task_runs(_flow_run_id(state))
        assert len(runs["spread"]) == 2 and len(runs["add"]) == 3 + 4
        assert all(run.state.is_completed() for run in runs["add"])

    def test_a_wide_fan_out(self, task_runner: Any) -> None:
        """map() over ``fan_out_size`` elements (10,000 unless the subclass lowers it) runs
        every task once; each run is recorded Completed."""
        size = self.fan_out_size

        @flow(task_runner=task_runner)
        def fan_out(n: int) -> int:
            return sum(f.result() for f in increment.map(range(n)))

        state = fan_out(size, return_state=True)
        assert state.result() == size * (size + 1) // 2
        counts = get_store().count_task_run_states(_flow_run_id(state))
        assert counts.by_name == {"Completed": size}

    # -- in a child process: __main__, Ctrl-C -------------------------------------------------------

    def test_tasks_and_arguments_defined_in_main(self, task_runner: Any, tmp_path: Path) -> None:
        """A script whose tasks, a closure task, a dataclass and a pydantic model all live
        in ``__main__`` runs on the runner: the values come back as the script's own
        classes, and every run is recorded Completed."""
        done = run_script(MAIN_SCRIPT, task_runner, tmp_path)
        assert done.returncode == 0, f"the script failed:\n{done.stderr[-3000:]}"
        assert json.loads(done.stdout.strip().splitlines()[-1]) == {
            "moved": [[2, 3], [4, 5]], "points": True, "scaled": [303, 309],
            "order": ["tea", 3], "is_order": True, "total": 7.5}
        with child_store(tmp_path) as store:
            (run,) = store.read_flow_runs()
            assert run.state.is_completed(), run.state
            task_runs = store.read_task_runs(flow_run_id=run.id)
            assert len(task_runs) == 6 and all(r.state.is_completed() for r in task_runs)

    def test_ctrl_c_crashes_the_flow_run_and_leaves_nothing_running(self, task_runner: Any,
                                                                   tmp_path: Path) -> None:
        """SIGINT while tasks run: the script exits promptly with KeyboardInterrupt, without
        waiting for its tasks; the flow run is Crashed and each of its task runs ends
        Crashed or Cancelled (or NotReady, after a crashed upstream run), none left
        Running or Pending."""
        marks = tmp_path / "marks"
        marks.mkdir()
        started = time.monotonic()
        try:
            done = run_script(INTERRUPT_SCRIPT, task_runner, tmp_path, str(marks))
        finally:
            (marks / "stop").touch()  # let tasks still holding a worker elsewhere end
        elapsed = time.monotonic() - started
        assert done.returncode != 0 and "KeyboardInterrupt" in done.stderr, done.stderr[-3000:]
        assert elapsed < HOLD_SECONDS - 5, f"the script waited for its tasks ({elapsed:.1f} s)"
        with child_store(tmp_path) as store:
            (run,) = store.read_flow_runs()
            assert run.state.type is StateType.CRASHED and "KeyboardInterrupt" in run.state.message
            task_runs = store.read_task_runs(flow_run_id=run.id)
            assert task_runs, "no task run was recorded"
            # A run waiting on a crashed one may have ended NotReady before it was cancelled.
            ends = {r.name: [s.name for s in store.read_states(r.id)] for r in task_runs}
            assert all(names[-1] in ("Crashed", "Cancelled", "NotReady") for names in ends.values()), ends
            assert all(sum(name in ("Crashed", "Cancelled") for name in names) <= 1
                       for names in ends.values()), f"a run ended twice: {ends}"
