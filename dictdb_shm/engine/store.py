"""TableStore: one table's records in shared memory, behind a small interface.

Owns: the heap and directory segments of one table, the seqlock that lets
readers go without locks, commits, undo after a crash, growth and compaction.
Must never: know about queries, schemas or the public Table API, or take the
table lock itself except to fall back from a failed lock-free read.

Design
------
*Readers take no lock.*  The store region of the table's catalog slot holds
``seq``, which the table lock makes odd while any writer holds the table.  A
reader notes ``seq``, reads, and checks ``seq`` again: if it changed or was
odd, it retries, and after ``OPTIMISTIC_TRIES`` it takes the read lock.  So a
read needs no store to shared memory, which is what lets reads scale across
processes.  A lock-free read may see torn bytes, so it bounds every loop and
treats any exception as "retry" until ``seq`` proves the bytes were stable.

*Writes are appends plus one flip.*  ``apply`` runs under the write lock:

1. encode every record (bad input fails here, before anything changes);
2. make room (a rebuild into new, larger segments, published on its own);
3. note ``txn_end``, append each record after the committed heap end and
   point its directory entry at it (``prev`` in the record remembers the old
   entry; the old version is flagged SUPERSEDED);
4. write the inactive descriptor with the new heap end and counts, and flip
   ``active`` with one 8-byte store.  That store is the commit.

*Undo* (``recover``) walks the records past the committed heap end, newest
first, puts each directory entry back to ``prev``, clears the SUPERSEDED flag
it set, and zeroes the tail.  It runs when ``apply`` raises (a duplicate key
found while applying, say) and, through the lock, when a writer died.

*Growth and compaction are one mechanism*: ``_rebuild`` copies the live
records into new segments sized for the write to come, publishes them with a
descriptor flip, then unlinks the old names.  A heap only rebuilds when full,
to twice its live bytes, so a table rewritten forever stays bounded.

*Indexes* (index.py) live in a third segment named by the descriptor.  A
small write edits them in place after its records and directory entries are
in, with ``index_dirty`` raised until the flip; undo then rebuilds the index
segment from the restored table.  A big write, a rebuild and
``create_index`` build a fresh index segment that the flip publishes.

Invariants
----------
* Bytes of the heap past the committed end are zero when no write runs.
* A directory entry points below the committed end, except during ``apply``.
* Segment names are published (by the flip) only after they are filled.
* Every reader loop is bounded by the segment size or the directory capacity.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, NamedTuple, TypeVar

import msgpack

from dictdb_shm import names
from dictdb_shm.engine import index as IX
from dictdb_shm.engine import layout as L
from dictdb_shm.engine import records as R
from dictdb_shm.engine.segment import Segment, unlink
from dictdb_shm.errors import (CorruptionError, DictDBError, DuplicateKeyError,
                               InvalidArgumentError, InvalidNameError, RecordNotFoundError,
                               TableNotFoundError)

if TYPE_CHECKING:
    from dictdb_shm.lock.rwlock import TableLock

T = TypeVar("T")

INSERT = 0      # the key must not exist
PUT = 1         # insert or replace
DELETE = 2      # the key must exist

OPTIMISTIC_TRIES = 3
MIN_HEAP = 1 << 16
MIN_DIR = 1 << 10
MAX_LOAD = 0.7
BULK_INDEX_REBUILD = 1024   # a write of more rows builds a fresh index segment

_HEAD3 = L.THREE_U64.unpack_from
_U64 = L.U64.unpack_from
_U64_PUT = L.U64.pack_into
_ENTRY = R.ENTRY.unpack_from
_ENTRY_PUT = R.ENTRY.pack_into
_RHEAD = R.HEAD.unpack_from
_RHDR_PUT = R.HEADER.pack_into
_DESC = L.DESCRIPTOR.unpack_from
_unpackb = msgpack.unpackb
_TOMB = R.TOMBSTONE
_VALUE = R.KIND_VALUE
_INT_ENTRY = R.INT_ENTRY
_OFFSET_MASK = R.OFFSET_MASK
_INT_MIN, _INT_MAX = R.INT_MIN, R.INT_MAX
_MASK64, _GOLDEN = R.MASK64, R.GOLDEN


class Descriptor(NamedTuple):
    """Where a table's data is; ``layout.DESCRIPTOR`` is its byte form."""

    heap_seg: int           # 0: no segment yet
    heap_cap: int
    heap_end: int           # committed bytes
    dir_seg: int
    dir_cap: int            # entries, a power of two
    dir_used: int           # live + markers + tombstones
    live: int               # live records
    next_pk: int            # next auto-assigned primary key
    garbage: int            # bytes of superseded records and markers
    next_seg: int           # id for the next new segment
    live_bytes: int
    index_seg: int          # 0: no index
    n_records: int          # entries of the heap's offset log


EMPTY = Descriptor(0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0)


class _Retry(Exception):
    """A lock-free read saw bytes that cannot be right; retry it."""


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, int(n - 1).bit_length())


