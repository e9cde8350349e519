"""task.map(): one submitted run per element, unmapped constants, zipped iterables."""

from __future__ import annotations

import pytest

from headwater import flow, task, unmapped


@task
def add(x, y=0):
    return x + y


@task
def numbers(n):
    return list(range(n))


def _results(futures):
    return [f.result() for f in futures]


def test_map_submits_one_run_per_element_in_order(headwater_session):
    """map over a list gives one future per element, results in input order, and one
    recorded task run each."""

    @flow
    def f():
        return _results(add.map([1, 2, 3]))

    assert f() == [1, 2, 3]
    headwater_session.store.flush()
    (run,) = headwater_session.store.read_flow_runs(flow_name="f")
    runs = headwater_session.store.read_task_runs(flow_run_id=run.id)
    assert sorted(r.parameters["x"] for r in runs) == [1, 2, 3]
    assert all(r.state.is_completed() for r in runs)


def test_unmapped_passes_the_same_value_to_every_run():
    """unmapped(value) is a constant, even when it is a list."""

    @task
    def extend(item, base):
        return base + [item]

    @flow
    def f():
        return _results(extend.map([1, 2], unmapped([0])))

    assert f() == [[0, 1], [0, 2]]


def test_several_iterables_are_zipped():
    """Two mapped arguments are paired element by element."""

    @flow
    def f():
        return _results(add.map([1, 2, 3], y=[10, 20, 30]))

    assert f() == [11, 22, 33]


def test_iterables_of_different_lengths_are_an_error():
    """Mismatched lengths raise a ValueError naming each argument's length, and no run
    is submitted."""
    submitted = []

    @task
    def record(x, y):
        submitted.append((x, y))

    @flow
    def f():
        record.map([1, 2, 3], [1, 2])

    with pytest.raises(ValueError, match=r"different lengths \(x=3, y=2\)"):
        f()
    assert submitted == []


def test_map_with_nothing_to_map_over_is_an_error():
    """With no iterable argument, map raises a TypeError that shows the arguments."""

    @flow
    def f():
        add.map(1, y=unmapped(2))

    with pytest.raises(TypeError, match=r"needs at least one iterable argument.*x=1"):
        f()


def test_strings_and_dicts_are_passed_whole():
    """A str or dict argument is a constant, not something to map over."""

    @task
    def describe(item, label, options):
        return f"{label}:{item}:{sorted(options)}"

    @flow
    def f():
        return _results(describe.map([1, 2], "n", {"a": 1}))

    assert f() == ["n:1:['a']", "n:2:['a']"]


def test_a_default_list_is_not_mapped_over():
    """Only arguments the caller passed are mapped: a parameter left at a list default is
    passed whole."""

    @task
    def pick(i, choices=["a", "b", "c"]):
        return choices[i]

    @flow
    def f():
        return _results(pick.map([0, 2]))

    assert f() == ["a", "c"]


def test_generators_and_ranges_are_mapped_over():
    """Any iterable (a range, a generator) can be mapped over."""

    @flow
    def f():
        return _results(add.map(range(3), y=(i * 10 for i in range(3))))

    assert f() == [0, 11, 22]


def test_an_empty_iterable_submits_nothing():
    """Mapping over an empty list returns an empty list of futures."""

    @flow
    def f():
        return add.map([])

    assert f() == []


def test_a_future_is_mapped_over_its_result_and_is_a_dependency(headwater_session):
    """map over a future maps over its result, and every mapped run records it upstream."""

    @flow
    def f():
        upstream = numbers.submit(3)
        mapped = add.map(upstream, y=unmapped(100))
        return _results(mapped), upstream.task_run_id, [m.task_run_id for m in mapped]

    values, upstream_id, mapped_ids = f()
    assert values == [100, 101, 102]
    headwater_session.store.flush()
    for run_id in mapped_ids:
        assert headwater_session.store.read_task_run(run_id).upstream_ids == (upstream_id,)


def test_a_future_with_a_result_that_is_not_iterable_is_an_error():
    """Mapping over a future whose result is a number says so and suggests unmapped."""

    @flow
    def f():
        add.map(add.submit(1))

    with pytest.raises(TypeError, match=r"argument 'x' is a future whose result 1 is not iterable"):
        f()


def test_futures_inside_the_mapped_list_are_dependencies(headwater_session):
    """A list of futures (e.g. another map's output) maps one future per run, each
    resolved and recorded as that run's upstream."""

    @flow
    def f():
        first = add.map([1, 2])
        second = add.map(first, y=unmapped(10))
        return _results(second), [a.task_run_id for a in first], [b.task_run_id for b in second]

    values, first_ids, second_ids = f()
    assert values == [11, 12]
    headwater_session.store.flush()
    assert [headwater_session.store.read_task_run(i).upstream_ids for i in second_ids] == [
        (first_ids[0],), (first_ids[1],)
    ]


def test_map_accepts_wait_for():
    """wait_for on map applies to every mapped run."""
    order = []

    @task
    def first():
        order.append("first")

    @task
    def each(i):
        order.append(i)

    @flow
    def f():
        gate = first.submit()
        for future in each.map([1, 2], wait_for=[gate]):
            future.wait()

    f()
    assert order[0] == "first" and sorted(order[1:]) == [1, 2]


def test_map_outside_a_flow_is_a_clear_error():
    """task.map() with no flow run raises a RuntimeError saying to call it in a flow."""
    with pytest.raises(RuntimeError, match=r"add.map\(\) was called outside a flow"):
        add.map([1, 2])


def test_a_failed_mapped_run_that_is_not_read_fails_the_flow():
    """One failing element among three fails the flow unless its future is read."""

    @task
    def invert(x):
        return 1 / x

    @flow
    def f():
        invert.map([1, 0, 2])

    state = f(return_state=True)
    assert state.is_failed() and state.message == "1/3 states failed."


def test_unmapped_passed_to_a_call_or_submit_reaches_the_task_as_its_value():
    """``unmapped(x)`` only matters to ``.map``; called or submitted, the task gets ``x``."""
    from headwater import flow, task, unmapped

    @task
    def echo(value):
        return value

    @flow
    def direct_and_submitted():
        return echo(unmapped([1, 2])), echo.submit(unmapped("a")).result()

    assert direct_and_submitted() == ([1, 2], "a")


def test_map_returns_a_future_list_with_wait_and_result():
    """Prefect 3's ``PrefectFutureList``: ``.wait()`` and ``.result()`` for all the
    futures, and passed to a task it is the list of results."""
    from headwater.futures import FutureList

    @task
    def square(x: int) -> int:
        return x * x

    @task
    def total(values: list) -> int:
        return sum(values)

    @flow
    def squares() -> tuple:
        futures = square.map([1, 2, 3])
        futures.wait()
        return type(futures), futures.result(), total(futures), total.submit(futures).result()

    kind, results, direct, submitted = squares()
    assert kind is FutureList and results == [1, 4, 9] and direct == submitted == 14
