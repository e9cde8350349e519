"""Loading a session's plugins into its plugin manager, and recording each one.

Plugins are registered in this order, and pluggy calls later ones first:

1. the default plugins (``headwater.plugins.*``, :data:`DEFAULT_PLUGINS`);
2. entry points in the group ``headwater.plugins`` (unless
   ``HEADWATER_DISABLE_PLUGIN_AUTOLOAD``);
3. modules named in ``HEADWATER_PLUGINS``;
4. ``headwater_hooks.py`` files, root first, found per flow directory as flows run
   (``headwater.local_hooks`` finds and imports them);
5. ``Session(plugins=[...])``, moved back to the end whenever a hook file loads, so it
   is always called first (without replaying ``headwater_configure`` into it).

A name in ``HEADWATER_DISABLE_PLUGINS`` is skipped in 1-4 and never imported. In a
strict session (the default) a plugin that fails to load raises ``PluginError`` and
nothing of the attempt is kept; a non-strict one (``headwater plugins``) records the
error and loads the rest. Each plugin gets a :class:`PluginRecord`, which
``headwater plugins`` shows.
"""

from __future__ import annotations

import difflib
import importlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from .errors import PluginError
from .local_hooks import applies_to, hook_files_for, import_hook_file, is_blocked
from .plugin_manager import PluginManager
from .registry import Registry
from .settings import Settings

__all__ = ["DEFAULT_PLUGINS", "ENTRY_POINT_GROUP", "PluginLoader", "PluginRecord", "build_registry"]

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

#: How errors and ``headwater plugins`` name each source of plugins.
SOURCE_NAMES = {
    "builtin": "builtin",
    "entrypoint": "entry point",
    "env": "HEADWATER_PLUGINS",
    "local": "local file",
    "api": "Session(plugins=...)",
}


@dataclass
class PluginRecord:
    """What ``headwater plugins`` shows for one plugin."""

    name: str
    source: str  # builtin | entrypoint | env | local | api
    detail: str = ""  # distribution and version, file path, or module
    status: str = "loaded"  # loaded | blocked | error: ...
    hooks: list[str] = field(default_factory=list)
    plugin: Any = None


