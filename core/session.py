"""Session: settings, the plugin manager, the registry and the run store, together.

One session per process is made lazily at the first run. Tests and embedding code make
their own: ``with Session(plugins=[...], env={...}) as session: my_flow()``.

Plugins are registered in this order, and pluggy calls later ones first:

1. the default plugins (``headwater.plugins.*``);
2. entry points in the group ``headwater.plugins`` (unless
   ``HEADWATER_DISABLE_PLUGIN_AUTOLOAD``);
3. modules named in ``HEADWATER_PLUGINS``;
4. ``headwater_hooks.py`` files, root first, found per flow directory as flows run;
5. ``Session(plugins=[...])``, moved back to the end whenever a hook file loads, so it
   is always called first (without replaying ``headwater_configure`` into it).

A name in ``HEADWATER_DISABLE_PLUGINS`` is skipped in 1-4 and never imported. In a
strict session (the default) a plugin that fails to load raises ``PluginError`` and
nothing of the attempt is kept; ``Session(strict=False)`` (``headwater plugins``)
records the error and loads the rest.
"""

from __future__ import annotations

import atexit
import contextvars
import importlib
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from .errors import PluginError, StoreError
from .settings import Settings

if TYPE_CHECKING:
    from .bindings import FlowBindings
    from .plugin_manager import PluginManager
    from .registry import Registry
    from .stores import RunStore

DEFAULT_PLUGINS = (
    "call_body",
    "run_naming",
    "input_hash",
    "retries",
    "caching",
    "local_results",
    "sqlite_store",
    "sequential_runner",
    "concurrent_runner",
    "console_log",
    "run_logs",
    "cli_commands",
    "dashboard",
)
ENTRY_POINT_GROUP = "headwater.plugins"


