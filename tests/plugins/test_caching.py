"""Caching: cache keys, Cached hits, expiration, refresh, persistence and bad keys."""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from typing import Any

import pytest

from headwater import flow, hookimpl, task
from headwater.errors import UnknownComponentError
from headwater.plugins.caching import CacheKeyError, key_to_string
from headwater.session import Session
from headwater.tasks import task_input_hash


@pytest.fixture
def warnings_seen() -> Any:
    """Every WARNING (and worse) record headwater logs during the test."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect(logging.WARNING)
    logger = logging.getLogger("headwater")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def messages(records: list[logging.LogRecord]) -> list[str]:
    return [r.getMessage() for r in records]


def storage(session: Session) -> Any:
    return session.settings.local_storage_path


def test_tutorial_hello_flow_second_call_is_cached() -> None:
    """hello_flow("Marvin") twice: the second task run is Cached and the body does not
    run; "Trillian" runs the body again."""
    said = []

    @task(cache_key_fn=task_input_hash, cache_expiration=dt.timedelta(minutes=1))
    def hello_task(name_input: str) -> str:
        said.append(name_input)
        return "hello " + name_input

    @flow
    def hello_flow(name_input: str) -> list[Any]:
        return [hello_task(name_input, return_state=True)]

    [first] = hello_flow("Marvin")
    [second] = hello_flow("Marvin")
    [third] = hello_flow("Trillian")
    assert (first.name, second.name, third.name) == ("Completed", "Cached", "Completed")
    assert second.type.value == "COMPLETED" and second.is_completed()
    assert second.result() == "hello Marvin"
    assert second.state_details.cache_key == first.state_details.cache_key is not None
    assert second.state_details.cache_expiration is not None
    assert said == ["Marvin", "Trillian"]


def test_a_custom_key_function_caches_by_its_key() -> None:
    """The sum-of-inputs key: [2, 2] runs, [1, 3] is Cached (same key "4"), [2, 3] runs."""
    ran = []

    def cache_key_from_sum(context: Any, parameters: dict[str, Any]) -> int:
        return sum(parameters["nums"])

    @task(cache_key_fn=cache_key_from_sum)
    def cached_task(nums: list[int]) -> int:
        ran.append(nums)
        return sum(nums)

    @flow
    def test_caching(nums: list[int]) -> list[Any]:
        return [cached_task(nums, return_state=True)]

    names = [test_caching(n)[0].name for n in ([2, 2], [1, 3], [2, 3])]
    assert names == ["Completed", "Cached", "Completed"]
    assert ran == [[2, 2], [2, 3]]
    assert test_caching([1, 3])[0].state_details.cache_key == "4"


def test_a_key_of_none_means_do_not_cache() -> None:
    """A key function returning None: every call runs."""
    ran = []

    @task(cache_key_fn=lambda context, parameters: None)
    def work() -> int:
        ran.append(1)
        return 1

    @flow
    def twice() -> None:
        work()
        work()

    twice()
    assert len(ran) == 2


def test_an_entry_expires_after_cache_expiration(headwater_session: Session) -> None:
    """After cache_expiration has passed, the task runs again and refreshes the entry."""
    ran = []

    @task(cache_key_fn=lambda c, p: "expiring", cache_expiration=dt.timedelta(seconds=0.2))
    def work() -> int:
        ran.append(1)
        return len(ran)

    @flow
    def once() -> list[Any]:
        return [work(return_state=True)]

    assert once()[0].name == "Completed"
    assert once()[0].name == "Cached"
    time.sleep(0.25)
    again = once()[0]
    assert again.name == "Completed" and again.result() == 2
    assert once()[0].result() == 2  # the refreshed entry serves the new value
    [entry] = headwater_session.store.read_cache_entries()
    assert not entry.is_expired()


def test_refresh_cache_recomputes_and_overwrites() -> None:
    """refresh_cache=True runs the body even with a fresh entry, and later hits get the
    new value."""
    counter = {"n": 0}

    @task(cache_key_fn=lambda c, p: "refreshable")
    def work() -> int:
        counter["n"] += 1
        return counter["n"]

    @flow
    def run(refresh: bool = False) -> list[Any]:
        t = work.with_options(refresh_cache=True) if refresh else work
        return [t(return_state=True)]

    assert run()[0].result() == 1
    assert run()[0].name == "Cached"
    refreshed = run(refresh=True)[0]
    assert refreshed.name == "Completed" and refreshed.result() == 2
    hit = run()[0]
    assert hit.name == "Cached" and hit.result() == 2


def test_a_raising_key_function_fails_the_run_naming_the_task_with_retries() -> None:
    """A cache_key_fn that raises: the task run fails with an error naming the task and
    the key function; retries apply (the key is tried again); the body never runs and
    nothing is cached."""
    tries = []
    ran = []

    def broken_key(context: Any, parameters: dict[str, Any]) -> str:
        tries.append(1)
        raise ValueError("no key today")

    @task(cache_key_fn=broken_key, retries=2)
    def guarded() -> int:
        ran.append(1)
        return 1

    @flow
    def keyed() -> int:
        return guarded()

    state = keyed(return_state=True)
    assert state.is_failed()
    with pytest.raises(CacheKeyError, match=r"broken_key.*'guarded'.*ValueError: no key today"):
        state.result()
    assert len(tries) == 3
    assert ran == []
    assert Session.current().store.read_cache_entries() == []


def test_a_key_function_that_fails_once_then_succeeds_caches() -> None:
    """A flaky key function with retries: the retry computes the key and runs the body."""
    tries = []

    def flaky_key(context: Any, parameters: dict[str, Any]) -> str:
        tries.append(1)
        if len(tries) == 1:
            raise ConnectionError("key service down")
        return "flaky"

    @task(cache_key_fn=flaky_key, retries=1)
    def work() -> str:
        return "done"

    @flow
    def keyed() -> list[Any]:
        return [work(return_state=True)]

    [state] = keyed()
    assert state.name == "Completed" and state.state_details.cache_key == "flaky"
    assert [e.key for e in Session.current().store.read_cache_entries()] == ["flaky"]


def test_key_to_string_forms() -> None:
    """Key values become strings as documented: str as is, numbers by str(), containers
    by a canonical hash (order-independent), huge keys by a hash, opaque objects an
    error naming the task."""
    assert key_to_string("t", "abc") == "abc"
    assert key_to_string("t", 4) == "4"
    assert key_to_string("t", None) is None
    as_dict = key_to_string("t", {"a": 1, "b": {2, 3}})
    assert as_dict is not None and as_dict.startswith("sha256:")
    assert as_dict == key_to_string("t", {"b": {3, 2}, "a": 1})
    huge = key_to_string("t", "x" * 100_000)
    assert huge is not None and huge.startswith("sha256:") and len(huge) < 100
    assert huge != key_to_string("t", "x" * 99_999)
    with pytest.raises(CacheKeyError, match=r"'t'.*object"):
        key_to_string("t", object())


def test_a_key_function_returning_an_opaque_object_fails_clearly() -> None:
    """A key function returning something without a stable string form fails the run
    with an error naming the task and the type, instead of a key that never hits."""

    class Handle:
        pass

    @task(cache_key_fn=lambda c, p: Handle())
    def work() -> int:
        return 1

    @flow
    def keyed() -> int:
        return work()

    with pytest.raises(CacheKeyError, match=r"'work'.*Handle"):
        keyed()


def test_a_list_key_hits_across_calls() -> None:
    """A key function returning a list: the same list is the same key (cache hit)."""

    @task(cache_key_fn=lambda c, p: [p["a"], p["b"]])
    def add(a: int, b: int) -> int:
        return a + b

    @flow
    def adds() -> list[Any]:
        return [add(1, 2, return_state=True), add(1, 2, return_state=True)]

    assert [s.name for s in adds()] == ["Completed", "Cached"]


@pytest.mark.parametrize("damage", ["delete", "corrupt"])
def test_a_lost_result_file_is_a_miss_with_a_warning_and_is_replaced(
        damage: str, headwater_session: Session, warnings_seen: Any) -> None:
    """The result file behind a cache entry deleted or corrupted: a warning, the task
    runs again, and the entry is replaced by a readable one."""
    counter = {"n": 0}

    @task(cache_key_fn=lambda c, p: "fragile")
    def work() -> int:
        counter["n"] += 1
        return counter["n"]

    @flow
    def run() -> list[Any]:
        return [work(return_state=True)]

    run()
    store = headwater_session.store
    [entry] = store.read_cache_entries()
    path = storage(headwater_session) / entry.location
    if damage == "delete":
        path.unlink()
    else:
        path.write_bytes(b"not a result at all")
    again = run()[0]
    assert again.name == "Completed" and again.result() == 2
    assert any("cannot be read" in m and "fragile" in m for m in messages(warnings_seen))
    [replaced] = store.read_cache_entries()
    assert replaced.task_run_id != entry.task_run_id
    hit = run()[0]
    assert hit.name == "Cached" and hit.result() == 2


def test_the_cache_entry_records_task_size_and_location(headwater_session: Session) -> None:
    """The index row names the task, the writing task run, the result file and its size."""

    @task(cache_key_fn=lambda c, p: "sized")
    def payload() -> bytes:
        return b"x" * 1000

    @flow
    def run() -> list[Any]:
        return [payload(return_state=True)]

    [state] = run()
    [entry] = headwater_session.store.read_cache_entries()
    assert entry.task_name == "payload"
    assert entry.key == "sized"
    assert entry.size is not None and entry.size >= 1000
    assert (storage(headwater_session) / entry.location).stat().st_size >= entry.size
    runs = headwater_session.store.read_task_runs()
    assert entry.task_run_id in {r.id for r in runs}


def test_persist_result_on_a_task_writes_its_result(headwater_session: Session) -> None:
    """persist_result=True without caching: the result is written to storage and the
    task run records where."""

    @task(persist_result=True)
    def keep() -> dict[str, int]:
        return {"a": 1}

    @task
    def forget() -> int:
        return 2

    @flow
    def run() -> None:
        keep()
        forget()

    run()
    headwater_session.store.flush()
    by_name = {r.task_name: r for r in headwater_session.store.read_task_runs()}
    assert by_name["keep"].result_location is not None
    assert by_name["forget"].result_location is None
    files = [p for p in storage(headwater_session).iterdir() if not p.name.startswith(".")]
    assert [p.name for p in files] == [by_name["keep"].result_location]


def test_persist_result_on_a_flow_persists_its_tasks(headwater_session: Session) -> None:
    """persist_result=True on a flow is the default for its tasks; a task can opt out."""

    @task
    def kept() -> int:
        return 1

    @task(persist_result=False)
    def opted_out() -> int:
        return 2

    @flow(persist_result=True)
    def run() -> None:
        kept()
        opted_out()

    run()
    headwater_session.store.flush()
    by_name = {r.task_name: r for r in headwater_session.store.read_task_runs()}
    assert by_name["kept"].result_location is not None
    assert by_name["opted_out"].result_location is None


def test_json_serializer_writes_json_and_caches(headwater_session: Session) -> None:
    """result_serializer="json": the stored bytes are JSON and a hit returns the value."""

    @task(cache_key_fn=lambda c, p: "as-json", result_serializer="json")
    def report() -> dict[str, Any]:
        return {"rows": 3, "ok": True}

    @flow
    def run() -> list[Any]:
        return [report(return_state=True)]

    run()
    [entry] = headwater_session.store.read_cache_entries()
    assert entry.serializer == "json"
    raw = (storage(headwater_session) / entry.location).read_bytes()
    assert json.loads(raw[raw.index(b"{"):]) == {"rows": 3, "ok": True}
    hit = run()[0]
    assert hit.name == "Cached" and hit.result() == {"rows": 3, "ok": True}


class UpperText:
    """A toy serializer a plugin registers: stores strings upper-cased."""

    def dumps(self, value: Any) -> bytes:
        return str(value).upper().encode()

    def loads(self, data: bytes) -> Any:
        return data.decode()


class SerializerPlugin:
    @hookimpl
    def headwater_register_components(self, registry: Any) -> None:
        registry.add_serializer("upper", UpperText(), source="test")


def test_a_plugin_registered_serializer_is_used_by_name() -> None:
    """registry.add_serializer("upper", ...) in a plugin makes result_serializer="upper"
    work: the hit returns what that serializer loads."""

    @task(cache_key_fn=lambda c, p: "shout", result_serializer="upper")
    def shout() -> str:
        return "hello"

    @flow
    def run() -> list[Any]:
        return [shout(return_state=True)]

    with Session(plugins=[SerializerPlugin()]):
        assert run()[0].result() == "hello"
        hit = run()[0]
        assert hit.name == "Cached" and hit.result() == "HELLO"


def test_an_unknown_serializer_name_fails_naming_it() -> None:
    """result_serializer naming no registered serializer: the run fails with an error
    naming the bad value and the registered ones."""

    @task(persist_result=True, result_serializer="yaml")
    def work() -> int:
        return 1

    @flow
    def run() -> int:
        return work()

    with pytest.raises(UnknownComponentError, match=r"'yaml'.*'cloudpickle'.*'json'"):
        run()


def test_a_value_that_cannot_be_serialized_is_returned_with_a_warning(
        headwater_session: Session, warnings_seen: Any) -> None:
    """A result cloudpickle cannot pickle: the task still completes and returns it, with
    a warning that it was not persisted (so not cached); no cache entry is written."""
    ran = []

    @task(cache_key_fn=lambda c, p: "generator")
    def numbers() -> Any:
        ran.append(1)
        return (i for i in range(3))

    @flow
    def run() -> list[int]:
        return list(numbers())

    assert run() == [0, 1, 2]
    assert run() == [0, 1, 2]
    assert len(ran) == 2
    warned = [m for m in messages(warnings_seen) if "not persisted" in m]
    assert len(warned) == 2 and "generator" in warned[0]
    assert headwater_session.store.read_cache_entries() == []


def test_a_task_called_outside_a_flow_uses_the_cache() -> None:
    """Caching works for a task called on its own, outside any flow."""
    ran = []

    @task(cache_key_fn=task_input_hash)
    def double(x: int) -> int:
        ran.append(x)
        return 2 * x

    assert double(4) == 8
    assert double(4, return_state=True).name == "Cached"
    assert ran == [4]


def test_submitted_and_mapped_tasks_use_the_cache() -> None:
    """Futures from submit and map are cached like direct calls."""
    ran = []

    @task(cache_key_fn=task_input_hash)
    def square(x: int) -> int:
        ran.append(x)
        return x * x

    @flow
    def squares() -> list[Any]:
        futures = square.map([1, 2, 3])
        for future in futures:
            future.wait()
        return [f.state for f in futures]

    assert [s.name for s in squares()] == ["Completed"] * 3
    states = squares()
    assert [s.name for s in states] == ["Cached"] * 3
    assert [s.result() for s in states] == [1, 4, 9]
    assert sorted(ran) == [1, 2, 3]


def test_async_tasks_use_the_cache() -> None:
    """An async task with a cache key is Cached on the second flow run."""
    import asyncio

    ran = []

    @task(cache_key_fn=task_input_hash)
    async def fetch(x: int) -> int:
        ran.append(x)
        return x + 1

    @flow
    async def run() -> list[Any]:
        return [await fetch(1, return_state=True)]

    assert asyncio.run(run())[0].name == "Completed"
    hit = asyncio.run(run())[0]
    assert hit.name == "Cached" and hit.result() == 2
    assert ran == [1]


def test_an_async_task_retries_a_failed_key_and_then_runs() -> None:
    """For an async task, a key function that fails once is retried after the delay;
    the body runs once, with the key."""
    import asyncio

    tries = []
    ran = []

    def flaky_key(context: Any, parameters: dict[str, Any]) -> str:
        tries.append(1)
        if len(tries) == 1:
            raise RuntimeError("not yet")
        return "async-key"

    @task(cache_key_fn=flaky_key, retries=1, retry_delay_seconds=0.01)
    async def work() -> int:
        ran.append(1)
        return 5

    @flow
    async def run() -> list[Any]:
        return [await work(return_state=True)]

    [state] = asyncio.run(run())
    assert state.name == "Completed" and state.result() == 5
    assert state.state_details.cache_key == "async-key"
    assert (len(tries), len(ran)) == (2, 1)


def test_a_cache_key_function_can_be_named_by_its_registered_name():
    """``cache_key_fn="task_input_hash"`` uses the registered key function; an unknown
    name fails the run with an error listing the registered names."""
    from headwater import flow, task

    calls = []

    @task(cache_key_fn="task_input_hash")
    def by_name(x: int) -> int:
        calls.append(x)
        return x

    @task(cache_key_fn="no-such-policy")
    def unknown(x: int) -> int:
        return x

    @flow
    def named_policies() -> list:
        return [by_name(1, return_state=True), by_name(1, return_state=True)]

    first, second = named_policies()
    assert (first.name, second.name) == ("Completed", "Cached")
    assert calls == [1]

    state = unknown(1, return_state=True)
    assert state.is_failed()
    assert "no-such-policy" in state.message and "task_input_hash" in state.message


def test_a_result_store_that_gives_no_digest_still_caches(warnings_seen) -> None:
    """A third-party result store written before digests (write returns (location,
    size), read takes no digest) keeps working: its hits are served, unchecked."""
    from headwater.results import MemoryResultStore

    class OldStore(MemoryResultStore):
        def write(self, key, value, serializer="cloudpickle"):
            location, size, _ = super().write(key, value, serializer)
            return location, size

        def read(self, location):
            return super().read(location)

    shared = OldStore()  # (a store made once: the dict must outlive the flow run)

    class OldPlugin:
        @hookimpl
        def headwater_make_result_store(self, flow, session):
            return shared

    calls = []

    @task(cache_key_fn=lambda context, parameters: "old-store")
    def work() -> int:
        calls.append(1)
        return 7

    @flow
    def job() -> str:
        return work(return_state=True).name

    with Session(plugins=[OldPlugin()]) as session:
        assert [job(), job()] == ["Completed", "Cached"]
        assert session.store.read_cache_entry("old-store").digest is None
    assert len(calls) == 1 and messages(warnings_seen) == []
