"""CacheStore: the TableStore of a cache's table (dictdb_shm/cache/), with
the single-key calls a cache lives on.

Owns: the stamped lock-free read (``get_stamped``: the record and, on a hit,
its access stamp), the one-probe read-modify-write of one key
(``change_one``) and the in-place edit of one key's body (``patch_body``,
through inplace.py).  Must never know what a cache entry's body means: the
cache passes the decision or the edit in as a function.  Everything else is
TableStore's (store.py): the seqlock, the write path, undo.

*Stamps without a lock.*  The record header's u32 stamp (records.STAMP_AT)
is written by every write (its time) and, here, by reads (the access time),
only after ``seq`` proved the record committed.  Writers never write a
committed record's stamp, so the 4-byte store lands on no byte anyone else
writes; one racing a compaction's copy only loses that one stamp.
"""

from __future__ import annotations

from typing import Any, Callable

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

REMOVE = object()          # change_one's decide() result: delete the key
NOT_PATCHED = object()     # patch_body's result when the edit cannot be made in place


class Encoded(bytes):
    """A record body already packed with msgpack, which change_one stores as
    it is (the cache's counters: a fixed-width form that incr edits in place)."""


class CacheStore(TableStore):
    """A TableStore with a cache's single-key calls (module docstring)."""

    _stamps: Any = None          # the heap as u32 words, for get_stamped
    _stamps_of: Any = None       # ... of this heap mapping

    def get_stamped(self, pk: Any, now: float) -> Any:
        """``get`` for a cache (dictdb_shm/cache/): the record at ``pk`` or
        None, and on a hit the record's stamp word (records.STAMP_AT) set to
        ``now``, the access time eviction reads.  Lock-free: the 4-byte store
        is made only after ``seq`` proved the record committed, and writers
        never write a committed record's stamp, so it lands on no byte anyone
        else writes (one racing a compaction's copy only loses that stamp).
        Hot path: ``_begin_read`` and the probe are written out."""
        if type(pk) is int and _INT_MIN <= pk <= _INT_MAX:
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
        for _ in range(OPTIMISTIC_TRIES):
            seq = w[seq_w]
            if seq & 1 or w[seq_w + 1] != self._active or w[seq_w + 2] != self.uid:
                seq = self._begin_read()
                if seq < 0:
                    break
            heap = self.heap
            mask = self._mask
            off = -1
            found = None
            try:
                if mask:
                    dw = self._dw
                    i = h >> self._shift
                    for _ in range(mask + 1):
                        eo = dw[2 * i + 1]
                        if eo == 0:
                            break
                        if dw[2 * i] == h and eo != _TOMB:
                            o = (eo & _OFFSET_MASK) - 1
                            _, blen, kind, _, pklen = _RHEAD(heap, o)
                            start = o + _HDR
                            if pkb is None:
                                if eo & _INT_ENTRY:
                                    off = o
                                    break
                            elif not eo & _INT_ENTRY and heap[start:start + pklen] == pkb:
                                off = o
                                break
                        i = (i + 1) & mask
                    else:
                        found = _TornRead
                    if off >= 0 and kind == _VALUE:
                        start += pklen
                        found = _unpackb(heap[start:start + blen], strict_map_key=False)
            except Exception:  # torn bytes: seq decides below
                found = _TornRead
            if w[seq_w] == seq and found is not _TornRead:
                if found is not None:
                    sw = self._stamps if self._stamps_of is heap else self._stamp_view(heap)
                    sw[(off + _STAMP_AT) >> 2] = int(now * _STAMPS) & _STAMP_MASK
                return found
        with self.lock.read_lock():
            self._check_table()
            heap = self.heap
            key = R._packb(pk) if pkb is None else pkb
            off = _probe(self._dw, heap, self._shift, self._mask, h, key,
                         _INT_ENTRY if pkb is None else 0)[1] if self._mask else -1
            if off < 0:
                return None
            _, blen, kind, _, pklen = _RHEAD(heap, off)
            if kind != _VALUE:
                return None
            self._stamp_view(heap)[(off + _STAMP_AT) >> 2] = int(now * _STAMPS) & _STAMP_MASK
            return _decode(heap, off + _HDR + pklen, blen)

    def _stamp_view(self, heap: Any) -> Any:
        self._stamps = memoryview(heap).cast("I")
        self._stamps_of = heap
        return self._stamps

    def change_one(self, pk: Any, decide: Callable[[Any], Any], *,
                   read: bool = True) -> Any:
        """Under the write lock: one read-modify-write of key ``pk`` with one
        probe.  ``decide(current record or None)`` (None without ``read``)
        returns the new record, REMOVE (of a key that is there), or None to
        change nothing; the write is all-or-nothing, and ``decide``'s result
        is returned."""
        if not self.lock.write_held_by_me():
            raise RuntimeError("CacheStore.change_one needs the table's write lock")
        self._check_table()
        if type(pk) is int and _INT_MIN <= pk <= _INT_MAX:
            pkb = _packb(pk)
            h, int_key = ((pk & _MASK64) * _GOLDEN) & _MASK64, _INT_ENTRY
        else:
            pk = R.normalize_key(pk)
            pkb = R.encode_key(pk)
            h, int_key = R.key_hash(pk, pkb)
        current = None
        if read and self._mask:
            heap = self.heap
            off = _probe(self._dw, heap, self._shift, self._mask, h, pkb, int_key)[1]
            if off >= 0:
                _, blen, kind, _, pklen = _RHEAD(heap, off)
                if kind == _VALUE:
                    current = _decode(heap, off + _HDR + pklen, blen)
        new = decide(current)
        if new is None or (new is REMOVE and current is None):
            return new
        if new is REMOVE:
            body, mode, record = b"", DELETE, None
        elif type(new) is Encoded:
            body, mode, record = bytes(new), PUT, None
        else:
            body, record = R.encode_record(new, self.table, self._max_record)
            mode = PUT
        total = R.record_size(len(pkb), len(body))
        d = self.desc
        if d.heap_end + total > d.heap_cap or d.dir_used + 1 > d.dir_cap * R.MAX_LOAD:
            growth.make_room(self, total, 1)
        try:
            self._append([(pk, pkb, h, int_key, body, mode, total, record)], total)
        except BaseException:
            self.recover()
            raise
        return new

    def patch_body(self, pk: Any, edit: Callable[..., Any], *args: Any) -> Any:
        """Under the write lock: edit the body of ``pk``'s live record in place.

        ``edit(body bytes, *args)`` returns ``(offset in the body, new bytes,
        result)`` or None when the edit cannot keep the body's length.  The
        new bytes (at most layout.PATCH_MAX) are written by inplace.patch,
        committed when this returns, all-or-nothing across a SIGKILL.
        Returns ``result``, or NOT_PATCHED (nothing changed) when the key
        holds no live record, the table has indexes, or ``edit`` said None.
        Hot path (a cache's incr): one probe, one copy of the body."""
        if not self.lock.write_held_by_me():
            raise RuntimeError("CacheStore.patch_body needs the table's write lock")
        self._check_table()
        if not self._mask or self.indexes_by_field:
            return NOT_PATCHED
        if type(pk) is int and _INT_MIN <= pk <= _INT_MAX:
            pkb, h, int_key = b"", ((pk & _MASK64) * _GOLDEN) & _MASK64, _INT_ENTRY
        else:
            pk = R.normalize_key(pk)
            pkb = R.encode_key(pk)
            h, int_key = R.key_hash(pk, pkb)
        heap = self.heap
        off = _probe(self._dw, heap, self._shift, self._mask, h, pkb, int_key)[1]
        if off < 0:
            return NOT_PATCHED
        _, blen, kind, _, pklen = _RHEAD(heap, off)
        if kind != _VALUE:
            return NOT_PATCHED
        start = off + _HDR + pklen
        done = edit(heap[start:start + blen], *args)
        if done is None:
            return NOT_PATCHED
        at, new, result = done
        inplace.patch(self, start + at, new)
        return result
