"""Heap ranges for parallel scans: a table's committed heap split into
record-aligned parts, each read by one process without the table lock.

Owns: ``ScanPart`` (plain, picklable data naming a part), ``split`` (the
parts of the committed heap, from its offset log), ``open_part`` (mapping a
part's generation in another process and checking it is still the current
one), the live records of a part (every one, or those a searched scan finds
by their bytes), and the packed form a part's matches travel in (their
msgpack bodies behind one array header, decoded by one call).  Must never:
take the table lock, evaluate queries (it calls the opaque ``keep`` it is
given), or read a byte outside its part.

Consistency: the process that calls ``split`` holds the table's read lock
until every part is done.  No writer commits meanwhile, so the descriptor
generation a part names stays the current one, and the bytes below its end
(SUPERSEDED flags included) do not change.  A reader still checks the
generation before and after its pass (``StalePart``), so a part whose
splitter lost the lock is refused instead of read.

Layout facts used (engine/records.py): records lie back to back from offset
0, and the offset log after ``heap_cap`` holds each record's offset in heap
order, so entry ``k`` of the log is where the ``k``-th record starts.
"""

from __future__ import annotations

import struct
from typing import Any, Callable, Iterator, NamedTuple, Sequence

from dictdb_shm.engine import records as R
from dictdb_shm.engine import search

_RHEAD = R.HEAD.unpack_from
_VALUE = R.KIND_VALUE
_HDR = R.RECORD_HEADER
_unpackb = R._unpackb
_ARRAY32 = struct.Struct(">BI")      # msgpack array 32: the type byte 0xdd, then the count
_ARRAY32_TYPE = 0xDD


class ScanPart(NamedTuple):
    """One part of a committed heap: records ``first`` to ``stop - 1`` of the
    offset log, at bytes ``start`` to ``end``."""

    table_uid: int      # which table: the uid its catalog slot holds
    generation: int     # the store's descriptor generation (``active``) when split
    heap_seg: int       # the heap segment that generation names
    start: int
    end: int
    first: int
    stop: int


class StalePart(Exception):
    """The table moved on from a part's generation: its splitter no longer
    holds the read lock (it died, or its lock was taken from it)."""


def split(store: Any, shares: Sequence[float]) -> list[ScanPart]:
    """Under the table's read lock: the committed heap in ``len(shares)``
    parts, part ``k`` holding about ``shares[k] / sum(shares)`` of the
    records (parts that would be empty are left out)."""
    d = store.desc
    n = d.n_records
    if not n:
        return [ScanPart(store.uid, store._active, d.heap_seg, 0, 0, 0, 0)]
    total = float(sum(shares))
    bounds, acc = [0], 0.0
    for share in shares:
        acc += share
        b = min(n, round(n * acc / total))
        if b > bounds[-1]:
            bounds.append(b)
    bounds[-1] = n
    log = memoryview(store.heap)[d.heap_cap:d.heap_cap + 8 * n].cast("Q")
    try:
        starts = [log[b] if b < n else d.heap_end for b in bounds]
    finally:
        log.release()
    return [ScanPart(store.uid, store._active, d.heap_seg, starts[k], starts[k + 1], bounds[k],
                     bounds[k + 1]) for k in range(len(bounds) - 1)]


def open_part(store: Any, part: ScanPart) -> None:
    """Map the segments of ``part``'s generation; StalePart when it is not
    the current one (any more)."""
    if not _current(store, part):
        raise StalePart(f"table {store.table!r} changed after the query was split")
    store._sync(part.generation)
    if store.desc.heap_seg != part.heap_seg or not _current(store, part):
        raise StalePart(f"table {store.table!r} changed after the query was split")


def _current(store: Any, part: ScanPart) -> bool:
    w = store._w
    return w[store._uid_w] == store.uid and w[store._active_w] == part.generation


def check_still_current(store: Any, part: ScanPart) -> None:
    """After a pass: StalePart when the generation moved while it ran."""
    if not _current(store, part):
        raise StalePart(f"table {store.table!r} changed while a part was read")


def _needle(holding: str | None, containing: tuple[str, Any] | None) -> Any:
    if holding is not None:
        return search.text_pattern(holding)
    if containing is not None:
        return search.pair_pattern(containing[0], containing[1])
    return None


def body_spans(store: Any, part: ScanPart, holding: str | None = None,
               containing: tuple[str, Any] | None = None) -> Iterator[tuple[int, int]]:
    """``(start, length)`` of the msgpack body of each live record of
    ``part`` (after ``open_part``), in heap order.  ``holding`` (a str) or
    ``containing`` (``(field, values)``) narrow it to a superset of the
    records holding that text or those values, found by their bytes
    (search.py), as ``scan_holding`` and ``scan_containing`` do."""
    needle = _needle(holding, containing)
    if needle is not None:
        return search.match_spans(store.heap, part.start, part.end, store.desc.heap_cap,
                                  part.first, part.stop, needle)
    return _walk(store.heap, part.start, part.end)


def _walk(heap: Any, off: int, end: int) -> Iterator[tuple[int, int]]:
    while off < end:
        total, blen, kind, flags, pklen = _RHEAD(heap, off)
        if total < _HDR:
            raise R.TornRead
        if kind == _VALUE and not flags & R.SUPERSEDED:
            yield off + _HDR + pklen, blen
        off += total


def records(store: Any, part: ScanPart, holding: str | None = None,
            containing: tuple[str, Any] | None = None) -> Iterator[dict]:
    """The records of ``body_spans``, decoded.  Hot path: a plain part is
    walked and decoded in one loop (as TableStore.scan)."""
    heap = store.heap
    unpackb = _unpackb
    if holding is not None or containing is not None:
        for start, blen in body_spans(store, part, holding, containing):
            yield unpackb(heap[start:start + blen], strict_map_key=False)
        return
    off, end = part.start, part.end
    while off < end:
        total, blen, kind, flags, pklen = _RHEAD(heap, off)
        if total < _HDR:
            raise R.TornRead
        if kind == _VALUE and not flags & R.SUPERSEDED:
            start = off + _HDR + pklen
            yield unpackb(heap[start:start + blen], strict_map_key=False)
        off += total


def pack_matches(store: Any, spans: Iterator[tuple[int, int]],
                 keep: Callable[[dict], bool] | None, stop: int | None) -> bytes:
    """The bodies of the records at ``spans`` that ``keep`` accepts (the
    first ``stop`` of them), as one msgpack array: the records travel as
    they are stored, and the receiver decodes them with one call."""
    heap = store.heap
    unpackb = _unpackb
    bodies: list[Any] = [b""]
    for start, blen in spans:
        body = heap[start:start + blen]
        if keep is None or keep(unpackb(body, strict_map_key=False)):
            bodies.append(body)
            if stop is not None and len(bodies) > stop:
                break
    bodies[0] = _ARRAY32.pack(_ARRAY32_TYPE, len(bodies) - 1)
    return b"".join(bodies)


def unpack_matches(packed: bytes) -> list[dict]:
    """The records of a ``pack_matches`` result."""
    return _unpackb(packed, strict_map_key=False)
