"""Flow parameters: binding, validation and coercion against annotations."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import pydantic
import pytest

from headwater import flow
from headwater.errors import ParameterError


def test_parameters_are_coerced_to_their_annotations():
    """'3' for an int and an ISO string for a date arrive as int and date."""

    @flow
    def typed(n: int, day: dt.date):
        return n, day

    assert typed("3", "2026-11-26") == (3, dt.date(2026, 11, 26))


class Point(pydantic.BaseModel):
    x: int
    y: int


def test_pydantic_models_are_built_from_dicts():
    """A dict passed for a pydantic-model parameter arrives as the model."""

    @flow
    def where(p: Point):
        return p

    assert where({"x": "1", "y": 2}) == Point(x=1, y=2)


def test_invalid_parameter_fails_the_flow_naming_it_and_never_runs_the_body(headwater_session):
    """A value that does not validate: Failed, message names the parameter, body not called."""
    calls = []

    @flow
    def strict(count: int, label: str = "x"):
        calls.append(count)

    state = strict("many", return_state=True)
    assert state.is_failed()
    assert "count" in state.message and "'many'" in state.message
    assert calls == []
    with pytest.raises(ParameterError, match="count"):
        state.result()
    store = headwater_session.store
    store.flush()
    (run,) = store.read_flow_runs(flow_name="strict")
    assert [s.name for s in store.read_states(run.id)] == ["Pending", "Failed"]


def test_invalid_parameter_raises_a_type_error_when_called_plainly():
    """Without return_state the validation failure raises (a TypeError subclass)."""

    @flow
    def strict(count: int):
        return count

    with pytest.raises(TypeError, match="count"):
        strict("many")


def test_validation_failure_is_logged_and_calls_on_failure(capsys):
    """The failed start is logged with a Finished line, and on_failure callbacks run."""
    seen = []

    @flow(on_failure=[lambda f, run, state: seen.append(state.name)])
    def strict(count: int):
        return count

    strict("many", return_state=True)
    err = capsys.readouterr().err
    assert "Flow run could not start" in err and "count" in err
    assert "Finished in state Failed(" in err
    assert seen == ["Failed"]


def test_validate_parameters_false_passes_values_through():
    """validate_parameters=False leaves values exactly as given."""

    @flow(validate_parameters=False)
    def loose(count: int):
        return count

    assert loose("many") == "many"


def test_unannotated_parameters_pass_through_unchanged():
    """Parameters without annotations are not validated or converted."""

    @flow
    def anything(value, n: int = 0):
        return value, n

    marker = object()
    assert anything(marker, "4") == (marker, 4)


def test_runtime_parameters_hold_the_coerced_values():
    """The recorded and runtime parameters are the validated values, defaults included."""
    from headwater.runtime import flow_run

    @flow
    def seen(n: int, unit: str = "m"):
        return flow_run.parameters

    assert seen("5") == {"n": 5, "unit": "m"}


def test_an_unresolvable_annotation_leaves_only_that_parameter_unvalidated():
    """A local class named in a string annotation does not switch off the others' coercion."""

    class Local:
        pass

    @flow
    def mixed(thing: Local, n: int):  # "Local" cannot be resolved from module globals
        return thing, n

    marker = Local()
    assert mixed(marker, "2") == (marker, 2)


def test_annotated_constraints_are_enforced(headwater_session):
    """Constraints inside Annotated[...] (here Field(gt=0)) are validated, not dropped with
    the metadata: 0 fails the run naming the parameter, 5 passes; a None default keeps them."""
    @flow
    def limited(n: Annotated[int, pydantic.Field(gt=0)], m: Annotated[int, pydantic.Field(gt=0)] = None):
        return n, m

    assert limited(5) == (5, None)
    state = limited(0, return_state=True)
    assert state.is_failed() and "n=0" in state.message and "greater than 0" in state.message
    assert limited(1, m=0, return_state=True).is_failed()
