"""The answers of a parallel query's parts put back together.

Owns: the merge rules: a select's matches concatenated in part order (the
heap order a one-process scan gives, so ``order_by``'s stable sort, ``distinct``
and paging, applied afterwards by the Table, see the same sequence), and an
aggregate's partial Accumulators merged in part order (so groups come out
in the order they were first seen in the heap, as with ``workers=1``).
Must never: read storage, or shape rows (query/shape.py does, after the merge).

Sums and averages of floats add per part, then across parts: the same
values in another grouping, so they may differ from ``workers=1`` in the
last bits (ints, counts, min and max are exact).
"""

from __future__ import annotations

from typing import Any, Sequence

from dictdb_shm.query import Accumulator


def rows(parts: Sequence[list[dict]]) -> list[dict]:
    """The matches of every part, part after part."""
    if len(parts) == 1:
        return parts[0]
    out: list[dict] = []
    for found in parts:
        out.extend(found)
    return out


def aggregates(parts: Sequence[Accumulator]) -> Any:
    """The result of aggregating every part's rows at once."""
    total = parts[0]
    for other in parts[1:]:
        total.merge(other)
    return total.result()
