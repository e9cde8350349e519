"""The result-storage conformance suite: the behaviour every result store owes headwater.

A store's author subclasses :class:`ResultStoreConformance` in a test module, names the
subclass ``Test...`` so pytest collects it, and says how to make a store::

    from headwater.plugins.local_results import builtin_serializers
    from headwater.testing import ResultStoreConformance

    class TestMyStore(ResultStoreConformance):
        def make_store(self, tmp_path):
            return MyStore(tmp_path / "results", builtin_serializers())

Each test gets a new store from ``make_store`` (``tmp_path`` is the test's own temporary
directory). The store must know the serializers ``"cloudpickle"`` and ``"json"``.
Overriding :meth:`~ResultStoreConformance.read_bytes` and
:meth:`~ResultStoreConformance.replace_bytes` (read and write the raw bytes where a result
is stored) adds the tests of damaged results; without them they are skipped, saying so.

What is checked is what the engine relies on (``headwater.results.ResultStore``): values
come back equal; ``write`` returns ``(location, size, digest)``; a read refuses bytes that
no longer have the digest ``write`` returned; anything unreadable is ``ResultMissing``
(the engine's "a miss, with one warning"), never another exception; any key works, lone
surrogates and ``../`` included; concurrent writers of one key leave one whole value and
a reader never sees half of one; large values pass; and a flow's cached task is answered
from the store.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from .errors import UnknownComponentError
from .flows import flow
from .plugin_manager import hookimpl
from .results import ResultMissing, ResultNotPersisted, ResultStore, unpack_written
from .session import Session
from .tasks import task

__all__ = ["ResultStoreConformance"]

#: Keys that are hard to turn into names: a store must keep each apart from the others.
AWKWARD_KEYS = (
    "plain",
    "../../etc/passwd",
    "/absolute/path",
    "a/b\\c:d*e?f\"g<h>i|j",
    "nul\x00inside",
    "line\nbreak",
    "lone surrogate \udcff",
    "emoji \U0001f30a and accents é",
    "x" * 5000,
)


class ResultStoreConformance:
    """Tests every result store must pass. Subclass it (as ``Test<YourStore>``) and
    override :meth:`make_store`; override :meth:`read_bytes` and :meth:`replace_bytes` to
    run the damaged-result tests too, and :attr:`large_value_bytes` to try larger values."""

    #: The size of the value in the large-value test.
    large_value_bytes = 8 * 1024 * 1024
    #: Threads in the concurrent-writer tests.
    writers = 8

    def make_store(self, tmp_path: Path) -> ResultStore:
        """A new, empty store knowing the ``"cloudpickle"`` and ``"json"`` serializers."""
        raise NotImplementedError("override make_store(self, tmp_path) to return your result store")

    def read_bytes(self, store: ResultStore, location: str) -> bytes:
        """The bytes ``store`` holds at ``location``, as stored."""
        raise NotImplementedError

    def replace_bytes(self, store: ResultStore, location: str, data: bytes) -> None:
        """Replace what ``store`` holds at ``location`` by ``data``, as damage would."""
        raise NotImplementedError

    @pytest.fixture
    def store(self, tmp_path: Path) -> ResultStore:
        """The store under test, new for each test."""
        return self.make_store(tmp_path)

    def _damage(self, store: ResultStore, location: str, data: bytes) -> None:
        try:
            self.replace_bytes(store, location, data)
        except NotImplementedError:
            pytest.skip(f"{type(self).__name__} does not override replace_bytes(store, location, data)")

    def _read_back(self, store: ResultStore, location: str) -> bytes:
        try:
            return self.read_bytes(store, location)
        except NotImplementedError:
            pytest.skip(f"{type(self).__name__} does not override read_bytes(store, location)")

    # -- write, read, delete ---------------------------------------------------------

    def test_a_value_comes_back_equal(self, store: ResultStore) -> None:
        value = {"numbers": [1, 2.5, -3], "text": "naïve ☃", "nested": ({"a": None},), "raw": b"\x00\xff"}
        location, _, digest = unpack_written(store.write("k", value))
        assert store.read(location, digest=digest) == value
        assert store.read(location) == value

    def test_write_returns_a_location_a_size_and_a_digest(self, store: ResultStore) -> None:
        written = store.write("k", "v" * 1000)
        assert len(written) in (2, 3), f"write returned {written!r}; expected (location, size, digest)"
        location, size, digest = unpack_written(written)
        assert isinstance(location, str) and location
        assert isinstance(size, int) and size >= 1000
        assert digest is None or (isinstance(digest, str) and ":" in digest), \
            f"digest {digest!r}: expected '<algorithm>:<hex>', e.g. 'sha256:...'"

    def test_the_json_serializer_writes_json_values(self, store: ResultStore) -> None:
        location, _, digest = unpack_written(store.write("k", {"a": [1, 2]}, "json"))
        assert store.read(location, digest=digest) == {"a": [1, 2]}

    def test_an_unknown_serializer_is_a_configuration_error(self, store: ResultStore) -> None:
        with pytest.raises(UnknownComponentError):
            store.write("k", 1, "no-such-serializer")

    def test_a_value_the_serializer_cannot_take_is_not_persisted(self, store: ResultStore) -> None:
        with pytest.raises(ResultNotPersisted):
            store.write("k", threading.Lock())
        with pytest.raises(ResultNotPersisted):
            store.write("k2", object(), "json")

    def test_one_key_one_location_and_a_rewrite_replaces_the_value(self, store: ResultStore) -> None:
        first, _, _ = unpack_written(store.write("k", 1))
        again, _, digest = unpack_written(store.write("k", 2))
        other, _, _ = unpack_written(store.write("other", 3))
        assert first == again and other != first
        assert store.read(again, digest=digest) == 2

    def test_a_deleted_result_is_missing(self, store: ResultStore) -> None:
        location, _, digest = unpack_written(store.write("k", 1))
        store.delete(location)
        with pytest.raises(ResultMissing):
            store.read(location, digest=digest)
        with pytest.raises(ResultMissing):
            store.read(location)
        store.delete(location)  # a missing one is not an error

    def test_a_location_never_written_is_missing(self, store: ResultStore) -> None:
        location, _, _ = unpack_written(store.write("k", 1))
        store.delete(location)
        for bad in (location, "../../etc/passwd", "/etc/passwd", "", "x" * 300):
            with pytest.raises(ResultMissing):
                store.read(bad)
            store.delete(bad)  # no error, and nothing outside the store is touched

    # -- digests and damage ----------------------------------------------------------

    def test_a_result_changed_since_its_digest_is_missing(self, store: ResultStore) -> None:
        location, _, old = unpack_written(store.write("k", "first"))
        if old is None:
            pytest.skip("the store returns no digest, so its reads are not checked")
        _, _, new = unpack_written(store.write("k", "second"))
        assert new != old
        with pytest.raises(ResultMissing):
            store.read(location, digest=old)
        assert store.read(location, digest=new) == "second"

    def test_a_digest_of_an_unknown_kind_is_a_miss(self, store: ResultStore) -> None:
        location, _, digest = unpack_written(store.write("k", 1))
        if digest is None:
            pytest.skip("the store returns no digest, so its reads are not checked")
        with pytest.raises(ResultMissing):
            store.read(location, digest="no-such-hash:00")

    def test_damaged_bytes_are_a_miss_never_another_error(self, store: ResultStore) -> None:
        location, _, digest = unpack_written(store.write("k", {"a": 1}))
        for damage in (b"", b"garbage", b"HWR1", b"HWR1\x0bcloudpickle", b"HWR1\x0bcloudpickle\x80\x04",
                       b"HWR1\x05nope!\x00"):
            self._damage(store, location, damage)
            with pytest.raises(ResultMissing):
                store.read(location, digest=digest)
            with pytest.raises(ResultMissing):
                store.read(location)  # no digest to check: the bytes themselves are refused

    def test_a_truncated_result_is_a_miss(self, store: ResultStore) -> None:
        location, _, digest = unpack_written(store.write("k", list(range(1000))))
        whole = self._read_back(store, location)
        self._damage(store, location, whole[: len(whole) // 2])
        with pytest.raises(ResultMissing):
            store.read(location, digest=digest)

    # -- keys ------------------------------------------------------------------------

    def test_any_key_works_and_keeps_its_own_value(self, store: ResultStore) -> None:
        written = {key: unpack_written(store.write(key, f"value of {key!r}")) for key in AWKWARD_KEYS}
        locations = [location for location, _, _ in written.values()]
        assert len(set(locations)) == len(AWKWARD_KEYS), "two keys share one location"
        for key, (location, _, digest) in written.items():
            assert store.read(location, digest=digest) == f"value of {key!r}"

    # -- concurrency and size --------------------------------------------------------

    def test_concurrent_writers_of_one_key_leave_one_whole_value(self, store: ResultStore) -> None:
        values = [bytes([i]) * 200_000 for i in range(self.writers)]
        written: list[Any] = [None] * self.writers
        errors: list[BaseException] = []
        start = threading.Barrier(self.writers)

        def write(i: int) -> None:
            try:
                start.wait()
                written[i] = unpack_written(store.write("shared", values[i]))
            except BaseException as exc:  # reported below, with the others
                errors.append(exc)

        self._run_threads(write, self.writers)
        assert not errors, f"concurrent writes failed: {errors!r}"
        locations = {location for location, _, _ in written}
        assert len(locations) == 1, "one key was given several locations"
        location = locations.pop()
        value = store.read(location)
        assert value in values, "the stored value is none of the values written (a torn write?)"
        winner = values.index(value)
        if written[winner][2] is not None:
            assert store.read(location, digest=written[winner][2]) == value
            for i, (_, _, digest) in enumerate(written):
                if digest != written[winner][2]:
                    with pytest.raises(ResultMissing):
                        store.read(location, digest=digest)

    def test_concurrent_writers_of_many_keys_all_land(self, store: ResultStore) -> None:
        per_writer = 25
        written: dict[str, Any] = {}
        lock = threading.Lock()
        errors: list[BaseException] = []

        def write(i: int) -> None:
            try:
                for n in range(per_writer):
                    key = f"writer-{i}-{n}"
                    result = unpack_written(store.write(key, (i, n)))
                    with lock:
                        written[key] = result
            except BaseException as exc:  # reported below, with the others
                errors.append(exc)

        self._run_threads(write, self.writers)
        assert not errors, f"concurrent writes failed: {errors!r}"
        assert len(written) == self.writers * per_writer
        for key, (location, _, digest) in written.items():
            i, n = key.split("-")[1:]
            assert store.read(location, digest=digest) == (int(i), int(n))

    def test_a_reader_never_sees_half_a_result(self, store: ResultStore) -> None:
        values = [b"a" * 2_000_000, b"b" * 2_000_000]
        location, _, _ = unpack_written(store.write("k", values[0]))
        stop = threading.Event()

        def rewrite(_: int) -> None:
            n = 0
            while not stop.is_set() and n < 200:
                store.write("k", values[n % 2])
                n += 1

        writer = threading.Thread(target=rewrite, args=(0,), daemon=True)
        writer.start()
        seen = []
        try:
            for _ in range(30):
                try:
                    seen.append(store.read(location))
                except ResultMissing:
                    seen.append(None)  # a miss is allowed (a store may replace by delete-and-write)
        finally:
            stop.set()
            writer.join(60)
        assert all(value is None or value in values for value in seen), \
            "a read returned a value that was never written (half a write)"

    def test_a_large_value_round_trips(self, store: ResultStore) -> None:
        value = bytes(range(256)) * (self.large_value_bytes // 256)
        location, size, digest = unpack_written(store.write("large", value))
        assert size >= len(value)
        assert store.read(location, digest=digest) == value

    @staticmethod
    def _run_threads(target: Any, count: int) -> None:
        threads = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not any(thread.is_alive() for thread in threads), "a writer thread hung"

    # -- with the engine -------------------------------------------------------------

    def test_a_flow_cached_task_is_answered_from_the_store(self, store: ResultStore, tmp_path: Path) -> None:
        calls = []

        class UseStore:
            @hookimpl(tryfirst=True)
            def headwater_make_result_store(self, flow: Any, session: Any) -> ResultStore:
                return store

        @task(cache_key_fn=lambda context, parameters: f"conformance-{parameters['x']}")
        def double(x: int) -> int:
            calls.append(x)
            return 2 * x

        @flow
        def doubles() -> list[Any]:
            return [double(21), double(21, return_state=True).name]

        env = {"HEADWATER_HOME": str(tmp_path / "home"), "HEADWATER_DATABASE_URL": "memory://"}
        with Session(plugins=[UseStore()], env=env) as session:
            assert doubles() == [42, "Cached"]
            entry = session.store.read_cache_entry("conformance-21")
        assert calls == [21]
        assert entry is not None and store.read(entry.location, digest=entry.digest) == 42