@dataclass
class PluginRecord:
    """What ``headwater plugins`` shows for one plugin."""

    name: str
    source: str  # builtin | entrypoint | env | local | api
    detail: str = ""  # distribution and version, file path, or module
    status: str = "loaded"  # loaded | blocked | error: ...
    hooks: list[str] = field(default_factory=list)
    plugin: Any = None


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
        self.records: list[PluginRecord] = []
        self._pm: PluginManager | None = None
        self._registry: Registry | None = None
        self._store: RunStore | None = None
        self._lock = threading.RLock()
        self._local_dirs: set[Path] = set()
        self._local_files: dict[Path, str] = {}  # hook file -> plugin name
        self._skipped_files: set[Path] = set()  # blocked, or failed in a non-strict session
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
                            f"no run store for HEADWATER_DATABASE_URL={self.settings.database_url!r}: "
                            f"no plugin made one (is the sqlite_store plugin disabled?)"
                        )
                    self._store = store
        return self._store

    # -- loading ------------------------------------------------------------------

    def _load(self) -> None:
        from .plugin_manager import PluginManager

        settings = self.settings
        pm = PluginManager()
        blocked = settings.disable_plugins
        records: list[PluginRecord] = []

        # Historic, and called before any plugin registers: each plugin's own hookspecs
        # are added the moment it registers, before its implementations are checked.
        pm.hook.headwater_addhooks.call_historic(kwargs={"pluginmanager": pm})
        pm.defer_checks()

        known: list[str] = []  # every name a blocked entry could have matched

        def add(name: str, source: str, detail: str, load: Any, aliases: tuple[str, ...] = ()) -> None:
            if source != "api":
                known.append(name)
                known.extend(aliases)
            if source != "api" and (name in blocked or blocked.intersection(aliases)):
                pm.set_blocked(name)
                records.append(PluginRecord(name, source, detail, "blocked"))
                return
            try:
                plugin = load()
                pm.register(plugin, name=name, origin=_where(name, source, detail, plugin))
            except Exception as exc:
                records.append(PluginRecord(name, source, detail, f"error: {_describe(exc)}"))
                return
            records.append(PluginRecord(name, source, detail, "loaded", plugin=plugin))

        for name in DEFAULT_PLUGINS:
            module = f"headwater.plugins.{name}"
            add(name, "builtin", module, lambda m=module: importlib.import_module(m), (module,))

        if not settings.disable_plugin_autoload:
            # Imported here, not at module level: the scan is the slow part of start-up.
            from importlib.metadata import entry_points

            for ep in entry_points(group=ENTRY_POINT_GROUP):
                dist = getattr(ep, "dist", None)
                detail = f"{dist.name} {dist.version}" if dist is not None else ep.value
                add(ep.name, "entrypoint", detail, ep.load, (ep.module,))

        for module_name in settings.plugins:
            add(module_name, "env", "HEADWATER_PLUGINS",
                lambda m=module_name: importlib.import_module(m))

        for name, plugin in self._api_named():
            add(name, "api", "Session(plugins=...)", lambda p=plugin: p)
        if blocked:
            origin = settings.origins.get("DISABLE_PLUGINS")
            setting = (f"disable_plugins under [tool.headwater] in {origin[0]}" if origin
                       else "HEADWATER_DISABLE_PLUGINS")
            _warn_unknown_blocked(blocked, known, settings.disable_plugin_autoload, setting)

        for name, exc in pm.run_deferred_checks():
            for record in records:
                if record.name == name and record.status == "loaded":
                    record.status, record.plugin = f"error: {exc}", None

        errors = [r for r in records if r.status.startswith("error")]
        if errors and self.strict:
            # Nothing of this attempt is kept: the next use tries again from scratch.
            raise PluginError("; ".join(
                f"plugin {r.name!r} ({_where('', r.source, r.detail, None)}) failed to load: "
                f"{r.status[len('error: '):]}" for r in errors
            ) + " (`headwater plugins` lists every plugin; HEADWATER_DISABLE_PLUGINS=NAME skips one)")
        for record in records:
            if record.status == "loaded":
                record.hooks = _hooks_of(pm, record.name)

        self.records = records
        pm.hook.headwater_configure.call_historic(kwargs={"session": self})
        self._registry = _build_registry(pm)
        self._pm = pm

    def _api_named(self) -> list[tuple[str, Any]]:
        named = []
        for index, plugin in enumerate(self._api_plugins):
            name = getattr(plugin, "__name__", None)
            named.append((name if isinstance(name, str) else f"api-{index}-{type(plugin).__name__}", plugin))
        return named

    def _move_api_plugins_to_end(self) -> None:
        """Keep ``Session(plugins=...)`` last in line, so they are still called first."""
        assert self._pm is not None
        for name, plugin in self._api_named():
            if self._pm.get_plugin(name) is not plugin:
                continue  # it failed to load (non-strict session)
            self._pm.move_to_end(plugin, name, self._pm.origin(name))
            for record in [r for r in self.records if r.plugin is plugin]:
                self.records.remove(record)
                self.records.append(record)

    def load_local_hooks(self, directory: Path) -> None:
        """Register the ``headwater_hooks.py`` files that apply to ``directory``.

        In a strict session a file that fails to import, or names an unknown hook, raises
        :class:`~headwater.errors.PluginError`; otherwise it is recorded with its error.
        """
        directory = directory.resolve()
        if directory in self._local_dirs:
            return
        from .local_hooks import hook_files_for, import_hook_file, is_blocked

        pm = self.pm
        with self._lock:
            if directory in self._local_dirs:
                return
            added = False
            try:
                for path in hook_files_for(directory):
                    if path in self._local_files or path in self._skipped_files:
                        continue
                    name = str(path)
                    if is_blocked(path, self.settings.disable_plugins):
                        self._skipped_files.add(path)
                        self.records.append(PluginRecord(name, "local", name, "blocked"))
                        continue
                    try:
                        module = import_hook_file(path)
                        pm.register(module, name=name, origin=name)
                    except PluginError as exc:
                        if self.strict:
                            raise
                        self._skipped_files.add(path)
                        self.records.append(PluginRecord(name, "local", name, f"error: {exc}"))
                        continue
                    self._local_files[path] = name
                    self.records.append(PluginRecord(name, "local", name, "loaded",
                                                     _hooks_of(pm, name), module))
                    added = True
            finally:
                # Also after a failure part-way: the files already registered stay, so the
                # order and the registry must account for them.
                if added:
                    self._move_api_plugins_to_end()
                    self._registry = _build_registry(pm)
                    self._bindings.clear()
            self._local_dirs.add(directory)

    def bindings_for(self, directory: Path | None) -> FlowBindings:
        """Hooks bound for flows defined in ``directory`` (cached per directory)."""
        bindings = self._bindings.get(directory)
        if bindings is not None:
            return bindings
        from .bindings import FlowBindings

        # Under the lock: load_local_hooks for another directory, in another thread,
        # adds to _local_files and clears the cache; bindings made from the files known
        # before it would be cached after it, applying its new file here too.
        with self._lock:
            bindings = self._bindings.get(directory)
            if bindings is None:
                if directory is not None:
                    self.load_local_hooks(directory)
                excluded = [
                    self.pm.get_plugin(name)
                    for path, name in self._local_files.items()
                    if directory is None or not _applies(path, directory)
                ]
                bindings = FlowBindings(self, [p for p in excluded if p is not None])
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


