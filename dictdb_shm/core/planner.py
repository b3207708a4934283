"""Choosing how to answer a ``where=``: primary-key lookups, an index, or a scan.

Owns: reading a query tree and the table's index definitions to pick the
cheapest access path.  Must never: evaluate records or touch storage; it
returns a Plan that table.py runs.  Whatever the plan, table.py re-checks
every candidate with the full predicate, so a plan only has to return a
superset of the matches.

Rules, in order of preference:

1. ``pk == v`` / ``pk.is_in(vs)``: look the keys up.
2. ``f == v`` / ``f.is_in(vs)`` on an indexed field (hash or sorted).
3. ``<``, ``<=``, ``>``, ``>=``, ``between`` on a sorted-indexed field.
4. Inside ``And``, the first condition the rules above accept (equality
   before ranges); the rest of the ``And`` filters the candidates.
5. Anything else scans.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from dictdb_shm.query import And, Compare, Predicate

RANGE_OPS = frozenset({"lt", "le", "gt", "ge", "between"})
EQUALITY_OPS = frozenset({"eq", "in"})


class Plan(NamedTuple):
    kind: str                   # "pk", "index" or "scan"
    field: str | None = None
    op: str | None = None
    value: Any = None           # pk plan: the list of keys


SCAN = Plan("scan")


def choose(node: Predicate | None, primary_key: str, indexes: dict[str, str]) -> Plan:
    """The access path for ``node`` given ``indexes`` (``{field: "hash" | "sorted"}``)."""
    if node is None:
        return SCAN
    if isinstance(node, Compare):
        return _for_compare(node, primary_key, indexes, RANGE_OPS | EQUALITY_OPS)
    if isinstance(node, And):
        for allowed in (EQUALITY_OPS, RANGE_OPS):
            for cond in node.conds:
                plan = choose(cond, primary_key, indexes) if isinstance(cond, And) else (
                    _for_compare(cond, primary_key, indexes, allowed)
                    if isinstance(cond, Compare) else SCAN)
                if plan.kind != "scan":
                    return plan
    return SCAN


def _for_compare(node: Compare, primary_key: str, indexes: dict[str, str],
                 allowed: frozenset[str]) -> Plan:
    if node.op not in allowed:
        return SCAN
    if node.field == primary_key and node.op in EQUALITY_OPS:
        keys = [node.value] if node.op == "eq" else [v for v in node.value if _hashable(v)]
        return Plan("pk", value=list(dict.fromkeys(keys)))
    kind = indexes.get(node.field)
    if kind is None:
        return SCAN
    if node.op in EQUALITY_OPS or kind == "sorted":
        return Plan("index", node.field, node.op, node.value)
    return SCAN


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True
