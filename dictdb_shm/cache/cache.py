"""Cache: a key-value cache every process that opens its name shares.

Owns: the meaning of each cache call (get, set, add, delete, incr, touch,
clear, ``in``, ``len``, stats, memoize) and which lock each takes.  Must
never touch bytes: entries are records of the cache's own table, read and
written through its TableStore (engine/store.py); their body is entry.py's.

A get is the store's lock-free point read (``get_stamped``, which also
stamps the record's access time without a lock) plus a deadline check: no
lock, no system call, no store to a word another process writes.  Every
other call runs under the cache table's write lock, which is what makes
``incr`` exact and gives ``add`` one winner across processes.  Expired
entries are never returned; the coordinator's sweep (coordinator/sweep.py)
removes them so their memory comes back, and a write that finds one treats
it as absent.  Past ``max_items`` / ``max_bytes`` a write evicts
(eviction.py).
"""

from __future__ import annotations

import os
import pickle
import weakref
from time import time as _time
from typing import Any, Callable

from dictdb_shm.cache import entry as E
from dictdb_shm.cache.counters import Counters
from dictdb_shm.cache.eviction import evict, over_bounds
from dictdb_shm.cache.memoize import memoizer
from dictdb_shm.engine import DELETE
from dictdb_shm.engine.cache_store import NOT_PATCHED as _NOT_PATCHED
from dictdb_shm.engine.cache_store import REMOVE, Encoded
from dictdb_shm.engine.sampling import entries_from
from dictdb_shm.errors import InvalidArgumentError, UnstorableValueError

_MISS = object()
_open_caches: "weakref.WeakSet[Cache]" = weakref.WeakSet()
_loads = pickle.loads
_incr_edit = E.incr_edit


