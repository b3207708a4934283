"""A cache's shared counters: hits and misses per process, evictions,
expired entries, and the eviction hand.

Owns: the cache words of a cache table's store region (engine/layout.py
``STORE_CACHE``, ``CACHE_*``).  Must never decide anything about entries.

Hits and misses are counted on the lock-free read path, so they cannot be
one shared word (two processes adding to it at once would lose counts).
Each process claims one of ``CACHE_PROCESS_SLOTS`` slots (pid, start ticks,
hits, misses) under the table's write lock, once, and then adds to its own
words without a lock: one writer per word, so nothing is lost.  A claim
first folds the counts of slots whose process has ended into the retired
totals and frees those slots.  When every slot belongs to a live process,
the process counts into the spare words, shared and relaxed (approximate).
A forked child claims a slot of its own on first use.  Evictions, expired
entries and the hand change only under the write lock.
"""

from __future__ import annotations

import os
import weakref
from typing import Any

from dictdb_shm.engine import layout as L
from dictdb_shm.procinfo import is_alive, own_identity

_W = L.WORD
_live: "weakref.WeakSet[Counters]" = weakref.WeakSet()


class Counters:
    def __init__(self, catalog: Any, slot_index: int, lock: Any) -> None:
        self.w = L.words(catalog)
        self._lock = lock
        base = L.slot_offset(slot_index) + L.STORE_REGION + L.STORE_CACHE
        self._base = base
        self.evictions_w = (base + L.CACHE_EVICTIONS) // _W
        self.expired_w = (base + L.CACHE_EXPIRED) // _W
        self.hand_w = (base + L.CACHE_HAND) // _W
        self.hits_w: int | None = None       # this process's slot words, once claimed
        self.misses_w: int | None = None
        _live.add(self)

    def _slot(self, i: int) -> int:
        return (self._base + L.CACHE_PROCESSES + i * L.CACHE_PROCESS_SIZE) // _W

    def claim(self) -> tuple[int, int]:
        """This process's (hits word, misses word), claiming a slot if need be."""
        if self.hits_w is not None and self.misses_w is not None:
            return self.hits_w, self.misses_w
        pid, ticks = own_identity()
        w = self.w
        self._lock.acquire_write()
        try:
            free = mine = None
            for i in range(L.CACHE_PROCESS_SLOTS):
                s = self._slot(i)
                if w[s] == pid and w[s + 1] == ticks:
                    mine = s
                    break
                if w[s] and not is_alive(w[s], w[s + 1]):
                    self._retire(s)
                if not w[s] and free is None:
                    free = s
            if mine is None and free is not None:
                w[free + 2] = w[free + 3] = 0
                w[free + 1] = ticks
                w[free] = pid
                mine = free
        finally:
            self._lock.release_write()
        if mine is None:                     # every slot is a live process's: share the spares
            base = self._base // _W
            self.hits_w = base + L.CACHE_SPARE_HITS // _W
            self.misses_w = base + L.CACHE_SPARE_MISSES // _W
        else:
            self.hits_w, self.misses_w = mine + 2, mine + 3
        return self.hits_w, self.misses_w

    def _retire(self, s: int) -> None:
        w = self.w
        base = self._base // _W
        w[base + L.CACHE_RETIRED_HITS // _W] += w[s + 2]
        w[base + L.CACHE_RETIRED_MISSES // _W] += w[s + 3]
        w[s] = 0
        w[s + 1] = w[s + 2] = w[s + 3] = 0

    def totals(self) -> tuple[int, int]:
        """(hits, misses) of every process, ended ones included."""
        w = self.w
        base = self._base // _W
        hits = w[base + L.CACHE_RETIRED_HITS // _W] + w[base + L.CACHE_SPARE_HITS // _W]
        misses = w[base + L.CACHE_RETIRED_MISSES // _W] + w[base + L.CACHE_SPARE_MISSES // _W]
        for i in range(L.CACHE_PROCESS_SLOTS):
            s = self._slot(i)
            if w[s]:
                hits += w[s + 2]
                misses += w[s + 3]
        return hits, misses

    def reset(self) -> None:
        """Under the write lock: every count back to zero (``clear``)."""
        w = self.w
        for off in (L.CACHE_EVICTIONS, L.CACHE_EXPIRED, L.CACHE_RETIRED_HITS,
                    L.CACHE_RETIRED_MISSES, L.CACHE_SPARE_HITS, L.CACHE_SPARE_MISSES):
            w[(self._base + off) // _W] = 0
        for i in range(L.CACHE_PROCESS_SLOTS):
            s = self._slot(i)
            w[s + 2] = w[s + 3] = 0


def _forget_claims() -> None:
    for c in list(_live):
        c.hits_w = c.misses_w = None


os.register_at_fork(after_in_child=_forget_claims)