_SOURCES = {
    "builtin": "builtin",
    "entrypoint": "entry point",
    "env": "HEADWATER_PLUGINS",
    "local": "local file",
    "api": "Session(plugins=...)",
}


def _where(name: str, source: str, detail: str, plugin: Any) -> str:
    """How errors name a plugin: its file when it has one, and where it came from."""
    what = _SOURCES[source] + (f", {detail}" if detail and detail != _SOURCES[source] else "")
    location = getattr(plugin, "__file__", None) or name
    return f"{location} ({what})" if location else what


def _warn_unknown_blocked(blocked: frozenset[str], known: list[str], autoload_off: bool,
                          setting: str) -> None:
    """Warn about ``HEADWATER_DISABLE_PLUGINS`` names that match no plugin (a typo there
    would otherwise leave the plugin running, silently)."""
    import difflib
    import warnings

    for name in sorted(blocked):
        # Hook files are matched by path when their directory's flows first run (later).
        if name in known or name.endswith("headwater_hooks.py"):
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        if not close and autoload_off:
            continue  # may name an entry point, not scanned with autoload off
        hint = f"; did you mean {close[0]!r}?" if close else ""
        warnings.warn(f"{setting} names {name!r}, which is not a plugin{hint} "
                      f"(`headwater plugins` lists plugin names)", UserWarning, stacklevel=2)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, PluginError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _hooks_of(pm: PluginManager, name: str) -> list[str]:
    plugin = pm.get_plugin(name)
    return sorted(c.name for c in (pm.get_hookcallers(plugin) or []))


def _build_registry(pm: PluginManager) -> Registry:
    """Call every ``headwater_register_components``, oldest plugin first, so later wins."""
    from .registry import Registry

    registry = Registry()
    # get_hookimpls() lists the oldest (and trylast) first; pluggy calls from the end.
    for impl in pm.hook.headwater_register_components.get_hookimpls():
        if impl.wrapper or impl.hookwrapper:
            continue  # nothing to wrap: each implementation just adds entries
        with registry.registering_for(impl.plugin_name):
            impl.function(registry=registry)
    return registry


def _applies(path: Path, directory: Path) -> bool:
    from .local_hooks import applies_to

    return applies_to(path, directory)


_active: contextvars.ContextVar[Session | None] = contextvars.ContextVar(
    "headwater_session", default=None
)
_process_session: Session | None = None
# Sessions inside a ``with`` block, innermost last: threads started without a copy of
# the context (plain threading.Thread, thread pools) still find the one in use.
_entered: list[Session] = []
_process_lock = threading.Lock()
