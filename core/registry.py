"""Named components that plugins register and options refer to by name."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

from .errors import ConfigurationError, UnknownComponentError

KINDS = ("task_runner", "result_store", "run_store", "serializer", "cache_policy")


class Registry:
    """Name → factory tables, filled by ``headwater_register_components``.

    ``task_runner``: name → TaskRunner class or factory, used for ``task_runner="name"``.
    ``run_store``: URL scheme → ``factory(url, session)``.
    ``result_store``: name → ``factory(path, session)``.
    ``serializer``: name → object with ``dumps(obj) -> bytes`` and ``loads(bytes)``.
    ``cache_policy``: name → cache key function, for ``cache_key_fn="name"``.
    """

    def __init__(self) -> None:
        self._tables: dict[str, dict[str, tuple[Any, str]]] = {kind: {} for kind in KINDS}
        self._registering = ""

    @contextlib.contextmanager
    def registering_for(self, plugin_name: str) -> Iterator[None]:
        """Entries added inside name ``plugin_name`` as their source unless they give one."""
        previous, self._registering = self._registering, plugin_name
        try:
            yield
        finally:
            self._registering = previous

    def add(self, kind: str, name: str, factory: Any, source: str = "") -> None:
        """Register ``factory`` as the ``kind`` named ``name``; a later entry replaces it."""
        if kind not in self._tables:
            raise ConfigurationError(f"unknown component kind {kind!r}; expected one of {KINDS}")
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"a {kind} name must be a non-empty string, got {name!r}")
        # Later registrations win, as later plugins do.
        self._tables[kind][name] = (factory, source or self._registering)

    def add_task_runner(self, name: str, factory: Callable[..., Any], source: str = "") -> None:
        self.add("task_runner", name, factory, source)

    def add_run_store(self, scheme: str, factory: Callable[..., Any], source: str = "") -> None:
        self.add("run_store", scheme, factory, source)

    def add_result_store(self, name: str, factory: Callable[..., Any], source: str = "") -> None:
        self.add("result_store", name, factory, source)

    def add_serializer(self, name: str, serializer: Any, source: str = "") -> None:
        self.add("serializer", name, serializer, source)

    def add_cache_policy(self, name: str, key_fn: Callable[..., Any], source: str = "") -> None:
        self.add("cache_policy", name, key_fn, source)

    def get(self, kind: str, name: str, wanted_for: str = "") -> Any:
        """The factory registered as ``name``; an error listing the known names if none."""
        if kind not in self._tables:
            raise ConfigurationError(f"unknown component kind {kind!r}; expected one of {KINDS}")
        table = self._tables[kind]
        try:
            return table[name][0]
        except (KeyError, TypeError):
            known = ", ".join(repr(n) for n in sorted(table)) or "none"
            where = f" for {wanted_for}" if wanted_for else ""
            raise UnknownComponentError(
                f"no {kind.replace('_', ' ')} named {name!r}{where}; registered: {known}"
            ) from None

    def names(self, kind: str) -> list[str]:
        """The registered names of one kind, sorted."""
        return sorted(self._tables[kind])

    def items(self, kind: str) -> list[tuple[str, Any, str]]:
        """``(name, factory, source)`` for one kind, sorted by name."""
        return [(n, f, s) for n, (f, s) in sorted(self._tables[kind].items())]
