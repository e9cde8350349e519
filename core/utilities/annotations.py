"""Annotations: wrappers around a task's argument that change how the engine treats it.

* ``unmapped(x)``: ``Task.map`` passes ``x`` whole to every run instead of mapping over it.
* ``allow_failure(future)``: the task runs even when that upstream run did not complete;
  it receives the upstream's exception in the future's place.
* ``quote(x)``: ``x`` is passed through as it is: futures inside it are neither waited
  for nor resolved, and ``task_input_hash`` does not hash it (see docs/caching.md).

The task always receives the wrapped value, never the wrapper. Each may also wrap a
list or dict of futures, and ``allow_failure`` works in ``wait_for=[...]`` too::

    cleanup.submit(wait_for=[allow_failure(load_future)])

These are plain values with no behaviour of their own; the engine looks for them
(``headwater.engine.calls``). They are the same objects as ``headwater.unmapped`` and
``headwater.allow_failure``, at the path Prefect code imports them from.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from ..stash import StashKey

T = TypeVar("T")

__all__ = ["BaseAnnotation", "allow_failure", "quote", "unmapped", "QUOTED_ARGUMENTS"]


class BaseAnnotation(Generic[T]):
    """A value wrapped to tell the engine something about it; ``unwrap()`` gives it back.

    Two annotations are equal when they are of the same kind and wrap equal values.
    """

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value

    def unwrap(self) -> T:
        """The wrapped value."""
        return self.value

    def rewrap(self, value: Any) -> BaseAnnotation[Any]:
        """The same kind of annotation around another value."""
        return type(self)(value)

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.value == other.value  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), self.value))

    def __reduce__(self) -> tuple[Any, ...]:
        # Arguments travel to other processes (the Dask runner): pickle by value.
        return (type(self), (self.value,))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.value!r})"


class unmapped(BaseAnnotation[T]):
    """Wrap an argument of ``Task.map`` that is the same for every mapped call."""

    __slots__ = ()


class allow_failure(BaseAnnotation[T]):
    """Wrap an upstream future (or a list or dict of them) so that the task runs even if
    that upstream run failed, crashed or was cancelled: it then receives the upstream's
    exception in the future's place (the future's ``result(raise_on_failure=False)``).

    In ``wait_for=[allow_failure(future)]`` it orders the runs without stopping the
    downstream one. Reading a failure through ``allow_failure`` counts as handling it:
    it does not fail the flow run.
    """

    __slots__ = ()


class quote(BaseAnnotation[T]):
    """Pass a value through untouched: futures inside it are not waited for or resolved
    (the task receives the futures themselves), and ``task_input_hash`` counts the
    argument by its type only, so a large or unhashable value is never hashed."""

    __slots__ = ()

    def unquote(self) -> T:
        """The quoted value."""
        return self.value


#: On a task run given a ``quote(...)`` argument: its arguments as cache key functions
#: that understand quoting see them (futures resolved, ``quote`` wrappers kept). The
#: task's own parameters hold the unwrapped values, which the function receives.
QUOTED_ARGUMENTS: StashKey[dict[str, Any]] = StashKey()
