"""@flow / @task options: defaults, metadata, validation at decoration time, with_options."""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

from headwater import Flow, Task, flow, task
from headwater.errors import ConfigurationError
from headwater.specs import FlowSpec, TaskSpec


def test_bare_and_called_decorators_both_make_flows_and_tasks():
    """@flow, @flow(), @flow(name=...) and the same for @task all give Flow/Task objects."""

    def body():
        return 1

    assert isinstance(flow(body), Flow)
    assert isinstance(flow()(body), Flow)
    assert isinstance(flow(name="n")(body), Flow)
    assert isinstance(task(body), Task)
    assert isinstance(task()(body), Task)
    assert isinstance(task(retries=1)(body), Task)


def test_metadata_defaults_come_from_the_function():
    """A flow is named after its function with '_' turned into '-', a task keeps the
    function name, and the docstring is the description."""

    @flow
    def load_daily_sales():
        """Load the day's sales.

        Runs every morning."""

    @task
    def clean_rows():
        """Drop empty rows."""

    assert load_daily_sales.name == "load-daily-sales"
    assert load_daily_sales.description == "Load the day's sales.\n\nRuns every morning."
    assert clean_rows.name == "clean_rows"
    assert clean_rows.description == "Drop empty rows."


def test_explicit_metadata_wins_over_the_defaults():
    """name, description, version and tags given to the decorator are used as given."""

    @flow(name="sales", description="Custom text", version="2024.1")
    def load_daily_sales():
        """Docstring that is not used."""

    @task(name="clean", tags=["etl", "daily"])
    def clean_rows():
        pass

    assert (load_daily_sales.name, load_daily_sales.description, load_daily_sales.version) == (
        "sales", "Custom text", "2024.1")
    assert clean_rows.name == "clean"
    assert clean_rows.tags == frozenset({"etl", "daily"})


def test_options_read_as_attributes_and_sequences_normalise():
    """Options are readable on the object; tuples of delays or callbacks work like lists."""

    def on_failure(*args):
        pass

    @task(retries=3, retry_delay_seconds=(1, 10, 100), on_failure=on_failure,
          cache_key_fn="task_input_hash", cache_expiration=dt.timedelta(hours=1))
    def fetch():
        pass

    assert fetch.retries == 3
    assert fetch.retry_delay_seconds == [1, 10, 100]
    assert fetch.on_failure == [on_failure]
    assert fetch.cache_expiration == dt.timedelta(hours=1)


FLOW_FILE = '''
from headwater import flow

@flow
def versioned():
    return 1
'''


