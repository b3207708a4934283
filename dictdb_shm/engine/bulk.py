"""Bulk image builds: a whole table's segments written in one pass.

Owns: turning many records at once into a table's bytes -- the msgpack
bodies with their headers (the RecordHeap format of records.py), the offset
log, the pk directory and the index segment -- and publishing them with one
descriptor flip; and the *heap image* a snapshot keeps: the live records'
bytes as the heap holds them, compacted, with each record's directory entry
(key hash, offset) in heap order, which is all a table needs to be rebuilt
without decoding a record.  Must never: fill a table that holds
records (it replaces the table's segments wholesale), journal anything (its
callers are loads into new databases and restores, which have nothing to
journal), or run without the table's write lock.

Why it is fast: a write call (append.py) probes, writes and logs record by
record, so that any prefix of it can be undone.  A bulk build has nothing to
undo -- its segments are new, and unnamed by any descriptor until the flip --
so it encodes every record with C-level maps (``msgpack`` per record, one
``struct`` pack per header, one ``bytes.join`` for the heap), copies the heap
and its log into the segment with one slice assignment each, and fills the
directory as a Python list copied in as one array.  A crash before the flip
leaves segments no descriptor names, which the next undo removes
(growth.collect_orphans).
"""

from __future__ import annotations

import struct
from array import array
from itertools import accumulate, chain, repeat
from operator import itemgetter
from typing import Any, NamedTuple, Sequence

import numpy as np

from dictdb_shm import names
from dictdb_shm.engine import growth, indexing
from dictdb_shm.engine import index as IX
from dictdb_shm.engine import records as R
from dictdb_shm.engine.layout import Descriptor
from dictdb_shm.engine.segment import Segment, unlink
from dictdb_shm.errors import (CorruptionError, DictDBError, DuplicateKeyError,
                               InvalidArgumentError)

_HEADER_PACK = R.HEADER.pack
_PADDING = [bytes(n) for n in range(R.ALIGN)]
_HEAD_AND_ALIGN = R.RECORD_HEADER + R.ALIGN - 1
_ALIGN_MASK = -R.ALIGN
_SHORT_KEY = 16
# "<{pad}x" + the record header + "{key length}s", by pad * _SHORT_KEY + key length.
_HEAD_KEY = [struct.Struct(f"<{pad}x{R.HEADER.format[1:]}{k}s")
             for pad in range(R.ALIGN) for k in range(_SHORT_KEY)]
_INT_ENTRY = R.INT_ENTRY
_OFFSET_MASK = R.OFFSET_MASK


class HeapImage(NamedTuple):
    """A table's live records as heap bytes, ready to install.

    ``heap``: records back to back from offset 0 (records.py's format);
    ``hashes`` and ``offsets``: each record's key hash and offset, in heap
    order; ``int_keys``: INT_ENTRY for records whose key is an int (records.py),
    one value for all of them or one per record; ``next_pk``: the next
    automatic key; ``rows``: the records as they read back, when the caller
    has them (an index build then decodes nothing)."""

    heap: Any
    hashes: Sequence[int]
    offsets: Sequence[int]
    int_keys: int | Sequence[int]
    next_pk: int
    rows: Sequence[dict] | None = None

    @property
    def count(self) -> int:
        return len(self.offsets)


