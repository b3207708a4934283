"""``Table.to_numpy``: fields of the matching records as numpy arrays.

Owns: choosing the rows (every live record, the exact answer of column
indexes, or the records a predicate keeps), putting them in select's order
(the order of writing), and the dtype of each field's array: int64, float64
(ints and floats mixed), bool, object (str, or mixed types), masked where a
record lacks the field or holds None.  Must never: touch bytes (the store
hands it column arrays, offsets and records inside one ``read``).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from dictdb_shm.core import columnar
from dictdb_shm.engine import (COL_BOOL, COL_FLOAT, COL_INT, COL_MISSING, COL_NULL, COL_OTHER,
                               COL_STR, StorageEngine)
from dictdb_shm.query import Predicate

_NONE = (COL_MISSING, COL_NULL)


def arrays(store: StorageEngine, fields: Sequence[str],
           node: Predicate | None) -> dict[str, Any] | None:
    """Inside ``read``: ``{field: array}`` of the records matching ``node``;
    None when column indexes cannot name them exactly (the caller selects
    the records and passes them to ``from_records``)."""
    if node is None:
        slots = None
    else:
        slots = columnar.exact_slots(store, node)
        if slots is None:
            return None
    out = {}
    order = None
    for field in fields:
        col = store.field_arrays(field)
        if slots is None:
            slots = np.flatnonzero(col.tags)
        if order is None:
            order = slots[np.argsort(store.offsets_of(slots), kind="stable")] \
                if len(slots) else slots
        out[field] = _typed(store, col, order, field)
    return out


def _typed(store: StorageEngine, col: Any, slots: Any, field: str) -> Any:
    tags = col.tags[slots]
    missing = np.isin(tags, _NONE)
    kinds = set(np.unique(tags[~missing]).tolist())
    if kinds <= {COL_INT}:
        data: Any = col.ints[slots].copy()
    elif kinds <= {COL_INT, COL_FLOAT}:
        data = np.where(tags == COL_FLOAT, col.floats[slots], col.ints[slots].astype(np.float64))
    elif kinds == {COL_BOOL}:
        data = col.ints[slots].astype(bool)
    elif kinds == {COL_STR}:
        data = np.array(col.strings + [""], dtype=object)[np.where(missing, -1, col.ints[slots])]
    else:
        data = np.empty(len(slots), dtype=object)
        for i, (tag, v) in enumerate(zip(tags.tolist(), col.ints[slots].tolist())):
            if tag == COL_STR:
                data[i] = col.strings[v]
            elif tag == COL_FLOAT:
                data[i] = float(col.floats[slots[i]])
            elif tag == COL_BOOL:
                data[i] = bool(v)
            elif tag == COL_INT:
                data[i] = v
        others = np.flatnonzero(tags == COL_OTHER)
        if len(others):
            for i, record in zip(others.tolist(), store.rows_at(slots[others])):
                data[i] = record.get(field)
    if missing.any():
        return np.ma.masked_array(data, mask=missing)
    return data


def from_records(records: list[dict], fields: Sequence[str]) -> dict[str, Any]:
    """``{field: array}`` of decoded records, typed as ``arrays`` types them."""
    out = {}
    for field in fields:
        values = [r.get(field) for r in records]
        missing = np.array([v is None for v in values], bool)
        present = [v for v in values if v is not None]
        types = {type(v) for v in present}
        if types <= {int} and all(-(1 << 63) <= v < (1 << 63) for v in present):
            dtype: Any = np.int64
        elif types <= {int, float} and types:
            dtype = np.float64
        elif types == {bool}:
            dtype = bool
        else:
            dtype = object
        fill = {np.int64: 0, np.float64: 0.0, bool: False}.get(dtype, None)
        data = np.array([fill if v is None else v for v in values], dtype=dtype) \
            if dtype is not object else _objects(values)
        out[field] = np.ma.masked_array(data, mask=missing) if missing.any() else data
    return out


def _objects(values: list) -> Any:
    data = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):      # one by one: a list value must stay one element
        data[i] = v
    return data
