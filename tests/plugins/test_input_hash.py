"""task_input_hash: canonical, process-independent cache keys from a task and its inputs."""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.util
import logging
import os
import pathlib
import subprocess
import sys
import textwrap
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import BaseModel

from headwater import flow, task
from headwater.tasks import task_input_hash


@task
def identity(value: Any) -> Any:
    return value


@task
def other_identity(value: Any) -> Any:
    return value


def key_of(t: Any, **parameters: Any) -> str | None:
    """The key task_input_hash gives task ``t`` called with ``parameters``."""
    return task_input_hash(SimpleNamespace(task=t), parameters)


@pytest.fixture
def warnings_seen() -> Any:
    """Every WARNING record headwater logs during the test."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect(logging.WARNING)
    logger = logging.getLogger("headwater")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Config(BaseModel):
    name: str
    tags: list[str]


def test_same_inputs_give_the_same_key_and_different_inputs_a_different_one() -> None:
    """Equal inputs hash equal; a changed input changes the key."""
    assert key_of(identity, value="Marvin") == key_of(identity, value="Marvin")
    assert key_of(identity, value="Marvin") != key_of(identity, value="Trillian")


def test_the_key_covers_the_task_identity() -> None:
    """Two tasks given the same inputs get different keys."""
    assert key_of(identity, value=1) != key_of(other_identity, value=1)


def test_dict_order_does_not_matter() -> None:
    """Dicts with the same items in another insertion order give the same key."""
    a = {"alpha": 1, "beta": [1, 2], "gamma": {"x": 1, "y": 2}}
    b = {"gamma": {"y": 2, "x": 1}, "beta": [1, 2], "alpha": 1}
    assert key_of(identity, value=a) == key_of(identity, value=b)
    assert key_of(identity, value=a) != key_of(identity, value={**a, "alpha": 2})


def test_types_are_kept_apart() -> None:
    """1, 1.0, True, "1" and [1] are different inputs, so they get different keys."""
    keys = {key_of(identity, value=v) for v in (1, 1.0, True, "1", b"1", [1], (1,))}
    assert len(keys) == 7


@pytest.mark.parametrize(
    "same, different",
    [
        (dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc), dt.datetime(2024, 5, 1, 12, 1, tzinfo=dt.timezone.utc)),
        (dt.date(2024, 5, 1), dt.date(2024, 5, 2)),
        (dt.timedelta(minutes=1), dt.timedelta(minutes=2)),
        (pathlib.Path("data/in.csv"), pathlib.Path("data/out.csv")),
        (Point(1, 2), Point(2, 1)),
        (Config(name="a", tags=["x"]), Config(name="a", tags=["y"])),
        (frozenset({"a", "b"}), frozenset({"a", "c"})),
    ],
    ids=["datetime", "date", "timedelta", "path", "dataclass", "pydantic", "frozenset"],
)
def test_common_value_types_hash_by_value(same: Any, different: Any) -> None:
    """Datetimes, paths, dataclasses, pydantic models and sets hash by their value."""
    import copy

    assert key_of(identity, value=same) == key_of(identity, value=copy.deepcopy(same))
    assert key_of(identity, value=same) != key_of(identity, value=different)


def test_numpy_arrays_hash_by_dtype_shape_and_bytes() -> None:
    """A numpy array hashes by its contents; dtype and shape count too."""
    np = pytest.importorskip("numpy")
    a = np.arange(6, dtype="int64")
    assert key_of(identity, value=a) == key_of(identity, value=a.copy())
    assert key_of(identity, value=a) != key_of(identity, value=a + 1)
    assert key_of(identity, value=a) != key_of(identity, value=a.reshape(2, 3))
    assert key_of(identity, value=a) != key_of(identity, value=a.astype("int32"))


def test_a_numpy_object_array_cannot_be_hashed() -> None:
    """An object array has no stable byte form: no key (the call runs uncached)."""
    np = pytest.importorskip("numpy")
    assert key_of(identity, value=np.array([object()], dtype=object)) is None


_SET_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from types import SimpleNamespace
    sys.path.insert(0, sys.argv[1])
    from hashmod import square
    from headwater.tasks import task_input_hash
    names = {f"name-{i}" for i in range(40)}
    key = task_input_hash(SimpleNamespace(task=square), {"x": names, "d": {n: 1 for n in names}})
    print(json.dumps({"key": key, "order": list(names)}))
    """
)

_TASK_MODULE = textwrap.dedent(
    """
    from headwater import task


    @task
    def square(x):
        return x * x
    """
)