# ----------------------------------------------------------------- encoding
def encode_records(records: Sequence[dict], pk_field: str, table: str,
                   limit: int = R.MAX_RECORD_BYTES) -> HeapImage | None:
    """The heap image of ``records`` (dicts that each hold ``pk_field``);
    None when one lacks it (the caller assigns keys).  UnstorableValueError
    and RecordTooLargeError as a write would raise them."""
    try:
        pks = list(map(itemgetter(pk_field), records))
    except KeyError:
        return None
    rows: Sequence[dict] = records
    try:
        bodies = list(map(R._pack_strict, records))
    except (TypeError, ValueError, OverflowError):
        encoded = [R.encode_record(r, table, limit) for r in records]
        bodies = [b for b, _ in encoded]
        rows = [r for _, r in encoded]
        pks = [r[pk_field] for r in rows]
    if bodies and max(map(len, bodies)) > limit:
        big = max(range(len(bodies)), key=lambda i: len(bodies[i]))
        R.encode_record(rows[big], table, limit)        # raises RecordTooLargeError
    keys, hashes, flags, next_pk = _encode_keys(pks)
    key_lens = list(map(len, keys))
    body_lens = list(map(len, bodies))
    totals = [(k + b + _HEAD_AND_ALIGN) & _ALIGN_MASK for k, b in zip(key_lens, body_lens)]
    offsets = list(accumulate(totals, initial=0))
    offsets.pop()
    pads = [t - R.RECORD_HEADER - k - b for t, k, b in zip(totals, key_lens, body_lens)]
    flag_of = repeat(flags) if isinstance(flags, int) else flags
    if key_lens and max(key_lens) < _SHORT_KEY:
        # Two parts a record for the join: the padding of the record before,
        # the header and the key in one pack, then the body.
        formats = map(_HEAD_KEY.__getitem__,
                      [p * _SHORT_KEY + k for p, k in zip(chain((0,), pads), key_lens)])
        heads = map(struct.Struct.pack, formats, totals, body_lens, repeat(R.KIND_VALUE),
                    flag_of, key_lens, repeat(0), repeat(0), hashes, keys)
        heap = b"".join(chain(chain.from_iterable(zip(heads, bodies)),
                              (_PADDING[pads[-1]],)))
    else:
        headers = map(_HEADER_PACK, totals, body_lens, repeat(R.KIND_VALUE), flag_of,
                      key_lens, repeat(0), repeat(0), hashes)
        heap = b"".join(chain.from_iterable(zip(headers, keys, bodies,
                                                map(_PADDING.__getitem__, pads))))
    int_keys = (_INT_ENTRY if flags else 0) if isinstance(flags, int) else \
        [_INT_ENTRY if f else 0 for f in flags]
    return HeapImage(heap, hashes, offsets, int_keys, next_pk, rows)


def _encode_keys(pks: list) -> tuple[list[bytes], list[int], Any, int]:
    """(key bytes, hashes, INT_KEY record flags -- one int for all or a list --,
    next automatic key) of the primary keys ``pks``."""
    packb = R._packb
    if pks and set(map(type, pks)) == {int} and min(pks) >= R.INT_MIN and \
            max(pks) <= R.INT_MAX:
        mask, golden = R.MASK64, R.GOLDEN
        return (list(map(packb, pks)), [((k & mask) * golden) & mask for k in pks],
                R.INT_KEY, max(max(pks) + 1, 1))
    keys, hashes, flags = [], [], []
    next_pk = 1
    for pk in pks:
        pk = R.normalize_key(pk)
        pkb = R.encode_key(pk)
        h, int_key = R.key_hash(pk, pkb)
        keys.append(pkb)
        hashes.append(h)
        flags.append(R.INT_KEY if int_key else 0)
        if int_key and pk >= next_pk:
            next_pk = pk + 1
    return keys, hashes, flags, next_pk


