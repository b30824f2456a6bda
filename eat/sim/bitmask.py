"""Sets of server ids as Python integers (bit ``i`` set: server ``i`` is in the set).

The simulator keeps who is free, which models each server holds, and which servers
belong to a GPU type, a speed class or a site as such masks, so that "the free servers
of this site that hold this model" is one ``&`` and its size one ``bit_count()``,
whatever the number of servers: the per-event cost then grows with the number of
groups a question touches, not with the cluster.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

_DENSE = 24
"""Above this many members, :func:`ids_of` unpacks the bytes with numpy (faster than a
loop over the set bits)."""


def mask_of(ids: Iterable[int]) -> int:
    """The mask of a set of ids."""
    mask = 0
    for server_id in ids:
        mask |= 1 << server_id
    return mask


def lowest(mask: int, count: int) -> list[int]:
    """The ``count`` lowest ids of ``mask``, ascending (all of them if it has fewer)."""
    found = []
    while mask and len(found) < count:
        low = mask & -mask
        found.append(low.bit_length() - 1)
        mask ^= low
    return found


def ids_of(mask: int) -> list[int]:
    """Every id of ``mask``, ascending."""
    if mask.bit_count() <= _DENSE:
        return lowest(mask, mask.bit_count())
    raw = np.frombuffer(mask.to_bytes((mask.bit_length() + 7) // 8, "little"), dtype=np.uint8)
    return np.flatnonzero(np.unpackbits(raw, bitorder="little")).tolist()


__all__ = ["ids_of", "lowest", "mask_of"]
