"""Task functions that tests/test_pools.py runs in multiprocessing and
concurrent.futures workers (importable by name, as spawn and forkserver need).

Tasks get their database, tables and caches as arguments (they pickle as
names and reattach in the worker), except ``bump_preopened``, which uses the
handles the parent opened before forking (``PREOPENED``)."""

from __future__ import annotations

import os
from typing import Any

PREOPENED: dict[str, Any] = {}


def bump(db: Any, table: Any, cache: Any, times: int) -> int:
    """Add 1 to row 1's ``n`` and to the cache counter ``times`` times; the worker's pid."""
    for _ in range(times):
        with table.lock.write_lock():
            table.update({"n": table.get(1)["n"] + 1}, where=table.id == 1)
        cache.incr("n")
    db.get_table(table.table_name).upsert({"id": f"pid{os.getpid()}"}, on_conflict="ignore")
    return os.getpid()


def bump_preopened(times: int) -> int:
    return bump(PREOPENED["db"], PREOPENED["table"], PREOPENED["cache"], times)