def compact_image(heap: Any, next_pk: int, log: Any = None) -> HeapImage:
    """The heap image of the records in force in a private copy of a table's
    committed heap (``committed_image``): live values only, in heap order,
    their bytes copied as they are, a run of neighbours at a time.  With the
    copy of its offset log (every record's offset, in heap order) the
    headers are read by numpy all at once; without it, walked one by one."""
    if log is not None:
        found = _compact_by_log(heap, log, next_pk)
        if found is not None:
            return found
    head = R.HEAD.unpack_from
    prev_hash = R.PREV_HASH.unpack_from
    end = len(heap)
    runs: list[Any] = []
    hashes: list[int] = []
    offsets: list[int] = []
    int_keys: list[int] = []
    view = memoryview(heap)
    off = out = 0
    run_start = -1
    while off < end:
        total, _, kind, flags, _ = head(heap, off)
        if total < R.RECORD_HEADER or off + total > end:
            raise CorruptionError(f"a record header at offset {off} is damaged")
        if kind == R.KIND_VALUE and not flags & R.SUPERSEDED:
            if run_start < 0:
                run_start = off
            hashes.append(prev_hash(heap, off + R.PREV_HASH_AT)[1])
            offsets.append(out)
            int_keys.append(_INT_ENTRY if flags & R.INT_KEY else 0)
            out += total
        elif run_start >= 0:
            runs.append(view[run_start:off])
            run_start = -1
        off += total
    if run_start >= 0:
        runs.append(view[run_start:end])
    return HeapImage(b"".join(runs), hashes, offsets, int_keys, next_pk)


class _LogView(NamedTuple):
    """A heap's records as numpy arrays, read through its offset log."""

    offs: Any          # every record's offset, in heap order (int64)
    ends: Any          # where each ends (the next one's offset)
    flags: Any         # each record's flags byte
    live: Any          # the indexes of the values in force


def _read_by_log(heap: Any, log: Any) -> _LogView | None:
    """The records of a private heap copy through the copy of its offset
    log; None when the log does not describe the heap record by record."""
    offs = np.frombuffer(log, np.uint64).astype(np.int64)
    n, end = len(offs), len(heap)
    if not n or end % R.ALIGN:
        return None
    ends = np.empty(n, np.int64)
    ends[:-1] = offs[1:]
    ends[-1] = end
    totals = ends - offs
    if offs[0] != 0 or (totals < R.RECORD_HEADER).any() or (offs % R.ALIGN).any():
        return None
    if not np.array_equal(np.frombuffer(heap, np.uint32)[offs >> 2], totals):
        return None                          # the headers' sizes disagree with the log
    u8 = np.frombuffer(heap, np.uint8)
    flags = u8[offs + R.FLAGS_AT]
    live = np.flatnonzero((u8[offs + R.KIND_AT] == R.KIND_VALUE)
                          & ((flags & R.SUPERSEDED) == 0))
    return _LogView(offs, ends, flags, live)


def _compact_by_log(heap: Any, log: Any, next_pk: int) -> HeapImage | None:
    """``compact_image`` from the offset log; None when the log does not
    describe the heap record by record (the walk then checks it)."""
    if not len(heap):
        return HeapImage(b"", [], [], 0, next_pk)
    v = _read_by_log(heap, log)
    if v is None:
        return None
    offs, ends, live = v.offs, v.ends, v.live
    kept = (ends - offs)[live]
    offsets = np.zeros(len(live), np.int64)
    np.cumsum(kept[:-1], out=offsets[1:])
    hashes = np.frombuffer(heap, np.uint64)[(offs[live] + R.PREV_HASH_AT + 8) >> 3]
    int_keys = np.where(v.flags[live] & R.INT_KEY, np.uint64(_INT_ENTRY), np.uint64(0))
    # Neighbouring live records are copied as one run.
    breaks = np.flatnonzero(np.diff(live) != 1) + 1
    firsts = live[np.r_[0, breaks]] if len(live) else live
    lasts = live[np.r_[breaks - 1, len(live) - 1]] if len(live) else live
    view = memoryview(heap)
    body = b"".join([view[a:b] for a, b in zip(offs[firsts].tolist(), ends[lasts].tolist())])
    return HeapImage(body, hashes, offsets.astype(np.uint64), int_keys, next_pk)


