"""The byte work of one write call: appending its records to the heap.

Owns: writing each encoded change (records.encode_changes) as a record past
the committed end of the heap, pointing its directory entry at it, logging
its offset, flagging the version it replaces, and computing the descriptor
that commits it all.  Must never: publish anything (store.py commits with
one flip, after the indexes are in step), or leave a change that undo
(TableStore.recover) cannot take back: each record is complete, with the
``prev`` entry it replaces, before anything points at it or flags its
predecessor, so undo walking the appended records restores every entry.
Runs under the table's write lock.
"""

from __future__ import annotations

from typing import Any

from dictdb_shm.engine import DELETE, INSERT
from dictdb_shm.engine import records as R
from dictdb_shm.engine.layout import Descriptor
from dictdb_shm.errors import CorruptionError, DuplicateKeyError, RecordNotFoundError

_RHEAD = R.HEAD.unpack_from
_RHDR_PUT = R.HEADER.pack_into
_LOG_PUT = R.LOG_ENTRY.pack_into
_VALUE = R.KIND_VALUE
_make_descriptor = Descriptor._make
_HDR = R.RECORD_HEADER
_TOMB, _INT_ENTRY, _OFFSET_MASK = R.TOMBSTONE, R.INT_ENTRY, R.OFFSET_MASK


def append_records(desc: Descriptor, heap: Any, dw: Any, shift: int, mask: int,
                   batch: list[R.Change], indexed: bool,
                   table: str, stamp: int = 0) -> tuple[Descriptor, list]:
    """Write each change's record after ``desc.heap_end`` and point its entry
    in the directory (``dw``: its words, layout.words) at it.  Returns the descriptor to commit and, when
    ``indexed``, the touched (slot, old record offset or -1, new record or
    None) for the indexes.  ``stamp`` (records.stamp_of) goes in every
    record's header.  Hot path: one probe and three copies per change."""
    used, live, next_pk = desc.dir_used, desc.live, desc.next_pk
    garbage, live_bytes = desc.garbage, desc.live_bytes
    log = desc.heap_cap + R.LOG_ENTRY.size * desc.n_records
    touched = []
    off = desc.heap_end
    for pk, pkb, h, int_key, body, mode, total, record in batch:
        # records.probe written out (the call is a twentieth of an insert),
        # and without a range iterator (another).
        i = h >> shift
        tomb = -1
        left = mask                        # probes after this one
        while True:
            eo = dw[2 * i + 1]
            if eo == 0:
                found = -1
                break
            if eo == _TOMB:
                if tomb < 0:
                    tomb = i
            elif dw[2 * i] == h and eo & _INT_ENTRY == int_key:
                found = (eo & _OFFSET_MASK) - 1
                if int_key or heap[found + _HDR:found + _HDR + _RHEAD(heap, found)[4]] == pkb:
                    break
            if not left:
                raise CorruptionError(f"the directory of table {table!r} has no "
                                      "free entry")
            left -= 1
            i = (i + 1) & mask
        kind = R.KIND_MARKER if mode == DELETE else _VALUE
        pklen = len(pkb)
        flags = R.INT_KEY if int_key else 0
        if found >= 0:
            ototal, _, okind, oflags, _ = _RHEAD(heap, found)
            if okind == _VALUE:
                if mode == INSERT:
                    raise DuplicateKeyError(
                        f"table {table!r} already has primary key {pk!r}")
                live -= 1
                live_bytes -= ototal
                garbage += ototal          # a marker was counted when written
            elif mode == DELETE:
                raise RecordNotFoundError(f"table {table!r} has no primary key {pk!r}")
            prev = found + 1
            old_off = found if okind == _VALUE else -1
        else:
            if mode == DELETE:
                raise RecordNotFoundError(f"table {table!r} has no primary key {pk!r}")
            if tomb >= 0:
                i = tomb
            else:
                flags |= R.SLOT_WAS_EMPTY
                used += 1
            prev = 0
            old_off = -1
        _RHDR_PUT(heap, off, total, len(body), kind, flags, pklen, stamp, prev, h)
        start = off + _HDR
        heap[start:start + pklen] = pkb
        heap[start + pklen:start + pklen + len(body)] = body
        if prev:
            # Only now that the new version (and its prev) is written, so
            # undo always finds the flag it must clear.
            heap[found + R.FLAGS_AT] = oflags | R.SUPERSEDED
        # The hash first, then the offset word in one store: a crash in
        # between leaves the entry what it was (empty, a tombstone, or the
        # old version's), never a zeroed one that would cut a probe path.
        if not prev:
            dw[2 * i] = h
        dw[2 * i + 1] = (off + 1) | int_key
        if indexed:
            touched.append((i, old_off, record if kind == _VALUE else None))
        _LOG_PUT(heap, log, off)
        log += R.LOG_ENTRY.size
        if kind == _VALUE:
            live += 1
            live_bytes += total
            if int_key and pk >= next_pk:
                next_pk = pk + 1
        else:
            garbage += total
        off += total
    # Built from a tuple: the NamedTuple constructor (and _replace) cost more
    # than a whole probe.
    new = _make_descriptor((desc.heap_seg, desc.heap_cap, off, desc.dir_seg, desc.dir_cap,
                            used, live, next_pk, garbage, desc.next_seg, live_bytes,
                            desc.index_seg, desc.n_records + len(batch), desc.track_mark))
    return new, touched

