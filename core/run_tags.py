"""Tags for the runs created in a block: ``with tags("nightly", "eu"): ...``.

Every flow run and task run created inside the block gets these tags on top of its
flow's or task's own ``tags=``; blocks nest (an inner block adds to the outer one's) and
leaving a block restores the tags that held before it. The tags are recorded with each
run in the run store, and read back on ``headwater.runtime`` and in ``headwater runs``.

Named ``run_tags`` rather than ``tags`` so that ``headwater.tags`` stays the function
(``from headwater import tags``): a submodule of that name would replace it as an
attribute of the package once imported.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

from .errors import ConfigurationError

__all__ = ["tags", "current_tags"]

#: The tags of the enclosing ``with tags(...)`` blocks. A context variable, so async
#: tasks and threads started with a copy of the context see the block that started them.
#: Outside any block it holds the one shared empty frozenset: creating a run checks it
#: for truth, one read (tests/core/test_run_tags.py).
tags_var: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar("headwater_tags", default=frozenset())


@contextlib.contextmanager
def tags(*names: str) -> Iterator[frozenset[str]]:
    """Add ``names`` to the tags of every flow run and task run created inside the block.

    Yields every tag in effect (this block's and the enclosing blocks'). Each name must
    be a string, e.g. ``with tags("nightly", "eu"):``.
    """
    for name in names:
        if not isinstance(name, str):
            raise ConfigurationError(f"tags({', '.join(map(repr, names))}): every tag must be a string, "
                                     f"got {name!r}; e.g. tags('nightly', 'eu')")
    in_effect = tags_var.get().union(names)
    token = tags_var.set(in_effect)
    try:
        yield in_effect
    finally:
        tags_var.reset(token)


def current_tags() -> frozenset[str]:
    """The tags of the enclosing ``with tags(...)`` blocks (empty outside any)."""
    return tags_var.get()
