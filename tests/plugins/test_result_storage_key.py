"""result_storage_key (where a result is written, formatted per run) and
cache_result_in_memory=False (a persisted result the flow does not keep)."""

from __future__ import annotations

import gc
import weakref
from typing import Any

import pytest

from headwater import flow, task
from headwater.cache_policies import INPUTS, NO_CACHE
from headwater.errors import ConfigurationError
from headwater.plugins.caching import ResultStorageKeyError
from headwater.plugins.local_results import LocalResultStore, builtin_serializers
from headwater.results import ResultMissing
from headwater.session import Session
from headwater.tasks import task_input_hash


def read_key(session: Session, key: str) -> Any:
    store = LocalResultStore(session.settings.local_storage_path, builtin_serializers())
    return store.read(store.location_for(key))


def test_the_result_is_written_under_the_formatted_key(headwater_session: Session) -> None:
    """Fields of the parameters, of flow_run and of task_run, with format specs."""
    @task(persist_result=True,
          result_storage_key="{flow_run.flow_name}/{task_run.task_name}/{parameters[day]}-{parameters[n]:03d}")
    def report(day: str, n: int) -> str:
        return f"{day}:{n}"

    @flow
    def nightly() -> str:
        return report("mon", 7)

    assert nightly() == "mon:7"
    assert read_key(headwater_session, "nightly/report/mon-007") == "mon:7"


def test_the_key_is_the_cache_key_unless_no_cache(headwater_session: Session) -> None:
    """As in Prefect 3: the same formatted key is Cached; with NO_CACHE the task runs
    every time and the file holds the latest result."""
    calls: list[str] = []

    @task(result_storage_key="r-{parameters[day]}")
    def cached(day: str) -> int:
        calls.append(day)
        return len(calls)

    @task(result_storage_key="w-{parameters[day]}", cache_policy=NO_CACHE)
    def rewritten(day: str) -> int:
        calls.append(day)
        return len(calls)

    @flow
    def pipeline() -> list[str]:
        return [cached("a", return_state=True).name, cached("a", return_state=True).name,
                rewritten("a", return_state=True).name, rewritten("a", return_state=True).name]

    assert pipeline() == ["Completed", "Cached", "Completed", "Completed"]
    assert read_key(headwater_session, "r-a") == 1
    assert read_key(headwater_session, "w-a") == 3


def test_a_field_a_run_lacks_fails_the_run_naming_template_and_field() -> None:
    @task(result_storage_key="x-{flow_run.name}-{task_run.nope}")
    def work() -> int:
        return 1

    @flow
    def pipeline() -> int:
        return work()

    with pytest.raises(ResultStorageKeyError, match=r"'x-\{flow_run.name\}-\{task_run.nope\}' of task "
                                                    r"'work' cannot be formatted: no field 'task_run.nope'"):
        pipeline()


@pytest.mark.parametrize(("options", "message"), [
    ({"result_storage_key": "r-{parameters[date]}"}, "has no parameter 'date'"),
    ({"result_storage_key": "r-{today}"}, "has the field {today}"),
    ({"result_storage_key": "r-{parameters[day]"}, "result_storage_key='r-{parameters[day]'"),
    ({"result_storage_key": "r", "cache_key_fn": task_input_hash}, "cache_key_fn=task_input_hash would not be used"),
    ({"result_storage_key": "r", "cache_policy": INPUTS}, "cache_policy=INPUTS would not be used"),
    ({"result_storage_key": "r", "persist_result": False}, "but persist_result=False"),
    ({"cache_result_in_memory": False, "persist_result": False}, "cache_result_in_memory=False"),
])
def test_contradicting_or_impossible_options_are_refused_when_decorating(options: dict[str, Any],
                                                                         message: str) -> None:
    def report(day: str) -> str:
        return day

    with pytest.raises(ConfigurationError, match="invalid options for @task 'report'") as raised:
        task(**options)(report)
    assert message in str(raised.value)


def test_a_result_not_kept_in_memory_is_released_and_read_back(headwater_session: Session) -> None:
    """Once persisted, nothing in the flow holds the value: it is garbage collected, and
    ``.result()`` reads a fresh copy from the result store each time."""
    class Table(list):
        pass

    made: list[weakref.ref] = []

    @task(persist_result=True, cache_result_in_memory=False)
    def load() -> Table:
        table = Table([1, 2, 3])
        made.append(weakref.ref(table))
        return table

    @flow
    def pipeline() -> list[Any]:
        future = load.submit()
        future.wait()
        gc.collect()
        alive = made[0]() is not None
        return [alive, future.result(), future.result() is future.result()]

    assert pipeline() == [False, [1, 2, 3], False]


def test_a_result_not_kept_in_memory_is_persisted_even_if_nothing_else_says_so(headwater_session: Session) -> None:
    """cache_result_in_memory=False alone persists the result (it must live somewhere);
    a cache hit is read again on each ``.result()`` too."""
    @task(cache_result_in_memory=False)
    def load(n: int) -> list[int]:
        return list(range(n))

    @task(cache_policy=INPUTS, cache_result_in_memory=False)
    def cached(n: int) -> list[int]:
        return list(range(n))

    @flow
    def pipeline() -> list[Any]:
        cached(2)
        return [load(2, return_state=True), cached(2, return_state=True)]

    loaded, hit = pipeline()
    assert (loaded.result(), hit.name, hit.result()) == ([0, 1], "Cached", [0, 1])
    assert "result=<stored at" in repr(loaded)
    store = LocalResultStore(headwater_session.settings.local_storage_path, builtin_serializers())
    for state in (loaded, hit):
        store.delete(state.location)
        with pytest.raises(ResultMissing):
            state.result()
