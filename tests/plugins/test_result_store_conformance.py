"""The built-in result stores pass the result-storage conformance suite that
``headwater.testing`` offers third-party stores (core/testing_results.py)."""

from __future__ import annotations

from headwater.plugins.local_results import LocalResultStore, builtin_serializers
from headwater.results import MemoryResultStore
from headwater.testing import ResultStoreConformance


class TestLocalResultStore(ResultStoreConformance):
    def make_store(self, tmp_path):
        return LocalResultStore(tmp_path / "results", builtin_serializers())

    def read_bytes(self, store, location):
        return (store.path / location).read_bytes()

    def replace_bytes(self, store, location, data):
        (store.path / location).write_bytes(data)  # the file keeps its private mode


class TestMemoryResultStore(ResultStoreConformance):
    def make_store(self, tmp_path):
        return MemoryResultStore()

    def read_bytes(self, store, location):
        return store.data[location][1]

    def replace_bytes(self, store, location, data):
        store.data[location] = (store.data[location][0], data)


def test_a_store_that_keeps_no_promise_fails_the_suite(tmp_path):
    """The suite can fail: a store that loses every write fails the first test."""
    import pytest

    class Forgetful(MemoryResultStore):
        def write(self, key, value, serializer="cloudpickle"):
            location, size, digest = super().write(key, value, serializer)
            self.data.clear()
            return location, size, digest

    class Check(ResultStoreConformance):
        def make_store(self, tmp_path):
            return Forgetful()

    suite = Check()
    with pytest.raises(Exception):
        suite.test_a_value_comes_back_equal(suite.make_store(tmp_path))