class PluginLoader:
    """Registers one session's plugins in a new plugin manager, in the order above.

    :meth:`load` registers plugins of sources 1-3 and 5 once; :meth:`load_hook_files`
    adds the hook files of a flow directory when its flows first run. ``records`` lists
    every plugin met, loaded or not. The caller serialises calls (the session's lock).
    """

    def __init__(self, settings: Settings, api_plugins: Iterable[Any] = (), strict: bool = True) -> None:
        self.settings = settings
        self.strict = strict
        self.records: list[PluginRecord] = []
        self.plugin_manager = PluginManager()
        self._api_plugins = list(api_plugins)
        self._hook_file_dirs: set[Path] = set()  # directories whose hook files are loaded
        self._hook_files: dict[Path, str] = {}  # registered hook file -> plugin name
        self._skipped_files: set[Path] = set()  # blocked, or failed in a non-strict session

    def load(self) -> PluginManager:
        """Register every plugin but the hook files; the manager, ready for
        ``headwater_configure``. In a strict loader a plugin that fails raises
        :class:`~headwater.errors.PluginError` naming each failed plugin."""
        manager = self.plugin_manager
        blocked = self.settings.disable_plugins
        records: list[PluginRecord] = []
        known: list[str] = []  # every name a blocked entry could have matched

        # Historic, and called before any plugin registers: each plugin's own hookspecs
        # are added the moment it registers, before its implementations are checked.
        manager.hook.headwater_addhooks.call_historic(kwargs={"pluginmanager": manager})
        manager.defer_checks()

        def add(name: str, source: str, detail: str, load: Callable[[], Any],
                aliases: tuple[str, ...] = ()) -> None:
            if source != "api":
                known.append(name)
                known.extend(aliases)
            if source != "api" and (name in blocked or blocked.intersection(aliases)):
                manager.set_blocked(name)
                records.append(PluginRecord(name, source, detail, "blocked"))
                return
            try:
                plugin = load()
                manager.register(plugin, name=name, origin=_describe_source(name, source, detail, plugin))
            except Exception as exc:
                records.append(PluginRecord(name, source, detail, f"error: {_describe_error(exc)}"))
                return
            records.append(PluginRecord(name, source, detail, "loaded", plugin=plugin))

        for name in DEFAULT_PLUGINS:
            module = f"headwater.plugins.{name}"
            add(name, "builtin", module, lambda module=module: importlib.import_module(module), (module,))

        if not self.settings.disable_plugin_autoload:
            # Imported here, not at module level: the scan is the slow part of start-up.
            from importlib.metadata import entry_points

            for entry_point in entry_points(group=ENTRY_POINT_GROUP):
                dist = getattr(entry_point, "dist", None)
                detail = f"{dist.name} {dist.version}" if dist is not None else entry_point.value
                add(entry_point.name, "entrypoint", detail, entry_point.load, (entry_point.module,))

        for module_name in self.settings.plugins:
            add(module_name, "env", "HEADWATER_PLUGINS",
                lambda module_name=module_name: importlib.import_module(module_name))

        for name, plugin in self._api_named():
            add(name, "api", "Session(plugins=...)", lambda plugin=plugin: plugin)
        if blocked:
            origin = self.settings.origins.get("DISABLE_PLUGINS")
            setting = (f"disable_plugins under [tool.headwater] in {origin[0]}" if origin
                       else "HEADWATER_DISABLE_PLUGINS")
            _warn_unknown_blocked(blocked, known, self.settings.disable_plugin_autoload, setting)

        for name, exc in manager.run_deferred_checks():
            for record in records:
                if record.name == name and record.status == "loaded":
                    record.status, record.plugin = f"error: {exc}", None

        errors = [record for record in records if record.status.startswith("error")]
        if errors and self.strict:
            raise PluginError("; ".join(
                f"plugin {record.name!r} ({_describe_source('', record.source, record.detail, None)}) "
                f"failed to load: {record.status[len('error: '):]}" for record in errors
            ) + " (`headwater plugins` lists every plugin; HEADWATER_DISABLE_PLUGINS=NAME skips one)")
        for record in records:
            if record.status == "loaded":
                record.hooks = _hooks_of(manager, record.name)
        self.records = records
        return manager

    def has_hook_files_for(self, directory: Path) -> bool:
        """Whether the hook files of ``directory`` (resolved) are loaded already."""
        return directory in self._hook_file_dirs

    @property
    def hook_files(self) -> list[Path]:
        """The registered ``headwater_hooks.py`` files, in the order they loaded."""
        return list(self._hook_files)

    def load_hook_files(self, directory: Path) -> None:
        """Register the ``headwater_hooks.py`` files that apply to ``directory`` (resolved).

        In a strict loader a file that fails to import, or names an unknown hook, raises
        :class:`~headwater.errors.PluginError`; the files registered before it stay, and
        ``hook_files`` says which. Otherwise the failure is recorded.
        """
        if directory in self._hook_file_dirs:
            return
        manager = self.plugin_manager
        added = False
        try:
            for path in hook_files_for(directory):
                if path in self._hook_files or path in self._skipped_files:
                    continue
                name = str(path)
                if is_blocked(path, self.settings.disable_plugins):
                    self._skipped_files.add(path)
                    self.records.append(PluginRecord(name, "local", name, "blocked"))
                    continue
                try:
                    module = import_hook_file(path)
                    manager.register(module, name=name, origin=name)
                except PluginError as exc:
                    if self.strict:
                        raise
                    self._skipped_files.add(path)
                    self.records.append(PluginRecord(name, "local", name, f"error: {exc}"))
                    continue
                self._hook_files[path] = name
                self.records.append(PluginRecord(name, "local", name, "loaded",
                                                 _hooks_of(manager, name), module))
                added = True
        finally:
            # Also after a failure part-way: the files registered so far stay.
            if added:
                self._move_api_plugins_to_end()
        self._hook_file_dirs.add(directory)

    def hook_plugins_outside(self, directory: Path | None) -> list[Any]:
        """The registered hook files whose flow-level hooks do not apply to flows of
        ``directory`` (all of them for ``None``, flows with no file)."""
        plugins = (self.plugin_manager.get_plugin(name) for path, name in self._hook_files.items()
                   if directory is None or not applies_to(path, directory))
        return [plugin for plugin in plugins if plugin is not None]

    def _api_named(self) -> list[tuple[str, Any]]:
        named = []
        for index, plugin in enumerate(self._api_plugins):
            name = getattr(plugin, "__name__", None)
            named.append((name if isinstance(name, str) else f"api-{index}-{type(plugin).__name__}", plugin))
        return named

    def _move_api_plugins_to_end(self) -> None:
        """Keep ``Session(plugins=...)`` last in line, so they are still called first."""
        manager = self.plugin_manager
        for name, plugin in self._api_named():
            if manager.get_plugin(name) is not plugin:
                continue  # it failed to load (non-strict session)
            manager.move_to_end(plugin, name, manager.origin(name))
            for record in [record for record in self.records if record.plugin is plugin]:
                self.records.remove(record)
                self.records.append(record)


def build_registry(manager: PluginManager) -> Registry:
    """Call every ``headwater_register_components``, oldest plugin first, so later wins."""
    registry = Registry()
    # get_hookimpls() lists the oldest (and trylast) first; pluggy calls from the end.
    for impl in manager.hook.headwater_register_components.get_hookimpls():
        if impl.wrapper or impl.hookwrapper:
            continue  # nothing to wrap: each implementation just adds entries
        with registry.registering_for(impl.plugin_name):
            impl.function(registry=registry)
    return registry


def _describe_source(name: str, source: str, detail: str, plugin: Any) -> str:
    """How errors name a plugin: its file when it has one, and where it came from."""
    what = SOURCE_NAMES[source] + (f", {detail}" if detail and detail != SOURCE_NAMES[source] else "")
    location = getattr(plugin, "__file__", None) or name
    return f"{location} ({what})" if location else what


def _warn_unknown_blocked(blocked: frozenset[str], known: list[str], autoload_off: bool,
                          setting: str) -> None:
    """Warn about ``HEADWATER_DISABLE_PLUGINS`` names that match no plugin (a typo there
    would otherwise leave the plugin running, silently)."""
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


def _describe_error(exc: BaseException) -> str:
    if isinstance(exc, PluginError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _hooks_of(manager: PluginManager, name: str) -> list[str]:
    plugin = manager.get_plugin(name)
    return sorted(caller.name for caller in (manager.get_hookcallers(plugin) or []))
