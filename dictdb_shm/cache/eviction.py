"""Keeping a cache within ``max_items`` and ``max_bytes``: approximate LRU.

Owns: choosing and removing the entries to evict.  Must never take the lock
itself (callers hold the cache table's write lock) or run on a read.

The approximation (documented in docs/usage.md): each round looks at the
next ``SAMPLE`` live entries from the eviction hand, in directory order
(hash order, so effectively a random sample that the hand walks round the
whole cache), and removes the expired ones among them, or else the one
whose last access is oldest.  A read records its access without a lock, as
the record's 4-byte stamp (engine/store.py ``get_stamped``, at 1/16 s).  So
the entry evicted is the least recently used of its sample: like Redis's
sampled LRU, an entry among the oldest few percent of a large cache is what
goes, not always the very oldest.
"""

from __future__ import annotations

from time import time
from typing import Any

from dictdb_shm.cache import entry as E
from dictdb_shm.cache.counters import Counters
from dictdb_shm.engine import DELETE
from dictdb_shm.engine import records as R
from dictdb_shm.engine.sampling import entries_from

SAMPLE = 8


def over_bounds(desc: Any, max_items: int | None, max_bytes: int | None) -> bool:
    return bool((max_items is not None and desc.live > max_items) or
                (max_bytes is not None and desc.live_bytes > max_bytes))


def evict(store: Any, counters: Counters, max_items: int | None,
          max_bytes: int | None) -> int:
    """Under the write lock: evict until the cache is within its bounds;
    returns how many entries went (expired ones included)."""
    now = time()
    now_stamp = R.stamp_of(now)
    w = counters.w
    gone = 0
    while over_bounds(store.desc, max_items, max_bytes):
        sample, w[counters.hand_w] = entries_from(store, w[counters.hand_w], SAMPLE)
        if not sample:
            break
        expired = [e for e in sample if not E.is_live(e.body, now)]
        if expired:
            victims = expired
            w[counters.expired_w] += len(expired)
        else:
            victims = [max(sample, key=lambda e: R.stamp_age(now_stamp, e.stamp))]
            w[counters.evictions_w] += 1
        store.apply([(e.key, None, DELETE) for e in victims])
        gone += len(victims)
    return gone
