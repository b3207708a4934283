"""Opening a cache by name: its settings, its table, the handle.

Owns: checking ``db.cache(...)``'s arguments, the cache's definition in the
catalog (its table's metadata under ``"cache"``), creating the table when
the name is new, and refusing settings that contradict the ones it was made
with.  Must never read or write entries.

A cache is a table of the database named ``names.cache_table(name)``,
hidden from ``list_tables``, saves and backups (a cache is not data to
keep).  Its settings are fixed when it is created; an argument left None
takes the stored value, and a different explicit value is an
InvalidArgumentError, so no process silently uses other bounds than the rest.
"""

from __future__ import annotations

from typing import Any

from dictdb_shm import names
from dictdb_shm.cache import entry as E
from dictdb_shm.cache.cache import Cache
from dictdb_shm.cache.counters import Counters
from dictdb_shm.coordinator import client
from dictdb_shm.errors import DuplicateTableError, InvalidArgumentError

KEY_FIELD = "key"
SETTINGS = ("max_items", "max_bytes", "ttl", "serializer")


def requested(max_items: Any, max_bytes: Any, ttl: Any, serializer: Any) -> dict:
    """The settings asked for, checked; None where the caller left one out."""
    for what, bound in (("max_items", max_items), ("max_bytes", max_bytes)):
        if bound is not None and (type(bound) is not int or bound < 1):
            raise InvalidArgumentError(f"{what} must be a positive int or None, not {bound!r}")
    if serializer is not None and serializer not in E.SERIALIZERS:
        raise InvalidArgumentError(f"serializer must be one of {E.SERIALIZERS} or None, "
                                   f"not {serializer!r}")
    return {"max_items": max_items, "max_bytes": max_bytes, "ttl": E.check_ttl(ttl),
            "serializer": serializer}


def open_cache(db: Any, att: Any, name: str, asked: dict) -> Cache:
    names.check_table_name(name)
    table = names.cache_table(name)
    entry = att.catalog.find(table)
    if entry is None:
        made = dict(asked, serializer=asked["serializer"] or "msgpack")
        meta = {"pk": KEY_FIELD, "schema": None, "cache": made}
        try:
            client.request(db.name, "create_table", table, meta)
        except DuplicateTableError:
            pass                             # another process made it first
        entry = att.catalog.find(table)
        if entry is None:
            raise InvalidArgumentError(f"cache {name!r} was dropped while it was opened")
    stored = entry.meta.get("cache") or {}
    for what in SETTINGS:
        if asked[what] is not None and asked[what] != stored.get(what):
            raise InvalidArgumentError(
                f"cache {name!r} exists with {what}={stored.get(what)!r}, not {asked[what]!r}",
                hint="leave that argument out (None) to use the cache's own setting")
    lock, store = att.table(entry)
    return Cache(db, name, lock, store, Counters(att.catalog.buf, entry.index, lock), stored)