class Cache:
    """``db.cache(name, ...)``: see the module docstring and docs/usage.md."""

    def __init__(self, db: Any, name: str, lock: Any, store: Any, counters: Counters,
                 settings: dict) -> None:
        self._db = db
        self.name = name
        self._lock = lock
        self._store = store
        self._counters = counters
        self._w = counters.w
        self._get = store.get_stamped
        self.max_items: int | None = settings.get("max_items")
        self.max_bytes: int | None = settings.get("max_bytes")
        self.ttl: float | None = settings.get("ttl")
        self.serializer: str = settings.get("serializer") or "msgpack"
        self._pickled = self.serializer == "pickle"
        self._bounded = self.max_items is not None or self.max_bytes is not None
        store.stamp_reads = self._bounded    # only eviction reads the access stamps
        self._hits_w: int | None = None         # this process's counter words (counters.py)
        self._misses_w: int | None = None
        if self._pickled:
            self.get = self._get_pickled  # type: ignore[method-assign]
        _open_caches.add(self)

    def __repr__(self) -> str:
        return f"<Cache {self.name!r} of database {self._db.name!r}>"

    def __reduce__(self) -> tuple:
        return (_reopen_cache, (type(self._db), self._db.name, self.name))

    # ----------------------------------------------------------------- reads
    def get(self, key: Any, default: Any = None) -> Any:
        """The value of ``key``, or ``default`` when absent or expired.
        Lock-free.  Hot path: the clock is read only for an entry with a deadline."""
        e = self._get(key)
        if e is not None and (not e[0] or e[0] > _time()):
            try:
                self._w[self._hits_w] += 1
            except TypeError:                # no counter slot yet in this process
                self._count(0)
            return e[1]
        try:
            self._w[self._misses_w] += 1
        except TypeError:
            self._count(1)
        return default

    def _get_pickled(self, key: Any, default: Any = None) -> Any:
        """``get`` of a cache whose values are pickled (serializer="pickle")."""
        e = self._get(key)
        if e is not None and (not e[0] or e[0] > _time()):
            try:
                self._w[self._hits_w] += 1
            except TypeError:
                self._count(0)
            return e[1] if len(e) == 2 else _loads(e[1])
        try:
            self._w[self._misses_w] += 1
        except TypeError:
            self._count(1)
        return default

    def _count(self, which: int) -> None:
        """Claim this process's counter slot (counters.py), then count."""
        self._hits_w, self._misses_w = self._counters.claim()
        self._w[self._misses_w if which else self._hits_w] += 1

    def __contains__(self, key: Any) -> bool:
        """Whether ``key`` holds an unexpired value (counts no hit or miss)."""
        e = self._store.get(key, None)
        return e is not None and E.is_live(e, _time())

    def __len__(self) -> int:
        """Unexpired entries (a walk of the cache: O(entries))."""
        def live(s: Any) -> int:
            now = _time()
            return sum(1 for e in entries_from(s, 0, s.desc.live)[0] if E.is_live(e.body, now))
        return self._store.read(live)

    def stats(self) -> dict[str, int]:
        """``hits``, ``misses`` (every process's), ``evictions`` (entries
        removed to stay in bounds), ``expired`` (expired entries removed),
        ``items`` and ``bytes`` held (expired ones not yet swept included)."""
        hits, misses = self._counters.totals()
        desc = self._store.read(lambda s: s.desc)
        w, c = self._w, self._counters
        return {"hits": hits, "misses": misses, "evictions": w[c.evictions_w],
                "expired": w[c.expired_w], "items": desc.live, "bytes": desc.live_bytes}

    # ---------------------------------------------------------------- writes
    def _body(self, value: Any, ttl: Any) -> list:
        if ttl is None:
            ttl = self.ttl
        else:
            ttl = E.check_ttl(ttl)
        return E.body(value, E.deadline(ttl), self._pickled)

    def _change(self, key: Any, decide: Callable[[Any], Any]) -> Any:
        """Under the write lock: ``store.change_one`` (engine/cache_store.py),
        then evict if the cache is past its bounds."""
        try:
            done = self._store.change_one(key, decide)
        except UnstorableValueError as exc:
            raise self._unstorable(key, exc) from None
        if self._bounded and over_bounds(self._store.desc, self.max_items, self.max_bytes):
            evict(self._store, self._counters, self.max_items, self.max_bytes)
        return done

    def _unstorable(self, key: Any, exc: UnstorableValueError) -> UnstorableValueError:
        return UnstorableValueError(
            f"cache {self.name!r} cannot hold the value for {key!r}: {exc.message}",
            hint="open the cache with serializer='pickle' for arbitrary objects "
                 "(trusted data only)")

    def _live(self, current: Any, now: float) -> bool:
        """Under the write lock: whether ``current`` is a live entry; an
        expired one is counted (the write about to replace it removes it)."""
        if current is None:
            return False
        if E.is_live(current, now):
            return True
        self._w[self._counters.expired_w] += 1
        return False

    def set(self, key: Any, value: Any, ttl: float | None = None) -> None:
        """Store ``value`` at ``key`` for ``ttl`` seconds (None: the cache's
        default ttl; ``math.inf``: never expires).  Hot path: the body is
        encoded before the lock is taken, and a body as long as the one it
        replaces is overwritten in place (CacheStore.set_body)."""
        if type(key) is not str:
            key = E.check_key(key)
        now = _time()
        encoded = self._encode(key, self._body(value, ttl))
        lock = self._lock
        lock.acquire_write()
        try:
            if self._store.set_body(key, encoded, now) and self._bounded and \
                    over_bounds(self._store.desc, self.max_items, self.max_bytes):
                evict(self._store, self._counters, self.max_items, self.max_bytes)
        finally:
            lock.release_write()

    def _encode(self, key: Any, body: list) -> bytes:
        try:
            return self._store.encode(body)
        except UnstorableValueError as exc:
            raise self._unstorable(key, exc) from None

    def add(self, key: Any, value: Any, ttl: float | None = None) -> bool:
        """Store ``value`` only if ``key`` holds no live value; True when it
        did.  Across processes, one of several racing adds wins."""
        key = E.check_key(key)
        body = self._body(value, ttl)
        now = _time()
        lock = self._lock
        lock.acquire_write()
        try:
            return self._change(key, lambda cur: None if self._live(cur, now) else body) \
                is not None
        finally:
            lock.release_write()

    def delete(self, key: Any) -> bool:
        """Remove ``key``; True when it held a live value."""
        key = E.check_key(key)
        now = _time()
        was_live = False

        def remove(cur: Any) -> Any:
            nonlocal was_live
            was_live = self._live(cur, now)
            return REMOVE              # an expired entry goes too (change_one skips absent ones)
        with self._lock.write_lock():
            self._change(key, remove)
        return was_live

    def incr(self, key: Any, delta: int = 1, default: int = 0) -> int:
        """Add ``delta`` to the int at ``key`` (``default`` when absent) and
        return the result; atomic across processes.  The entry keeps its
        deadline; a new one gets the cache's default ttl.

        Hot path: under the write lock, a counter (entry.py's counter form)
        is edited in place, 8 bytes with an undo record (engine/inplace.py),
        so a SIGKILL mid-call leaves the old value or the new one, never a
        torn or doubled one.  Anything else (absent, expired, an int written
        by ``set``, a sum past int64) is rewritten through ``change_one``."""
        if type(key) is not str:
            key = E.check_key(key)
        if type(delta) is not int or type(default) is not int:
            raise InvalidArgumentError("incr takes int delta and default")
        now = _time()
        lock = self._lock
        lock.acquire_write()
        try:
            done = self._store.patch_body(key, _incr_edit, delta, now)
            if done is _NOT_PATCHED:
                done = self._incr_rewrite(key, delta, default, now)
            return done
        finally:
            lock.release_write()

    def _incr_rewrite(self, key: Any, delta: int, default: int, now: float) -> int:
        """Under the write lock: incr by writing the entry anew, in the counter form."""
        result = 0

        def add_to(cur: Any) -> Any:
            nonlocal result
            if not self._live(cur, now):
                expires_at, v = E.deadline(self.ttl, now), default
            else:
                expires_at, v = cur[0], (cur[1] if len(cur) == 2 else E.value_of(cur))
                if type(v) is not int:
                    raise InvalidArgumentError(
                        f"cache {self.name!r}: the value at {key!r} is a {type(v).__name__}, "
                        "not an int", hint="incr works on int values only")
            result = v + delta
            packed = E.counter_body(expires_at, result)
            return [expires_at, result] if packed is None else Encoded(packed)
        self._change(key, add_to)
        return result

    def touch(self, key: Any, ttl: float | None = None) -> bool:
        """Give ``key`` a new deadline, ``ttl`` seconds from now (None: the
        default ttl; ``math.inf``: never); False when it holds no live value."""
        key = E.check_key(key)
        ttl = self.ttl if ttl is None else E.check_ttl(ttl)
        now = _time()
        with self._lock.write_lock():
            return self._change(key, lambda cur: [E.deadline(ttl, now), *cur[1:]]
                                if self._live(cur, now) else None) is not None

    def clear(self) -> None:
        """Remove every entry, for every process, and give the memory back."""
        with self._lock.write_lock():
            store = self._store
            keys = store.read(lambda s: [e.key for e in entries_from(s, 0, s.desc.live)[0]])
            if keys:
                store.apply([(k, None, DELETE) for k in keys])
                store.compact()

    # --------------------------------------------------------------- memoize
    def memoize(self, ttl: float | None = None, *, timeout: float = 60.0,
                name: str | None = None) -> Callable[[Callable], Callable]:
        """A decorator whose results every process shares (memoize.py)."""
        return memoizer(self, E.check_ttl(ttl), timeout, name)


def _forget_counter_slots() -> None:
    # A forked child must not add to its parent's counter slot.
    for cache in list(_open_caches):
        cache._hits_w = cache._misses_w = None


os.register_at_fork(after_in_child=_forget_counter_slots)


def _reopen_cache(db_type: Any, db_name: str, name: str) -> Cache:
    return db_type.attach(db_name).cache(name)
