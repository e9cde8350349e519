"""Run ids: random ones for flow runs, time-ordered ones for task runs.

Both are UUID-formatted text. Flow run ids are random (uuid4), so the first eight
characters that listings show tell runs apart. Task run ids are time-ordered (the
UUIDv7 layout: milliseconds since the epoch, then a per-process random part plus a
counter): a flow writes thousands of them, and ids that grow keep the run store's
indexes appending instead of inserting at random pages, which made a 100,000-task
flow three times slower per task than a 10,000-task one. They are also about three
times cheaper to make than ``uuid4()``.
"""

from __future__ import annotations

import itertools
import os
import time
import uuid

__all__ = ["random_id", "time_ordered_id"]

_MASK62 = (1 << 62) - 1


def _seed() -> None:
    # Per process (and again in a forked child, so parent and child never share a
    # sequence): 12 + 62 random bits; the counter keeps ids unique within the process.
    global _counter, _node, _head
    _counter = itertools.count()
    _node = int.from_bytes(os.urandom(8), "big")
    rand_a = int.from_bytes(os.urandom(2), "big") & 0xFFF
    _head = (0x7 << 76) | (rand_a << 64) | (0b10 << 62)  # version 7, RFC 4122 variant


_seed()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_seed)


def random_id() -> str:
    """A random UUID (version 4) as text."""
    return str(uuid.uuid4())


def time_ordered_id() -> str:
    """A UUID (version 7 layout) as text; ids made later sort after earlier ones
    (to the millisecond; within one process, strictly until the counter wraps)."""
    value = (time.time_ns() // 1_000_000) << 80 | _head | ((_node + next(_counter)) & _MASK62)
    h = "%032x" % value
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
