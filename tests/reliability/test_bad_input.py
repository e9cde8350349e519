"""Bad input gets one clear line, at the right time.

Every row of the table is a file a user could write (or a ``headwater run`` command line
over one). A bad decorator option fails when the file is imported, before any flow or
task body runs, with one line naming the option, the value and what was expected;
``headwater run`` prints that line as its only output, ``headwater: error: ...``. The
bodies in the table touch a marker file when they run, so a row also proves that no work
was done before the error.
"""

from __future__ import annotations

import importlib.util
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from headwater.cli import main

PRELUDE = textwrap.dedent('''\
    import datetime
    import math
    import pathlib

    from headwater import flow, task
    from headwater.tasks import task_input_hash


    def ran():
        """Every body calls this first: the marker file says that work was done."""
        pathlib.Path(__file__).with_suffix(".ran").touch()
''')


def flow_with(options: str) -> str:
    return PRELUDE + textwrap.dedent(f'''
        @flow({options})
        def main():
            ran()
    ''')


def task_with(options: str) -> str:
    return PRELUDE + textwrap.dedent(f'''
        @task({options})
        def step(x=1):
            ran()
            return x


        @flow
        def main():
            ran()
            return step()
    ''')


def task_with_options(options: str) -> str:
    return PRELUDE + textwrap.dedent(f'''
        @task(retries=1)
        def step():
            ran()


        step = step.with_options({options})


        @flow
        def main():
            ran()
            step()
    ''')


@dataclass
class Case:
    id: str
    code: str
    expect: list[str]
    params: list[str] = field(default_factory=list)
    #: The error comes from the decorator (at import), not from ``headwater run`` itself.
    at_import: bool = True
    #: Other files next to the case's file.
    files: dict[str, str] = field(default_factory=dict)
    #: Already rejected before this suite: kept so that it stays so.
    regression: bool = False


RAISES_AT_IMPORT = PRELUDE + textwrap.dedent('''
    ROWS = 1 / 0


    @flow
    def main():
        ran()
''')

