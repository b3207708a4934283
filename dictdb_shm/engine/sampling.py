"""Walking a table's directory in slot order: the live entries with their
keys, bodies, stamps and sizes, for a cache's eviction sample, its sweep and
``clear`` (dictdb_shm/cache/) and a TTL table's sweep.

Owns: reading, from a given directory slot on, what each live entry holds.
Must never: write anything or take a lock; callers run it under the table's
write lock or inside ``TableStore.read`` (where torn bytes raise and the read
is retried).  Directory order is hash order, so a run of consecutive slots is
a sample of keys as good as a random one, without a random probe per key.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from dictdb_shm.engine import layout as L
from dictdb_shm.engine import records as R

_STAMP = R.STAMP.unpack_from


class Entry(NamedTuple):
    key: Any
    body: Any          # the decoded record body
    stamp: int         # records.STAMP_AT: last write, or a cache's last access
    size: int          # bytes the record takes in the heap


def entries_from(store: Any, start: int, limit: int) -> tuple[list[Entry], int]:
    """Up to ``limit`` live entries from directory slot ``start`` on
    (wrapping round at most once), and the slot to start the next walk at."""
    cap = store.desc.dir_cap
    if not cap or not store.desc.live:
        return [], 0
    mask = cap - 1
    dw = L.words(store.directory)
    heap = store.heap
    end = store.desc.heap_end
    out: list[Entry] = []
    i = start & mask
    for _ in range(cap):
        eo = dw[2 * i + 1]
        i = (i + 1) & mask
        if eo == 0 or eo == R.TOMBSTONE:
            continue
        off = R.entry_record(eo)
        if off >= end:
            raise R.TornRead
        total, blen, kind, _, pklen = R.HEAD.unpack_from(heap, off)
        if kind != R.KIND_VALUE:
            continue
        key_at = off + R.RECORD_HEADER
        key = R._unpackb(heap[key_at:key_at + pklen])
        body = R.decode_body(heap, key_at + pklen, blen)
        out.append(Entry(key, body, _STAMP(heap, off + R.STAMP_AT)[0], total))
        if len(out) >= limit:
            break
    return out, i


def stamp_of_key(store: Any, pk: Any) -> int | None:
    """Under the write lock: the stamp of ``pk``'s live record, or None."""
    try:
        pk = R.normalize_key(pk)
        pkb = R._packb(pk)
    except (TypeError, ValueError, OverflowError):
        return None
    if not store.desc.dir_cap:
        return None
    h, int_key = R.key_hash(pk, pkb)
    cap = store.desc.dir_cap
    off = R.probe(L.words(store.directory), store.heap, 64 - (cap.bit_length() - 1), cap - 1,
                  h, pkb, int_key)[1]
    if off < 0 or R.HEAD.unpack_from(store.heap, off)[2] != R.KIND_VALUE:
        return None
    return _STAMP(store.heap, off + R.STAMP_AT)[0]
