"""Stash: typed per-run storage for plugins, without monkey-patching runs.

    timing_key = StashKey[float]()

    def headwater_state_changed(run, previous, state):
        if state.is_running():
            run.stash[timing_key] = time.perf_counter()
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

T = TypeVar("T")
D = TypeVar("D")


class StashKey(Generic[T]):
    """A key into a :class:`Stash`; create one per kind of value, at module level."""

    __slots__ = ()


class Stash:
    """Typed values that plugins keep on a run, each under its own :class:`StashKey`."""

    __slots__ = ("_data",)

    def __init__(self) -> None:
        self._data: dict[StashKey[Any], Any] = {}

    def __setitem__(self, key: StashKey[T], value: T) -> None:
        self._data[key] = value

    def __getitem__(self, key: StashKey[T]) -> T:
        return self._data[key]

    def get(self, key: StashKey[T], default: D) -> T | D:
        return self._data.get(key, default)

    def setdefault(self, key: StashKey[T], default: T) -> T:
        return self._data.setdefault(key, default)

    def __delitem__(self, key: StashKey[T]) -> None:
        del self._data[key]

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)