CASES = [
    # -- retry delays: numbers of seconds, finite, at most a year; a list needs one at least
    Case("flow-retry-delay-nan", flow_with("retries=1, retry_delay_seconds=math.nan"),
         ["retry_delay_seconds=nan", "expected a number of seconds"]),
    Case("task-retry-delay-nan", task_with("retries=1, retry_delay_seconds=math.nan"),
         ["retry_delay_seconds=nan", "expected a number of seconds"]),
    Case("task-retry-delay-inf", task_with("retries=1, retry_delay_seconds=math.inf"),
         ["retry_delay_seconds=inf", "expected a number of seconds"]),
    Case("flow-retry-delay-huge", flow_with("retries=1, retry_delay_seconds=1e12"),
         ["retry_delay_seconds=1000000000000.0", "one year"]),
    Case("task-retry-delay-list-with-nan", task_with("retries=2, retry_delay_seconds=[1, math.nan]"),
         ["retry_delay_seconds=[1, nan]", "expected"]),
    Case("task-retry-delay-empty-list", task_with("retries=1, retry_delay_seconds=[]"),
         ["retry_delay_seconds=[]", "non-empty list"]),
    Case("flow-retry-delay-empty-list", flow_with("retry_delay_seconds=[]"),
         ["retry_delay_seconds=[]", "non-empty list"]),
    Case("task-retry-delay-negative", task_with("retries=1, retry_delay_seconds=[1, -5]"),
         ["retry_delay_seconds=[1, -5]"], regression=True),
    # -- retries: a whole number >= 0
    Case("task-retries-negative", task_with("retries=-1"), ["retries=-1"], regression=True),
    Case("task-retries-float", task_with("retries=1.5"), ["retries=1.5"], regression=True),
    Case("flow-retries-bool", flow_with("retries=True"), ["retries=True"], regression=True),
    # -- jitter: finite, >= 0, and the jittered delay within a year
    Case("task-jitter-nan", task_with("retries=1, retry_jitter_factor=math.nan"),
         ["retry_jitter_factor=nan"], regression=True),
    Case("task-jitter-inf", task_with("retries=1, retry_delay_seconds=1, retry_jitter_factor=math.inf"),
         ["retry_jitter_factor=inf", "expected a finite number"]),
    Case("task-jitter-negative", task_with("retries=1, retry_jitter_factor=-0.5"),
         ["retry_jitter_factor=-0.5"], regression=True),
    # -- timeouts: above 0, at most a year (None or math.inf: no timeout)
    Case("flow-timeout-nan", flow_with("timeout_seconds=math.nan"),
         ["timeout_seconds=nan"], regression=True),
    Case("task-timeout-nan", task_with("timeout_seconds=math.nan"),
         ["timeout_seconds=nan"], regression=True),
    Case("task-timeout-huge", task_with("timeout_seconds=1e12"),
         ["timeout_seconds=1000000000000.0", "one year"]),
    Case("flow-timeout-zero", flow_with("timeout_seconds=0"), ["timeout_seconds=0"], regression=True),
    # -- cache expiration: a positive timedelta the store can date (at most 100 years)
    Case("task-cache-expiration-max",
         task_with("cache_key_fn=task_input_hash, cache_expiration=datetime.timedelta.max"),
         ["cache_expiration=datetime.timedelta(days=999999999", "at most 100 years"]),
    Case("task-cache-expiration-negative",
         task_with("cache_key_fn=task_input_hash, cache_expiration=datetime.timedelta(seconds=-1)"),
         ["cache_expiration=datetime.timedelta(days=-1, seconds=86399)", "above 0"]),
    Case("task-cache-expiration-zero",
         task_with("cache_key_fn=task_input_hash, cache_expiration=datetime.timedelta(0)"),
         ["cache_expiration=datetime.timedelta(0)", "above 0"]),
    Case("task-cache-expiration-seconds", task_with("cache_key_fn=task_input_hash, cache_expiration=60"),
         ["cache_expiration=60", "datetime.timedelta"], regression=True),
    # -- run names: a blank template would name every run ''
    Case("flow-run-name-empty", flow_with("flow_run_name=''"), ["flow_run_name=''", "non-empty"]),
    Case("flow-run-name-blank", flow_with("flow_run_name='  '"), ["flow_run_name='  '", "non-empty"]),
    Case("task-run-name-empty", task_with("task_run_name=''"), ["task_run_name=''", "non-empty"]),
    # -- with_options validates like the decorator
    Case("with-options-retry-delay-nan", task_with_options("retry_delay_seconds=math.nan"),
         ["retry_delay_seconds=nan", "expected"]),
    Case("with-options-cache-expiration-max",
         task_with_options("cache_key_fn=task_input_hash, cache_expiration=datetime.timedelta.max"),
         ["cache_expiration=datetime.timedelta(days=999999999", "at most 100 years"]),
    Case("with-options-timeout-nan", task_with_options("timeout_seconds=math.nan"),
         ["timeout_seconds=nan"], regression=True),
    # -- decorating a class: its calls would record runs that only build an instance
    Case("flow-on-a-class", PRELUDE + "\n@flow\nclass main:\n    def __init__(self):\n        ran()\n",
         ["@flow decorates a function", "the class 'main'"]),
    Case("task-on-a-class", PRELUDE + "\n@task(retries=1)\nclass Step:\n    def __init__(self):\n"
                                      "        ran()\n\n\n@flow\ndef main():\n    Step()\n",
         ["@task decorates a function", "the class 'Step'"]),
    # -- `headwater run` on a file that cannot be imported: the user's file and line only
    Case("run-syntax-error", "from headwater import flow\n\n\n@flow\ndef main(:\n    return 1\n",
         ["cannot load case.py", "SyntaxError", "case.py:5"], at_import=False),
    Case("run-import-raises", RAISES_AT_IMPORT,
         ["cannot load case.py", "ZeroDivisionError: division by zero",
          f"case.py:{RAISES_AT_IMPORT.splitlines().index('ROWS = 1 / 0') + 1}"], at_import=False),
    Case("run-imported-module-raises",
         PRELUDE + "\nimport case_settings\n\n\n@flow\ndef main():\n    ran()\n",
         ["cannot load case.py", "KeyError: 'REGION'", "case_settings.py:6 > case_settings.py:4 in setting"],
         at_import=False,
         files={"case_settings.py": "import os\n\ndef setting(name):\n    return os.environ[name]\n\n"
                                    "REGION = setting('REGION')\n"}),
    Case("run-imported-module-indentation",
         PRELUDE + "\nimport case_broken\n\n\n@flow\ndef main():\n    ran()\n",
         ["cannot load case.py", "IndentationError", "case_broken.py:2"], at_import=False,
         files={"case_broken.py": "x = 1\n  y = 2\n"}),
    # -- `headwater run -p` with a list that is not JSON
    Case("run-p-malformed-json", PRELUDE + "\n@flow\ndef main(ids: list = None):\n    ran()\n",
         ["parameter 'ids'", "'ids=[1,'", "malformed JSON"], params=["-p", "ids=[1,"], at_import=False),
    Case("run-p-malformed-json-untyped", PRELUDE + "\n@flow\ndef main(ids=None):\n    ran()\n",
         ["parameter 'ids'", "'ids={\"a\": 1'", "malformed JSON"], params=["-p", 'ids={"a": 1'],
         at_import=False),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_clear_line_before_any_work(case: Case, tmp_path: Path, monkeypatch, capsys,
                                                     headwater_session) -> None:
    """Each bad input is refused with one line naming the value and what was expected:
    at decoration when importing the file, and as the single `headwater: error:` line of
    `headwater run`; no traceback, and no flow or task body ran."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("case_settings", "case_broken"):
        monkeypatch.delitem(__import__("sys").modules, name, raising=False)
    path = tmp_path / "case.py"
    path.write_text(case.code)
    for name, text in case.files.items():
        (tmp_path / name).write_text(text)
    marker = path.with_suffix(".ran")

    if case.at_import:
        spec = importlib.util.spec_from_file_location(f"bad_input_{case.id.replace('-', '_')}", path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        with pytest.raises((ValueError, TypeError)) as info:
            spec.loader.exec_module(module)
        message = str(info.value)
        assert len(message.splitlines()) == 1, message
        for text in case.expect:
            assert text in message
        assert not marker.exists(), "a body ran before the error"

    code = main(["run", "case.py:main", *case.params])
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code in (1, 2), (out, err)
    assert len(lines) == 1 and lines[0].startswith("headwater: error: "), err
    for text in case.expect:
        assert text in lines[0]
    assert "Traceback" not in out + err and "importlib" not in err and "<frozen" not in err
    assert not marker.exists(), "a body ran before the error"


OPTIONAL = PRELUDE + textwrap.dedent('''
    @flow
    def main(x: int = None, ids: list = None, when: datetime.date = None, name: str = None):
        ran()
        return {"x": x, "ids": ids, "when": str(when) if when else None, "name": name}
''')


def _result_of(out: str) -> dict:
    import ast

    return ast.literal_eval(out.strip().splitlines()[-1].split("result=", 1)[1][:-1])


def test_a_none_default_makes_the_annotation_optional(tmp_path: Path, monkeypatch, capsys,
                                                      headwater_session) -> None:
    """`x: int = None` and `ids: list = None` are accepted as Optional (as Prefect users
    write them): called with the defaults, the flow runs with None, in code and through
    `headwater run`; given values are still validated and coerced."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "case.py"
    path.write_text(OPTIONAL)
    spec = importlib.util.spec_from_file_location("optional_case", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    assert module.main() == {"x": None, "ids": None, "when": None, "name": None}
    assert module.main(x="3", ids=("a",), when="2026-12-03") == {
        "x": 3, "ids": ["a"], "when": "2026-12-03", "name": None}
    state = module.main(x="three", return_state=True)
    assert state.is_failed() and "x='three'" in state.message

    assert main(["run", "case.py:main"]) == 0
    assert _result_of(capsys.readouterr().out) == {"x": None, "ids": None, "when": None, "name": None}
    assert main(["run", "case.py:main", "-p", "x=5", "-p", "ids=[1, 2]", "-p", "name=null"]) == 0
    assert _result_of(capsys.readouterr().out) == {"x": 5, "ids": [1, 2], "when": None, "name": "null"}
    assert main(["run", "case.py:main", "-p", "x=null"]) == 0
    assert _result_of(capsys.readouterr().out)["x"] is None


def test_an_infinite_timeout_means_no_timeout(headwater_session) -> None:
    """timeout_seconds=math.inf is accepted and means no timeout (it reads as None), for
    flows and tasks: the run completes instead of failing on an overflowing wait."""
    import math

    from headwater import flow, task

    @task(timeout_seconds=math.inf)
    def step() -> int:
        return 2

    @flow(timeout_seconds=math.inf)
    def forever() -> int:
        return step() + 1

    assert step.timeout_seconds is None and forever.timeout_seconds is None
    assert forever() == 3