# ------------------------------------------------------------------ building
class BuiltTable(NamedTuple):
    """A table's segments built in private memory, ready to copy in: the
    heap's records (``heap``) and offset log (``log``), the pk directory of
    ``dir_cap`` entries and the index segment (``b""``: no index) sized
    for it.  This is what a snapshot keeps (persistence/restore.py)."""

    heap: Any
    log: Any
    dir_cap: int
    directory: Any
    index: Any
    count: int
    next_pk: int


_PRIVATE_BUILD = "/dictdb-private-index-build"   # never a shared object's name


def check_definitions(indexes: dict[str, str], table: str) -> indexing.Definitions:
    """Index definitions ``{field: "hash" | "sorted"}`` as a segment holds them."""
    defs: indexing.Definitions = []
    for field, kind in indexes.items():
        if not isinstance(field, str) or not field:
            raise InvalidArgumentError(f"table {table!r}: an index needs a field name, "
                                       f"not {field!r}")
        defs.append(indexing.add_definition({}, field, kind, table)[0])
    if len(defs) > IX.MAX_INDEXES:
        raise DictDBError(f"table {table!r} asks for {len(defs)} indexes, more than "
                          f"{IX.MAX_INDEXES}", hint="index fewer fields")
    return defs


def build(image: HeapImage, indexes: dict[str, str], table: str) -> BuiltTable:
    """The segments of a table holding ``image`` and ``indexes``, in private
    memory.  DuplicateKeyError when two records share a key."""
    defs = check_definitions(indexes, table)
    n = image.count
    dir_cap = growth.directory_capacity(n)
    log = np.asarray(image.offsets, np.uint64)
    directory = _fill_directory(dir_cap, image, table)
    index: Any = b""
    if defs:
        # The same builder as create_index (every kind, columns included),
        # into private memory: a name no shared object has, so its unlink on
        # failure removes nothing.
        index = indexing.build_segment(
            lambda size: Segment(_PRIVATE_BUILD, size, bytearray(size), 0),  # type: ignore[arg-type]
            defs, directory, dir_cap, image.heap).buf
    return BuiltTable(image.heap, log, dir_cap, directory, index, n, image.next_pk)


def _fill_directory(cap: int, image: HeapImage, table: str) -> Any:
    """A directory of ``cap`` slots (u64 words: hash, offset word) holding an
    entry for every record of ``image``, as linear probing would place them.
    DuplicateKeyError for a key met twice.  Vectorised: entries sorted by
    home slot take the first free slot at or after it (a running maximum);
    only those pushed past the last slot are placed one by one, wrapping."""
    n = image.count
    hashes = np.asarray(image.hashes, np.uint64)
    words = np.zeros(2 * cap, np.uint64)
    if not n:
        return words
    flags = image.int_keys
    entry = np.asarray(image.offsets, np.uint64) + np.uint64(1)
    if isinstance(flags, int):
        entry |= np.uint64(flags)
    else:
        entry |= np.asarray(flags, np.uint64)
    # Sorted by hash is sorted by home slot (its top bits), and puts equal
    # hashes side by side for the duplicate check.
    order = np.argsort(hashes)
    _refuse_duplicates(hashes, entry, order, image.heap, table)
    shift = 64 - (cap.bit_length() - 1)
    home = (hashes >> np.uint64(shift)).astype(np.int64) if shift < 64 else np.zeros(n, np.int64)
    rank = np.arange(n)
    slot = rank + np.maximum.accumulate(home[order] - rank)
    fits = slot < cap
    placed = order[fits]
    words[2 * slot[fits]] = hashes[placed]
    words[2 * slot[fits] + 1] = entry[placed]
    mask = cap - 1
    for i in order[~fits].tolist():              # past the end: probe on from slot 0
        j = int(home[i])
        while words[2 * j + 1]:
            j = (j + 1) & mask
        words[2 * j], words[2 * j + 1] = hashes[i], entry[i]
    return words


