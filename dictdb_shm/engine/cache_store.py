"""CacheStore: the TableStore of a cache's table (dictdb_shm/cache/), with
the single-key calls a cache lives on.

Owns: the stamped lock-free read (``get_stamped``: the record and, on a hit,
its access stamp), and the one-probe writes of one key: a read-modify-write
(``change_one``), a set that overwrites a body of the same length in place
(``set_body``) and an in-place edit of a body (``patch_body``), both through
inplace.py.  Must never know what a cache entry's body means: the cache
passes the decision or the edit in as a function.  Everything else is
TableStore's (store.py): the seqlock, the write path, undo.

*Stamps without a lock.*  The record header's u32 stamp (records.STAMP_AT)
is written by every write (its time) and, here, by reads (the access time),
only after ``seq`` proved the record committed.  Only an in-place set
writes a committed record's stamp too, under the write lock: it and a racing
reader both store the current time, so whichever lands is right.  Nobody
else writes those 4 bytes; a stamp racing a compaction's copy only loses
that one stamp.
"""

from __future__ import annotations

from time import time as _time
from typing import Any, Callable
from zlib import crc32 as _crc32

from dictdb_shm.engine import DELETE, PUT, growth, inplace
from dictdb_shm.engine import records as R
from dictdb_shm.engine.store import OPTIMISTIC_TRIES, TableStore

_RHEAD = R.HEAD.unpack_from
_decode = R.decode_body
_unpackb = R._unpackb
_packb = R._packb
_TOMB = R.TOMBSTONE
_VALUE = R.KIND_VALUE
_INT_ENTRY = R.INT_ENTRY
_OFFSET_MASK = R.OFFSET_MASK
_INT_MIN, _INT_MAX = R.INT_MIN, R.INT_MAX
_MASK64, _GOLDEN = R.MASK64, R.GOLDEN
_HDR = R.RECORD_HEADER
_TornRead = R.TornRead
_probe = R.probe
_STAMPS, _STAMP_MASK, _STAMP_AT = R.STAMPS_PER_SECOND, R.STAMP_MASK, R.STAMP_AT

_COPY_GAP = inplace.COPY_GAP
_LOCK_FREE = OPTIMISTIC_TRIES > 0       # store.py: not on machines that reorder stores

REMOVE = object()          # change_one's decide() result: delete the key
NOT_PATCHED = object()     # patch_body's result when the edit cannot be made in place


class Encoded(bytes):
    """A record body already packed with msgpack, which change_one stores as
    it is (the cache's counters: a fixed-width form that incr edits in place)."""


