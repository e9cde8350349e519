"""Run names: templates, callables, generated slugs, default task run names, bad input."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys

import pytest

from headwater import flow, task
from headwater.errors import RunNameError
from headwater.plugins.run_naming import ADJECTIVES, ANIMALS
from headwater.runtime import flow_run, task_run

THURSDAY = dt.date(2026, 11, 26)


def _flow_run(store, flow_name):
    store.flush()
    return store.read_flow_runs(flow_name=flow_name)[0]


def test_a_flow_run_name_template_formats_the_parameters(headwater_session):
    """'{name}-on-{date:%A}' with name='marvin' on a Thursday → 'marvin-on-Thursday'."""

    @flow(flow_run_name="{name}-on-{date:%A}")
    def greet(name: str, date: dt.date):
        return flow_run.name

    assert greet("marvin", THURSDAY) == "marvin-on-Thursday"
    assert _flow_run(headwater_session.store, "greet").name == "marvin-on-Thursday"


def test_templates_see_default_parameter_values():
    """A parameter left at its default is available to the template."""

    @flow(flow_run_name="load-{table}-{limit}")
    def load(table: str, limit: int = 100):
        return flow_run.name

    assert load("users") == "load-users-100"


def test_a_name_callable_reads_the_runtime(headwater_session):
    """A callable flow_run_name may read headwater.runtime.flow_run."""

    def name_it():
        return f"{flow_run.flow_name}-with-{flow_run.parameters['n']}"

    @flow(flow_run_name=name_it)
    def counted(n: int = 3):
        return flow_run.name

    assert counted() == "counted-with-3"


def test_unnamed_flow_runs_get_adjective_animal_slugs():
    """Without flow_run_name, each run gets a generated two-word slug."""

    @flow
    def anonymous():
        return flow_run.name

    names = {anonymous() for _ in range(5)}
    for name in names:
        adjective, animal = name.split("-")
        assert adjective in ADJECTIVES and animal in ANIMALS
    assert len(names) > 1


def test_default_task_run_names_count_within_the_flow_run():
    """Task runs are named '{task}-{8 hex}-{n}', n counting per task within a flow run."""

    @task
    def hello_task():
        return task_run.name

    @flow
    def hello():
        return [hello_task() for _ in range(3)]

    first = hello()
    second = hello()
    assert all(re.fullmatch(r"hello_task-[0-9a-f]{8}-\d", n) for n in first)
    assert [n[-1] for n in first] == ["0", "1", "2"]
    assert first == second  # the counter starts again in every flow run
    assert len({n.rsplit("-", 1)[0] for n in first}) == 1


def test_the_task_key_is_stable_across_processes(tmp_path):
    """The 8-hex part of a task run name is the same in another Python process, started
    in another directory, where the same function in the same file has another module
    name."""

    @task
    def stable_key():
        pass

    code = (
        "from headwater import task\n"
        "ns = {'__name__': 'loaded_otherwise'}\n"
        "exec(compile('def stable_key(): pass', %r, 'exec'), ns)\n"
        "ns['stable_key'].__qualname__ = %r\n"
        "print(task(ns['stable_key']).task_key)"
    ) % (stable_key.fn.__code__.co_filename, stable_key.fn.__qualname__)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=tmp_path)
    assert out.stdout.strip() == stable_key.task_key
    assert re.fullmatch(r"[0-9a-f]{8}", stable_key.task_key)


def test_task_run_name_templates_and_callables():
    """task_run_name works as a template over the task's parameters or a callable."""

    def describe():
        return f"{task_run.task_name}-for-{task_run.parameters['user']}"

    @task(task_run_name="shout-{user}-on-{day:%A}")
    def shout(user, day):
        return task_run.name

    @task(task_run_name=describe)
    def whisper(user):
        return task_run.name

    @flow
    def names():
        return shout("marvin", THURSDAY), whisper("ford")

    assert names() == ("shout-marvin-on-Thursday", "whisper-for-ford")


# -- bad input ---------------------------------------------------------------------------


