"""Session: settings, the plugin manager, the registry and the run store, together.

One session per process is made lazily at the first run. Tests and embedding code make
their own: ``with Session(plugins=[...], env={...}) as session: my_flow()``.

The session loads its plugins on first use of ``pm`` (``headwater.plugin_loading`` says
in which order, and how a plugin that fails to load is reported), and the
``headwater_hooks.py`` files of a flow's directory when that directory's flows first run.
"""

from __future__ import annotations

import atexit
import contextvars
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from .bindings import FlowBindings
from .errors import StoreError
from .plugin_loading import DEFAULT_PLUGINS, ENTRY_POINT_GROUP, PluginLoader, PluginRecord, build_registry
from .settings import Settings

if TYPE_CHECKING:
    from .plugin_manager import PluginManager
    from .registry import Registry
    from .stores import RunStore

__all__ = ["DEFAULT_PLUGINS", "ENTRY_POINT_GROUP", "PluginRecord", "Session"]


class Session:
    """Settings, plugin manager, component registry and run store for one use of headwater.

    ``plugins`` are registered last (called first); ``env`` replaces ``os.environ`` as
    the source of ``HEADWATER_*`` settings; ``strict=False`` records plugins that fail
    to load instead of raising. Use it as a context manager to make it current.
    """

    def __init__(
        self,
        plugins: Iterable[Any] = (),
        settings: Settings | None = None,
        env: Mapping[str, str] | None = None,
        strict: bool = True,
    ) -> None:
        self._settings = settings
        self._env = env
        self._api_plugins = list(plugins)
        #: Raise when a plugin fails to load (runs); the CLI listing sets it off.
        self.strict = strict
        self._loader: PluginLoader | None = None
        self._pm: PluginManager | None = None
        self._registry: Registry | None = None
        self._store: RunStore | None = None
        self._lock = threading.RLock()
        self._bindings: dict[Path | None, FlowBindings] = {}
        self._token: contextvars.Token | None = None
        self._closed = False

    # -- activation ---------------------------------------------------------------

    @classmethod
    def current(cls) -> Session:
        """The session in use: the innermost ``with Session()`` of this context; in a
        thread that did not inherit the context, the innermost one still open in the
        process; else the process session, made on first use."""
        session = _active.get()
        if session is not None:
            return session
        with _process_lock:
            if _entered:
                return _entered[-1]
        global _process_session
        if _process_session is None:
            with _process_lock:
                if _process_session is None:
                    _process_session = cls()
                    atexit.register(_process_session.close)
        return _process_session

    def __enter__(self) -> Session:
        self._token = _active.set(self)
        with _process_lock:
            _entered.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._token is not None:
            _active.reset(self._token)
            self._token = None
        with _process_lock:
            if self in _entered:
                _entered.remove(self)
        self.close()

    # -- lazy parts ---------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        """The ``HEADWATER_*`` settings, read on first use."""
        if self._settings is None:
            self._settings = Settings.load(self._env)
        return self._settings

    @property
    def pm(self) -> PluginManager:
        """The plugin manager; the first access loads every plugin (once)."""
        if self._pm is None:
            with self._lock:
                if self._pm is None:
                    self._load()
        assert self._pm is not None
        return self._pm

    @property
    def registry(self) -> Registry:
        """Named task runners, stores, serializers and cache policies from the plugins."""
        self.pm
        assert self._registry is not None
        return self._registry

    @property
    def store(self) -> RunStore:
        """The run store, made by ``headwater_make_run_store`` on first use."""
        if self._store is None:
            with self._lock:
                if self._store is None:
                    if self._closed:
                        raise StoreError("this session is closed; open a new Session")
                    store = self.pm.hook.headwater_make_run_store(session=self)
                    if store is None:
                        raise StoreError(
                            f"no run store for {self.settings.describe('DATABASE_URL', self.settings.database_url)}: "
                            f"no plugin made one (is the sqlite_store plugin disabled?)"
                        )
                    self._store = store
        return self._store

    @property
    def records(self) -> list[PluginRecord]:
        """Every plugin met so far, loaded or not (what ``headwater plugins`` lists)."""
        return self._loader.records if self._loader is not None else []

    # -- loading ------------------------------------------------------------------

    def _load(self) -> None:
        # A new loader each time: when a strict load fails, nothing of the attempt is
        # kept and the next use tries again from scratch.
        loader = PluginLoader(self.settings, self._api_plugins, self.strict)
        manager = loader.load()
        self._loader = loader
        manager.hook.headwater_configure.call_historic(kwargs={"session": self})
        self._registry = build_registry(manager)
        self._pm = manager

    def _loaded_plugins(self) -> PluginLoader:
        """The plugin loader, once the plugins are loaded (loading them on first use)."""
        self.pm
        assert self._loader is not None
        return self._loader

    def load_local_hooks(self, directory: Path) -> None:
        """Register the ``headwater_hooks.py`` files that apply to ``directory``.

        In a strict session a file that fails to import, or names an unknown hook, raises
        :class:`~headwater.errors.PluginError`; otherwise it is recorded with its error.
        """
        directory = directory.resolve()
        if self._loader is not None and self._loader.has_hook_files_for(directory):
            return
        loader = self._loaded_plugins()
        with self._lock:
            loaded_before = len(loader.hook_files)
            try:
                loader.load_hook_files(directory)
            finally:
                # Also after a failure part-way: the files already registered stay, so
                # the registry and the bindings must account for them.
                if len(loader.hook_files) != loaded_before:
                    self._registry = build_registry(loader.plugin_manager)
                    self._bindings.clear()

    def bindings_for(self, directory: Path | None) -> FlowBindings:
        """Hooks bound for flows defined in ``directory`` (cached per directory)."""
        bindings = self._bindings.get(directory)
        if bindings is not None:
            return bindings
        # Under the lock: load_local_hooks for another directory, in another thread,
        # adds hook files and clears the cache; bindings made from the files known
        # before it would be cached after it, applying its new file here too.
        with self._lock:
            bindings = self._bindings.get(directory)
            if bindings is None:
                if directory is not None:
                    self.load_local_hooks(directory)
                bindings = FlowBindings(self, self._loaded_plugins().hook_plugins_outside(directory))
                self._bindings[directory] = bindings
        return bindings

    def close(self) -> None:
        """Flush and close the run store and unconfigure plugins. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        store, self._store = self._store, None
        try:
            if store is not None:
                store.close()
        finally:
            if self._pm is not None:
                self._pm.hook.headwater_unconfigure(session=self)


_active: contextvars.ContextVar[Session | None] = contextvars.ContextVar(
    "headwater_session", default=None
)
_process_session: Session | None = None
# Sessions inside a ``with`` block, innermost last: threads started without a copy of
# the context (plain threading.Thread, thread pools) still find the one in use.
_entered: list[Session] = []
_process_lock = threading.Lock()
