"""Choosing how to answer a ``where=``: primary-key lookups or a scan.

Owns: reading a query tree to find the rows it can reach without a scan.
Must never: evaluate records or touch storage; it returns a plan that
table.py runs.  Indexes on other fields will plug in here.
"""

from __future__ import annotations

from typing import Any

from dictdb_shm.query import And, Compare, Predicate


def primary_key_candidates(node: Predicate | None, primary_key: str) -> list[Any] | None:
    """The primary keys a query can only match, or None when it needs a scan.

    ``pk == v`` gives ``[v]``, ``pk.is_in(vs)`` gives ``vs``; inside ``And``
    the first such test bounds the rows (the rest still filters them).
    """
    if isinstance(node, Compare) and node.field == primary_key:
        if node.op == "eq":
            return [node.value]
        if node.op == "in":
            try:
                return list(dict.fromkeys(node.value))
            except TypeError:       # an unhashable value can be no primary key
                return [v for v in node.value if _hashable(v)]
        return None
    if isinstance(node, And):
        for cond in node.conds:
            keys = primary_key_candidates(cond, primary_key)
            if keys is not None:
                return keys
    return None


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True