def _refuse_duplicates(hashes: Any, entry: Any, by_hash: Any, heap: Any, table: str) -> None:
    """DuplicateKeyError when two records share a key: equal hashes, then
    (for keys that are not ints, whose hash is not a bijection) equal bytes.
    ``by_hash``: the records in hash order."""
    sh = hashes[by_hash]
    same = np.flatnonzero(sh[1:] == sh[:-1])
    for k in same.tolist():
        a, b = int(entry[by_hash[k]]), int(entry[by_hash[k + 1]])
        if _same_key(a, b, heap):
            raise _duplicate(heap, b, table)


def _same_key(word_a: int, word_b: int, heap: Any) -> bool:
    if (word_a ^ word_b) & _INT_ENTRY:
        return False
    if word_a & _INT_ENTRY:
        return True                          # equal hashes of int keys: equal keys
    a, b = (word_a & _OFFSET_MASK) - 1, (word_b & _OFFSET_MASK) - 1
    return R.key_bytes_at(heap, a, R.HEAD.unpack_from(heap, a)[4]) == \
        R.key_bytes_at(heap, b, R.HEAD.unpack_from(heap, b)[4])


def _duplicate(heap: Any, word: int, table: str) -> DuplicateKeyError:
    off = (word & _OFFSET_MASK) - 1
    key = R.key_bytes_at(heap, off, R.HEAD.unpack_from(heap, off)[4])
    pk = R._unpackb(bytes(key), strict_map_key=False)
    return DuplicateKeyError(f"table {table!r} already has primary key {pk!r}")


# ---------------------------------------------------------------- installing
def install(store: growth.TableSegments, built: BuiltTable) -> None:
    """Under the write lock of an empty table: make its segments hold
    ``built``, published with one flip; nothing changes on failure."""
    old = store.desc
    if old.live or old.heap_end:
        raise InvalidArgumentError(f"table {store.table!r} is not empty; a bulk build "
                                   "fills new tables only")
    n, end = built.count, len(built.heap)
    if not n:
        if built.index:
            growth.replace_index_segment(store, IX.read_definitions(built.index))
        return
    log_bytes = n * R.LOG_ENTRY.size
    dir_bytes = built.dir_cap * R.ENTRY_SIZE
    if _nbytes(built.log) != log_bytes or _nbytes(built.directory) != dir_bytes:
        raise CorruptionError(f"table {store.table!r}: a bulk image of {n} records has "
                              "an offset log or directory of the wrong size")
    heap_cap = growth.heap_capacity(store, end, dir_bytes + _nbytes(built.index))
    seg = old.next_seg
    made = []
    try:
        heap_seg = store.new_segment(names.heap_segment, seg, R.heap_segment_size(heap_cap))
        made.append(heap_seg.name)
        heap = heap_seg.buf
        heap[:end] = built.heap
        heap[heap_cap:heap_cap + log_bytes] = built.log
        dir_seg = store.new_segment(names.directory_segment, seg, dir_bytes)
        made.append(dir_seg.name)
        dir_seg.buf[:] = built.directory
        index = None
        if built.index:
            index = store.new_segment(names.index_segment, seg, _nbytes(built.index))
            made.append(index.name)
            index.buf[:] = built.index
    except BaseException:
        for name in made:
            unlink(name)
        raise
    store.adopt(heap=(seg, heap), directory=(seg, dir_seg.buf), index=(seg, index),
                dir_cap=built.dir_cap)
    store.publish(Descriptor(
        heap_seg=seg, heap_cap=heap_cap, heap_end=end, dir_seg=seg, dir_cap=built.dir_cap,
        dir_used=n, live=n, next_pk=max(built.next_pk, old.next_pk), garbage=0,
        next_seg=seg + 1, live_bytes=end, index_seg=seg if index else 0, n_records=n,
        track_mark=old.track_mark))
    growth.unlink_segments(store, old, heap=True, directory=True, index=True)


def _nbytes(buf: Any) -> int:
    return memoryview(buf).nbytes