class CacheStore(TableStore):
    """A TableStore with a cache's single-key calls (module docstring)."""

    STAMPED = True
    _stamps: Any = None          # the heap as u32 words, for get_stamped
    _stamps_of: Any = None       # ... of this heap mapping
    stamp_reads = True           # False for a cache with no bounds: nothing reads its stamps

    def get_stamped(self, pk: Any) -> Any:
        """``get`` for a cache (dictdb_shm/cache/): the record at ``pk`` or
        None, and on a hit (when ``stamp_reads``) the record's stamp word
        (records.STAMP_AT) set to now, the access time eviction reads.
        Lock-free: the 4-byte store is made only after ``seq`` proved the
        record committed, and writers never write a committed record's stamp,
        so it lands on no byte anyone else writes (one racing a compaction's
        copy only loses that stamp).  Hot path: the first lock-free attempt,
        ``_begin_read``, the key hash and the probe are written out; retries
        and the locked fallback are ``_get_slow``'s."""
        t = type(pk)
        if t is str:                 # records.key_hash written out for the commonest key
            pkb = _packb(pk)
            h = (_crc32(pkb) * _GOLDEN) & _MASK64
        elif t is int and _INT_MIN <= pk <= _INT_MAX:
            h = ((pk & _MASK64) * _GOLDEN) & _MASK64
            pkb = None
        else:
            try:
                pk = R.normalize_key(pk)
                pkb = R._packb(pk)
            except (TypeError, ValueError, OverflowError):
                return None
            h = R.key_hash(pk, pkb)[0]
        w, seq_w = self._w, self._seq_w
        seq = w[seq_w]
        if seq & 1 or w[seq_w + 1] != self._active or w[seq_w + 2] != self.uid or \
                not _LOCK_FREE:
            return self._get_slow(pk, pkb, h)
        heap = self.heap
        mask = self._mask
        twice_mask = (mask << 1) | 1
        found = None
        try:
            if mask:
                dw = self._dw
                j = (h >> self._shift) << 1        # the slot's first word
                left = mask                        # probes after this one
                eo = dw[j + 1]
                while eo:
                    if dw[j] == h and eo != _TOMB and \
                            (eo & _INT_ENTRY if pkb is None else not eo & _INT_ENTRY):
                        o = (eo & _OFFSET_MASK) - 1
                        _, blen, kind, _, pklen = _RHEAD(heap, o)
                        start = o + _HDR
                        if pkb is None or heap[start:start + pklen] == pkb:
                            if kind == _VALUE:
                                start += pklen
                                found = _unpackb(heap[start:start + blen], strict_map_key=False)
                            break
                    if not left:                   # every slot probed: torn words
                        found = _TornRead
                        break
                    left -= 1
                    j = (j + 2) & twice_mask
                    eo = dw[j + 1]
        except Exception:  # torn bytes: seq decides below
            found = _TornRead
        if w[seq_w] != seq or found is _TornRead:
            return self._get_slow(pk, pkb, h)
        if found is not None and self.stamp_reads:
            sw = self._stamps if self._stamps_of is heap else self._stamp_view(heap)
            sw[(o + _STAMP_AT) >> 2] = int(_time() * _STAMPS) & _STAMP_MASK
        return found

    def _get_slow(self, pk: Any, pkb: bytes | None, h: int) -> Any:
        """``get_stamped`` once its first attempt met a writer: the store's
        consistent read (more lock-free attempts, then the read lock), then
        the stamp, which must not run twice."""
        key = R._packb(pk) if pkb is None else pkb
        int_key = _INT_ENTRY if pkb is None else 0
        return self._stamped(*self.read(lambda s: s._find(key, h, int_key)))

    def _find(self, pkb: bytes, h: int, int_key: int) -> tuple[int, Any]:
        """(offset, record) of the key, or (-1, None)."""
        if not self._mask:
            return -1, None
        heap = self.heap
        off = _probe(self._dw, heap, self._shift, self._mask, h, pkb, int_key)[1]
        if off < 0:
            return -1, None
        _, blen, kind, _, pklen = _RHEAD(heap, off)
        return off, (_decode(heap, off + _HDR + pklen, blen) if kind == _VALUE else None)

    def _stamped(self, off: int, found: Any) -> Any:
        if found is not None and self.stamp_reads:
            self._stamp_view(self.heap)[(off + _STAMP_AT) >> 2] = \
                int(_time() * _STAMPS) & _STAMP_MASK
        return found

    def _stamp_view(self, heap: Any) -> Any:
        self._stamps = memoryview(heap).cast("I")
        self._stamps_of = heap
        return self._stamps

    # ------------------------------------------------------------- writes
    # Under the write lock.  Each is one probe: ``_key``, ``_live_at``, then
    # an in-place edit (inplace.py) or one appended record (``_put``).
    def _key(self, pk: Any) -> tuple[Any, bytes, int, int]:
        """(key as stored, its msgpack bytes, hash, INT_ENTRY or 0); the
        current segments mapped first."""
        if not self.lock.write_held_by_me():
            raise RuntimeError("a cache write needs its table's write lock")
        self._check_table()
        t = type(pk)
        if t is str:                 # records.key_hash written out for the commonest key
            pkb = _packb(pk)
            return pk, pkb, (_crc32(pkb) * _GOLDEN) & _MASK64, 0
        if t is int and _INT_MIN <= pk <= _INT_MAX:
            return pk, _packb(pk), ((pk & _MASK64) * _GOLDEN) & _MASK64, _INT_ENTRY
        pk = R.normalize_key(pk)
        pkb = R.encode_key(pk)
        return (pk, pkb, *R.key_hash(pk, pkb))

    def _live_at(self, pkb: bytes, h: int, int_key: int) -> tuple[int, int, int]:
        """(record offset, body offset, body length) of the key's live
        record, or (-1, 0, 0)."""
        if self._mask:
            heap = self.heap
            off = _probe(self._dw, heap, self._shift, self._mask, h, pkb, int_key)[1]
            if off >= 0:
                _, blen, kind, _, pklen = _RHEAD(heap, off)
                if kind == _VALUE:
                    return off, off + _HDR + pklen, blen
        return -1, 0, 0

    def _put(self, pk: Any, pkb: bytes, h: int, int_key: int, body: bytes, mode: int,
             record: Any) -> None:
        """Append one record (a delete marker for DELETE) and commit it."""
        total = R.record_size(len(pkb), len(body))
        d = self.desc
        if d.heap_end + total > d.heap_cap or d.dir_used + 1 > d.dir_cap * R.MAX_LOAD:
            growth.make_room(self, total, 1)
        try:
            self._append([(pk, pkb, h, int_key, body, mode, total, record)], total)
        except BaseException:
            self.recover()
            raise

    def _patch(self, at: int, new: bytes) -> bool:
        """inplace.patch when the heap has room for its copy; False when not
        (nothing changed, and the caller appends instead)."""
        d = self.desc
        if d.heap_end + _COPY_GAP + len(new) > d.heap_cap or self.indexes_by_field:
            return False
        inplace.patch(self, at, new)
        return True

    def encode(self, record: Any) -> bytes:
        """The body bytes of ``record`` for ``set_body``, checked
        (UnstorableValueError, RecordTooLargeError); takes no lock, so a
        writer encodes before it locks."""
        return R.encode_record(record, self.table, self._max_record)[0]

    def change_one(self, pk: Any, decide: Callable[[Any], Any]) -> Any:
        """Under the write lock: one read-modify-write of key ``pk`` with one
        probe.  ``decide(current record or None)`` returns the new record (or its Encoded body), REMOVE (of a key that
        is there), or None to change nothing; the write is all-or-nothing,
        and ``decide``'s result is returned."""
        pk, pkb, h, int_key = self._key(pk)
        current = None
        off, start, blen = self._live_at(pkb, h, int_key)
        if off >= 0:
            current = _decode(self.heap, start, blen)
        new = decide(current)
        if new is None or (new is REMOVE and current is None):
            return new
        if new is REMOVE:
            self._put(pk, pkb, h, int_key, b"", DELETE, None)
        elif type(new) is Encoded:
            self._put(pk, pkb, h, int_key, bytes(new), PUT, None)
        else:
            body, record = R.encode_record(new, self.table, self._max_record)
            self._put(pk, pkb, h, int_key, body, PUT, record)
        return new

    def set_body(self, pk: Any, body: bytes, now: float) -> bool:
        """Under the write lock: make ``body`` (msgpack bytes) the record of
        ``pk``.  When the key holds a live record whose body has the same
        length, the body is overwritten in place (inplace.py) and its stamp
        set to ``now``, so nothing is appended and no compaction is ever
        due; else one record is appended.  True when it appended (the
        table grew).  Hot path (a cache's set)."""
        pk, pkb, h, int_key = self._key(pk)
        off, start, blen = self._live_at(pkb, h, int_key)
        if off >= 0 and blen == len(body) and self._patch(start, body):
            # A reader may stamp the same word at the same moment: both are
            # current times, so whichever store lands is right.
            heap = self.heap
            sw = self._stamps if self._stamps_of is heap else self._stamp_view(heap)
            sw[(off + _STAMP_AT) >> 2] = int(now * _STAMPS) & _STAMP_MASK
            return False
        self._put(pk, pkb, h, int_key, body, PUT, None)
        return True

    def patch_body(self, pk: Any, edit: Callable[..., Any], *args: Any) -> Any:
        """Under the write lock: edit the body of ``pk``'s live record in place.

        ``edit(body bytes, *args)`` returns ``(offset in the body, new bytes,
        result)`` or None when the edit cannot keep the body's length.  The
        new bytes are written by inplace.patch, committed when this returns,
        all-or-nothing across a SIGKILL.  Returns ``result``, or NOT_PATCHED
        (nothing changed) when the key holds no live record, ``edit`` said
        None or the heap has no room for the undo copy.  Hot path (a
        cache's incr): one probe, one copy of the body."""
        pk, pkb, h, int_key = self._key(pk)
        off, start, blen = self._live_at(pkb, h, int_key)
        if off < 0:
            return NOT_PATCHED
        done = edit(self.heap[start:start + blen], *args)
        if done is None:
            return NOT_PATCHED
        at, new, result = done
        return result if self._patch(start + at, new) else NOT_PATCHED
