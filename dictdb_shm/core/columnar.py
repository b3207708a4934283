"""Queries answered from column indexes: vectorised filters, counts and aggregates.

Owns: evaluating a query tree over the typed arrays of column indexes (one
entry per directory slot, engine/columns.py), with exactly the matching
rules of query/evaluate.py, and computing counts, aggregates and group-by
from those arrays.  Must never: touch bytes or shared memory itself (it
reads the arrays and records the StorageEngine hands it, inside ``read``),
or return an answer it is not sure of: where the arrays cannot decide (a
value marked "not columnar", an int beyond int64, mixed types in a group
key) it says so, and the caller decodes the rows in question (or falls back
to the row path) and re-checks them with the full predicate.

Each node gives two masks over the slots: ``yes`` (certainly matches) and
``maybe`` (may match; ``yes`` is inside it).  A field without a column index
gives yes = nothing, maybe = every live record.  ``Not`` swaps them.  When
yes == maybe the answer is exact and no record is decoded but those returned.

Sums of floats are added by numpy (pairwise), so they can differ from the
row path's left-to-right sum in the last bits; everything else is exact.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from dictdb_shm.core import colgroups
from dictdb_shm.engine import (COL_BOOL, COL_EMPTY, COL_FLOAT, COL_INT, COL_MISSING, COL_NULL,
                               COL_OTHER, COL_STR, StorageEngine)
from dictdb_shm.query import (Accumulator, Aggregate, And, Compare, Not, Or, Predicate,
                              aggregate_rows)

_INT_MIN, _INT_MAX = -(1 << 63), (1 << 63) - 1
_EXACT_FLOAT_INT = 1 << 53
_NUMBER = (int, float)
_ORDER_OPS = ("lt", "le", "gt", "ge")
MIN_SELECTIVITY = 0.5      # a partial answer that keeps more than this scans instead


class _Columns:
    """The column arrays of one read, fetched once per field."""

    def __init__(self, store: StorageEngine, fields: set[str]) -> None:
        self.arrays = {f: store.column(f) for f in fields}
        self.arrays = {f: a for f, a in self.arrays.items() if a is not None}
        self._present: dict[str, Any] = {}
        any_col = next(iter(self.arrays.values()), None)
        self.live = None if any_col is None else any_col.tags != COL_EMPTY

    def get(self, field: str) -> Any:
        return self.arrays.get(field)

    def has(self, field: str, tag: int) -> bool:
        counts = self._present.get(field)
        if counts is None:
            counts = self._present[field] = np.bincount(self.arrays[field].tags, minlength=8)
        return bool(counts[tag])


def _fields(node: Predicate) -> set[str]:
    if isinstance(node, Compare):
        return {node.field}
    if isinstance(node, (And, Or)):
        return set().union(*(_fields(c) for c in node.conds))
    if isinstance(node, Not):
        return _fields(node.cond)
    return set()


def masks(node: Predicate, cols: _Columns) -> tuple[Any, Any]:
    """(yes, maybe) of ``node`` over the slots."""
    if isinstance(node, And):
        parts = [masks(c, cols) for c in node.conds]
        return (np.logical_and.reduce([p[0] for p in parts]),
                np.logical_and.reduce([p[1] for p in parts]))
    if isinstance(node, Or):
        parts = [masks(c, cols) for c in node.conds]
        return (np.logical_or.reduce([p[0] for p in parts]),
                np.logical_or.reduce([p[1] for p in parts]))
    if isinstance(node, Not):
        yes, maybe = masks(node.cond, cols)
        return cols.live & ~maybe, cols.live & ~yes
    if isinstance(node, Compare) and cols.get(node.field) is not None:
        found = _leaf(node, cols)
        if found is not None:
            return found
    return np.zeros_like(cols.live), cols.live.copy()


def _leaf(node: Compare, cols: _Columns) -> tuple[Any, Any] | None:
    c = cols.get(node.field)
    tags, op, v = c.tags, node.op, node.value
    other = tags == COL_OTHER if cols.has(node.field, COL_OTHER) else None

    def out(yes: Any) -> tuple[Any, Any]:
        return yes, (yes | other) if other is not None else yes.copy()

    if op == "is_null":
        return (tags == COL_MISSING) | (tags == COL_NULL), ((tags == COL_MISSING) |
                                                            (tags == COL_NULL))
    if op == "is_not_null":
        y = cols.live & (tags != COL_MISSING) & (tags != COL_NULL)
        return y, y.copy()
    if op == "eq":
        return _maybe_out(_equal(c, cols, node.field, v), out)
    if op == "ne":
        eq = _equal(c, cols, node.field, v)
        if eq is None:
            return None
        present = cols.live & (tags != COL_MISSING)
        if other is not None:
            present &= ~other
        return out(present & ~eq)
    if op == "in":
        acc = np.zeros_like(cols.live)
        for value in v:
            eq = _equal(c, cols, node.field, value)
            if eq is None:
                return None
            acc |= eq
        return out(acc)
    if op in _ORDER_OPS:
        return _maybe_out(_order(c, cols, node.field, op, v), out)
    if op == "between":
        lo, hi = v
        a = _order(c, cols, node.field, "ge", lo)
        b = _order(c, cols, node.field, "le", hi)
        return None if a is None or b is None else out(a & b)
    # String tests: decided per dictionary string; only a list (OTHER) can
    # hold a str element for contains.
    lut = _string_table(c, node)
    yes = (tags == COL_STR) & lut[np.where(tags == COL_STR, c.ints, 0)]
    if op == "contains":
        return out(yes)
    return yes, yes.copy()


def _maybe_out(yes: Any, out: Callable) -> Any:
    return None if yes is None else out(yes)


def _string_table(c: Any, node: Compare) -> Any:
    test = node._build_matcher()
    field = node.field
    return np.fromiter((test({field: s}) for s in c.strings), bool, len(c.strings)) \
        if c.strings else np.zeros(1, bool)


def _equal(c: Any, cols: _Columns, field: str, v: Any) -> Any:
    """Slots whose columnar value == ``v`` (OTHER slots excluded)."""
    tags = c.tags
    t = type(v)
    if v is None:
        return tags == COL_NULL
    if t is str or isinstance(v, str):
        code = _code(c, str(v))
        return np.zeros_like(cols.live) if code is None else (tags == COL_STR) & (c.ints == code)
    if t is bool or isinstance(v, _NUMBER):
        return _numeric(c, cols, field, "eq", v)
    return np.zeros_like(cols.live)       # bytes, lists, dicts: equal to no columnar value


def _code(c: Any, s: str) -> int | None:
    return c.code_of(s)


def _order(c: Any, cols: _Columns, field: str, op: str, v: Any) -> Any:
    tags = c.tags
    if type(v) is str or isinstance(v, str):
        if not cols.has(field, COL_STR):
            return np.zeros_like(cols.live)
        test = _PY_ORDER[op]
        s = str(v)
        lut = np.fromiter((test(x, s) for x in c.strings), bool, len(c.strings))
        return (tags == COL_STR) & lut[np.where(tags == COL_STR, c.ints, 0)]
    if isinstance(v, _NUMBER):            # bools are ints
        return _numeric(c, cols, field, op, v)
    return np.zeros_like(cols.live)       # None, bytes, lists: order against no column value


_PY_ORDER = {"lt": lambda a, b: a < b, "le": lambda a, b: a <= b,
             "gt": lambda a, b: a > b, "ge": lambda a, b: a >= b}
_NP_ORDER = {"lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal,
             "eq": np.equal}


def _numeric(c: Any, cols: _Columns, field: str, op: str, v: Any) -> Any:
    """Slots whose number compares ``op`` to the number ``v`` (Python's exact
    int/float comparison); None when float64 cannot decide it."""
    tags = c.tags
    acc = np.zeros_like(cols.live)
    if cols.has(field, COL_FLOAT):
        if isinstance(v, float):
            fv = float(v)
        elif abs(int(v)) <= _EXACT_FLOAT_INT:
            fv = float(int(v))
        else:
            return None
        with np.errstate(invalid="ignore"):
            acc |= (tags == COL_FLOAT) & _NP_ORDER[op](c.floats, fv)
    has_int, has_bool = cols.has(field, COL_INT), cols.has(field, COL_BOOL)
    if has_int or has_bool:
        ints = _int_test(c.ints, op, v)
        if ints is not None:
            if has_int and has_bool:
                kinds = (tags == COL_INT) | (tags == COL_BOOL)
            else:
                kinds = tags == (COL_INT if has_int else COL_BOOL)
            acc |= kinds & ints
    return acc


def _int_test(ints: Any, op: str, v: Any) -> Any:
    """``ints op v`` for int64 ``ints``, exact for any int or float ``v``."""
    if isinstance(v, float):
        if math.isnan(v):
            return None
        if math.isinf(v):
            return np.full(len(ints), (v > 0) == (op in ("lt", "le")) and op != "eq")
        if op == "eq":
            if not v.is_integer():
                return None
            v = int(v)
        else:
            v = math.ceil(v) if op in ("lt", "ge") else math.floor(v)
    v = int(v)
    if v > _INT_MAX or v < _INT_MIN:
        above = v > _INT_MAX            # every int64 is below v
        return np.full(len(ints), op != "eq" and (op in ("lt", "le")) == above)
    return _NP_ORDER[op](ints, v)


# ------------------------------------------------------------------ select
def matching(store: StorageEngine, node: Predicate, pred: Callable[[dict], bool],
             stop: int | None) -> list[dict] | None:
    """The records matching ``node`` via column indexes, in scan order; None
    when no column index helps (the caller scans)."""
    found = _mask(store, node)
    if found is None:
        return None
    yes, maybe, exact = found
    if exact:
        return store.rows_at(np.flatnonzero(yes), stop)
    rows = [r for r in store.rows_at(np.flatnonzero(maybe)) if pred(r)]
    return rows if stop is None else rows[:stop]


def _mask(store: StorageEngine, node: Predicate) -> tuple[Any, Any, bool] | None:
    fields = _fields(node)
    kinds = store.indexes()
    covered = {f for f in fields if kinds.get(f) == "column"}
    if not covered:
        return None
    cols = _Columns(store, covered)
    if cols.live is None:
        return None
    yes, maybe = masks(node, cols)
    exact = not (maybe & ~yes).any()
    if not exact and np.count_nonzero(maybe) > MIN_SELECTIVITY * np.count_nonzero(cols.live):
        return None
    return yes, maybe, exact


def exact_slots(store: StorageEngine, node: Predicate) -> Any:
    """The slots matching ``node`` when column indexes say exactly, else None."""
    found = _mask(store, node)
    if found is None or not found[2]:
        return None
    return np.flatnonzero(found[0])


def count(store: StorageEngine, node: Predicate | None) -> int | None:
    """How many records match ``node``, from the columns alone; None when
    they cannot say."""
    if node is None:
        return store.live_count()
    found = _mask(store, node)
    if found is None or not found[2]:
        return None
    return int(np.count_nonzero(found[0]))


# --------------------------------------------------------------- aggregate
def aggregate(store: StorageEngine, node: Predicate | None,
              group_by: str | Sequence[str] | None,
              aggs: Mapping[str, Aggregate]) -> Any:
    """``Table.aggregate`` from column indexes; None when they cannot answer
    (the caller runs the row path)."""
    acc = Accumulator(aggs, group_by)          # checks the arguments as the row path does
    kinds = store.indexes()
    need = {a.field for a in acc.aggs.values() if a.field is not None} | set(acc.group_by or ())
    if not all(kinds.get(f) == "column" for f in need):
        if node is None:
            return None
        rows = matching(store, node, node, None)
        return None if rows is None else aggregate_rows(rows, group_by, **aggs)
    if node is None:
        cols = _Columns(store, need)
        if cols.live is None:
            return None
        yes = cols.live
    else:
        found = _mask(store, node)
        if found is None:
            return None
        yes, maybe, exact = found
        if not exact:
            rows = [r for r in store.rows_at(np.flatnonzero(maybe)) if node(r)]
            return aggregate_rows(rows, group_by, **aggs)
        cols = _Columns(store, need)
    result = colgroups.run(acc, cols.arrays, yes, store)
    if result is None:
        return aggregate_rows(store.rows_at(np.flatnonzero(yes)), group_by, **aggs)
    return result
