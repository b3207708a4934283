"""Making room in a table: growth, compaction and rebuilds of its segments.

Owns: when and how a table's segments are replaced (the sizing policy,
including what to do when /dev/shm is short of space), copying the live
records, rehashing the directory, and publishing a fresh index segment.
Must never: decide what a write means (store.py), or run without the
table's write lock.

Every replacement follows one protocol: create new segments under new
numbers (``desc.next_seg``), fill them, adopt their mappings, publish them
with one descriptor flip (``store.publish``), and only then unlink the old
names.  A crash before the flip leaves unnamed-by-any-descriptor segments,
which the next undo removes; a crash after it leaves old names, likewise.

Policy:

* A heap or directory with a quarter or more dead weight (superseded
  records, markers, tombstones) is *compacted*: the live records are copied
  into new segments, so a table rewritten in place forever stays bounded.
* Otherwise the full part *grows*: the heap by one copy of its bytes
  (offsets do not move, so the directory and indexes stay valid), the
  directory by rehashing its entries (slots move, so the index segment is
  rebuilt with it).
* New segments are sized to twice what they must hold, so growth is
  amortised; when /dev/shm lacks the room for that, to what the write needs
  plus a little, and when even that does not fit, DatabaseFullError says how
  much was needed and how much is free.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Protocol

from dictdb_shm import names
from dictdb_shm.engine import index as IX
from dictdb_shm.engine import indexing
from dictdb_shm.engine import records as R
from dictdb_shm.engine.layout import TRACK_LOST, Descriptor
from dictdb_shm.engine.segment import Segment, unlink
from dictdb_shm.errors import CorruptionError, DatabaseFullError


class TableSegments(Protocol):
    """What growth needs of a table's store (TableStore implements it)."""

    db: str
    uid: int
    table: str

    @property
    def desc(self) -> Descriptor: ...

    @property
    def heap(self) -> Any: ...

    @property
    def directory(self) -> Any: ...

    @property
    def indexes_by_field(self) -> dict[str, IX.Index]: ...

    def new_segment(self, name_of: Callable[[str, int, int], str], seg: int,
                    size: int) -> Segment: ...

    def adopt(self, *, heap: tuple[int, Any] | None = None,
              directory: tuple[int, Any] | None = None,
              index: tuple[int, Segment | None] | None = None, dir_cap: int = 0) -> None: ...

    def publish(self, desc: Descriptor) -> None: ...

MIN_HEAP = 1 << 16
MIN_DIR = 1 << 10
HEAP_SLACK = 1 << 16          # what a tight heap holds beyond the write, at least
DEAD_WEIGHT = 4               # compact when dead weight is over 1/DEAD_WEIGHT

_ENTRY = R.ENTRY.unpack_from
_ENTRY_PUT = R.ENTRY.pack_into
_RHEAD = R.HEAD.unpack_from
_TOMB = R.TOMBSTONE


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, int(n - 1).bit_length())


def _round_up(n: int, unit: int) -> int:
    return (n + unit - 1) // unit * unit


def make_room(store: TableSegments, nbytes: int, nkeys: int) -> None:
    """Make room for a write of ``nbytes`` bytes of records and ``nkeys``
    new keys, by the cheapest means (see the module docstring)."""
    d = store.desc
    heap_full = d.heap_end + nbytes > d.heap_cap
    dir_full = d.dir_used + nkeys > d.dir_cap * R.MAX_LOAD
    if not heap_full and not dir_full:
        return
    if not d.heap_seg or d.garbage * DEAD_WEIGHT > d.heap_end or \
            (d.dir_used - d.live) * DEAD_WEIGHT > d.live:
        rebuild(store, nbytes, nkeys)
        return
    if heap_full:
        grow_heap(store, nbytes)
    if dir_full:
        grow_directory(store, nkeys)


def compact(store: TableSegments) -> None:
    """Rewrite the table without superseded versions and markers."""
    rebuild(store, 0, 0)