def init_store_region(buf: Any, slot_base: int, uid: int) -> None:
    """Write an empty table's store region (done by the catalog on create).
    The first write rebuilds into segment 1, so a new table maps nothing."""
    base = slot_base + L.STORE_REGION
    buf[base:base + L.STORE_REGION_SIZE] = bytes(L.STORE_REGION_SIZE)
    L.DESCRIPTOR.pack_into(buf, base + L.STORE_DESC, *EMPTY)
    _U64_PUT(buf, base + L.STORE_UID, uid)


class TableStore:
    """The storage engine of one table (see the module docstring).

    The interface the Table API uses: ``get``, ``read``, ``apply``,
    ``count``, ``next_auto_pk``, ``create_index``; inside ``read``:
    ``scan``, ``lookup``, ``index_candidates``.  The lock calls ``recover``.
    """

    def __init__(self, db: str, table: str, catalog: Any, slot_index: int, uid: int,
                 lock: "TableLock", max_record_bytes: int = R.MAX_RECORD_BYTES) -> None:
        self.db = db
        self.table = table
        self.uid = uid
        self._cat = catalog
        self._base = L.slot_offset(slot_index) + L.STORE_REGION
        self._lock = lock
        self._max_record = max_record_bytes
        self._active = -1
        self._desc = EMPTY
        self._heap_id = 0
        self._heap: Any = b""
        self._dir_id = 0
        self._dir: Any = b""
        self._index_id = 0
        self._index_buf: Any = b""
        self._indexes: dict[str, IX.Index] = {}
        self._shift = 64
        self._mask = 0
        self._heap_end = 0

    # ------------------------------------------------------------------ mapping
    def _sync(self, active: int) -> None:
        """Map the segments of descriptor ``active``; cheap when nothing changed."""
        desc = Descriptor._make(
            _DESC(self._cat, self._base + L.STORE_DESC + L.DESC_SIZE * (active & 1)))
        if desc.heap_seg != self._heap_id:
            self._heap = self._attach(names.heap_segment, desc.heap_seg)
            self._heap_id = desc.heap_seg
        if desc.dir_seg != self._dir_id:
            self._dir = self._attach(names.directory_segment, desc.dir_seg)
            self._dir_id = desc.dir_seg
        if desc.index_seg != self._index_id:
            buf = self._attach(names.index_segment, desc.index_seg)
            self._indexes = _open_indexes(buf, desc.dir_cap)
            self._index_buf, self._index_id = buf, desc.index_seg
        self._set_shape(desc)
        self._active = active

    def _attach(self, name_of: Callable[[str, int, int], str], seg: int) -> Any:
        return Segment.attach(name_of(self.db, self.uid, seg)).buf if seg else b""

    def _set_shape(self, desc: Descriptor) -> None:
        if desc.dir_cap:
            self._shift = 64 - (desc.dir_cap.bit_length() - 1)
            self._mask = desc.dir_cap - 1
        else:
            self._shift, self._mask = 64, 0
        self._heap_end = desc.heap_end
        self._desc = desc

    def _check_table(self) -> int:
        """Under a lock: map the current segments; raise if the table was dropped."""
        seq, active, uid = _HEAD3(self._cat, self._base)
        if uid != self.uid or seq == L.SEQ_DROPPED:
            raise TableNotFoundError(f"table {self.table!r} was dropped")
        if active != self._active:
            self._sync(active)
        return seq

    # -------------------------------------------------------------- point read
    def get(self, pk: Any, default: Any = None) -> Any:
        """The record with primary key ``pk``, or ``default``.  Lock-free.

        The probe is written out here rather than calling ``_lookup``: this
        is the hottest path of the package and a call costs ~10% of it.
        """
        if type(pk) is int and _INT_MIN <= pk <= _INT_MAX:
            h = ((pk & _MASK64) * _GOLDEN) & _MASK64
            pkb = None
        else:
            try:
                pkb = R._packb(pk)
            except (TypeError, ValueError, OverflowError):
                return default
            h = R.key_hash(pk, pkb)[0]
        cat = self._cat
        base = self._base
        for _ in range(OPTIMISTIC_TRIES):
            seq, active, uid = _HEAD3(cat, base)
            if seq & 1 or uid != self.uid:
                break
            try:
                if active != self._active:
                    self._sync(active)
                if pkb is None:
                    mask = self._mask
                    d = self._dir
                    i = h >> self._shift
                    for _ in range(mask + 1):
                        eh, eo = _ENTRY(d, i << 4)
                        if eo == 0:
                            found = None
                            break
                        if eh == h and eo & _INT_ENTRY and eo != _TOMB:
                            heap = self._heap
                            off = (eo & _OFFSET_MASK) + 31
                            _, blen, kind, _, pklen = _RHEAD(heap, off - 32)
                            if kind != _VALUE:
                                found = None
                                break
                            off += pklen
                            found = _unpackb(heap[off:off + blen], strict_map_key=False)
                            break
                        i = (i + 1) & mask
                    else:
                        found = _Retry
                else:
                    found = self._lookup(pkb, h, 0)
            except Exception:  # torn bytes: seq decides below
                found = _Retry
            if _U64(cat, base)[0] == seq and found is not _Retry:
                return default if found is None else found
        key = R._packb(pk) if pkb is None else pkb
        with self._lock.read_lock():
            self._check_table()
            found = self._lookup(key, *R.key_hash(pk, key))
        return default if found is None else found

    def _lookup(self, pkb: bytes, h: int, int_key: int) -> Any:
        """The record of the key with bytes ``pkb`` and hash ``h``, or None."""
        mask = self._mask
        if not mask:
            return None
        d = self._dir
        heap = self._heap
        i = h >> self._shift
        for _ in range(mask + 1):
            eh, eo = _ENTRY(d, i << 4)
            if eo == 0:
                return None
            if eh == h and eo != _TOMB and eo & _INT_ENTRY == int_key:
                off = (eo & _OFFSET_MASK) - 1
                total, blen, kind, _, pklen = _RHEAD(heap, off)
                start = off + 32
                if int_key or heap[start:start + pklen] == pkb:
                    if kind != _VALUE:
                        return None
                    start += pklen
                    return _unpackb(heap[start:start + blen], strict_map_key=False)
            i = (i + 1) & mask
        raise _Retry

    # ----------------------------------------------------------- consistent read
    def read(self, fn: Callable[["TableStore"], T]) -> T:
        """Run ``fn(self)`` against one consistent state of the table.

        ``fn`` may run more than once (lock-free attempts that saw a writer),
        so it must not have side effects; inside it use ``scan``, ``lookup``,
        ``index_candidates`` and ``live_count``.
        """
        if not self._lock.held_by_me():
            cat, base = self._cat, self._base
            for _ in range(OPTIMISTIC_TRIES - 1):
                seq, active, uid = _HEAD3(cat, base)
                if seq & 1 or uid != self.uid:
                    break
                try:
                    if active != self._active:
                        self._sync(active)
                    result: Any = fn(self)
                except Exception:
                    result = _Retry
                if _U64(cat, base)[0] == seq:
                    if result is _Retry:
                        break  # the bytes were stable: the error is real, rerun under the lock
                    return result
        with self._lock.read_lock():
            self._check_table()
            return fn(self)

    def lookup(self, pk: Any) -> Any:
        """Inside ``read``: the record or None."""
        try:
            pkb = R._packb(pk)
        except (TypeError, ValueError, OverflowError):
            return None
        return self._lookup(pkb, *R.key_hash(pk, pkb))

    def scan(self) -> Iterator[dict]:
        """Inside ``read``: every live record, in the order they were last written.

        Without a lock, it gives up (raises _Retry, so ``read`` retries) as
        soon as it sees a writer, rather than finishing a pass that the final
        ``seq`` check would throw away.
        """
        heap = self._heap
        end = self._heap_end
        off = 0
        unpackb = _unpackb
        cat, seq_at = self._cat, self._base + L.STORE_SEQ
        watch = not self._lock.held_by_me()
        n = 0
        while off < end:
            total, blen, kind, flags, pklen = _RHEAD(heap, off)
            if total < 32:
                raise _Retry
            if kind == _VALUE and not flags & R.SUPERSEDED:
                start = off + 32 + pklen
                yield unpackb(heap[start:start + blen], strict_map_key=False)
                n += 1
                if watch and not n & 4095 and _U64(cat, seq_at)[0] & 1:
                    raise _Retry
            off += total

    def scan_containing(self, field: str, values: Iterable[Any]) -> Iterator[dict] | None:
        """Inside ``read``: a superset of the live records whose top-level
        ``field`` equals one of ``values``, found by searching the heap's
        bytes instead of decoding every record; None when a value does not
        allow it (the caller scans).

        A record holding ``field: v`` holds the bytes msgpack(field) +
        msgpack(v), since a map key is followed by its value; ``_encodings``
        lists every msgpack form of a value Python finds equal to ``v``.
        """
        forms: list[bytes] = []
        for v in values:
            enc = _encodings(v)
            if enc is None:
                return None
            forms.extend(enc)
        if not forms:
            return None
        needle = re.compile(re.escape(R._packb(field)) + b"(?:" + b"|".join(
            re.escape(f) for f in dict.fromkeys(forms)) + b")")
        return self._records_around(needle)

    def _records_around(self, needle: "re.Pattern[bytes]") -> Iterator[dict]:
        heap = self._heap
        d = self._desc
        n = d.n_records
        offsets = memoryview(heap)[d.heap_cap:d.heap_cap + 8 * n].cast("Q")
        try:
            last = -1
            i = 0
            unpackb = _unpackb
            for m in needle.finditer(heap, 0, d.heap_end):
                pos = m.start()
                i = bisect_right(offsets, pos, i, n) - 1
                off = offsets[i]
                if off == last:
                    continue
                last = off
                total, blen, kind, flags, pklen = _RHEAD(heap, off)
                if off + total <= pos:
                    raise _Retry              # the log and the heap disagree: torn
                if kind == _VALUE and not flags & R.SUPERSEDED:
                    start = off + 32 + pklen
                    yield unpackb(heap[start:start + blen], strict_map_key=False)
        finally:
            offsets.release()

    def live_count(self) -> int:
        return self._desc.live

    def count(self) -> int:
        return self.read(TableStore.live_count)

    # ----------------------------------------------------------------- indexes
    def indexes(self) -> dict[str, str]:
        """Inside ``read`` or a lock: ``{field: "hash" | "sorted"}``."""
        return {f: IX.KIND_NAMES[ix.kind] for f, ix in self._indexes.items()}

    def index_estimate(self, field: str, op: str, value: Any) -> int | None:
        """Inside ``read``: how many records an equality (``eq``/``in``) on an
        indexed field matches, from the index alone; None when unknown."""
        ix = self._indexes.get(field)
        if ix is None or op not in ("eq", "in"):
            return None
        return ix.count_equal((value,) if op == "eq" else value)

    def index_candidates(self, field: str, op: str, value: Any) -> list[dict] | None:
        """Inside ``read``: the records an index on ``field`` offers for
        ``field <op> value``, a superset of the matches; None when no index
        can answer (the caller scans).  ``op``: eq, in, lt, le, gt, ge, between."""
        ix = self._indexes.get(field)
        if ix is None:
            return None
        if op == "eq":
            slots = ix.slots_equal((value,))
        elif op == "in":
            slots = ix.slots_equal(value)
        elif ix.kind != IX.KIND_SORTED:
            return None
        else:
            if op in ("lt", "le"):
                lo, hi = None, value
            elif op in ("gt", "ge"):
                lo, hi = value, None
            elif op == "between":
                lo, hi = value
            else:
                return None
            bounds = IX.order_bounds(lo, hi)
            if bounds is None:
                return None
            slots = ix.slots_between(*bounds)
        if slots is None:
            return None
        return self._records_at(slots)

    def _records_at(self, slots: Iterable[int]) -> list[dict]:
        d, heap = self._dir, self._heap
        out = []
        for slot in slots:
            eo = _ENTRY(d, slot << 4)[1]
            if eo == 0 or eo == _TOMB:
                raise _Retry
            off = (eo & _OFFSET_MASK) - 1
            _, blen, kind, _, pklen = _RHEAD(heap, off)
            if kind == _VALUE:
                start = off + 32 + pklen
                out.append(_unpackb(heap[start:start + blen], strict_map_key=False))
        return out

    def create_index(self, field: str, kind: str) -> bool:
        """Under the write lock: index ``field``; False when it already is."""
        self._check_table()
        if kind not in IX.KINDS:
            raise InvalidArgumentError(f"index_type must be 'hash' or 'sorted', not {kind!r}")
        if field in self._indexes:
            return False
        if len(field.encode("utf-8")) > IX.MAX_FIELD_BYTES:
            raise InvalidNameError(f"cannot index field {field!r}: the name is too long",
                                   hint=f"index fields of at most {IX.MAX_FIELD_BYTES} bytes")
        if len(self._indexes) >= IX.MAX_INDEXES:
            raise DictDBError(f"table {self.table!r} already has {IX.MAX_INDEXES} indexes",
                              hint="index fewer fields")
        defs = [(f, ix.kind) for f, ix in self._indexes.items()] + [(field, IX.KINDS[kind])]
        if not self._desc.dir_cap:
            self._rebuild(0, 0)        # an empty table: give it segments to index
        self._replace_index_segment(defs)
        return True

    def _index_defs(self) -> list[tuple[str, int]]:
        return [(f, ix.kind) for f, ix in self._indexes.items()]

    def _build_index_segment(self, defs: list[tuple[str, int]], seg: int, dir_buf: Any,
                             dir_cap: int, heap: Any) -> Segment | None:
        """A new index segment for ``defs``, built from a directory and heap."""
        if not defs:
            return None
        kinds = [k for _, k in defs]
        segment = Segment.create(names.index_segment(self.db, self.uid, seg),
                                 IX.segment_size(kinds, dir_cap), replace=True)
        try:
            IX.write_definitions(segment.buf, defs)
            built = _open_indexes(segment.buf, dir_cap)
            IX.build(list(built.values()), list(built), _live_by_slot(dir_buf, dir_cap, heap))
        except BaseException:
            unlink(segment.name)
            raise
        return segment

    def _replace_index_segment(self, defs: list[tuple[str, int]]) -> None:
        """Under the write lock: publish a fresh index segment for ``defs``."""
        desc = self._desc
        segment = self._build_index_segment(defs, desc.next_seg, self._dir, desc.dir_cap,
                                            self._heap)
        old = desc.index_seg
        self._adopt_indexes(segment, desc.next_seg, desc.dir_cap)
        self._publish(desc._replace(index_seg=desc.next_seg if segment else 0,
                                    next_seg=desc.next_seg + 1))
        if old:
            unlink(names.index_segment(self.db, self.uid, old))

    def _adopt_indexes(self, segment: Segment | None, seg: int, dir_cap: int) -> None:
        if segment is None:
            self._index_buf, self._index_id, self._indexes = b"", 0, {}
        else:
            self._index_buf, self._index_id = segment.buf, seg
            self._indexes = _open_indexes(segment.buf, dir_cap)

    # ----------------------------------------------------------------- writing
    def next_auto_pk(self) -> int:
        """Under the write lock: the next free auto-assigned primary key."""
        self._check_table()
        return self._desc.next_pk

    def apply(self, changes: Iterable[tuple[Any, Any, int]]) -> None:
        """Apply ``(pk, record, mode)`` changes as one all-or-nothing write.

        Must run under the table's write lock.  ``mode`` is INSERT (the key
        must be new: DuplicateKeyError), PUT (insert or replace) or DELETE
        (``record`` ignored; the key must exist: RecordNotFoundError).
        """
        if not self._lock.write_held_by_me():
            raise RuntimeError("TableStore.apply needs the table's write lock")
        self._check_table()
        table, limit = self.table, self._max_record
        packb = R._packb
        batch = []
        nbytes = 0
        nkeys = 0
        for pk, record, mode in changes:
            if type(pk) is int and _INT_MIN <= pk <= _INT_MAX:
                pkb = packb(pk)
                h, int_key = ((pk & _MASK64) * _GOLDEN) & _MASK64, _INT_ENTRY
            else:
                pkb = R.encode_key(pk)
                h, int_key = R.key_hash(pk, pkb)
            if mode == DELETE:
                body = b""
            else:
                nkeys += 1
                try:
                    body = packb(record)
                except Exception:  # let encode_record word the error
                    body = R.encode_record(record, table, limit)
                if len(body) > limit:
                    R.encode_record(record, table, limit)
            total = (39 + len(pkb) + len(body)) & ~7
            batch.append((pk, pkb, h, int_key, body, mode, total, record))
            nbytes += total
        if not batch:
            return
        self._ensure_room(nbytes, nkeys)
        try:
            self._append(batch, nbytes)
        except BaseException:
            self.recover()
            raise

    def _ensure_room(self, nbytes: int, nkeys: int) -> None:
        """Make room for a write of ``nbytes`` and ``nkeys`` new keys.

        A heap or directory with much dead weight is compacted (``_rebuild``);
        otherwise it grows by the cheapest means: the heap by one copy of its
        bytes (offsets do not move, so the directory and indexes stay valid),
        the directory by rehashing its own entries.
        """
        d = self._desc
        heap_full = d.heap_end + nbytes > d.heap_cap
        dir_full = d.dir_used + nkeys > d.dir_cap * MAX_LOAD
        if not heap_full and not dir_full:
            return
        if not d.heap_seg or d.garbage * 4 > d.heap_end or (d.dir_used - d.live) * 4 > d.live:
            self._rebuild(nbytes, nkeys)
            return
        if heap_full:
            self._grow_heap(nbytes)
        if dir_full:
            self._grow_directory(nkeys)

    def _grow_heap(self, nbytes: int) -> None:
        d = self._desc
        seg = d.next_seg
        cap = _pow2_at_least(2 * (d.heap_end + nbytes))
        new = Segment.create(names.heap_segment(self.db, self.uid, seg),
                             R.heap_segment_size(cap), replace=True)
        new.buf[:d.heap_end] = self._heap[:d.heap_end]
        new.buf[cap:cap + 8 * d.n_records] = \
            self._heap[d.heap_cap:d.heap_cap + 8 * d.n_records]
        self._heap, self._heap_id = new.buf, seg
        self._publish(d._replace(heap_seg=seg, heap_cap=cap, next_seg=seg + 1))
        unlink(names.heap_segment(self.db, self.uid, d.heap_seg))

    def _grow_directory(self, nkeys: int) -> None:
        """Rehash the directory into one with room for ``nkeys`` more keys.
        Slots move, so the index segment is rebuilt along with it."""
        d = self._desc
        seg = d.next_seg
        cap = _pow2_at_least(2 * (d.dir_used + nkeys))
        new = Segment.create(names.directory_segment(self.db, self.uid, seg),
                             cap * R.ENTRY_SIZE, replace=True)
        try:
            src, dst = self._dir, new.buf
            shift, mask = 64 - (cap.bit_length() - 1), cap - 1
            used = 0
            for h, eo in R.ENTRY.iter_unpack(src):
                if eo == 0 or eo == _TOMB:
                    continue
                i = h >> shift
                while _ENTRY(dst, i << 4)[1]:
                    i = (i + 1) & mask
                _ENTRY_PUT(dst, i << 4, h, eo)
                used += 1
            index = self._build_index_segment(self._index_defs(), seg, dst, cap, self._heap)
        except BaseException:
            unlink(new.name)
            raise
        self._dir, self._dir_id = new.buf, seg
        self._adopt_indexes(index, seg, cap)
        self._publish(d._replace(dir_seg=seg, dir_cap=cap, dir_used=used, next_seg=seg + 1,
                                 index_seg=seg if index else 0))
        unlink(names.directory_segment(self.db, self.uid, d.dir_seg))
        if d.index_seg:
            unlink(names.index_segment(self.db, self.uid, d.index_seg))

    def _append(self, batch: list, nbytes: int) -> None:
        cat, base = self._cat, self._base
        desc = self._desc
        used, live, next_pk = desc.dir_used, desc.live, desc.next_pk
        garbage, live_bytes = desc.garbage, desc.live_bytes
        heap, d = self._heap, self._dir
        shift, mask = self._shift, self._mask
        indexed = bool(self._indexes)
        log = desc.heap_cap + 8 * desc.n_records
        touched = []                     # (slot, old record offset or -1, new record)
        _U64_PUT(cat, base + L.STORE_TXN_END, desc.heap_end + nbytes)
        off = desc.heap_end
        for pk, pkb, h, int_key, body, mode, total, record in batch:
            i = h >> shift
            tomb = -1
            found = -1
            while True:
                eh, eo = _ENTRY(d, i << 4)
                if eo == 0:
                    break
                if eo == _TOMB:
                    if tomb < 0:
                        tomb = i
                elif eh == h and eo & _INT_ENTRY == int_key:
                    o = (eo & _OFFSET_MASK) - 1
                    ototal, _, okind, oflags, opklen = _RHEAD(heap, o)
                    if int_key or heap[o + 32:o + 32 + opklen] == pkb:
                        found = o
                        break
                i = (i + 1) & mask
            kind = R.KIND_MARKER if mode == DELETE else _VALUE
            pklen = len(pkb)
            blen = len(body)
            flags = R.INT_KEY if int_key else 0
            if found >= 0:
                if okind == _VALUE:
                    if mode == INSERT:
                        raise DuplicateKeyError(
                            f"table {self.table!r} already has primary key {pk!r}")
                    live -= 1
                    live_bytes -= ototal
                    garbage += ototal          # a marker was counted when written
                elif mode == DELETE:
                    raise RecordNotFoundError(f"table {self.table!r} has no primary key {pk!r}")
                _RHDR_PUT(heap, off, total, blen, kind, flags, pklen, 0, found + 1, h)
                heap[off + 32:off + 32 + pklen] = pkb
                heap[off + 32 + pklen:off + 32 + pklen + blen] = body
                heap[found + R.FLAGS_AT] = oflags | R.SUPERSEDED
                _U64_PUT(d, (i << 4) + 8, (off + 1) | int_key)
                if indexed:
                    touched.append((i, found if okind == _VALUE else -1, record))
            else:
                if mode == DELETE:
                    raise RecordNotFoundError(f"table {self.table!r} has no primary key {pk!r}")
                if tomb >= 0:
                    i = tomb
                else:
                    flags |= R.SLOT_WAS_EMPTY
                    used += 1
                _RHDR_PUT(heap, off, total, blen, kind, flags, pklen, 0, 0, h)
                heap[off + 32:off + 32 + pklen] = pkb
                heap[off + 32 + pklen:off + 32 + pklen + blen] = body
                _ENTRY_PUT(d, i << 4, h, (off + 1) | int_key)
                if indexed:
                    touched.append((i, -1, record))
            _U64_PUT(heap, log, off)
            log += 8
            if kind == _VALUE:
                live += 1
                live_bytes += total
                if int_key and pk >= next_pk:
                    next_pk = pk + 1
            else:
                garbage += total
            off += total
        new = Descriptor(desc.heap_seg, desc.heap_cap, off, desc.dir_seg, desc.dir_cap, used,
                         live, next_pk, garbage, desc.next_seg, live_bytes, desc.index_seg,
                         desc.n_records + len(batch))
        if not indexed:
            self._publish(new)
            return
        if len(touched) > BULK_INDEX_REBUILD or not all(
                ix.room_for(len(touched)) for ix in self._indexes.values()):
            old = desc.index_seg
            segment = self._build_index_segment(self._index_defs(), desc.next_seg, d,
                                                desc.dir_cap, heap)
            self._adopt_indexes(segment, desc.next_seg, desc.dir_cap)
            self._publish(new._replace(index_seg=desc.next_seg, next_seg=desc.next_seg + 1))
            unlink(names.index_segment(self.db, self.uid, old))
            return
        _U64_PUT(cat, base + L.STORE_INDEX_DIRTY, 1)
        self._update_indexes(touched)
        self._publish(new)
        _U64_PUT(cat, base + L.STORE_INDEX_DIRTY, 0)

    def _update_indexes(self, touched: list) -> None:
        """Move each touched directory slot from its old value's chain to its new one's."""
        heap = self._heap
        identity = IX.identity
        for slot, old_off, record in touched:
            old = None
            if old_off >= 0:
                _, blen, _, _, pklen = _RHEAD(heap, old_off)
                start = old_off + 32 + pklen
                old = _unpackb(heap[start:start + blen], strict_map_key=False)
            for field, ix in self._indexes.items():
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

    def _publish(self, desc: Descriptor) -> None:
        """Commit ``desc``: write the inactive descriptor, then flip ``active``.
        The caller has already mapped the segments ``desc`` names."""
        cat, base = self._cat, self._base
        active = self._active + 1      # under the write lock, _active is current
        L.DESCRIPTOR.pack_into(cat, base + L.STORE_DESC + L.DESC_SIZE * (active & 1), *desc)
        _U64_PUT(cat, base + L.STORE_ACTIVE, active)           # the commit point
        _U64_PUT(cat, base + L.STORE_TXN_END, desc.heap_end)
        self._set_shape(desc)
        self._active = active

    # ------------------------------------------------------------------- undo
    def recover(self) -> None:
        """Under the write lock: undo a write that did not commit.

        Safe to call at any time under the write lock; a no-op when the last
        write committed.  Also rebuilds indexes a crash left half-edited and
        removes segments a crashed rebuild left behind.
        """
        seq, active, uid = _HEAD3(self._cat, self._base)
        if uid != self.uid or seq == L.SEQ_DROPPED:
            return
        self._sync(active)
        heap, d = self._heap, self._dir
        end, cap = self._desc.heap_end, self._desc.heap_cap
        appended = []
        off = end
        while off + 32 <= cap:
            total, blen, _, _, pklen = _RHEAD(heap, off)
            if total < 32 or off + total > cap or 32 + pklen + blen > total:
                break
            appended.append(off)
            off += total
        mask, shift = self._mask, self._shift
        for o in reversed(appended):
            flags = heap[o + R.FLAGS_AT]
            prev, h = R.PREV_HASH.unpack_from(heap, o + 16)
            i = h >> shift
            for _ in range(mask + 1):
                eh, eo = _ENTRY(d, i << 4)
                if eo == 0:
                    break
                if eo != _TOMB and eo & _OFFSET_MASK == o + 1:
                    if prev:
                        _U64_PUT(d, (i << 4) + 8, prev | (eo & _INT_ENTRY))
                    elif flags & R.SLOT_WAS_EMPTY:
                        _ENTRY_PUT(d, i << 4, 0, 0)
                    else:
                        _ENTRY_PUT(d, i << 4, 0, _TOMB)
                    break
                i = (i + 1) & mask
            if prev and prev - 1 < end:
                heap[prev - 1 + R.FLAGS_AT] &= ~R.SUPERSEDED & 0xFF
        txn_end = _U64(self._cat, self._base + L.STORE_TXN_END)[0]
        zero_to = min(max(off, txn_end), cap)
        if zero_to > end:
            heap[end:zero_to] = bytes(zero_to - end)
        _U64_PUT(self._cat, self._base + L.STORE_TXN_END, end)
        if _U64(self._cat, self._base + L.STORE_INDEX_DIRTY)[0]:
            self._replace_index_segment(self._index_defs())
            _U64_PUT(self._cat, self._base + L.STORE_INDEX_DIRTY, 0)
        self._collect_orphans()

    def _collect_orphans(self) -> None:
        """Unlink this table's segments that no descriptor names (a crashed rebuild)."""
        d = self._desc
        keep = {names.heap_segment(self.db, self.uid, d.heap_seg)[1:],
                names.directory_segment(self.db, self.uid, d.dir_seg)[1:],
                names.index_segment(self.db, self.uid, d.index_seg)[1:]}
        tp = names.table_prefix(self.db, self.uid)
        for entry in names.shm_entries(self.db):
            if entry.startswith(tp) and entry not in keep and (
                    entry[len(tp):].startswith(("heap", "dir", "idx"))):
                unlink("/" + entry)

    # ------------------------------------------------------ growth, compaction
    def _rebuild(self, extra_bytes: int, extra_keys: int) -> None:
        """Copy the live records into new segments with room for a write of
        ``extra_bytes`` bytes and ``extra_keys`` new keys, and publish them."""
        old = self._desc
        seg = old.next_seg
        heap_cap = max(MIN_HEAP, _pow2_at_least(2 * (old.live_bytes + extra_bytes)))
        dir_cap = max(MIN_DIR, _pow2_at_least(2 * (old.live + extra_keys)))
        made: list[str] = []
        try:
            new_heap = Segment.create(names.heap_segment(self.db, self.uid, seg),
                                      R.heap_segment_size(heap_cap), replace=True)
            made.append(new_heap.name)
            new_dir = Segment.create(names.directory_segment(self.db, self.uid, seg),
                                     dir_cap * R.ENTRY_SIZE, replace=True)
            made.append(new_dir.name)
            new_end, count = self._copy_live(new_heap.buf, heap_cap, new_dir.buf, dir_cap)
            if count != old.live:
                raise CorruptionError(f"table {self.table!r}: {count} live records found, "
                                      f"descriptor says {old.live}")
            index = self._build_index_segment(self._index_defs(), seg, new_dir.buf, dir_cap,
                                              new_heap.buf)
        except BaseException:
            for name in made:
                unlink(name)
            raise
        # Adopt the new mappings before the flip so _sync does not map them again.
        self._heap, self._heap_id = new_heap.buf, seg
        self._dir, self._dir_id = new_dir.buf, seg
        self._adopt_indexes(index, seg, dir_cap)
        self._publish(Descriptor(seg, heap_cap, new_end, seg, dir_cap, old.live, old.live,
                                 old.next_pk, 0, seg + 1, new_end, seg if index else 0,
                                 count))
        for name_of, s in ((names.heap_segment, old.heap_seg),
                           (names.directory_segment, old.dir_seg),
                           (names.index_segment, old.index_seg)):
            if s:
                unlink(name_of(self.db, self.uid, s))

    def _copy_live(self, dst: Any, dst_cap: int, dst_dir: Any,
                   dir_cap: int) -> tuple[int, int]:
        """Copy live records to ``dst`` (runs of them at a time), log their
        offsets and index them in ``dst_dir``.  Returns (bytes, records) copied."""
        src = self._heap
        end = self._heap_end
        shift = 64 - (dir_cap.bit_length() - 1)
        mask = dir_cap - 1
        off = 0
        out = 0
        count = 0
        run_start = run_out = -1
        while off < end:
            total, _, kind, flags, _ = _RHEAD(src, off)
            if total < 32:
                raise CorruptionError(f"table {self.table!r}: bad record at {off}")
            if kind == _VALUE and not flags & R.SUPERSEDED:
                if run_start < 0:
                    run_start, run_out = off, out
                h = R.PREV_HASH.unpack_from(src, off + 16)[1]
                i = h >> shift
                while _ENTRY(dst_dir, i << 4)[1]:
                    i = (i + 1) & mask
                _ENTRY_PUT(dst_dir, i << 4, h,
                           (out + 1) | (_INT_ENTRY if flags & R.INT_KEY else 0))
                _U64_PUT(dst, dst_cap + 8 * count, out)
                out += total
                count += 1
            elif run_start >= 0:
                dst[run_out:out] = src[run_start:off]
                run_start = -1
            off += total
        if run_start >= 0:
            dst[run_out:out] = src[run_start:end]
        return out, count

    def compact(self) -> None:
        """Under the write lock: rewrite the table without superseded versions."""
        self._check_table()
        self._rebuild(0, 0)

    def stats(self) -> dict:
        """Under any lock or inside ``read``: sizes, for tests and housekeeping."""
        d = self._desc
        return {"heap_segment": d.heap_seg, "heap_capacity": d.heap_cap,
                "heap_end": d.heap_end, "directory_capacity": d.dir_cap,
                "directory_used": d.dir_used, "live": d.live, "next_pk": d.next_pk,
                "garbage_bytes": d.garbage, "live_bytes": d.live_bytes,
                "index_segment": d.index_seg, "records_logged": d.n_records}


