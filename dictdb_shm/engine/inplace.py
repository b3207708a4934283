"""In-place edits: overwriting bytes of a committed record, undoably.

Owns: ``patch(store, at, new)``, which overwrites ``len(new)`` bytes of a
table's committed heap under the write lock, ``undo``, which puts them back
after a writer died in the middle, and the undo record the two share
(``layout.STORE_PATCH_*``: three words of the table's store region).  Must
never change a record's length, a directory entry or the descriptor, and
never be used on a table whose records are indexed, journaled or tracked:
those learn of a write only through the append path (store.py).  Its users
are a cache's ``incr`` and ``set`` (engine/cache_store.py), on the hidden,
unindexed table of a cache.

Why an edit is all-or-nothing and never applied twice:

* Lock-free readers step aside while the write lock is held (``seq`` is
  odd, store.py), so no reader returns bytes that are half edited or whose
  edit has not committed; they retry, then wait on the lock.
* Before the first byte changes, the old bytes are copied past the
  committed end, ``COPY_GAP`` bytes after it (``txn_end`` covers the copy,
  so undo zeroes it like any uncommitted tail; the gap is zero, so undo's
  walk of appended records stops at once), and the undo record is written:
  where the copy is (``patch_copy``), its length and heap segment
  (``patch_shape``), and last ``patch_at`` (offset + 1) in one 8-byte
  store, which arms it.
* The edit commits when ``patch_at`` goes back to 0, one 8-byte store; the
  copy is zeroed after, keeping "past the committed end is zero".
* A writer SIGKILLed in between leaves the record armed, and its writer
  record, so the next process to take the lock (or the coordinator's
  housekeeping) runs ``TableStore.recover``, which calls ``undo`` first: the
  copy goes back.  Copying it back can be repeated, so an undo killed in
  turn is redone by the next one.
"""

from __future__ import annotations

from typing import Any

from dictdb_shm import crashpoints
from dictdb_shm.engine import layout as L
from dictdb_shm.engine import records as R

_PAUSE = crashpoints.ARMED           # crash points on this data path only when a test asks
COPY_GAP = R.RECORD_HEADER           # zero bytes between the committed end and the copy
_LEN_BITS = 32                       # patch_shape: length | heap segment << _LEN_BITS
_LEN_MASK = (1 << _LEN_BITS) - 1
_AT = L.STORE_PATCH_AT // L.WORD     # word offsets within the store region
_COPY = L.STORE_PATCH_COPY // L.WORD
_SHAPE = L.STORE_PATCH_SHAPE // L.WORD


def patch(store: Any, at: int, new: bytes) -> None:
    """Under the write lock: overwrite ``len(new)`` committed heap bytes at
    ``at`` with ``new``, committed when this returns (module docstring).
    The caller checked that the heap has room for the copy: ``COPY_GAP +
    len(new)`` bytes past the committed end."""
    n = len(new)
    d = store.desc
    copy = d.heap_end + COPY_GAP
    if not 0 < n < _LEN_MASK or at < 0 or at + n > d.heap_end or copy + n > d.heap_cap:
        raise RuntimeError(f"an in-place edit of {n} bytes at {at} does not fit the "
                           f"heap of table {store.table!r}")
    w, base = store._w, store._seq_w
    heap = store.heap
    w[store._txn_w] = copy + n                   # undo zeroes the copy with the tail
    heap[copy:copy + n] = heap[at:at + n]
    w[base + _COPY] = copy
    w[base + _SHAPE] = n | d.heap_seg << _LEN_BITS
    w[base + _AT] = at + 1                       # armed: undo now restores the copy
    heap[at:at + n] = new
    if _PAUSE:
        crashpoints.reach("patch_written")
    w[base + _AT] = 0                            # the commit point
    heap[copy:copy + n] = bytes(n)
    w[store._txn_w] = d.heap_end


def undo(store: Any) -> bool:
    """Under the write lock, with the committed segments mapped: put back
    the bytes of an edit that did not commit; True when there was one.
    The copy itself is left for the caller's zeroing of the tail."""
    w, base = store._w, store._seq_w
    armed = w[base + _AT]
    if not armed:
        return False
    at, copy, shape = armed - 1, w[base + _COPY], w[base + _SHAPE]
    n = shape & _LEN_MASK
    d = store.desc
    # The heap cannot have been replaced while an edit was armed (growth and
    # edits both run under the lock, one at a time): the checks only guard
    # against copying bytes that are not the ones recorded.
    if shape >> _LEN_BITS == d.heap_seg and at + n <= d.heap_end and \
            d.heap_end + COPY_GAP <= copy and copy + n <= d.heap_cap:
        store.heap[at:at + n] = store.heap[copy:copy + n]
    w[base + _AT] = 0
    return True