def _load(path):
    spec = importlib.util.spec_from_file_location(f"versioned_{abs(hash(str(path)))}_{os.getpid()}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _version_in_subprocess(path, tmp_path):
    code = textwrap.dedent(f"""
        import importlib.util
        spec = importlib.util.spec_from_file_location("m", {str(path)!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        print(module.versioned.version)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, timeout=60,
                         env={**os.environ, "HEADWATER_HOME": str(tmp_path / "home")})
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_default_version_is_a_hash_of_the_source_file_stable_across_processes(tmp_path):
    """The default version is the same in another process for the same file, and
    changes when the file's content changes."""
    path = tmp_path / "versioned_flows.py"
    path.write_text(FLOW_FILE)
    here = _load(path).versioned.version
    assert here and len(here) >= 16
    assert _version_in_subprocess(path, tmp_path) == here

    path.write_text(FLOW_FILE + "\n# a change\n")
    assert _version_in_subprocess(path, tmp_path) != here


def test_default_version_is_none_without_a_source_file():
    """A flow defined in code that has no file (exec'd text) has version None."""
    namespace: dict = {}
    exec(compile(FLOW_FILE, "<generated>", "exec"), namespace)
    assert namespace["versioned"].version is None


@pytest.mark.parametrize(
    ("decorator", "options", "named"),
    [
        (task, {"retries": -1}, "retries=-1"),
        (task, {"retries": "3"}, "retries='3'"),
        (task, {"retries": True}, "retries=True"),
        (task, {"retry_delay_seconds": "soon"}, "retry_delay_seconds='soon'"),
        (task, {"retry_delay_seconds": [1, -5]}, "retry_delay_seconds=[1, -5]"),
        (task, {"tags": 5}, "tags=5"),
        (task, {"tags": "etl"}, "tags='etl'"),
        (task, {"tags": ["etl", 3]}, "tags=['etl', 3]"),
        (task, {"cache_expiration": 60}, "cache_expiration=60"),
        (task, {"timeout_seconds": 0}, "timeout_seconds=0"),
        (task, {"name": ""}, "name=''"),
        (task, {"retires": 2}, "unknown option retires=2"),
        (flow, {"retries": -1}, "retries=-1"),
        (flow, {"flow_run_name": 42}, "flow_run_name=42"),
        (flow, {"validate_parameters": "yes"}, "validate_parameters='yes'"),
        (flow, {"task_runner": 5}, "task_runner=5"),
        (flow, {"tags": "nightly"}, "tags='nightly'"),
        (flow, {"colour": "red"}, "unknown option colour='red'"),
    ],
)
def test_invalid_options_fail_at_decoration_naming_the_option_and_value(decorator, options, named):
    """A bad option fails when the function is decorated, with one ConfigurationError
    naming the decorated function, the option and the value given."""

    def my_function():
        pass

    with pytest.raises(ConfigurationError) as info:
        decorator(**options)(my_function)
    message = str(info.value)
    assert named in message
    assert "'my_function'" in message
    assert "Traceback" not in message and "pydantic" not in message


def test_an_unknown_option_lists_the_valid_ones():
    """A misspelt option shows the options that exist, so the fix is obvious."""
    with pytest.raises(ConfigurationError, match=r"expected one of: .*retries"):
        task(retires=2)(lambda: None)


def test_an_unknown_option_suggests_the_closest_one():
    """A misspelt option names the option that was probably meant."""
    with pytest.raises(ConfigurationError, match=r"did you mean 'retries'\?"):
        task(retires=3)(lambda: None)
    with pytest.raises(ConfigurationError, match=r"did you mean 'flow_run_name'\?"):
        flow(flow_run_nam="x")(lambda: None)


def test_with_options_returns_a_validated_copy():
    """with_options changes only the copy, keeps the other options, and validates the
    changed values like the decorator does."""

    @task(retries=2, tags=["etl"])
    def fetch():
        pass

    copy = fetch.with_options(retries=5, name="fetch-more")
    assert (copy.retries, copy.name, copy.tags) == (5, "fetch-more", frozenset({"etl"}))
    assert (fetch.retries, fetch.name) == (2, "fetch")
    assert copy.fn is fetch.fn

    @flow(retries=1)
    def pipeline():
        pass

    assert pipeline.with_options(name="nightly").name == "nightly"
    assert pipeline.with_options(name="nightly").retries == 1
    with pytest.raises(ConfigurationError, match=r"retry_delay_seconds='later'"):
        pipeline.with_options(retry_delay_seconds="later")
    with pytest.raises(ConfigurationError, match=r"retries=-3"):
        fetch.with_options(retries=-3)


def test_specs_carry_every_documented_option():
    """FlowSpec and TaskSpec accept the options listed in DESIGN §2."""
    flow_options = {"name", "description", "version", "flow_run_name", "task_runner", "retries",
                    "retry_delay_seconds", "timeout_seconds", "validate_parameters",
                    "persist_result", "log_prints", "on_completion", "on_failure", "on_crashed"}
    task_options = {"name", "description", "tags", "task_run_name", "retries",
                    "retry_delay_seconds", "retry_jitter_factor", "retry_condition_fn",
                    "timeout_seconds", "cache_key_fn", "cache_expiration", "refresh_cache",
                    "persist_result", "result_serializer", "log_prints", "on_completion",
                    "on_failure", "on_crashed"}
    assert flow_options <= set(FlowSpec.model_fields)
    assert task_options <= set(TaskSpec.model_fields)


@pytest.mark.parametrize("options", [
    {"cache_expiration": dt.timedelta(hours=1)},
    {"refresh_cache": True},
])
def test_cache_options_without_a_cache_key_fn_warn_at_decoration(options):
    """cache_expiration or refresh_cache without cache_key_fn would be silently ignored:
    decorating warns, naming the option, and the warning points at the user's code."""
    option = next(iter(options))
    with pytest.warns(UserWarning, match=rf"{option}=.*has no effect without a cache_key_fn") as record:
        task(**options)(lambda: None)
    assert record[0].filename == __file__


def test_cache_options_with_a_cache_key_fn_do_not_warn(recwarn):
    """With a cache_key_fn, cache_expiration and refresh_cache are used: no warning."""
    from headwater.tasks import task_input_hash

    task(cache_key_fn=task_input_hash, cache_expiration=dt.timedelta(hours=1),
         refresh_cache=True)(lambda: None)
    assert not [w for w in recwarn if "cache_key_fn" in str(w.message)]
