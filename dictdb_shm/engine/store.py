"""TableStore: one table's records in shared memory, the StorageEngine of
the shared-memory backend (the interface is in engine/__init__.py).

Owns: mapping a table's segments, the seqlock that lets reads go without
locks, point reads and scans, the write path (encode, make room, append,
commit) and undo.  Must never: know about queries, schemas or the public
Table API, or take the table lock itself except to fall back from a failed
lock-free read.  The rest of a table's engine: mapping.py (this store's
base: its mapped segments and the commit flip), growth.py, search.py,
indexing.py, append.py, records.py (docs/architecture.md has the map).

*Readers take no lock.*  The table lock makes the store region's ``seq`` odd
while a writer holds the table.  A reader notes ``seq`` (``_begin_read``),
reads, and checks ``seq`` again; if it changed or was odd it retries, and
after ``OPTIMISTIC_TRIES`` it takes the read lock.  A lock-free read may see
torn bytes, so it bounds every loop and treats any exception as "retry"
until ``seq`` proves the bytes were stable.

*Writes are appends plus one flip* (``apply``, under the write lock):
encode every change (bad input fails before anything changes), make room
(growth.py), append past the committed end (append.py), bring the indexes in
step, then write the inactive descriptor and flip ``active`` with one 8-byte
store: the commit.  *Undo* (``recover``) walks the records past the
committed end newest first, puts each directory entry back to the ``prev``
its record remembers, clears the SUPERSEDED flags, zeroes the tail and
rebuilds an index segment left dirty (and first takes back an in-place
edit left armed: inplace.py); it runs when ``apply`` raises and, through
the lock, when a writer died.  Invariants:

* Bytes of the heap past the committed end are zero when no write runs.
* A directory entry points below the committed end, except during ``apply``.
* Segment names are published (by the flip) only after they are filled.
* Every reader loop is bounded by the segment size or the directory capacity.
* No new segment survives in a database marked destroyed (``new_segment``).
"""

from __future__ import annotations

import platform
from time import time as _now
from typing import Any, Callable, Iterable, Iterator, TypeVar

from dictdb_shm.engine import bulk, growth, indexing, inplace, ranges, search
from dictdb_shm.engine import layout as L
from dictdb_shm.engine import records as R
from dictdb_shm.engine.append import append_records
from dictdb_shm.engine.columns import KIND_COLUMN, ColumnFull
from dictdb_shm.engine.mapping import TableMapping
from dictdb_shm.errors import DatabaseFullError

T = TypeVar("T")

# Lock-free reads need stores to become visible in program order, which
# x86-64 guarantees and weaker machines (aarch64) do not without barriers
# that Python cannot issue: there every read takes the read lock.
OPTIMISTIC_TRIES = 3 if platform.machine() in ("x86_64", "AMD64") else 0
BULK_INDEX_REBUILD = 1024   # a write of more rows builds a fresh index segment

# Hot-path aliases of the layout helpers (a global lookup each, no call).
_RHEAD = R.HEAD.unpack_from
_decode = R.decode_body
_unpackb = R._unpackb
_LOCK_FREE = OPTIMISTIC_TRIES > 0     # not on machines that reorder stores
_TOMB = R.TOMBSTONE
_VALUE = R.KIND_VALUE
_INT_ENTRY = R.INT_ENTRY
_OFFSET_MASK = R.OFFSET_MASK
_INT_MIN, _INT_MAX = R.INT_MIN, R.INT_MAX
_MASK64, _GOLDEN = R.MASK64, R.GOLDEN
_HDR = R.RECORD_HEADER
_SHIFT = R.ENTRY_SHIFT
_TornRead = R.TornRead
_STAMPS, _STAMP_MASK = R.STAMPS_PER_SECOND, R.STAMP_MASK
Descriptor = L.Descriptor


