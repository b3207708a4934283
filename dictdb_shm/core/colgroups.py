"""Aggregates and group-by computed from column arrays (core/columnar.py's second half).

Owns: Count, Sum, Avg, Min and Max over the selected slots of column
indexes, ungrouped or grouped by column-indexed fields, giving what
query/aggregate.py's Accumulator gives over the same rows: groups in the
order they were first seen, a missing group value grouping as None, values
grouped by ``==``.  Must never: touch storage beyond asking the store for
the write order of slots, or guess: a case the arrays cannot settle exactly
(a "not columnar" value, a group key mixing numbers of different types or
holding NaN or -0.0, ties between an int and an equal float for Min/Max,
int sums beyond float64's exact range) returns None and the caller
aggregates the decoded rows instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dictdb_shm.engine import (COL_BOOL, COL_FLOAT, COL_INT, COL_MISSING, COL_NULL, COL_OTHER,
                               COL_STR, StorageEngine)
from dictdb_shm.query import Accumulator

_EXACT = float(1 << 53)
_NUMERIC = (COL_INT, COL_FLOAT, COL_BOOL)


class _Unsure(Exception):
    """The arrays cannot settle this exactly: use the rows."""


def run(acc: Accumulator, arrays: dict[str, Any], yes: Any, store: StorageEngine) -> Any:
    """``acc.result()`` for the rows at the ``yes`` slots; None when unsure."""
    slots = np.flatnonzero(yes)
    try:
        if acc.group_by is None:
            return {alias: _whole(agg, arrays, slots) for alias, agg in acc.aggs.items()}
        return _grouped(acc, arrays, slots, store)
    except _Unsure:
        return None


def _tags(arrays: dict[str, Any], field: str, slots: Any) -> tuple[Any, Any]:
    c = arrays[field]
    tags = c.tags[slots]
    if (tags == COL_OTHER).any():
        raise _Unsure
    return c, tags


# ----------------------------------------------------------------- ungrouped
def _whole(agg: Any, arrays: dict[str, Any], slots: Any) -> Any:
    if agg.kind == "count":
        if agg.field is None:
            return len(slots)
        tags = arrays[agg.field].tags[slots]
        return int(np.count_nonzero((tags != COL_MISSING) & (tags != COL_NULL)))
    c, tags = _tags(arrays, agg.field, slots)
    if agg.kind in ("sum", "avg"):
        ints = c.ints[slots[(tags == COL_INT) | (tags == COL_BOOL)]]
        floats = c.floats[slots[tags == COL_FLOAT]]
        n = len(ints) + len(floats)
        if not n:
            return None
        total: Any = int(ints.sum()) if _int_sum_exact(ints) else sum(ints.tolist())
        if len(floats):
            total = total + float(floats.sum())
        return total if agg.kind == "sum" else total / n
    return _extreme(agg.kind, c, tags, slots)


def _int_sum_exact(ints: Any) -> bool:
    if not len(ints):
        return True
    return float(np.abs(ints).max()) * len(ints) < 2.0 ** 62


def _extreme(kind: str, c: Any, tags: Any, slots: Any) -> Any:
    strs = slots[tags == COL_STR]
    numbers = (tags == COL_INT) | (tags == COL_BOOL) | (tags == COL_FLOAT)
    if kind == "max" and len(strs) or kind == "min" and len(strs) and not numbers.any():
        codes = np.unique(c.ints[strs])
        pick = max if kind == "max" else min
        return pick(c.strings[i] for i in codes.tolist())
    best = []
    for tag, typed in ((COL_INT, int), (COL_BOOL, bool)):
        sel = c.ints[slots[tags == tag]]
        if len(sel):
            best.append(typed(sel.max() if kind == "max" else sel.min()))
    floats = c.floats[slots[tags == COL_FLOAT]]
    if len(floats):
        nan = np.isnan(floats)
        if nan.all() or kind == "max" and nan.any():
            if kind == "max" or not best:
                return float("nan")
        else:
            best.append(float(np.nanmax(floats) if kind == "max" else np.nanmin(floats)))
    if not best:
        return None
    top = max(best) if kind == "max" else min(best)
    if sum(1 for b in best if b == top) > 1:
        raise _Unsure                      # 1 and 1.0 (or True): the first seen wins
    return next(b for b in best if b == top)


# ------------------------------------------------------------------- grouped
def _group_ids(arrays: dict[str, Any], field: str, slots: Any) -> tuple[Any, int, Any]:
    """(dense id per selected row, id count, id -> group value); id 0 is None."""
    c, tags = _tags(arrays, field, slots)
    is_none = (tags == COL_MISSING) | (tags == COL_NULL)
    kinds = set(np.unique(tags[~is_none]).tolist())
    if not kinds:
        return np.zeros(len(slots), np.int64), 1, lambda i: None
    if kinds == {COL_STR}:
        ids = np.where(is_none, 0, c.ints[slots] + 1)
        strings = c.strings
        return ids, len(strings) + 1, lambda i: None if i == 0 else strings[i - 1]
    if len(kinds) != 1 or not kinds <= set(_NUMERIC):
        raise _Unsure
    (kind,) = kinds
    present = ~is_none
    if kind == COL_FLOAT:
        vals = c.floats[slots[present]]
        if np.isnan(vals).any() or (np.signbit(vals) & (vals == 0)).any():
            raise _Unsure
        typed: Any = float
    else:
        vals = c.ints[slots[present]]
        typed = int if kind == COL_INT else bool
    uniq, inv = np.unique(vals, return_inverse=True)
    ids = np.zeros(len(slots), np.int64)
    ids[present] = inv.ravel() + 1
    return ids, len(uniq) + 1, lambda i: None if i == 0 else typed(uniq[i - 1])


def _grouped(acc: Accumulator, arrays: dict[str, Any], slots: Any,
             store: StorageEngine) -> list[dict]:
    gid = np.zeros(len(slots), np.int64)
    size = 1
    decoders = []
    for field in acc.group_by:
        ids, k, value_of = _group_ids(arrays, field, slots)
        if size * k >= 1 << 62:
            raise _Unsure
        gid = gid * k + ids
        size *= k
        decoders.append((k, value_of))
    if size > 4 * len(slots) + 1024:
        uniq, inv = np.unique(gid, return_inverse=True)
        dense, n_groups = inv.ravel(), len(uniq)
    else:
        uniq, dense, n_groups = np.arange(size), gid, size
    counts = np.bincount(dense, minlength=n_groups)
    first = np.full(n_groups, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(first, dense, store.offsets_of(slots))
    groups = np.flatnonzero(counts)
    groups = groups[np.argsort(first[groups], kind="stable")]
    columns = {alias: _per_group(agg, arrays, slots, dense, n_groups, counts)
               for alias, agg in acc.aggs.items()}
    out = []
    for g in groups.tolist():
        code = int(uniq[g])
        values = []
        for k, value_of in reversed(decoders):
            values.append(value_of(code % k))
            code //= k
        row = dict(zip(acc.group_by, reversed(values)))
        for alias, col in columns.items():
            row[alias] = col(g)
        out.append(row)
    return out


def _per_group(agg: Any, arrays: dict[str, Any], slots: Any, dense: Any, n: int,
               counts: Any) -> Any:
    """A function group -> the aggregate's value."""
    if agg.kind == "count":
        if agg.field is None:
            return lambda g: int(counts[g])
        tags = arrays[agg.field].tags[slots]
        got = np.bincount(dense[(tags != COL_MISSING) & (tags != COL_NULL)], minlength=n)
        return lambda g: int(got[g])
    c, tags = _tags(arrays, agg.field, slots)
    if agg.kind in ("sum", "avg"):
        is_int = (tags == COL_INT) | (tags == COL_BOOL)
        is_float = tags == COL_FLOAT
        ints = c.ints[slots[is_int]]
        if len(ints) and float(np.abs(ints).max()) * len(ints) >= _EXACT:
            raise _Unsure
        isum = np.bincount(dense[is_int], weights=ints, minlength=n)
        fsum = np.bincount(dense[is_float], weights=c.floats[slots[is_float]], minlength=n)
        nint = np.bincount(dense[is_int], minlength=n)
        nfloat = np.bincount(dense[is_float], minlength=n)

        def total(g: int) -> Any:
            m = int(nint[g] + nfloat[g])
            if not m:
                return None
            t: Any = int(isum[g])
            if nfloat[g]:
                t = t + float(fsum[g])
            return t if agg.kind == "sum" else t / m
        return total
    return _group_extreme(agg.kind, c, tags, slots, dense, n)


