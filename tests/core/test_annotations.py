"""allow_failure and quote around task arguments (headwater.utilities.annotations)."""

from __future__ import annotations

import pickle
import threading

import pytest

import headwater
from headwater import allow_failure, flow, task, unmapped
from headwater.errors import RunFailed
from headwater.futures import Future
from headwater.task_runners import SequentialTaskRunner
from headwater.utilities import annotations
from headwater.utilities.annotations import quote


@task
def explode(message="boom"):
    raise ValueError(message)


@task
def value(x):
    return x


@task
def describe(x):
    return repr(x)


@task
def kinds(x):
    """The types the task received, nested one level."""
    if isinstance(x, dict):
        return {k: type(v).__name__ for k, v in x.items()}
    if isinstance(x, list):
        return [type(v).__name__ for v in x]
    return type(x).__name__


def _task_states(session, flow_name):
    session.store.flush()
    (run,) = session.store.read_flow_runs(flow_name=flow_name)
    return {r.name: r.state for r in session.store.read_task_runs(flow_run_id=run.id)}, run


def test_the_annotations_are_one_set_of_objects_at_both_paths():
    """headwater.unmapped and headwater.allow_failure are the objects of
    headwater.utilities.annotations, and the engine's unmapped is the same class."""
    from headwater.engine.futures import unmapped as engine_unmapped

    assert headwater.unmapped is annotations.unmapped is engine_unmapped is unmapped
    assert headwater.allow_failure is annotations.allow_failure
    assert annotations.quote is quote


def test_annotations_compare_by_kind_and_value_and_pickle():
    """Equal when the same kind wraps equal values; repr shows the wrapper; unwrap and
    pickling give the value back."""
    assert allow_failure(1) == allow_failure(1) != quote(1)
    assert quote([1]).unquote() == [1] and unmapped(2).unwrap() == 2
    assert repr(allow_failure("x")) == "allow_failure('x')"
    assert pickle.loads(pickle.dumps(quote({"a": 1}))) == quote({"a": 1})
    assert quote(1).rewrap(2) == quote(2)


def test_a_failed_upstream_makes_the_downstream_not_ready_without_allow_failure(headwater_session):
    """The downstream never runs and ends NotReady, as before."""

    @flow
    def plain():
        return describe.submit(explode.submit()).wait()

    state = plain(return_state=True)
    assert state.is_failed()
    runs, _ = _task_states(headwater_session, "plain")
    assert sorted(s.name for s in runs.values()) == ["Failed", "NotReady"]


def test_allow_failure_runs_the_downstream_with_the_upstream_exception(headwater_session):
    """Submitted and called downstream runs both run and receive the exception object;
    the failure they were allowed does not fail the flow run."""

    @flow
    def tolerant():
        failing = explode.submit("disk full")
        submitted = describe.submit(allow_failure(failing)).result()
        called = describe(allow_failure(failing))
        return submitted, called

    assert tolerant() == ("ValueError('disk full')", "ValueError('disk full')")
    runs, run = _task_states(headwater_session, "tolerant")
    assert run.state.is_completed()
    assert sorted(s.name for s in runs.values()) == ["Completed", "Completed", "Failed"]


def test_allow_failure_around_lists_and_dicts_of_futures(headwater_session):
    """Every future inside is waited for; completed ones give their result, failed ones
    their exception."""

    @flow
    def nested():
        bad, good = explode.submit(), value.submit(3)
        return (kinds.submit(allow_failure([bad, good])).result(),
                kinds(allow_failure({"bad": bad, "good": good})))

    assert nested() == (["ValueError", "int"], {"bad": "ValueError", "good": "int"})


def test_a_future_also_passed_bare_must_complete(headwater_session):
    """allow_failure covers only where it is written: the same future passed bare as
    well still makes the downstream NotReady."""

    @task
    def both(a, b):
        return "ran"

    @flow
    def mixed():
        failing = explode.submit()
        return both.submit(allow_failure(failing), failing).wait()

    assert mixed(return_state=True).is_failed()
    runs, _ = _task_states(headwater_session, "mixed")
    assert "NotReady" in {s.name for s in runs.values()}


def test_allow_failure_in_wait_for_orders_without_stopping(headwater_session):
    """wait_for=[allow_failure(f)] (or any iterable of them) waits for f, then runs
    whatever f's outcome; a bare failed future in wait_for still stops it."""
    order = []

    @task
    def slow_failure():
        threading.Event().wait(0.05)
        order.append("upstream")
        raise RuntimeError("no")

    @task
    def cleanup():
        order.append("cleanup")
        return "cleaned"

    @flow
    def with_cleanup():
        failing = slow_failure.submit()
        cleaned = cleanup.submit(wait_for=[allow_failure(failing)]).result()
        single = cleanup.submit(wait_for=allow_failure(failing)).result()
        generated = cleanup.submit(wait_for=(f for f in [allow_failure(failing)])).result()
        stopped = cleanup.submit(wait_for=[failing]).wait()
        return cleaned, single, generated, stopped.name

    assert with_cleanup() == ("cleaned", "cleaned", "cleaned", "NotReady")
    assert order == ["upstream", "cleanup", "cleanup", "cleanup"]


def test_allow_failure_in_map_applies_to_every_item(headwater_session):
    """map over allow_failure([...]) runs one task per item, failed items included;
    unmapped(allow_failure(f)) passes f's exception to every run."""

    @task
    def pair(x, y):
        return f"{type(x).__name__}+{type(y).__name__}"

    @flow
    def mapped():
        bad, good = explode.submit(), value.submit(1)
        per_item = [f.result() for f in describe.map(allow_failure([bad, good]))]
        constant = [f.result() for f in pair.map([1, 2], unmapped(allow_failure(bad)))]
        return per_item, constant

    per_item, constant = mapped()
    assert per_item == ["ValueError('boom')", "1"]
    assert constant == ["int+ValueError", "int+ValueError"]


def test_wait_for_allow_failure_of_a_non_future_is_a_clear_error():
    """allow_failure(5) in wait_for names the bad value."""

    @flow
    def wrong():
        return value.submit(1, wait_for=[allow_failure(5)])

    with pytest.raises(TypeError, match=r"wait_for got allow_failure\(5\), which holds no future"):
        wrong()


def test_quote_passes_futures_through_unresolved_and_without_waiting():
    """A quoted list of futures reaches the task as those futures: the task does not
    wait for them and is not NotReady when one failed."""
    release = threading.Event()
    seen = {}

    @task
    def blocked():
        release.wait(5)
        return 1

    @task
    def receive(items):
        seen["types"] = [type(i) for i in items]
        seen["done"] = [i.done() for i in items]
        return "received"

    @flow
    def quoting():
        pending = blocked.submit()
        result = receive.submit(quote([pending])).result()
        release.set()
        return result

    assert quoting() == "received"
    assert seen == {"types": [Future], "done": [False]}


def test_quote_is_unwrapped_before_the_call_also_in_map_and_nested():
    """The task receives the quoted value, never the wrapper: top level, inside a list,
    and per item in map."""

    @flow(task_runner=SequentialTaskRunner())
    def unwrapped():
        return (kinds(quote({"a": 1})), kinds([quote(1), 2]),
                [f.result() for f in kinds.map(quote([1, "x"]))])

    assert unwrapped() == ({"a": "int"}, ["int", "int"], ["int", "str"])


def test_without_allow_failure_the_failure_still_fails_the_flow():
    """Reading a failure through allow_failure handles it; an unread one still fails the
    flow run."""

    @flow
    def careless():
        explode.submit()
        describe.submit(1)

    with pytest.raises(RunFailed):
        careless()
