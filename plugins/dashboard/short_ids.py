"""Short forms of run ids that still tell the runs on one page apart.

Task run ids are time-ordered (``headwater.ids``): runs made in the same millisecond
share their first twelve characters, so the eight-character prefixes listings used to
show repeat. Their random part and counter are at the end, so the dashboard shows the
shortest *suffix* that differs between the ids a page shows (at least four characters).
"""

from __future__ import annotations

from typing import Iterable

MIN_LENGTH = 4


def short_suffixes(ids: Iterable[str], minimum: int = MIN_LENGTH) -> dict[str, str]:
    """Each id's shortest suffix (of ``minimum`` characters or more, dashes left out)
    that no other id of ``ids`` ends with: ``{id: suffix}``."""
    plain = {i: i.replace("-", "") for i in ids}
    if not plain:
        return {}
    longest = max(len(p) for p in plain.values())
    length = min(minimum, longest)
    while length < longest:
        tails = [p[-length:] for p in plain.values()]
        if len(set(tails)) == len(tails):
            break
        length += 1
    return {i: p[-length:] for i, p in plain.items()}