class TableStore(TableMapping):
    """The storage engine of one table (see the module docstring); the
    mapping of its segments is TableMapping's (mapping.py)."""

    # Whether writes put the wall clock in each record's stamp: only stores
    # that read it back (expiry, a cache's eviction) pay for the clock.
    STAMPED = False

    # -------------------------------------------------------------- point read
    def get(self, pk: Any, default: Any = None) -> Any:
        """The record with primary key ``pk``, or ``default``.  Lock-free.
        Hot path: the first lock-free attempt at an int key is written out
        (the seqlock words, the probe, the decode: each call costs ~10%);
        other keys, retries and the locked read are ``_get_retrying``'s."""
        if type(pk) is int and _INT_MIN <= pk <= _INT_MAX:
            h = ((pk & _MASK64) * _GOLDEN) & _MASK64
            w, seq_w = self._w, self._seq_w
            seq = w[seq_w]
            mask = self._mask
            if not seq & 1 and w[seq_w + 1] == self._active and w[seq_w + 2] == self.uid \
                    and mask and _LOCK_FREE:
                found = None
                try:
                    # The slot words walked without a range iterator (a tenth of a get).
                    dw = self._dw
                    j = (h >> self._shift) << 1        # the slot's hash word
                    left = mask                        # probes after this one
                    eo = dw[j + 1]
                    while eo:
                        if dw[j] == h and eo & _INT_ENTRY and eo != _TOMB:
                            heap = self.heap
                            off = (eo & _OFFSET_MASK) - 1
                            _, blen, kind, _, pklen = _RHEAD(heap, off)
                            off += _HDR + pklen
                            if kind == _VALUE:
                                found = _unpackb(heap[off:off + blen], strict_map_key=False)
                            break
                        if not left:                   # every slot probed: torn words
                            found = _TornRead
                            break
                        left -= 1
                        j = (j + 2) & ((mask << 1) | 1)
                        eo = dw[j + 1]
                except Exception:  # torn bytes: seq decides below
                    found = _TornRead
                if w[seq_w] == seq and found is not _TornRead:
                    return default if found is None else found
            return self._get_retrying(pk, R._packb(pk), default)
        try:
            pk = R.normalize_key(pk)
            pkb = R._packb(pk)
        except (TypeError, ValueError, OverflowError):
            return default
        return self._get_retrying(pk, pkb, default)

    def _get_retrying(self, pk: Any, pkb: bytes, default: Any) -> Any:
        """``get`` past its written-out first attempt: lock-free attempts
        through ``_begin_read`` (which maps a new generation), then the read lock."""
        h, int_key = R.key_hash(pk, pkb)
        w, seq_w = self._w, self._seq_w
        for _ in range(OPTIMISTIC_TRIES):
            seq = self._begin_read()
            if seq < 0:
                break
            try:
                found = self._lookup(pkb, h, int_key)
            except Exception:  # torn bytes: seq decides below
                found = _TornRead
            if w[seq_w] == seq and found is not _TornRead:
                return default if found is None else found
        with self.lock.read_lock():
            self._check_table()
            found = self._lookup(pkb, h, int_key)
        return default if found is None else found

    def _lookup(self, pkb: bytes, h: int, int_key: int) -> Any:
        """The record of the key with bytes ``pkb`` and hash ``h``, or None."""
        if not self._mask:
            return None
        heap = self.heap
        off = R.probe(self._dw, heap, self._shift, self._mask, h, pkb, int_key)[1]
        if off == R.PROBE_FULL:
            raise _TornRead
        if off < 0:
            return None
        _, blen, kind, _, pklen = _RHEAD(heap, off)
        return _decode(heap, off + _HDR + pklen, blen) if kind == _VALUE else None

    # ----------------------------------------------------------- consistent read
    def read(self, fn: Callable[["TableStore"], T]) -> T:
        """Run ``fn(self)`` against one consistent state of the table.

        ``fn`` may run more than once (lock-free attempts that saw a writer),
        so it must not have side effects; inside it use ``scan``, ``lookup``,
        ``index_candidates``, ``scan_containing`` and ``live_count``.
        """
        if not self.lock.held_by_me():
            w, seq_w = self._w, self._seq_w
            for _ in range(OPTIMISTIC_TRIES - 1):
                seq = self._begin_read()
                if seq < 0:
                    break
                try:
                    result: Any = fn(self)
                except Exception:
                    result = _TornRead
                if w[seq_w] == seq:
                    if result is _TornRead:
                        break  # the bytes were stable: the error is real, rerun under the lock
                    return result
        with self.lock.read_lock():
            self._check_table()
            return fn(self)

    def lookup(self, pk: Any) -> Any:
        """Inside ``read``: the record or None."""
        try:
            pk = R.normalize_key(pk)
            pkb = R._packb(pk)
        except (TypeError, ValueError, OverflowError):
            return None
        return self._lookup(pkb, *R.key_hash(pk, pkb))

    def lookup_locked(self, pk: Any) -> Any:
        """Under the table's write lock: the record or None (the current
        segments mapped first), for read-modify-write calls such as a
        cache's incr."""
        self._check_table()
        return self.lookup(pk)

    def scan(self) -> Iterator[dict]:
        """Inside ``read``: every live record, in the order they were last
        written.  Hot path.  Without a lock it gives up (TornRead) as soon as
        it sees a writer, rather than finish a pass ``read`` would discard."""
        heap = self.heap
        end = self._heap_end
        off = 0
        unpackb = _unpackb
        w, seq_w = self._w, self._seq_w
        watch = not self.lock.held_by_me()
        n = 0
        while off < end:
            total, blen, kind, flags, pklen = _RHEAD(heap, off)
            if total < _HDR:
                raise _TornRead
            if kind == _VALUE and not flags & R.SUPERSEDED:
                start = off + _HDR + pklen
                yield unpackb(heap[start:start + blen], strict_map_key=False)
                n += 1
                if watch and not n & 4095 and w[seq_w] & 1:
                    raise _TornRead
            off += total

    def scan_containing(self, field: str, values: Iterable[Any]) -> Iterator[dict] | None:
        """Inside ``read``: a superset of the live records whose top-level
        ``field`` equals one of ``values``, found by their bytes (search.py);
        None when a value cannot be searched (the caller scans)."""
        needle = search.pair_pattern(field, values)
        if needle is None:
            return None
        d = self.desc
        return search.records_around(self.heap, d.heap_end, d.heap_cap, d.n_records, needle)

    def live_count(self) -> int:
        return self.desc.live

    def count(self) -> int:
        return self.read(TableStore.live_count)

    # ----------------------------------------------------------------- indexes
    def indexes(self) -> dict[str, str]:
        """Inside ``read`` or a lock: ``{field: "hash" | "sorted"}``."""
        return indexing.kinds(self.indexes_by_field)

    def index_estimate(self, field: str, op: str, value: Any) -> int | None:
        """Inside ``read``: how many records an indexed equality reaches."""
        return indexing.estimate(self.indexes_by_field, field, op, value)

    def index_candidates(self, field: str, op: str, value: Any) -> list[dict] | None:
        """Inside ``read``: the records an index on ``field`` offers for
        ``field <op> value``, a superset of the matches; None when no index
        can answer (the caller scans)."""
        slots = indexing.candidate_slots(self.indexes_by_field, field, op, value)
        if slots is None:
            return None
        return indexing.records_at(self.directory, self.heap, slots)

    def index_values(self, field: str) -> list[Any] | None:
        """Inside ``read``: one value of each distinct key of the index on
        ``field``; None when it has none."""
        return indexing.distinct_values(self.indexes_by_field, self.directory, self.heap,
                                        field)

    # ----------------------------------------------------------------- columns
    def column(self, field: str) -> Any:
        """Inside ``read``: the arrays of the column index on ``field``
        (columns.ColumnArrays, views of shared memory), or None."""
        ix = self.indexes_by_field.get(field)
        if ix is None or ix.kind != KIND_COLUMN:
            return None
        return ix.arrays()

    def field_arrays(self, field: str) -> Any:
        """Inside ``read``: ``field`` of every live record as ColumnArrays,
        the column index's when there is one, else read from the heap."""
        found = self.column(field)
        if found is not None:
            return found
        from dictdb_shm.engine import extract   # numpy: loaded by the first use
        return extract.read_field(self.directory, self.desc.dir_cap, self.heap, field)

    def offsets_of(self, slots: Any) -> Any:
        """Inside ``read``: the heap offset of the record at each directory
        slot (a numpy array): their order is the order of writing."""
        import numpy as np
        words = np.frombuffer(self.directory, np.uint64, 2 * self.desc.dir_cap)
        eo = words[2 * slots.astype(np.int64) + 1]
        if ((eo == 0) | (eo == np.uint64(_TOMB))).any():
            raise _TornRead
        return ((eo & np.uint64(_OFFSET_MASK)) - np.uint64(1)).astype(np.int64)

    def scan_holding(self, text: str) -> Iterator[dict]:
        """Inside ``read``: a superset of the live records whose bytes hold
        ``text`` (UTF-8), found by searching the heap (search.py)."""
        d = self.desc
        return search.records_around(self.heap, d.heap_end, d.heap_cap, d.n_records,
                                     search.text_pattern(text))

    def rows_at(self, slots: Any, limit: int | None = None) -> list[dict]:
        """Inside ``read``: the live records at directory ``slots`` (a numpy
        array), in the order they were last written (as ``scan``); only the
        first ``limit`` of them when given."""
        import numpy as np
        if not len(slots):
            return []
        offs = np.sort(self.offsets_of(slots))[:limit].tolist()
        heap, out = self.heap, []
        for off in offs:
            _, blen, kind, _, pklen = _RHEAD(heap, off)
            if kind != _VALUE:
                raise _TornRead
            start = off + _HDR + pklen
            out.append(_unpackb(heap[start:start + blen], strict_map_key=False))
        return out

    # ----------------------------------------------------------- parallel parts
    def partition(self, shares: Any) -> list[ranges.ScanPart] | None:
        """Under the table's read lock: the committed heap in record-aligned
        parts of about ``shares`` (relative sizes) that other processes read
        (engine/ranges.py)."""
        return ranges.split(self, shares)

    def part_records(self, part: ranges.ScanPart, holding: str | None = None,
                     containing: tuple[str, Any] | None = None) -> Iterator[dict]:
        """Without a lock, while ``part``'s splitter holds the read lock: its
        live records (a superset of those holding ``holding`` or ``containing``
        when given), in heap order."""
        ranges.open_part(self, part)
        yield from ranges.records(self, part, holding, containing)
        ranges.check_still_current(self, part)

    def pack_part(self, part: ranges.ScanPart, keep: Callable[[dict], bool] | None,
                  stop: int | None = None, holding: str | None = None,
                  containing: tuple[str, Any] | None = None) -> bytes:
        """As ``part_records``, the (first ``stop``) records ``keep`` accepts,
        packed as stored for ``unpack_part`` in another process."""
        ranges.open_part(self, part)
        packed = ranges.pack_matches(self, ranges.body_spans(self, part, holding, containing),
                                     keep, stop)
        ranges.check_still_current(self, part)
        return packed

    def unpack_part(self, packed: bytes) -> list[dict]:
        return ranges.unpack_matches(packed)

    def create_index(self, field: str, kind: str) -> bool:
        """Under the write lock: index ``field``; False when it already is."""
        self._check_table()
        if field in self.indexes_by_field:
            return False
        defs = indexing.add_definition(self.indexes_by_field, field, kind, self.table)
        growth.replace_index_segment(self, defs, keep=not self._w[self._dirty_w])
        return True

    # ----------------------------------------------------------------- writing
    def next_auto_pk(self) -> int:
        """Under the write lock: the next free auto-assigned primary key."""
        self._check_table()
        next_pk = self.desc.next_pk
        if next_pk > _INT_MAX:
            raise DatabaseFullError(
                f"table {self.table!r} has used every automatic primary key up to "
                f"{_INT_MAX}", hint="give primary keys explicitly")
        return next_pk

    def apply(self, changes: Iterable[tuple[Any, Any, int]]) -> None:
        """Apply ``(pk, record, mode)`` changes as one all-or-nothing write.

        Must run under the table's write lock.  ``mode`` is INSERT (the key
        must be new: DuplicateKeyError), PUT (insert or replace) or DELETE
        (``record`` ignored; the key must exist: RecordNotFoundError).
        """
        if not self.lock.write_held_by_me():
            raise RuntimeError("TableStore.apply needs the table's write lock")
        self._check_table()
        batch, nbytes, nkeys = R.encode_changes(changes, self.table, self._max_record)
        if not batch:
            return
        d = self.desc
        if d.heap_end + nbytes > d.heap_cap or d.dir_used + nkeys > d.dir_cap * R.MAX_LOAD:
            growth.make_room(self, nbytes, nkeys)
        try:
            self._append(batch, nbytes)
        except BaseException:
            self.recover()
            raise

    def _append(self, batch: list, nbytes: int) -> None:
        """Steps 3 and 4 of a write: append past the committed end, then commit."""
        desc = self.desc
        self._w[self._txn_w] = desc.heap_end + nbytes
        new, touched = append_records(self.desc, self.heap, self._dw, self._shift,
                                      self._mask, batch, bool(self.indexes_by_field), self.table,
                                      int(_now() * _STAMPS) & _STAMP_MASK if self.STAMPED else 0)
        if not self.indexes_by_field:
            self.publish(new)
            return
        if len(touched) <= BULK_INDEX_REBUILD and all(
                ix.room_for(len(touched)) for ix in self.indexes_by_field.values()):
            self._w[self._dirty_w] = 1
            try:
                indexing.update_in_place(self.indexes_by_field, self.heap, touched)
            except ColumnFull:
                pass               # a dictionary is full: the fresh segment below
            else:
                self.publish(new)
                self._w[self._dirty_w] = 0
                return
        seg = desc.next_seg
        index = growth.new_index_segment(self, seg, self.directory, desc.dir_cap, self.heap)
        self.adopt(index=(seg, index), dir_cap=desc.dir_cap)
        self.publish(new._replace(index_seg=seg, next_seg=seg + 1))
        growth.unlink_segments(self, desc, index=True)
        self._w[self._dirty_w] = 0

    # ------------------------------------------------------------------- undo
    def recover(self) -> None:
        """Under the write lock: undo a write that did not commit.

        Safe to call at any time under the write lock, and again after a
        recovery that was itself interrupted; a no-op when the last write
        committed.  Also rebuilds indexes a crash left half-edited and
        removes segments a crashed growth left behind.
        """
        w = self._w
        if w[self._uid_w] != self.uid or w[self._seq_w] == L.SEQ_DROPPED:
            return
        self._sync(w[self._active_w])
        inplace.undo(self)          # an in-place edit (inplace.py) is never part of an append
        heap, dw = self.heap, self._dw
        end, cap = self.desc.heap_end, self.desc.heap_cap
        appended = []
        off = end
        while off + _HDR <= cap:
            total, blen, _, _, pklen = _RHEAD(heap, off)
            if total < _HDR or off + total > cap or _HDR + pklen + blen > total:
                break
            appended.append(off)
            off += total
        mask, shift = self._mask, self._shift
        for o in reversed(appended):
            flags = heap[o + R.FLAGS_AT]
            prev, h = R.PREV_HASH.unpack_from(heap, o + R.PREV_HASH_AT)
            i = h >> shift
            for _ in range(mask + 1):
                eo = dw[2 * i + 1]
                if eo == 0:
                    break
                if eo != _TOMB and eo & _OFFSET_MASK == o + 1:
                    # One word store each, so an undo that is itself killed
                    # leaves every entry either before or after its repair.
                    if prev:
                        dw[2 * i + 1] = prev | (eo & _INT_ENTRY)
                    else:
                        dw[2 * i + 1] = 0 if flags & R.SLOT_WAS_EMPTY else _TOMB
                        dw[2 * i] = 0
                    break
                i = (i + 1) & mask
            if prev and prev - 1 < end:
                heap[prev - 1 + R.FLAGS_AT] &= ~R.SUPERSEDED & 0xFF
        zero_to = min(max(off, w[self._txn_w]), cap)
        if zero_to > end:
            heap[end:zero_to] = bytes(zero_to - end)
        w[self._txn_w] = end
        if w[self._dirty_w]:
            growth.replace_index_segment(self, indexing.definitions(self.indexes_by_field))
            w[self._dirty_w] = 0
        growth.collect_orphans(self)

    def compact(self) -> None:
        """Under the write lock: rewrite the table without superseded versions."""
        self._check_table()
        growth.compact(self)

    # ------------------------------------------------------------- bulk builds
    def bulk_load(self, records: Any, key_field: str, indexes: dict[str, str]) -> bool:
        """Under the write lock of an empty table: fill it with ``records``
        (dicts that each hold ``key_field``) and ``indexes``, all or nothing,
        in one pass (engine/bulk.py); False, changing nothing, when a record
        lacks ``key_field``.  Not journaled."""
        image = bulk.encode_records(records, key_field, self.table, self._max_record)
        if image is None:
            return False
        self._bulk_install(bulk.build(image, indexes, self.table))
        return True

    def load_image(self, built: bulk.BuiltTable) -> None:
        """Under the write lock of an empty table: fill it with segments
        built elsewhere (bulk.build's, as a snapshot keeps them).  Not journaled."""
        self._bulk_install(built)

    def _bulk_install(self, built: bulk.BuiltTable) -> None:
        if not self.lock.write_held_by_me():
            raise RuntimeError("a bulk build needs the table's write lock")
        self._check_table()
        bulk.install(self, built)

    def committed_image(self) -> tuple[bytes, bytes, Descriptor, dict[str, str]]:
        """Under the table's lock: copies of the committed heap, its offset log
        (u64 offsets of every record, in heap order) and descriptor; the index kinds."""
        def copy(s: Any) -> tuple[bytes, bytes, Descriptor, dict[str, str]]:
            d = s.desc
            return (bytes(s.heap[:d.heap_end]),
                    bytes(s.heap[d.heap_cap:d.heap_cap + R.LOG_ENTRY.size * d.n_records]),
                    d, s.indexes())
        return self.read(copy)