def _run_with_seed(tmp_path: pathlib.Path, seed: str) -> dict[str, Any]:
    import json

    env = dict(os.environ, PYTHONHASHSEED=seed)
    out = subprocess.run([sys.executable, "-c", _SET_SCRIPT, str(tmp_path)], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_set_argument_gives_the_same_key_under_different_hash_seeds(tmp_path: pathlib.Path) -> None:
    """Two processes with different PYTHONHASHSEED iterate a set in different orders,
    yet compute the same key for it."""
    (tmp_path / "hashmod.py").write_text(_TASK_MODULE)
    first = _run_with_seed(tmp_path, "1")
    second = _run_with_seed(tmp_path, "2")
    assert first["order"] != second["order"]  # the seeds really do change set order
    assert first["key"] == second["key"]
    assert first["key"] is not None


def _load(path: pathlib.Path) -> Any:
    spec = importlib.util.spec_from_file_location("hashmod", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def test_editing_the_body_changes_the_key_but_moving_it_does_not(tmp_path: pathlib.Path) -> None:
    """The key covers the task's source text from its def line, not its line numbers
    and not the decorator's options."""
    versions = {
        "original": _TASK_MODULE,
        "moved": "# a comment\n\n\n\n" + _TASK_MODULE,
        "retuned": _TASK_MODULE.replace("@task\n", "@task(retries=2, retry_delay_seconds=1)\n"),
        "edited": _TASK_MODULE.replace("x * x", "x * x + 1"),
    }
    assert versions["retuned"] != versions["original"]
    keys = {}
    for name, text in versions.items():
        path = tmp_path / name / "hashmod.py"
        path.parent.mkdir()
        path.write_text(text)
        keys[name] = key_of(_load(path).square, x=3)
    assert keys["original"] == keys["moved"] == keys["retuned"]
    assert keys["original"] != keys["edited"]


class Opaque:
    """No canonical byte form: task_input_hash cannot hash it."""


def test_an_unhashable_input_warns_once_naming_the_parameter_and_runs_uncached(warnings_seen: Any) -> None:
    """Inputs that cannot be hashed: one warning naming the parameter; every call runs."""
    calls = []

    @task(cache_key_fn=task_input_hash)
    def use_handle(handle: Any, n: int) -> int:
        calls.append(n)
        return n

    @flow
    def handles() -> list[Any]:
        shared = Opaque()
        return [use_handle(shared, 1, return_state=True) for _ in range(3)]

    states = handles()
    assert [s.name for s in states] == ["Completed"] * 3
    assert calls == [1, 1, 1]
    mentions = [r for r in warnings_seen if "cannot hash" in r.getMessage()]
    assert len(mentions) == 1
    message = mentions[0].getMessage()
    assert "'handle'" in message and "'use_handle'" in message and "Opaque" in message


def test_a_nested_unhashable_value_is_named_by_its_path() -> None:
    """The warning path points inside containers, e.g. ``config['db']``."""
    from headwater.plugins.input_hash import Unhashable, stable_hash

    with pytest.raises(Unhashable, match=r"config\['db'\]"):
        stable_hash({"db": Opaque()}, "config")


def test_hashable_inputs_hit_the_cache_across_flow_runs() -> None:
    """A dataclass argument: the second flow run's task run is Cached."""
    calls = []

    @task(cache_key_fn=task_input_hash)
    def norm(p: Point) -> int:
        calls.append(p)
        return abs(p.x) + abs(p.y)

    @flow
    def measure(x: int, y: int) -> Any:
        return [norm(Point(x, y), return_state=True)]

    assert measure(1, 2)[0].name == "Completed"
    [second] = measure(1, 2)
    assert second.name == "Cached" and second.result() == 3
    assert len(calls) == 1


# -- quote(...): opaque to the hash ---------------------------------------------------------


def test_a_quoted_value_counts_by_its_type_only() -> None:
    """quote(x) hashes as its type's name: different values of one type share a key,
    another type or an unquoted value does not, and an unhashable one hashes at all."""
    from headwater.utilities.annotations import quote

    assert key_of(identity, value=quote([1, 2])) == key_of(identity, value=quote([3]))
    assert key_of(identity, value=quote([1])) != key_of(identity, value=quote((1,)))
    assert key_of(identity, value=quote([1])) != key_of(identity, value=[1])
    assert key_of(identity, value=[quote(object()), 1]) == key_of(identity, value=[quote(object()), 1])
    assert key_of(identity, value=[quote(object()), 1]) != key_of(identity, value=[quote(object()), 2])


def test_a_task_given_a_quoted_argument_is_cached_by_its_other_arguments(warnings_seen: Any) -> None:
    """In a flow, the task receives the unwrapped value, the quoted argument does not
    enter the key (an unhashable connection warns nothing), and the other arguments do."""
    import threading

    from headwater.utilities.annotations import quote

    calls: list[int] = []

    @task(cache_key_fn=task_input_hash)
    def query(connection: Any, n: int) -> str:
        calls.append(n)
        return f"{type(connection).__name__}:{n}"

    @flow
    def reports() -> list[str]:
        return [query(quote(threading.Lock()), 1), query(quote(threading.Lock()), 1),
                query(quote(threading.Lock()), 2)]

    assert reports() == ["lock:1", "lock:1", "lock:2"]
    assert calls == [1, 2]
    assert not [r for r in warnings_seen if "cannot hash" in r.getMessage()]