def _group_extreme(kind: str, c: Any, tags: Any, slots: Any, dense: Any, n: int) -> Any:
    present = (tags != COL_MISSING) & (tags != COL_NULL)
    kinds = set(np.unique(tags[present]).tolist())
    if not kinds:
        return lambda g: None
    if len(kinds) != 1:
        raise _Unsure
    (tag,) = kinds
    has = np.bincount(dense[present], minlength=n)
    pick = np.maximum if kind == "max" else np.minimum
    if tag == COL_STR:
        order = sorted(range(len(c.strings)), key=c.strings.__getitem__)
        rank = np.empty(max(1, len(order)), np.int64)
        rank[order] = np.arange(len(order))
        best = np.full(n, -1 if kind == "max" else len(order), np.int64)
        pick.at(best, dense[present], rank[c.ints[slots[present]]])
        return lambda g: c.strings[order[best[g]]] if has[g] else None
    if tag == COL_FLOAT:
        vals = c.floats[slots[present]]
        if np.isnan(vals).any():
            raise _Unsure
        best = np.full(n, -np.inf if kind == "max" else np.inf)
        typed: Any = float
    else:
        vals = c.ints[slots[present]]
        info = np.iinfo(np.int64)
        best = np.full(n, info.min if kind == "max" else info.max, np.int64)
        typed = int if tag == COL_INT else bool
    pick.at(best, dense[present], vals)
    return lambda g: typed(best[g]) if has[g] else None
