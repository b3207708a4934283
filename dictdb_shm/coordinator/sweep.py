"""The coordinator's sweep: deleting expired cache entries and expired
records of TTL tables, so their memory comes back.

Owns: when to sweep, which entries go, and compacting a table the sweep
left mostly garbage.  Must never decide expiry differently from the readers
(cache/entry.py for caches, engine/expiry.py for TTL tables): it only
removes what readers already no longer return.

Every ``SWEEP_INTERVAL`` each cache and TTL table gets one pass of up to
``SWEEP_BATCH`` live entries from its sweep hand (directory order), read
without a lock.  The expired ones are then deleted under the write lock,
each re-checked there, so a key written again in between stays.  A table
left with more garbage than live bytes (and at least ``COMPACT_MIN``) is
compacted, which gives the heap back.
"""

from __future__ import annotations

import time
from typing import Any

from dictdb_shm import names
from dictdb_shm.cache import entry as E
from dictdb_shm.cache.counters import Counters
from dictdb_shm.engine import DELETE
from dictdb_shm.engine import records as R
from dictdb_shm.engine.cache_store import REMOVE
from dictdb_shm.engine.sampling import entries_from, stamp_of_key

SWEEP_INTERVAL = 1.0
SWEEP_BATCH = 4096
COMPACT_MIN = 1 << 20


class Sweeper:
    def __init__(self, att: Any) -> None:
        self.att = att
        self._next = 0.0
        self._hands: dict[int, int] = {}          # table uid -> next directory slot

    def tick(self, edits: Any) -> None:
        """From the coordinator's housekeeping: sweep when it is time."""
        if time.monotonic() < self._next:
            return
        self._next = time.monotonic() + SWEEP_INTERVAL
        with edits:                               # no table is dropped meanwhile
            for entry in self.att.catalog.entries():
                if names.is_cache_table(entry.name) or entry.meta.get("ttl"):
                    self.sweep(entry)

    def sweep(self, entry: Any) -> int:
        """One pass over one table; returns how many entries it removed."""
        lock, store = self.att.table(entry)
        is_cache = names.is_cache_table(entry.name)
        hand = self._hands.get(entry.uid, 0)
        now = time.time()
        stamp_now = R.stamp_of(now)

        def candidates(s: Any) -> tuple[list, int]:
            found, nxt = entries_from(s, hand, SWEEP_BATCH)
            if is_cache:
                return [e.key for e in found if not E.is_live(e.body, now)], nxt
            return [e.key for e in found if s.expired_stamp(e.stamp, stamp_now)], nxt
        keys, self._hands[entry.uid] = store.read(candidates)
        if not keys:
            return 0
        removed = 0
        with lock.write_lock():
            if is_cache:
                for key in keys:
                    if store.change_one(key, lambda cur: REMOVE if cur is not None and
                                        not E.is_live(cur, now) else None) is REMOVE:
                        removed += 1
                counters = Counters(self.att.catalog.buf, entry.index, lock)
                counters.w[counters.expired_w] += removed
            else:
                gone = [k for k in keys if (st := stamp_of_key(store, k)) is not None
                        and store.expired_stamp(st, stamp_now)]
                if gone:
                    store.apply([(k, None, DELETE) for k in gone])
                removed = len(gone)
            d = store.desc
            if d.garbage > max(d.live_bytes, COMPACT_MIN) and d.garbage > d.heap_end // 2:
                store.compact()
        return removed