# ------------------------------------------------------------------ sizing
def _free_bytes() -> int:
    try:
        st = os.statvfs(names.SHM_DIR)
    except OSError:
        return 1 << 62
    return st.f_bavail * st.f_frsize


def _choose(table: str, options: list[tuple[int, ...]], size_of: Any) -> tuple[int, ...]:
    """The first capacity option whose segments fit in /dev/shm's free space."""
    free = _free_bytes()
    for caps in options:
        if size_of(*caps) <= free:
            return caps
    need = size_of(*options[-1])
    raise DatabaseFullError(
        f"table {table!r} needs {need / 2**20:.1f} MiB more in /dev/shm to grow, and "
        f"{free / 2**20:.1f} MiB are free",
        hint="free space in /dev/shm (df -h /dev/shm; a container's default is 64 MiB: "
             "raise it with --shm-size), or drop or compact tables")


def _index_bytes(store: TableSegments, dir_cap: int) -> int:
    return indexing.segment_bytes(store.indexes_by_field, dir_cap)


def _heap_caps(live: int) -> list[int]:
    """Heap capacities for ``live`` bytes: roomy first, then tight."""
    roomy = max(MIN_HEAP, _pow2_at_least(2 * live))
    tight = max(MIN_HEAP, _round_up(live + max(HEAP_SLACK, live // 8), 1 << 16))
    return [roomy] if tight >= roomy else [roomy, tight]


def _dir_caps(keys: int) -> list[int]:
    roomy = max(MIN_DIR, _pow2_at_least(2 * keys))
    tight = max(MIN_DIR, _pow2_at_least(int(keys / R.MAX_LOAD) + 1))
    return [roomy] if tight >= roomy else [roomy, tight]


def directory_capacity(keys: int) -> int:
    """The directory capacity of a table built whole with ``keys`` keys
    (engine/bulk.py): roomy, as a growth would make it."""
    return _dir_caps(keys)[0]


def heap_capacity(store: TableSegments, heap_bytes: int, other_bytes: int) -> int:
    """The heap capacity of a table built whole with ``heap_bytes`` of
    records, whose other segments take ``other_bytes`` (engine/bulk.py):
    tight, since a later write grows it by doubling.  DatabaseFullError
    when /dev/shm lacks the room."""
    cap = max(MIN_HEAP, _round_up(heap_bytes + max(HEAP_SLACK, heap_bytes // 8), 1 << 16))
    return _choose(store.table, [(cap,)],
                   lambda h: R.heap_segment_size(h) + other_bytes)[0]


# ----------------------------------------------------------------- rebuild
def rebuild(store: TableSegments, extra_bytes: int, extra_keys: int) -> None:
    """Copy the live records into new segments with room for a write of
    ``extra_bytes`` bytes and ``extra_keys`` new keys, and publish them."""
    old = store.desc
    seg = old.next_seg
    heap_caps = _heap_caps(old.live_bytes + extra_bytes)
    dir_caps = _dir_caps(old.live + extra_keys)
    options = [(heap_caps[0], dir_caps[0])]
    if len(heap_caps) > 1 or len(dir_caps) > 1:
        options.append((heap_caps[-1], dir_caps[-1]))
    heap_cap, dir_cap = _choose(
        store.table, options,
        lambda h, c: R.heap_segment_size(h) + c * R.ENTRY_SIZE + _index_bytes(store, c))
    made = []
    try:
        new_heap = store.new_segment(names.heap_segment, seg, R.heap_segment_size(heap_cap))
        made.append(new_heap.name)
        new_dir = store.new_segment(names.directory_segment, seg, dir_cap * R.ENTRY_SIZE)
        made.append(new_dir.name)
        new_end, count = copy_live(store.heap, store.desc.heap_end, new_heap.buf, heap_cap,
                                   new_dir.buf, dir_cap, store.table)
        if count != old.live:
            raise CorruptionError(f"table {store.table!r}: {count} live records found, "
                                  f"descriptor says {old.live}")
        index = new_index_segment(store, seg, new_dir.buf, dir_cap, new_heap.buf)
    except BaseException:
        for name in made:
            unlink(name)
        raise
    store.adopt(heap=(seg, new_heap.buf), directory=(seg, new_dir.buf),
                index=(seg, index), dir_cap=dir_cap)
    store.publish(old._replace(
        heap_seg=seg, heap_cap=heap_cap, heap_end=new_end, dir_seg=seg, dir_cap=dir_cap,
        dir_used=old.live, garbage=0, next_seg=seg + 1, live_bytes=new_end,
        index_seg=seg if index else 0, n_records=count,
        # Offsets move: tracking survives only when nothing was left to report.
        track_mark=new_end if old.track_mark == old.heap_end else TRACK_LOST))
    unlink_segments(store, old, heap=True, directory=True, index=True)


def copy_live(src: Any, end: int, dst: Any, dst_cap: int, dst_dir: Any,
              dir_cap: int, table: str) -> tuple[int, int]:
    """Copy the live records of ``src[:end]`` to ``dst`` (runs of them at a
    time), log their offsets after ``dst_cap`` and index them in
    ``dst_dir``.  Returns (bytes, records) copied."""
    shift = 64 - (dir_cap.bit_length() - 1)
    mask = dir_cap - 1
    off = out = count = 0
    run_start = run_out = -1
    while off < end:
        total, _, kind, flags, _ = _RHEAD(src, off)
        if total < R.RECORD_HEADER:
            raise CorruptionError(f"table {table!r}: bad record at {off}")
        if kind == R.KIND_VALUE and not flags & R.SUPERSEDED:
            if run_start < 0:
                run_start, run_out = off, out
            h = R.PREV_HASH.unpack_from(src, off + R.PREV_HASH_AT)[1]
            i = h >> shift
            while _ENTRY(dst_dir, R.entry_at(i))[1]:
                i = (i + 1) & mask
            _ENTRY_PUT(dst_dir, R.entry_at(i), h,
                       R.entry_word(out, R.INT_ENTRY if flags & R.INT_KEY else 0))
            R.LOG_ENTRY.pack_into(dst, dst_cap + R.LOG_ENTRY.size * count, out)
            out += total
            count += 1
        elif run_start >= 0:
            dst[run_out:out] = src[run_start:off]
            run_start = -1
        off += total
    if run_start >= 0:
        dst[run_out:out] = src[run_start:end]
    return out, count


# ------------------------------------------------------------------ growth
def grow_heap(store: TableSegments, nbytes: int) -> None:
    """A bigger heap holding the same bytes at the same offsets."""
    d = store.desc
    seg = d.next_seg
    (cap,) = _choose(store.table, [(c,) for c in _heap_caps(d.heap_end + nbytes)],
                     R.heap_segment_size)
    new = store.new_segment(names.heap_segment, seg, R.heap_segment_size(cap))
    heap = store.heap
    new.buf[:d.heap_end] = heap[:d.heap_end]
    log_bytes = R.LOG_ENTRY.size * d.n_records
    new.buf[cap:cap + log_bytes] = heap[d.heap_cap:d.heap_cap + log_bytes]
    store.adopt(heap=(seg, new.buf))
    store.publish(d._replace(heap_seg=seg, heap_cap=cap, next_seg=seg + 1))
    unlink_segments(store, d, heap=True)


def grow_directory(store: TableSegments, nkeys: int) -> None:
    """Rehash the directory into one with room for ``nkeys`` more keys.
    Slots move, so the index segment is rebuilt along with it."""
    d = store.desc
    seg = d.next_seg
    (cap,) = _choose(store.table, [(c,) for c in _dir_caps(d.dir_used + nkeys)],
                     lambda c: c * R.ENTRY_SIZE + _index_bytes(store, c))
    new = store.new_segment(names.directory_segment, seg, cap * R.ENTRY_SIZE)
    try:
        used = rehash(store.directory, new.buf, cap)
        index = new_index_segment(store, seg, new.buf, cap, store.heap)
    except BaseException:
        unlink(new.name)
        raise
    store.adopt(directory=(seg, new.buf), index=(seg, index), dir_cap=cap)
    store.publish(d._replace(dir_seg=seg, dir_cap=cap, dir_used=used, next_seg=seg + 1,
                             index_seg=seg if index else 0))
    unlink_segments(store, d, directory=True, index=True)


def rehash(src: Any, dst: Any, cap: int) -> int:
    """Copy the live entries (markers included) of directory ``src`` into
    the empty directory ``dst`` of ``cap`` slots; returns how many."""
    shift, mask = 64 - (cap.bit_length() - 1), cap - 1
    used = 0
    for h, eo in R.ENTRY.iter_unpack(src):
        if eo == 0 or eo == _TOMB:
            continue
        i = h >> shift
        while _ENTRY(dst, R.entry_at(i))[1]:
            i = (i + 1) & mask
        _ENTRY_PUT(dst, R.entry_at(i), h, eo)
        used += 1
    return used


def replace_index_segment(store: TableSegments, defs: indexing.Definitions,
                          keep: bool = False) -> None:
    """Publish a fresh index segment holding ``defs`` for the table as it is;
    ``keep``: copy the current indexes (they are intact) instead of
    rebuilding them, so adding an index builds only that one."""
    d = store.desc
    if not d.dir_cap:
        rebuild(store, 0, 0)             # an empty table: give it segments to index
        d = store.desc
    seg = d.next_seg
    index = new_index_segment(store, seg, store.directory, d.dir_cap, store.heap, defs,
                              store.indexes_by_field if keep else None)
    store.adopt(index=(seg, index), dir_cap=d.dir_cap)
    store.publish(d._replace(index_seg=seg if index else 0, next_seg=seg + 1))
    unlink_segments(store, d, index=True)


# ---------------------------------------------------------------- segments
def new_index_segment(store: TableSegments, seg: int, dir_buf: Any, dir_cap: int,
                      heap: Any, defs: indexing.Definitions | None = None,
                      keep: dict | None = None) -> Segment | None:
    """A fresh index segment number ``seg`` (None when there are no indexes)
    built from ``dir_buf`` and ``heap``; ``defs`` defaults to the current ones;
    the indexes in ``keep`` are copied (indexing.build_segment)."""
    if defs is None:
        defs = indexing.definitions(store.indexes_by_field)
    if not defs:
        return None
    return indexing.build_segment(
        lambda size: store.new_segment(names.index_segment, seg, size),
        defs, dir_buf, dir_cap, heap, keep)


def unlink_segments(store: TableSegments, old: Descriptor, *, heap: bool = False,
                    directory: bool = False, index: bool = False) -> None:
    """Unlink the named segments of descriptor ``old`` (after the flip that
    replaced them)."""
    for wanted, name_of, seg in ((heap, names.heap_segment, old.heap_seg),
                                 (directory, names.directory_segment, old.dir_seg),
                                 (index, names.index_segment, old.index_seg)):
        if wanted and seg:
            unlink(name_of(store.db, store.uid, seg))


def collect_orphans(store: TableSegments) -> None:
    """Unlink the table's segments that its descriptor does not name: those a
    growth interrupted by a crash left behind."""
    d = store.desc
    keep = {names.heap_segment(store.db, store.uid, d.heap_seg)[1:],
            names.directory_segment(store.db, store.uid, d.dir_seg)[1:],
            names.index_segment(store.db, store.uid, d.index_seg)[1:]}
    tp = names.table_prefix(store.db, store.uid)
    for entry in names.shm_entries(store.db):
        if entry.startswith(tp) and entry not in keep and (
                entry[len(tp):].startswith(("heap", "dir", "idx"))):
            unlink("/" + entry)
