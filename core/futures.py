"""Futures of submitted task runs (:class:`Future`), ``unmapped`` for ``Task.map``,
and the helpers runners use with them.

The engine's own module is :mod:`headwater.engine.futures`; this is the public path.
"""

from __future__ import annotations

from .engine.futures import Future, Work, collect_futures, resolve_futures, unmapped, when_all_done

__all__ = ["Future", "Work", "collect_futures", "resolve_futures", "unmapped", "when_all_done"]
