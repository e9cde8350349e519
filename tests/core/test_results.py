"""The result store interface (core/results.py) through its in-memory double,
MemoryResultStore: what a flow persists lands there, and cache hits are read back from
it, checked against their digests."""

from __future__ import annotations

import pytest

from headwater import Session, flow, hookimpl, task
from headwater.errors import UnknownComponentError
from headwater.results import MemoryResultStore, ResultMissing, digest_of


class ResultsIn:
    """A plugin that makes ``store`` every flow's result store."""

    def __init__(self, store: MemoryResultStore) -> None:
        self.store = store

    @hookimpl
    def headwater_make_result_store(self, flow, session):
        return self.store


calls = []


@task(persist_result=True)
def kept(x):
    return {"x": x}


@task(cache_key_fn=lambda context, parameters: f"square-{parameters['x']}", result_serializer="json")
def square(x):
    calls.append(x)
    return x * x


@flow
def keeps():
    return kept(3)


@flow
def squares():
    return [square(4), square(4), square(5)]


def test_a_persisted_result_lands_in_the_store_and_reads_back():
    """The task run's result_location names the entry; reading it gives the value."""
    store = MemoryResultStore()
    with Session(plugins=[ResultsIn(store)]) as session:
        assert keeps() == {"x": 3}
        (run,) = session.store.read_task_runs()
    assert run.result_location in store.data
    serializer, blob = store.data[run.result_location]
    assert serializer == "cloudpickle"
    assert store.read(run.result_location, digest=digest_of(blob)) == {"x": 3}


def test_cache_hits_are_read_back_from_the_store():
    """The second call with the same key is Cached, its value read from the store (with
    the json serializer the task asked for); the body ran once per key."""
    calls.clear()
    store = MemoryResultStore()
    with Session(plugins=[ResultsIn(store)]) as session:
        assert squares() == [16, 16, 25]
        entry = session.store.read_cache_entry("square-4")
    assert calls == [4, 5]
    assert store.data[entry.location] == ("json", b"16")
    assert entry.digest == digest_of(b"16")


def test_bytes_changed_after_the_write_are_a_miss_and_the_task_runs_again():
    calls.clear()
    store = MemoryResultStore()
    with Session(plugins=[ResultsIn(store)]) as session:
        squares()
        location = session.store.read_cache_entry("square-4").location
        store.data[location] = ("json", b"17")  # changed behind the cache index's back
        assert squares() == [16, 16, 25]
    assert calls == [4, 5, 4]
    assert store.data[location] == ("json", b"16")  # written again by the new run


def test_the_memory_store_refuses_what_it_cannot_keep_or_trust():
    store = MemoryResultStore()
    location, size, digest = store.write("key", 16, serializer="json")
    assert (size, store.read(location, digest=digest)) == (2, 16)
    store.data[location] = ("json", b"17")
    with pytest.raises(ResultMissing, match="does not match the digest"):
        store.read(location, digest=digest)
    with pytest.raises(UnknownComponentError, match="result_serializer='yaml' is not a registered serializer"):
        store.write("key", 1, serializer="yaml")
    with pytest.raises(ResultMissing, match="no result at 'nowhere'"):
        store.read("nowhere")
    store.delete("nowhere")  # a missing result is not an error
