"""In-place edits: overwriting a few bytes of a committed record, undoably.

Owns: ``patch(store, at, new)``, which overwrites up to ``layout.PATCH_MAX``
bytes of a table's committed heap under the write lock, ``undo``, which puts
them back after a writer died in the middle, and the undo record the two
share (``layout.STORE_PATCH_*``: three words of the table's store region).
Must never change a record's length, its header, a directory entry or the
descriptor, and never be used on a table whose records are indexed,
journaled or tracked: those learn of a write only through the append path
(store.py).  Its user is a cache's ``incr`` (engine/cache_store.py
``patch_body``), on the hidden, unindexed table of a cache.

Why an edit is all-or-nothing and never applied twice:

* Lock-free readers step aside while the write lock is held (``seq`` is
  odd, store.py), so no reader returns bytes that are half edited or whose
  edit has not committed; they retry, then wait on the lock.
* The undo record is complete before the first byte changes: the old bytes
  (``patch_old``), their count and heap segment (``patch_shape``), and last
  ``patch_at`` (offset + 1) in one 8-byte store, which arms it.
* The edit commits when ``patch_at`` goes back to 0, one 8-byte store.
* A writer SIGKILLed between the two leaves the record armed, and its
  writer record, so the next process to take the lock (or the coordinator's
  housekeeping) runs ``TableStore.recover``, which calls ``undo`` first: the
  old bytes go back.  Writing them back can be repeated, so an undo killed
  in turn is redone by the next one.
"""

from __future__ import annotations

from typing import Any

from dictdb_shm import crashpoints
from dictdb_shm.engine import layout as L

_PAUSE = crashpoints.ARMED           # crash points on this data path only when a test asks
_COUNT_BITS = 8                      # patch_shape: count | heap segment << _COUNT_BITS
_COUNT_MASK = (1 << _COUNT_BITS) - 1
_AT = L.STORE_PATCH_AT // L.WORD     # word offsets within the store region
_OLD = L.STORE_PATCH_OLD // L.WORD
_SHAPE = L.STORE_PATCH_SHAPE // L.WORD


def patch(store: Any, at: int, new: bytes) -> None:
    """Under the write lock: overwrite ``len(new)`` committed heap bytes at
    ``at`` with ``new``, committed when this returns (module docstring)."""
    n = len(new)
    if not 0 < n <= L.PATCH_MAX or at < 0 or at + n > store.desc.heap_end:
        raise RuntimeError(f"an in-place edit of {n} bytes at {at} is outside the "
                           f"committed heap of table {store.table!r}")
    w, base = store._w, store._seq_w
    heap = store.heap
    w[base + _OLD] = int.from_bytes(heap[at:at + n], "little")
    w[base + _SHAPE] = n | store.desc.heap_seg << _COUNT_BITS
    w[base + _AT] = at + 1                       # armed: undo now restores the old bytes
    heap[at:at + n] = new
    if _PAUSE:
        crashpoints.reach("patch_written")
    w[base + _AT] = 0                            # the commit point


def undo(store: Any) -> bool:
    """Under the write lock, with the committed segments mapped: put back
    the bytes of an edit that did not commit; True when there was one."""
    w, base = store._w, store._seq_w
    armed = w[base + _AT]
    if not armed:
        return False
    at = armed - 1
    shape = w[base + _SHAPE]
    n = shape & _COUNT_MASK
    # The heap cannot have been replaced while an edit was armed (growth and
    # edits both run under the lock, one at a time): the checks only guard
    # against restoring into bytes that are not the ones recorded.
    if shape >> _COUNT_BITS == store.desc.heap_seg and 0 < n <= L.PATCH_MAX and \
            at + n <= store.desc.heap_end:
        store.heap[at:at + n] = w[base + _OLD].to_bytes(L.PATCH_MAX, "little")[:n]
    w[base + _AT] = 0
    return True
