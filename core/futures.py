"""Futures of submitted task runs (:class:`Future`), waiting for several at once
(:func:`wait`, :func:`as_completed`), ``unmapped`` for ``Task.map``, and the helpers
runners use with them.

The engine's own module is :mod:`headwater.engine.futures`; this is the public path
(Prefect's ``prefect.futures``).
"""

from __future__ import annotations

from .engine.futures import (DoneAndNotDoneFutures, Future, FutureList, Work, as_completed, collect_futures,
                             resolve_futures, unmapped, wait, when_all_done)

__all__ = ["DoneAndNotDoneFutures", "Future", "FutureList", "Work", "as_completed", "collect_futures",
           "resolve_futures", "unmapped", "wait", "when_all_done"]
