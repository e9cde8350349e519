"""Any text round-trips through every field the store records (property tests).

Text is drawn from all of Unicode plus NUL and lone surrogates (what ``os.listdir()``
returns for a file name that is not UTF-8, e.g. ``"report-\\udcff.csv"``). For each
recorded field (flow run name, task run name, parameter keys and values, tags, a state's
message from an exception, log lines, the flow description, the cache key) the text
read back is the text written; text with lone surrogates reads back in its escaped
form, ``text.encode("utf-8", "backslashreplace").decode("utf-8")`` (``"\\udcff"`` is
stored as the six characters ``\\udcff``), and the run is recorded like any other.
Parameters and tags, stored as JSON, follow the same rule (JSON's escapes would join a
high and a low surrogate side by side into one character).
"""

from __future__ import annotations

import hashlib
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from headwater import flow, get_run_logger, get_store, task

# Any code point, with NUL and lone surrogates made likely. (st.text() leaves surrogates
# out even of an alphabet that has them, so text with them is joined from characters.)
CHARACTERS = st.one_of(
    st.characters(codec=None, categories=None),
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, categories=["Cs"]),
    st.just("\x00"),
)
TEXT = st.one_of(st.text(min_size=1, max_size=40),
                 st.lists(CHARACTERS, min_size=1, max_size=40).map("".join))

# A run name must not be blank (a run no one could find by name: one clear error,
# tests/reliability/test_odd_values.py); any other text is a name.
NAME = TEXT.filter(lambda text: text.strip())

# Bounded so the file runs in seconds; each example runs a flow and reads the store. No
# example database: a checkout gets no .hypothesis folder (a failure prints its example).
EXAMPLES = settings(max_examples=50, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# Always tried, besides what hypothesis draws: a file name os.listdir() gives for bytes
# that are not UTF-8, NUL, a high and a low surrogate side by side (two characters, not
# the one they would pair to), and text that only looks like an escape.
ALWAYS = ["report-\udcff.csv", "nul\x00inside", "\ud800\udc00", "\\udcff"]


def always(name: str) -> Any:
    """Decorate a property test with an ``@example`` per text of ALWAYS for argument ``name``."""
    def decorate(test: Any) -> Any:
        for text in reversed(ALWAYS):
            test = example(**{name: text})(test)
        return test
    return decorate


def stored(text: str) -> str:
    """What the store promises to give back for ``text``: itself, with each lone
    surrogate written as its backslash escape."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def run_flow(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a flow for its final state and wait until the store has everything."""
    state = fn(*args, return_state=True, **kwargs)
    get_store().flush()
    return state


@task
def echo(value: Any) -> Any:
    return value


@EXAMPLES
@given(text=NAME)
@always("text")
def test_flow_run_names(text: str) -> None:
    """A flow run name made from a parameter by a template is read back."""

    @flow(flow_run_name="{label}")
    def named(label):
        return 1

    state = run_flow(named, text)
    run = get_store().read_flow_run(state.state_details.flow_run_id)
    assert run is not None and run.name == stored(text)
    assert run.state.is_completed()


@EXAMPLES
@given(text=NAME)
@always("text")
def test_task_run_names(text: str) -> None:
    """A task run name given by a callable is read back."""

    @flow
    def naming():
        return echo.with_options(task_run_name=lambda: text)(1, return_state=True)

    state = run_flow(naming)
    (run,) = get_store().read_task_runs(flow_run_id=state.state_details.flow_run_id)
    assert run.name == stored(text)
    assert run.state.is_completed()


@EXAMPLES
@given(key=TEXT, value=TEXT)
@example(key="k", value="report-\udcff.csv")
@example(key="\ud800\udc00", value="v")
@example(key="nul\x00key", value="\x00")
def test_parameter_keys_and_values(key: str, value: str) -> None:
    """Text keys and values in flow and task parameters read back as written, lone
    surrogates escaped; never as other text (a high and a low surrogate are two
    characters, not the one they would pair to)."""

    @flow
    def taking(data, items):
        echo({key: value})
        return 1

    state = run_flow(taking, {key: value}, [value])
    store = get_store()
    run = store.read_flow_run(state.state_details.flow_run_id)
    assert run.parameters == {"data": {stored(key): stored(value)}, "items": [stored(value)]}
    (task_run,) = store.read_task_runs(flow_run_id=run.id)
    assert task_run.parameters == {"value": {stored(key): stored(value)}}


@EXAMPLES
@given(tag=TEXT)
@always("tag")
def test_tags(tag: str) -> None:
    """A task's tag is read back on its task run, lone surrogates escaped."""

    @flow
    def tagged():
        return echo.with_options(tags=[tag])(1)

    state = run_flow(tagged)
    (run,) = get_store().read_task_runs(flow_run_id=state.state_details.flow_run_id)
    assert run.tags == frozenset({stored(tag)})


@EXAMPLES
@given(text=TEXT)
@always("text")
def test_state_messages_from_exceptions(text: str) -> None:
    """An exception's message, with a file name from os.listdir() say, reaches the
    failed task run's state message and its history, and the flow run is Failed."""

    @task
    def fails():
        raise ValueError(text)

    @flow
    def failing():
        return fails()

    state = run_flow(failing)
    assert state.is_failed()
    store = get_store()
    run = store.read_flow_run(state.state_details.flow_run_id)
    assert run is not None and run.state.is_failed()
    (task_run,) = store.read_task_runs(flow_run_id=run.id)
    assert task_run.state.is_failed()
    assert f"ValueError: {stored(text)}" in task_run.state.message
    assert [s.name for s in store.read_states(task_run.id)] == ["Pending", "Running", "Failed"]


@EXAMPLES
@given(text=TEXT)
@always("text")
def test_log_lines(text: str) -> None:
    """A line logged with get_run_logger() in a task and in a flow is read back."""

    @task
    def logs():
        get_run_logger().warning("task says %s", text)

    @flow
    def logging_flow():
        get_run_logger().warning("flow says %s", text)
        logs()

    state = run_flow(logging_flow)
    lines = [r["message"] for r in get_store().read_logs(flow_run_id=state.state_details.flow_run_id)]
    assert f"flow says {stored(text)}" in lines
    assert f"task says {stored(text)}" in lines


@EXAMPLES
@given(text=TEXT)
@always("text")
def test_flow_descriptions(text: str) -> None:
    """A flow's description is read back in the store's list of flows."""

    @flow(name="described", description=text)
    def described():
        return 1

    run_flow(described)
    (summary,) = [f for f in get_store().read_flows() if f.name == "described"]
    assert summary.description == stored(text)


@EXAMPLES
@given(text=TEXT)
@always("text")
def test_cache_keys(text: str) -> None:
    """A cache key is stored as its entry's key (one with a lone surrogate as its hash,
    which no escaped text can equal), and the next call with it is a hit."""

    @task(cache_key_fn=lambda context, parameters: text)
    def cached(n):
        return n

    @flow
    def caching(n):
        return cached(n, return_state=True).name

    assert run_flow(caching, 1).result() in ("Completed", "Cached")
    if stored(text) == text:
        key = text
    else:
        key = "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    assert key in [e.key for e in get_store().read_cache_entries()]
    assert run_flow(caching, 2).result() == "Cached"
