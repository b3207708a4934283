"""A Django cache backend over a shared dictdb_shm cache.

Owns: Django's cache API (``BaseCache``) in terms of ``db.cache(...)``:
keys made and validated by Django (prefix, version, KEY_FUNCTION),
Django's timeouts turned into the cache's ttls, and the one handle per
process that every thread's backend instance shares.  Must never: reach
into the cache's internals (only its public calls), or be imported by the
package itself (Django is not a dependency).

Settings::

    CACHES = {
        "default": {
            "BACKEND": "dictdb_shm.contrib.django.DictDBCache",
            "LOCATION": "webapp",                  # the database; created when missing
            "TIMEOUT": 300,                        # Django's; None: forever
            "OPTIONS": {"cache": "django",         # the cache's name in that database
                        "max_items": 100_000,      # eviction bounds (approximate LRU)
                        "max_bytes": 256 << 20},
        }
    }

Django's ``MAX_ENTRIES`` is read as ``max_items`` when that is not given;
``CULL_FREQUENCY`` is ignored (the cache evicts by approximate LRU, one
entry at a time).  Every process using these settings sees the same entries.  Values are
pickled (the cache's ``serializer="pickle"``), as Django's own backends do:
anyone who can write to the cache can make every reader unpickle what they
wrote, so share it only between processes that trust each other (the
database's objects are owner-only, so that means one user's processes).

Timeouts: ``None`` never expires, ``0`` or less expires at once (``set``
removes the key), the default is the ``TIMEOUT`` setting.  ``incr`` /
``decr`` are atomic across processes; on a missing key they raise
ValueError, checked just before (as Django's Redis backend does: a delete
racing between the check and the increment makes the increment start from
0).  ``clear()`` empties the whole cache, whatever the KEY_PREFIX.
``close()`` (called by Django after every request) keeps the process's
handle open: opening one costs a round trip to the coordinator.
"""

from __future__ import annotations

import math
import os
import threading
from typing import Any, Iterable

from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache

from dictdb_shm import names
from dictdb_shm.cache.cache import Cache
from dictdb_shm.core.database import DictDB
from dictdb_shm.errors import InvalidArgumentError, UnpicklableValueError, UnstorableValueError

DEFAULT_CACHE_NAME = "django"
_MISS = object()
_DJANGO_OPTIONS = ("MAX_ENTRIES", "CULL_FREQUENCY")     # read by BaseCache itself

# (database, cache name) -> this process's Cache, shared by every thread's
# backend instance.  A forked child keeps them (they work after fork).
_opened: dict[tuple[str, str], Cache] = {}
_opened_lock = threading.Lock()


def _new_lock_after_fork() -> None:
    global _opened_lock
    _opened_lock = threading.Lock()


os.register_at_fork(after_in_child=_new_lock_after_fork)


class DictDBCache(BaseCache):
    """``BACKEND: "dictdb_shm.contrib.django.DictDBCache"``; see the module docstring."""

    def __init__(self, location: str, params: dict[str, Any]) -> None:
        super().__init__(params)
        if not isinstance(location, str) or not location:
            raise InvalidArgumentError("the LOCATION of a DictDBCache is a database name",
                                       hint='e.g. "LOCATION": "webapp"')
        options = dict(params.get("OPTIONS") or {})
        self._db_name = names.check_db_name(location)          # wrong settings fail early
        self._cache_name = names.check_table_name(options.pop("cache", DEFAULT_CACHE_NAME))
        max_items = options.pop("max_items", None)
        self._max_bytes = options.pop("max_bytes", None)
        if max_items is None and "MAX_ENTRIES" in options:
            max_items = self._max_entries        # Django's spelling, parsed by BaseCache
        self._max_items = max_items
        unknown = sorted(set(options) - set(_DJANGO_OPTIONS))
        if unknown:
            raise InvalidArgumentError(
                f"unknown OPTIONS {unknown} for DictDBCache {location!r}",
                hint='the options are "cache", "max_items" and "max_bytes"')

    @property
    def _cache(self) -> Cache:
        """This process's cache, opened (and its database created) on first use."""
        key = (self._db_name, self._cache_name)
        cache = _opened.get(key)
        if cache is None:
            with _opened_lock:
                cache = _opened.get(key)
                if cache is None:
                    cache = DictDB(self._db_name).cache(
                        self._cache_name, max_items=self._max_items,
                        max_bytes=self._max_bytes, serializer="pickle")
                    _opened[key] = cache
        return cache

    def _ttl(self, timeout: Any) -> float:
        """Django's timeout as the cache's ttl: inf for None, <= 0 for "expired"."""
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        if timeout is None:
            return math.inf
        return float(timeout)

    # ---------------------------------------------------------------- reads
    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        value = self._cache.get(self.make_and_validate_key(key, version=version), _MISS)
        return default if value is _MISS else value

    def get_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        cache, found = self._cache, {}
        for key in keys:
            value = cache.get(self.make_and_validate_key(key, version=version), _MISS)
            if value is not _MISS:
                found[key] = value
        return found

    def has_key(self, key: Any, version: int | None = None) -> bool:
        return self.make_and_validate_key(key, version=version) in self._cache

    # --------------------------------------------------------------- writes
    def set(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT,
            version: int | None = None) -> None:
        self._set(self.make_and_validate_key(key, version=version), value, self._ttl(timeout))

    def _set(self, key: str, value: Any, ttl: float) -> None:
        if ttl <= 0:
            self._cache.delete(key)              # expired at once: nobody may read it
            return
        try:
            self._cache.set(key, value, ttl)
        except UnstorableValueError as exc:
            raise UnpicklableValueError(exc.message) from None

    def add(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT,
            version: int | None = None) -> bool:
        key = self.make_and_validate_key(key, version=version)
        ttl = self._ttl(timeout)
        if ttl <= 0:
            return key not in self._cache        # "stored", and expired at once
        try:
            return self._cache.add(key, value, ttl)
        except UnstorableValueError as exc:
            raise UnpicklableValueError(exc.message) from None

    def set_many(self, data: dict[Any, Any], timeout: Any = DEFAULT_TIMEOUT,
                 version: int | None = None) -> list:
        ttl = self._ttl(timeout)
        for key, value in data.items():
            self._set(self.make_and_validate_key(key, version=version), value, ttl)
        return []

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT,
              version: int | None = None) -> bool:
        key = self.make_and_validate_key(key, version=version)
        ttl = self._ttl(timeout)
        if ttl <= 0:
            return self._cache.delete(key)
        return self._cache.touch(key, ttl)

    def delete(self, key: Any, version: int | None = None) -> bool:
        return self._cache.delete(self.make_and_validate_key(key, version=version))

    def delete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        cache = self._cache
        for key in keys:
            cache.delete(self.make_and_validate_key(key, version=version))

    def incr(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        made = self.make_and_validate_key(key, version=version)
        cache = self._cache
        if made not in cache:
            raise ValueError(f"Key {key!r} not found")
        return cache.incr(made, delta)

    def decr(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        return self.incr(key, -delta, version=version)

    def clear(self) -> None:
        self._cache.clear()

    def close(self, **kwargs: Any) -> None:
        """Django calls this after each request: the process's handle stays open."""
