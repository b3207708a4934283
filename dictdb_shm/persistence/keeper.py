"""The coordinator's side of a durable database.

Owns: what the coordinator does for a database with a directory: claim the
directory, restore into the new catalog before it is published, record the
directory and durability in the catalog header (so attaching processes need
no path), journal table creation and removal, fsync the journal about once a
second under ``"everysec"``, compact the journal into a snapshot when it
outgrows the live data, and checkpoint on demand and before the shared
memory goes.  Must never: run outside the coordinator, or block a table's
writers for more than the copy of its bytes (restore.py, capture.py).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Callable

from dictdb_shm.attachment import DEFAULT_LOCK_TIMEOUT, Attachment
from dictdb_shm.engine import layout as L
from dictdb_shm.errors import DictDBError
from dictdb_shm.persistence import journal as J
from dictdb_shm.persistence import restore
from dictdb_shm.persistence import snapshot as snap
from dictdb_shm.persistence.saveload import images_of

log = logging.getLogger("dictdb_shm.persistence")

SYNC_INTERVAL = 1.0                        # "everysec"
COMPACT_CHECK_INTERVAL = 1.0
COMPACT_FACTOR = 2                         # journal past 2x the live data: snapshot
COMPACT_MIN_BYTES = int(os.environ.get("DICTDB_SHM_COMPACT_MIN_BYTES", str(64 << 20)))


class Keeper:
    """Persistence of one durable database, run by its coordinator."""

    def __init__(self, db: str, path: str, durability: int) -> None:
        self.db = db
        self.path = path
        self.durability = durability
        self.journal: J.Journal | None = None
        self.att: Attachment | None = None
        self._claim = -1
        self._since = 0                        # first generation the next restore replays
        self._last_sync = self._last_check = time.monotonic()
        self._compacting = threading.Lock()

    @classmethod
    def of_catalog(cls, db: str, catalog: Any) -> "Keeper | None":
        """The keeper an adopted catalog asks for (its header names the directory)."""
        path, code = catalog.persistence()
        return cls(db, path, code) if path else None

    # ------------------------------------------------------------ start-up
    def restore_into(self, catalog: Any) -> None:
        """Before ``catalog`` (new) is published: claim the directory, record
        it in the header and fill the tables from it."""
        self.claim()
        catalog.set_persistence(self.path, self.durability)
        J.initialize(catalog.buf)
        att = Attachment(self.db, catalog, DEFAULT_LOCK_TIMEOUT)
        done = restore.restore(att, self.path)
        self._since = done["since"]
        log.info("restored %s from %s: %s", self.db, self.path, done)

    def claim(self) -> None:
        if self._claim < 0:
            self._claim = restore.claim_directory(self.path, self.db)

    def open(self, att: Attachment) -> None:
        """Serve: the coordinator's own attachment and journal."""
        self.claim()
        self.att = att
        self.journal = J.Journal(self.path, self.durability, att.catalog.buf)
        if not self._since:
            self._since = snap.snapshot_generation(self.path)

    # --------------------------------------------------------- catalog ops
    def create_table(self, name: str, meta: dict, add: Callable[[], Any]) -> Any:
        """Journal the creation, then ``add()`` the table: a write to it can
        never be journaled before its creation.  A creation that fails is
        journaled as a drop, so replaying both makes nothing."""
        self._append(J.CREATE, name, meta)
        try:
            return add()
        except BaseException:
            self._append(J.DROP, name, None)
            raise

    def drop_table(self, name: str) -> None:
        """Under the table's write lock, once it is removed."""
        self._append(J.DROP, name, None)

    def _append(self, kind: str, table: str, data: Any) -> None:
        if self.journal is not None:
            self.journal.append(J.frame(kind, table, data), table)
            if self.durability != L.DURABILITY_ALWAYS:
                self.journal.sync()          # catalog edits are rare: always on disk

    # -------------------------------------------------------- housekeeping
    def tick(self, edits: threading.Lock) -> None:
        """From the housekeeping thread: the "everysec" fsync, and a
        compaction when the journal outgrew the live data (in a thread of
        its own, so repairs of dead lock holders never wait for it)."""
        now = time.monotonic()
        if self.journal is not None and self.durability == L.DURABILITY_EVERYSEC and \
                now - self._last_sync >= SYNC_INTERVAL:
            self._last_sync = now
            self.journal.sync()
        if now - self._last_check < COMPACT_CHECK_INTERVAL or self._compacting.locked():
            return
        self._last_check = now
        if self._journal_outgrew():
            threading.Thread(target=self._compact, args=(edits,), name="compaction",
                             daemon=True).start()

    def _journal_outgrew(self) -> bool:
        size = restore.journal_bytes(self.path, self._since)
        if size < COMPACT_MIN_BYTES:
            return False
        att = self.att
        live = 0
        if att is not None:
            for entry in att.catalog.entries():
                live += att.table(entry)[1].read(lambda s: s.stats())["live_bytes"]
        return size > COMPACT_FACTOR * live

    def _compact(self, edits: threading.Lock) -> None:
        try:
            done = self.checkpoint(edits)
            log.info("compacted the journal of %s into a snapshot: %s", self.db, done)
        except Exception:
            log.exception("compacting the journal of %s failed", self.db)

    def checkpoint(self, edits: threading.Lock) -> dict:
        """A snapshot now (``db.checkpoint()``), one at a time, with no
        catalog edit between moving the journal on and the capture."""
        if self.att is None:
            raise DictDBError(f"the coordinator of {self.db!r} is not serving yet")
        with self._compacting:
            with edits:
                done = restore.checkpoint(self.att, self.path, images_of)
            self._since = done["generation"]
            return done

    def close(self, edits: threading.Lock | None = None) -> None:
        """Before the shared memory goes (destroy, stop, SIGTERM): a last
        snapshot, so the next start restores quickly; at least an fsync."""
        try:
            if self.att is not None and edits is not None:
                self.checkpoint(edits)
            elif self.journal is not None:
                self.journal.sync()
        except Exception:
            log.exception("the last snapshot of %s failed; its journal has everything",
                          self.db)
            if self.journal is not None:
                try:
                    self.journal.sync()
                except OSError:
                    pass
