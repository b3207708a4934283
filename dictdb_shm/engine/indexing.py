"""A table's indexes as its store uses them.

Owns: opening a table's index segment, building a fresh one from a directory
and heap, answering index candidates and estimates, and editing the indexes
in place for a small write.  index.py owns the segment's byte format (and
the hash and sorted indexes), columns.py the column indexes in it; this
module owns how a table's records reach them.  A fresh segment copies the
bytes of the indexes it keeps unchanged (``keep``) and builds only the new
ones, each from one vectorised pass over the heap (extract.py, fastbuild.py).  Must never: decide when to
build a fresh segment (store.py and growth.py do), or evaluate predicates:
every answer is a superset of the matches, which the caller re-checks.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

from dictdb_shm.engine import columns as C
from dictdb_shm.engine import index as IX
from dictdb_shm.engine import records as R
from dictdb_shm.engine.segment import Segment, unlink
from dictdb_shm.errors import DictDBError, InvalidArgumentError, InvalidNameError

_ENTRY = R.ENTRY.unpack_from
_RHEAD = R.HEAD.unpack_from
_TOMB = R.TOMBSTONE
_VALUE = R.KIND_VALUE

Definitions = list[tuple[str, int]]          # (field, index kind), in segment order
AnyIndex = Any                               # IX.Index or C.Column
KINDS = IX.KINDS | {"column": C.KIND_COLUMN}
KIND_NAMES = {v: k for k, v in KINDS.items()}

RANGE_BOUNDS = {"lt": lambda v: (None, v), "le": lambda v: (None, v),
                "gt": lambda v: (v, None), "ge": lambda v: (v, None),
                "between": lambda v: v}


def open_indexes(buf: Any, dir_cap: int) -> dict[str, AnyIndex]:
    """The indexes of a mapped index segment (``b""``: none), by field."""
    if not buf:
        return {}
    out: dict[str, AnyIndex] = {}
    pos = IX.HEADER_SIZE
    for j, (field, kind) in enumerate(IX.read_definitions(buf)):
        if kind == C.KIND_COLUMN:
            col = C.Column(buf, j, j * IX.INDEX_HEADER, pos, dir_cap)
            pos += C.column_size(dir_cap, col.dcap, col.bcap)
            out[field] = col
        else:
            out[field] = IX.Index(buf, j, kind, pos, dir_cap)
            pos += IX.index_size(kind, dir_cap)
    return out


def definitions(indexes: dict[str, AnyIndex]) -> Definitions:
    return [(f, ix.kind) for f, ix in indexes.items()]


def kinds(indexes: dict[str, AnyIndex]) -> dict[str, str]:
    """``{field: "hash" | "sorted" | "column"}``."""
    return {f: KIND_NAMES[ix.kind] for f, ix in indexes.items()}


def segment_bytes(indexes: dict[str, AnyIndex], dir_cap: int) -> int:
    """About what a fresh segment of ``indexes`` takes for ``dir_cap`` slots
    (columns keep their dictionary room): for sizing growth."""
    if not indexes:
        return 0
    return IX.HEADER_SIZE + sum(
        C.column_size(dir_cap, ix.dcap, ix.bcap) if ix.kind == C.KIND_COLUMN
        else IX.index_size(ix.kind, dir_cap) for ix in indexes.values())


def build_segment(make: Callable[[int], Segment], defs: Definitions, dir_buf: Any,
                  dir_cap: int, heap: Any,
                  keep: dict[str, AnyIndex] | None = None) -> Segment:
    """A new index segment (``make(size)`` creates it zeroed) holding
    indexes on ``defs`` for a directory and its heap; those in ``keep`` (of
    the same directory) are copied, the others built.  Unlinked on failure."""
    from dictdb_shm.engine import extract, fastbuild   # numpy: loaded by the first build

    keep = keep or {}
    columns: dict[str, C.ColumnArrays] = {}
    sizes = []
    for field, kind in defs:
        if field in keep:
            old = keep[field]
            sizes.append(C.column_size(dir_cap, old.dcap, old.bcap) if kind == C.KIND_COLUMN
                         else IX.index_size(kind, dir_cap))
        elif kind == C.KIND_COLUMN:
            columns[field] = arrays = extract.read_field(dir_buf, dir_cap, heap, field)
            sizes.append(C.column_size(dir_cap, *C.needed_caps(arrays)))
        else:
            sizes.append(IX.index_size(kind, dir_cap))
    segment = make(IX.HEADER_SIZE + sum(sizes))
    try:
        buf = segment.buf
        IX.write_definitions(buf, defs)
        for j, (field, kind) in enumerate(defs):
            if field in keep:
                keep[field].copy_header_to(buf, j * IX.INDEX_HEADER)
            elif kind == C.KIND_COLUMN:
                C.write_caps(buf, j * IX.INDEX_HEADER, 0, 0, *C.needed_caps(columns[field]))
        built = open_indexes(buf, dir_cap)
        fresh = []
        for field, ix in built.items():
            if field in keep:
                keep[field].copy_body_to(ix)
            elif ix.kind == C.KIND_COLUMN:
                ix.fill(columns[field])
            else:
                fresh.append((field, ix))
        if fresh:
            fastbuild.build(fresh, dir_buf, dir_cap, heap)
    except BaseException:
        unlink(segment.name)
        raise
    return segment


def add_definition(indexes: dict[str, IX.Index], field: str, kind: str,
                   table: str) -> Definitions:
    """The definitions of ``indexes`` plus a new index of ``kind`` on ``field``
    (checked: a known kind, a short enough name, room for one more)."""
    if kind not in KINDS:
        raise InvalidArgumentError(
            f"index_type must be 'hash', 'sorted' or 'column', not {kind!r}")
    if len(field.encode("utf-8")) > IX.MAX_FIELD_BYTES:
        raise InvalidNameError(f"cannot index field {field!r}: the name is too long",
                               hint=f"index fields of at most {IX.MAX_FIELD_BYTES} bytes")
    if len(indexes) >= IX.MAX_INDEXES:
        raise DictDBError(f"table {table!r} already has {IX.MAX_INDEXES} indexes",
                          hint="index fewer fields")
    return definitions(indexes) + [(field, KINDS[kind])]


def estimate(indexes: dict[str, IX.Index], field: str, op: str, value: Any) -> int | None:
    """How many records an equality (``eq``/``in``) on an indexed field
    reaches, from the index alone; None when unknown."""
    ix = indexes.get(field)
    if ix is None or op not in ("eq", "in") or ix.kind == C.KIND_COLUMN:
        return None
    return ix.count_equal((value,) if op == "eq" else value)


def candidate_slots(indexes: dict[str, IX.Index], field: str, op: str,
                    value: Any) -> list[int] | None:
    """Directory slots of the records an index offers for ``field <op>
    value``; None when no index can answer.  ``op``: eq, in, lt, le, gt, ge,
    between (the last five need a sorted index)."""
    ix = indexes.get(field)
    if ix is None or ix.kind == C.KIND_COLUMN:
        return None
    if op == "eq":
        return ix.slots_equal((value,))
    if op == "in":
        return ix.slots_equal(value)
    if ix.kind != IX.KIND_SORTED or op not in RANGE_BOUNDS:
        return None
    bounds = IX.order_bounds(*RANGE_BOUNDS[op](value))
    if bounds is None:
        return None
    return ix.slots_between(*bounds)


def records_at(dir_buf: Any, heap: Any, slots: Iterable[int]) -> list[dict]:
    """The live records at directory ``slots`` (raises TornRead on a slot
    that cannot be right, which only a lock-free read can see)."""
    out = []
    for slot in slots:
        eo = _ENTRY(dir_buf, R.entry_at(slot))[1]
        if eo == 0 or eo == _TOMB:
            raise R.TornRead
        record = R.decode_at(heap, R.entry_record(eo))
        if record is not None:
            out.append(record)
    return out


def distinct_values(indexes: dict[str, IX.Index], dir_buf: Any, heap: Any,
                    field: str) -> list[Any] | None:
    """One value of each distinct key an index on ``field`` holds (as its
    records store it), read from the index's value table and one record per
    value; None when ``field`` has no index."""
    ix = indexes.get(field)
    if ix is None or ix.kind == C.KIND_COLUMN:
        return None
    return [r.get(field) for r in records_at(dir_buf, heap, ix.heads())]


def update_in_place(indexes: dict[str, AnyIndex], heap: Any, touched: list) -> None:
    """Move each touched directory slot from its old value's chain to its new
    one's, and set its column values.  ``touched``: (slot, old record offset
    or -1, new record or None).  ColumnFull when a dictionary has no room:
    the caller builds a fresh segment instead."""
    identity = IX.identity
    hashed = [(f, ix) for f, ix in indexes.items() if ix.kind != C.KIND_COLUMN]
    columns = [(f, ix) for f, ix in indexes.items() if ix.kind == C.KIND_COLUMN]
    for slot, old_off, record in touched:
        for field, col in columns:
            col.set(slot, record, field)
        if not hashed:
            continue
        old = R.decode_at(heap, old_off) if old_off >= 0 else None
        for field, ix in hashed:
            before = identity(old.get(field)) if old is not None else None
            after = identity(record.get(field)) if record is not None else None
            if before == after:
                continue
            if before is not None:
                ix.remove(slot, before)
            if after is not None:
                if ix.kind == IX.KIND_SORTED and ix.header()[4] >= IX.OVERFLOW:
                    ix.merge_overflow()
                ix.add(slot, after)
