"""Destroying a database, in the order that lets every handle learn of it.

Owns: the destroy sequence, shared by the coordinator (a destroy request,
``stop``, SIGTERM, a private database's creator gone) and by client.destroy
when no coordinator runs.  Must never: decide whether to destroy, or touch
the runtime directory (the callers own their socket and log).

1. Take each live table's write lock, all within DESTROY_LOCK_WAIT seconds,
   so that a write call in flight finishes first.  A lock not free in time
   (a holder stuck or paused) is not waited for any longer: destroy goes on.
2. ``mark_destroyed``: the catalog's destroyed flag, and every table dropped.
   This must come before anything is unlinked, because handles keep their
   mappings of unlinked objects, and the flag is how they learn.
3. Release the locks taken: their waiters wake up and see the flag.
4. Unlink every object of the database under /dev/shm.
"""

from __future__ import annotations

import logging
import time

from dictdb_shm.attachment import Attachment
from dictdb_shm.engine.catalog import remove_database_objects
from dictdb_shm.errors import DictDBError

log = logging.getLogger("dictdb_shm.coordinator")

DESTROY_LOCK_WAIT = 2.0


def destroy(att: Attachment) -> None:
    """Mark ``att``'s database destroyed, then unlink all of its objects."""
    catalog = att.catalog
    taken = []
    deadline = time.monotonic() + DESTROY_LOCK_WAIT
    try:
        entries = catalog.entries()
    except DictDBError:         # a catalog that never settled: nothing to wait for
        entries = []
    for entry in entries:
        try:
            lock, _ = att.table(entry)
            lock.acquire_write(timeout=max(0.0, deadline - time.monotonic()))
        except DictDBError as exc:
            log.info("destroying %s without waiting for table %s: %s", att.db, entry.name, exc)
            continue
        taken.append(lock)
    try:
        catalog.mark_destroyed()
    finally:
        for lock in taken:
            lock.release_write()
    remove_database_objects(att.db)