def test_a_template_naming_a_missing_parameter_names_the_field_and_lists_parameters():
    """'{nope}' in a flow_run_name: an error naming 'nope' and the flow's parameters."""
    called = []

    @flow(flow_run_name="{nope}-run")
    def misnamed(city: str, days: int = 1):
        called.append(1)

    with pytest.raises(RunNameError) as info:
        misnamed("oslo")
    message = str(info.value)
    assert "{nope}" in message and "city, days" in message and "misnamed" in message
    assert called == []


def test_a_failed_run_name_is_recorded_as_a_flow_run_that_could_not_start(headwater_session, capsys):
    """The run is still recorded (under a generated name), Failed, with a readable log."""

    @flow(flow_run_name="{nope}")
    def misnamed():
        pass

    state = misnamed(return_state=True)
    assert state.is_failed()
    assert state.message.startswith("Flow run could not start: run name template '{nope}'")
    run = _flow_run(headwater_session.store, "misnamed")
    assert run.state.is_failed()
    err = capsys.readouterr().err
    assert "Flow run could not start" in err and "Finished in state Failed(" in err


def test_a_name_callable_that_raises_names_the_callable():
    """A raising flow_run_name callable: RunNameError naming it and its error."""

    def broken_namer():
        raise ValueError("no name today")

    @flow(flow_run_name=broken_namer)
    def uses_broken_namer():
        pass

    with pytest.raises(RunNameError, match="broken_namer.*ValueError: no name today"):
        uses_broken_namer()


def test_a_name_callable_returning_a_non_string_names_the_callable():
    """A flow_run_name callable returning 42: an error naming it and the value."""

    def numeric_namer():
        return 42

    @flow(flow_run_name=numeric_namer)
    def uses_numeric_namer():
        pass

    with pytest.raises(RunNameError, match="numeric_namer.*returned 42; expected a string"):
        uses_numeric_namer()


def test_a_bad_task_run_name_fails_the_flow_naming_the_task_and_field():
    """task_run_name naming a missing parameter: an error naming the task and the field."""

    @task(task_run_name="{missing}")
    def named_badly(x):
        return x

    @flow
    def calls_it():
        return named_badly(1)

    with pytest.raises(RunNameError, match=r"named_badly.*\{missing\}.*parameters: x"):
        calls_it()


def test_a_name_template_formats_the_coerced_parameters():
    """Parameters are validated before the run is named: a date passed as text is a
    datetime by the time ``{date:%A}`` formats it (as it is in the flow body)."""
    from headwater import get_store

    @flow(flow_run_name="{name}-on-{date:%A}")
    def greet(name: str, date: dt.datetime) -> str:
        return f"{name} {date:%Y}"

    assert greet(name="marvin", date="2026-11-26T10:00") == "marvin 2026"
    store = get_store()
    store.flush()
    assert store.read_flow_runs(limit=1)[0].name == "marvin-on-Thursday"


def test_a_task_run_namer_gets_the_index_and_may_leave_a_run_to_the_default():
    """A plugin's headwater_task_run_name sees each run's index within the flow run; a
    None answer leaves the run to run_naming's '{task}-{8 hex}-{index}'."""
    from headwater import Session, hookimpl

    class EvenNames:
        @hookimpl
        def headwater_task_run_name(self, task, index):
            return f"even-{index}" if index % 2 == 0 else None

    @task
    def step():
        return task_run.name

    @flow
    def steps():
        return [step() for _ in range(3)]

    with Session(plugins=[EvenNames()]):
        names = steps()
    assert names[0] == "even-0" and names[2] == "even-2"
    assert names[1] == f"step-{step.task_key}-1"


def test_without_run_naming_a_run_is_named_by_its_id(tmp_path):
    """The last resort when no plugin names a run: its id, for flow and task runs."""
    from headwater import Session

    @task
    def step():
        return task_run.name, task_run.id

    @flow
    def steps():
        return flow_run.name, flow_run.id, step()

    env = {"HEADWATER_HOME": str(tmp_path), "HEADWATER_DISABLE_PLUGINS": "run_naming",
           "HEADWATER_DISABLE_PLUGIN_AUTOLOAD": "1"}
    with Session(env=env):
        flow_name, flow_id, (task_name, task_id) = steps()
    assert (flow_name, task_name) == (flow_id, task_id)
