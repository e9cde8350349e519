"""The plugin manager: pluggy's, with headwater's rules for what a hook may look like.

* Functions named ``headwater_*`` count as hook implementations even without the
  ``@hookimpl`` marker, so a ``headwater_hooks.py`` file can be plain functions.
* A ``headwater_*`` name that is not a known hook is an error naming the plugin, so a
  typo is never silently ignored.
* Old-style ``hookwrapper=True`` is refused in favour of ``wrapper=True``.
"""

from __future__ import annotations

import inspect
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError

PROJECT = "headwater"
PREFIX = "headwater_"

hookimpl = pluggy.HookimplMarker(PROJECT)


class PluginManager(pluggy.PluginManager):
    def __init__(self) -> None:
        super().__init__(PROJECT)
        self.add_hookspecs(hookspecs)
        self._origins: dict[str, str] = {}

    def parse_hookimpl_opts(self, plugin: Any, name: str) -> Any:
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith(PREFIX) and inspect.isroutine(getattr(plugin, name, None)):
            opts = {}
        return opts

    def register(self, plugin: Any, name: str | None = None, origin: str | None = None) -> str | None:
        """Register ``plugin``; ``origin`` (a file or distribution) is named in errors."""
        where = origin or name or getattr(plugin, "__file__", None) or repr(plugin)
        self._check(plugin, where)
        registered = super().register(plugin, name)
        if registered is not None:
            self._origins[registered] = where
        return registered

    def origin(self, name: str) -> str:
        return self._origins.get(name, name)

    def _check(self, plugin: Any, where: str) -> None:
        # Checked before pluggy registers anything, so a bad plugin leaves no half state.
        known = {n for n in dir(self.hook) if n.startswith(PREFIX)}
        for attr in dir(plugin):
            if not attr.startswith(PREFIX):
                continue
            opts = self.parse_hookimpl_opts(plugin, attr)
            if opts is None:
                continue
            hook_name = opts.get("specname") or attr
            caller = getattr(self.hook, hook_name, None)
            if hook_name not in known or caller is None or not caller.has_spec():
                close = [k for k in sorted(known) if _similar(k, hook_name)]
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise PluginError(f"unknown hook {hook_name!r} in {where}{hint} "
                                  f"(headwater hooks are listed in docs/hooks.md)")
            if opts.get("hookwrapper"):
                raise PluginError(
                    f"{hook_name} in {where} uses hookwrapper=True, which headwater does not "
                    f"accept; use @hookimpl(wrapper=True) and return the result of the yield"
                )


def _similar(a: str, b: str) -> bool:
    import difflib

    return difflib.SequenceMatcher(None, a, b).ratio() > 0.8
