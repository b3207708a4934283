"""A table's indexes as its store uses them.

Owns: opening a table's index segment, building a fresh one from a directory
and heap, answering index candidates and estimates, and editing the indexes
in place for a small write.  index.py owns the segment's byte format; this
module owns how a table's records reach it.  Must never: decide when to
build a fresh segment (store.py and growth.py do), or evaluate predicates:
every answer is a superset of the matches, which the caller re-checks.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

from dictdb_shm.engine import index as IX
from dictdb_shm.engine import records as R
from dictdb_shm.engine.segment import Segment, unlink
from dictdb_shm.errors import DictDBError, InvalidArgumentError, InvalidNameError

_ENTRY = R.ENTRY.unpack_from
_RHEAD = R.HEAD.unpack_from
_TOMB = R.TOMBSTONE
_VALUE = R.KIND_VALUE

Definitions = list[tuple[str, int]]          # (field, index kind), in segment order

RANGE_BOUNDS = {"lt": lambda v: (None, v), "le": lambda v: (None, v),
                "gt": lambda v: (v, None), "ge": lambda v: (v, None),
                "between": lambda v: v}


def open_indexes(buf: Any, dir_cap: int) -> dict[str, IX.Index]:
    """The indexes of a mapped index segment (``b""``: none), by field."""
    if not buf:
        return {}
    defs = IX.read_definitions(buf)
    offsets = IX.layout([k for _, k in defs], dir_cap)
    return {field: IX.Index(buf, j, kind, offsets[j], dir_cap)
            for j, (field, kind) in enumerate(defs)}


def definitions(indexes: dict[str, IX.Index]) -> Definitions:
    return [(f, ix.kind) for f, ix in indexes.items()]


def kinds(indexes: dict[str, IX.Index]) -> dict[str, str]:
    """``{field: "hash" | "sorted"}``."""
    return {f: IX.KIND_NAMES[ix.kind] for f, ix in indexes.items()}


def live_by_slot(dir_buf: Any, dir_cap: int, heap: Any) -> Iterator[tuple[int, dict]]:
    """(directory slot, record) of every live record a directory points at."""
    for slot in range(dir_cap):
        eo = _ENTRY(dir_buf, R.entry_at(slot))[1]
        if eo == 0 or eo == _TOMB:
            continue
        record = R.decode_at(heap, R.entry_record(eo))
        if record is not None:
            yield slot, record


def build_segment(segment: Segment, defs: Definitions, dir_buf: Any, dir_cap: int,
                  heap: Any, rows: Iterable[tuple[int, dict]] | None = None) -> Segment:
    """Fill the new, zeroed index ``segment`` with indexes on ``defs``, built
    from a directory and its heap (or from ``rows``, the (directory slot,
    record) of every live record, when the caller has them); on failure it
    is unlinked."""
    try:
        IX.write_definitions(segment.buf, defs)
        built = open_indexes(segment.buf, dir_cap)
        IX.build(list(built.values()), list(built),
                 live_by_slot(dir_buf, dir_cap, heap) if rows is None else rows)
    except BaseException:
        unlink(segment.name)
        raise
    return segment


def add_definition(indexes: dict[str, IX.Index], field: str, kind: str,
                   table: str) -> Definitions:
    """The definitions of ``indexes`` plus a new index of ``kind`` on ``field``
    (checked: a known kind, a short enough name, room for one more)."""
    if kind not in IX.KINDS:
        raise InvalidArgumentError(f"index_type must be 'hash' or 'sorted', not {kind!r}")
    if len(field.encode("utf-8")) > IX.MAX_FIELD_BYTES:
        raise InvalidNameError(f"cannot index field {field!r}: the name is too long",
                               hint=f"index fields of at most {IX.MAX_FIELD_BYTES} bytes")
    if len(indexes) >= IX.MAX_INDEXES:
        raise DictDBError(f"table {table!r} already has {IX.MAX_INDEXES} indexes",
                          hint="index fewer fields")
    return definitions(indexes) + [(field, IX.KINDS[kind])]


def estimate(indexes: dict[str, IX.Index], field: str, op: str, value: Any) -> int | None:
    """How many records an equality (``eq``/``in``) on an indexed field
    reaches, from the index alone; None when unknown."""
    ix = indexes.get(field)
    if ix is None or op not in ("eq", "in"):
        return None
    return ix.count_equal((value,) if op == "eq" else value)


def candidate_slots(indexes: dict[str, IX.Index], field: str, op: str,
                    value: Any) -> list[int] | None:
    """Directory slots of the records an index offers for ``field <op>
    value``; None when no index can answer.  ``op``: eq, in, lt, le, gt, ge,
    between (the last five need a sorted index)."""
    ix = indexes.get(field)
    if ix is None:
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
    if ix is None:
        return None
    return [r.get(field) for r in records_at(dir_buf, heap, ix.heads())]


def update_in_place(indexes: dict[str, IX.Index], heap: Any, touched: list) -> None:
    """Move each touched directory slot from its old value's chain to its new
    one's.  ``touched``: (slot, old record offset or -1, new record or None)."""
    identity = IX.identity
    for slot, old_off, record in touched:
        old = R.decode_at(heap, old_off) if old_off >= 0 else None
        for field, ix in indexes.items():
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
