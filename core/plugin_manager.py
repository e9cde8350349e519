"""The plugin manager: pluggy's, with headwater's rules for what a hook may look like.

* Functions named ``headwater_*`` count as hook implementations even without the
  ``@hookimpl`` marker, so a ``headwater_hooks.py`` file can be plain functions.
* A ``headwater_*`` name that is not a known hook is an error naming the plugin and its
  file, so a typo is never silently ignored. Hooks added by ``headwater_addhooks`` count
  as known: the unknown-name check runs after a plugin's own ``headwater_addhooks``.
* An implementation taking an argument the hook does not pass is an error naming the
  hook, the file, the arguments it takes and the ones the hook passes.
* Old-style ``hookwrapper=True`` is refused in favour of ``wrapper=True``.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any, Iterator

import pluggy

from . import hookspecs
from .errors import PluginError

PROJECT = "headwater"
PREFIX = "headwater_"

hookimpl = pluggy.HookimplMarker(PROJECT)


class PluginManager(pluggy.PluginManager):
    """pluggy's manager with headwater's checks; a :class:`~headwater.Session` owns one."""

    def __init__(self) -> None:
        super().__init__(PROJECT)
        self.add_hookspecs(hookspecs)
        self._origins: dict[str, str] = {}
        #: While set, unknown hook names are collected here instead of raising, so that a
        #: plugin may implement a hook that a plugin registered after it adds.
        self._deferred: list[tuple[str, Any, str]] | None = None

    def parse_hookimpl_opts(self, plugin: Any, name: str) -> Any:
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith(PREFIX) and inspect.isroutine(getattr(plugin, name, None)):
            opts = {}
        return opts

    def register(self, plugin: Any, name: str | None = None, origin: str | None = None) -> str | None:
        """Register ``plugin``; ``origin`` (a file or distribution) is named in errors."""
        where = origin or name or getattr(plugin, "__file__", None) or repr(plugin)
        self._check_wrappers(plugin, where)
        self._check_arguments(plugin, where)
        if self._deferred is None and self.parse_hookimpl_opts(plugin, "headwater_addhooks") is None:
            # Nothing can add the missing hook: refuse before pluggy replays historic hooks
            # (headwater_configure) into a plugin that is then rejected.
            error = self._unknown_error(plugin, where)
            if error is not None:
                raise error
        try:
            registered = super().register(plugin, name)
        except ValueError as exc:  # a duplicate name or plugin: say which, without a dict dump
            raise PluginError(f"cannot register {name or plugin!r} from {where}: "
                              f"{str(exc).splitlines()[0]}") from None
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"{where}: {exc}") from None
        if registered is None:
            return None  # blocked
        self._origins[registered] = where
        if self._deferred is not None:
            self._deferred.append((registered, plugin, where))
        else:
            self._check_known_or_unregister(registered, plugin, where)
        return registered

    def origin(self, name: str) -> str:
        """Where the plugin registered as ``name`` came from (file, distribution, ...)."""
        return self._origins.get(name, name)

    def defer_checks(self) -> None:
        """Collect unknown-hook checks until :meth:`run_deferred_checks` (bulk loading)."""
        self._deferred = []

    def run_deferred_checks(self) -> list[tuple[str, PluginError]]:
        """Check the plugins registered since :meth:`defer_checks`; unregister bad ones.

        Returns ``(plugin name, error)`` for each plugin that was removed.
        """
        pending, self._deferred = self._deferred or [], None
        failures = []
        for name, plugin, where in pending:
            try:
                self._check_known_or_unregister(name, plugin, where)
            except PluginError as exc:
                failures.append((name, exc))
        return failures

    def move_to_end(self, plugin: Any, name: str, origin: str | None = None) -> None:
        """Re-register ``plugin`` so that it is called before everything registered so far.

        Historic hooks (``headwater_addhooks``, ``headwater_configure``) are not replayed:
        the plugin already received them once.
        """
        self.unregister(plugin)
        historic = [caller for caller in vars(self.hook).values()
                    if isinstance(caller, pluggy.HookCaller) and caller.is_historic()]
        # pluggy replays the call history into every impl it registers; an empty history
        # keeps the hook historic but replays nothing.
        saved = [(caller, caller._call_history) for caller in historic]
        try:
            for caller, _ in saved:
                caller._call_history = []
            self.register(plugin, name=name, origin=origin)
        finally:
            for caller, history in saved:
                caller._call_history = history

    # -- checks ---------------------------------------------------------------------

    def _check_wrappers(self, plugin: Any, where: str) -> None:
        # Checked before pluggy registers anything, so a bad plugin leaves no half state.
        for attr in dir(plugin):
            if not attr.startswith(PREFIX):
                continue
            opts = self.parse_hookimpl_opts(plugin, attr)
            if opts and opts.get("hookwrapper"):
                hook_name = opts.get("specname") or attr
                raise PluginError(
                    f"{hook_name} in {where} uses hookwrapper=True, which headwater does not "
                    f"accept; use @hookimpl(wrapper=True) and return the result of the yield"
                )

    def _implementations(self, plugin: Any) -> Iterator[tuple[str, str, Any]]:
        """``(attribute, hook name, hook caller or None)`` for each hook function of a plugin."""
        for attr in dir(plugin):
            if not attr.startswith(PREFIX):
                continue
            opts = self.parse_hookimpl_opts(plugin, attr)
            if opts is not None:
                hook_name = opts.get("specname") or attr
                yield attr, hook_name, getattr(self.hook, hook_name, None)

    def _check_arguments(self, plugin: Any, where: str) -> None:
        # pluggy's own message ("Argument(s) {'params'} are declared in the hookimpl but
        # can not be found in the hookspec") names neither the file nor the fix.
        for attr, hook_name, caller in self._implementations(plugin):
            if caller is None or caller.spec is None:
                continue  # unknown hooks are reported by the unknown-name check
            takes = _required_args(getattr(plugin, attr))
            if takes is None:
                continue
            passes = tuple(caller.spec.argnames)
            extra = [name for name in takes if name not in passes]
            if extra:
                raise PluginError(
                    f"{hook_name} in {where} takes ({', '.join(takes)}) but the hook passes "
                    f"({', '.join(passes)}); rename the argument(s) {', '.join(extra)} to "
                    f"names the hook passes (an implementation may take any of them, by name)"
                )

    def _unknown_hooks(self, plugin: Any) -> list[str]:
        unknown = []
        for _attr, hook_name, caller in self._implementations(plugin):
            if caller is None or not caller.has_spec():
                unknown.append(hook_name)
        return unknown

    def _check_known_or_unregister(self, name: str, plugin: Any, where: str) -> None:
        error = self._unknown_error(plugin, where)
        if error is not None:
            self.unregister(plugin)
            self._origins.pop(name, None)
            raise error

    def _unknown_error(self, plugin: Any, where: str) -> PluginError | None:
        unknown = self._unknown_hooks(plugin)
        if not unknown:
            return None
        known = sorted(n for n, c in vars(self.hook).items()
                       if n.startswith(PREFIX) and isinstance(c, pluggy.HookCaller) and c.has_spec())
        hook_name = unknown[0]
        close = difflib.get_close_matches(hook_name, known, n=1, cutoff=0.8)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return PluginError(f"unknown hook {hook_name!r} in {where}{hint} "
                           f"(known hooks: {', '.join(known)}; `headwater plugins --order HOOK` "
                           f"shows who implements one)")


def _required_args(function: Any) -> tuple[str, ...] | None:
    """The arguments pluggy passes by name to ``function``: positional ones without a
    default (``self`` of a bound method excluded). ``None`` when it has no signature."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return tuple(p.name for p in signature.parameters.values()
                 if p.kind in kinds and p.default is inspect.Parameter.empty)

