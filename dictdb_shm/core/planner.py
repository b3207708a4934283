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
4. Inside ``And``, the condition the rules above accept that reaches the
   fewest records: equality before ranges, and among equalities the one the
   ``estimate`` callback (index counts, from the store) says is smallest; the
   rest of the ``And`` filters the candidates.
5. A query touching a field with a column index, also inside ``Or`` and
   ``Not``, is answered from the column indexes (core/columnar.py), unless
   rule 1 applies or rule 2 reaches at most ``SMALL_INDEX_ANSWER`` records.
6. Otherwise, an equality (``==``, ``is_in``) on a str, bytes, number,
   bool or None, alone or inside ``And``, is *searched*: the store finds the
   records holding those bytes without decoding the others (see
   TableStore.scan_containing); so is ``contains`` of a non-empty str
   (the records holding its UTF-8 bytes, TableStore.scan_holding).
7. Anything else scans.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

from dictdb_shm.query import And, Compare, Predicate, referenced_fields

RANGE_OPS = frozenset({"lt", "le", "gt", "ge", "between"})
EQUALITY_OPS = frozenset({"eq", "in"})
SMALL_INDEX_ANSWER = 1000


class Plan(NamedTuple):
    kind: str                   # "pk", "index", "column", "search" or "scan"
    field: str | None = None
    op: str | None = None
    value: Any = None           # pk plan: the list of keys


SCAN = Plan("scan")


Estimate = Callable[[str, str, Any], "int | None"]


def choose(node: Predicate | None, primary_key: str, indexes: dict[str, str],
           estimate: Estimate | None = None) -> Plan:
    """The access path for ``node`` given ``indexes`` (``{field: "hash" | "sorted"}``).

    ``estimate(field, op, value)``, when given, counts the records an indexed
    equality reaches, so that ``And`` can start from the smallest.
    """
    if node is None:
        return SCAN
    plan = _row_plan(node, primary_key, indexes, estimate)
    if plan.kind == "pk" or "column" not in indexes.values():
        return plan
    if plan.kind == "index" and plan.op in EQUALITY_OPS and \
            _cost(plan, estimate) <= SMALL_INDEX_ANSWER:
        return plan
    if any(indexes.get(f) == "column" for f in referenced_fields(node)):
        return Plan("column")
    return plan


def _row_plan(node: Predicate, primary_key: str, indexes: dict[str, str],
              estimate: Estimate | None) -> Plan:
    if isinstance(node, Compare):
        conds = [node]
        plan = _for_compare(node, primary_key, indexes, RANGE_OPS | EQUALITY_OPS)
        if plan.kind != "scan":
            return plan
    elif isinstance(node, And):
        conds = [c for c in node.conds if isinstance(c, Compare)]
        for allowed in (EQUALITY_OPS, RANGE_OPS):
            plans = [p for p in (_for_compare(c, primary_key, indexes, allowed) for c in conds)
                     if p.kind != "scan"]
            if plans:
                return min(plans, key=lambda p: _cost(p, estimate))
    else:
        return SCAN
    for cond in conds:
        if cond.op in EQUALITY_OPS and _searchable(cond.value if cond.op == "in"
                                                   else (cond.value,)):
            return Plan("search", cond.field, cond.op, cond.value)
    for cond in conds:
        if cond.op == "contains" and type(cond.value) is str and cond.value:
            return Plan("search", cond.field, cond.op, cond.value)
    return SCAN


_SEARCHABLE = (str, bytes, int, float, bool, type(None))


def _searchable(values: Any) -> bool:
    return bool(values) and all(type(v) in _SEARCHABLE and v == v for v in values)


def _cost(plan: Plan, estimate: Estimate | None) -> int:
    if plan.kind == "pk":
        return len(plan.value)
    if estimate is not None and plan.field is not None:
        n = estimate(plan.field, plan.op or "", plan.value)
        if n is not None:
            return n
    return 1 << 62


def _for_compare(node: Compare, primary_key: str, indexes: dict[str, str],
                 allowed: frozenset[str]) -> Plan:
    if node.op not in allowed:
        return SCAN
    if node.field == primary_key and node.op in EQUALITY_OPS:
        keys = [node.value] if node.op == "eq" else [v for v in node.value if _hashable(v)]
        return Plan("pk", value=list(dict.fromkeys(keys)))
    kind = indexes.get(node.field)
    if kind is None or kind == "column":
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
