"""Calling flows: return values, failures, return_state, options and metadata."""

from __future__ import annotations

import pytest

from headwater import flow, task
from headwater.errors import ConfigurationError


def test_calling_a_flow_returns_its_value():
    """A flow call runs the body and returns what it returned."""

    @flow
    def add(a, b):
        return a + b

    assert add(2, 3) == 5


def test_a_failing_flow_raises_the_original_exception():
    """The caller sees the body's own exception type and message."""

    class Oops(Exception):
        pass

    @flow
    def failing():
        raise Oops("broken on purpose")

    with pytest.raises(Oops, match="broken on purpose"):
        failing()


def test_return_state_gives_the_final_state_instead_of_raising():
    """return_state=True returns the State for success and for failure."""

    @flow
    def maybe(fail: bool):
        if fail:
            raise ValueError("asked to fail")
        return "fine"

    ok = maybe(False, return_state=True)
    assert ok.is_completed() and ok.result() == "fine"
    bad = maybe(True, return_state=True)
    assert bad.is_failed()
    with pytest.raises(ValueError, match="asked to fail"):
        bad.result()


def test_flow_names_default_to_the_function_name_with_dashes():
    """name defaults to the function name with '_' → '-'; description to the docstring."""

    @flow
    def my_nice_flow():
        """Does nice things."""

    assert my_nice_flow.name == "my-nice-flow"
    assert my_nice_flow.description == "Does nice things."


def test_flow_version_defaults_to_a_hash_of_its_source_file():
    """Without version=, the version is a stable hash of the defining file."""

    @flow
    def versioned():
        pass

    @flow(version="1.2.3")
    def pinned():
        pass

    assert versioned.version and len(versioned.version) >= 8
    assert versioned.version == versioned.with_options().version
    assert pinned.version == "1.2.3"


def test_the_flow_run_records_name_version_and_parameters(headwater_session):
    """The store keeps the flow run's flow name, version and parameters (defaults too)."""

    @flow(name="Weather Report", version="7")
    def report(station: str, days: int = 3):
        return station * days

    report("n")
    store = headwater_session.store
    store.flush()
    (run,) = store.read_flow_runs(flow_name="Weather Report")
    assert run.flow_version == "7"
    assert run.parameters == {"station": "n", "days": 3}
    assert run.state.is_completed()
    assert run.start_time is not None and run.end_time >= run.start_time


def test_with_options_copies_and_validates_again():
    """with_options returns a changed copy; bad options are rejected with their name."""

    @flow(retries=1)
    def base():
        return 1

    other = base.with_options(name="renamed", retries=3)
    assert (other.name, other.retries) == ("renamed", 3)
    assert (base.name, base.retries) == ("base", 1)
    with pytest.raises(ConfigurationError, match="retries"):
        base.with_options(retries=-1)


def test_a_missing_argument_is_a_type_error_naming_it():
    """Calling a flow without a required argument: TypeError naming the argument."""

    @flow
    def needs(city, count=1):
        return city

    with pytest.raises(TypeError, match="city"):
        needs()


def test_an_extra_argument_is_a_type_error_naming_it():
    """An unexpected keyword or too many positionals: TypeError naming the problem."""

    @flow
    def needs(city):
        return city

    with pytest.raises(TypeError, match="unexpected keyword argument 'town'"):
        needs(town="x")
    with pytest.raises(TypeError, match="too many positional arguments"):
        needs("a", "b")


def test_a_flow_may_return_a_state():
    """A flow returning a failed task state fails; a completed one gives its result."""

    @task
    def boom():
        raise RuntimeError("task broke")

    @task
    def fine():
        return 42

    @flow
    def returns_failed():
        return boom(return_state=True)

    @flow
    def returns_completed():
        return fine(return_state=True)

    state = returns_failed(return_state=True)
    assert state.is_failed() and "not completed" in state.message
    assert returns_completed() == 42


def test_a_handled_task_failure_does_not_fail_the_flow():
    """A flow that catches its task's exception completes."""

    @task
    def boom():
        raise RuntimeError("task broke")

    @flow
    def careful():
        try:
            boom()
        except RuntimeError:
            return "handled"

    assert careful() == "handled"


def test_kwargs_and_varargs_flows_bind_and_run():
    """Flows with *args/**kwargs receive their arguments unchanged."""

    @flow
    def gather(first, *rest, sep="-", **extra):
        return sep.join([first, *rest]) + "".join(f"{k}{v}" for k, v in sorted(extra.items()))

    assert gather("a", "b", "c", sep="+", z=1) == "a+b+cz1"


def test_flow_tags_are_validated_and_recorded_on_its_runs():
    """``@flow(tags=[...])`` tags every run of the flow (readable at runtime and in the
    store); tags that are not a list of strings fail at decoration."""
    import pytest

    from headwater import flow, get_store
    from headwater.errors import ConfigurationError
    from headwater.runtime import flow_run

    @flow(tags=["nightly", "etl"])
    def tagged() -> list:
        return flow_run.tags

    assert tagged() == ["etl", "nightly"]
    store = get_store()
    store.flush()
    assert store.read_flow_runs(limit=1)[0].tags == frozenset({"etl", "nightly"})
    with pytest.raises(ConfigurationError, match="tags"):
        flow(tags="nightly")(lambda: None)