def _open_indexes(buf: Any, dir_cap: int) -> dict[str, IX.Index]:
    if not buf:
        return {}
    defs = IX.read_definitions(buf)
    offsets = IX.layout([k for _, k in defs], dir_cap)
    return {field: IX.Index(buf, j, kind, offsets[j], dir_cap)
            for j, (field, kind) in enumerate(defs)}


def _encodings(value: Any) -> list[bytes] | None:
    """Every msgpack encoding of a value equal to ``value`` (our Packer is
    canonical: minimal ints, float64 floats), or None when that set is open
    (lists and dicts compare element-wise across types) or empty (NaN)."""
    t = type(value)
    if t is str or t is bytes or value is None:
        return [R._packb(value)]
    if t is bool or t is int or t is float:
        if value != value:                     # NaN equals nothing
            return None
        try:
            f: float | None = float(value)
        except OverflowError:                  # an int beyond any float
            f = None
        forms = []
        if f is not None:
            forms.append(R._packb(f))
            if f == 0:                         # 0.0 == -0.0, encoded apart
                forms += [R._packb(0.0), R._packb(-0.0)]
        if f is None or f.is_integer():
            n = int(value)
            if -(1 << 63) <= n < (1 << 64):
                forms.append(R._packb(n))
            if n in (0, 1):
                forms.append(R._packb(bool(n)))
        return forms
    return None


def _live_by_slot(dir_buf: Any, dir_cap: int, heap: Any) -> Iterator[tuple[int, dict]]:
    """(directory slot, record) of every live record a directory points at."""
    for slot in range(dir_cap):
        eo = _ENTRY(dir_buf, slot << 4)[1]
        if eo == 0 or eo == _TOMB:
            continue
        off = (eo & _OFFSET_MASK) - 1
        _, blen, kind, _, pklen = _RHEAD(heap, off)
        if kind == _VALUE:
            start = off + 32 + pklen
            yield slot, _unpackb(heap[start:start + blen], strict_map_key=False)
