"""Backups run by the coordinator: the schedules and the backups themselves.

Owns: one schedule per backup directory (its settings, failure count and
deltas since the last full backup), the periodic and debounced runs, writing
full backups and deltas from one consistent capture, retention, and keeping
the started schedules in the catalog header so a new coordinator resumes
them.  Must never: run in a user's process (backups.py is the client side),
hold a table lock while encoding, or let a failed backup stop the schedule.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import threading
import time
from typing import Any

import msgpack

from dictdb_shm.errors import DictDBError, FileAccessError, InvalidArgumentError
from dictdb_shm.persistence import tracking
from dictdb_shm.persistence.atomic import atomic_file
from dictdb_shm.persistence.backups import DELTA_PREFIX, FULL_PREFIX, backup_files
from dictdb_shm.persistence.formats import PICKLE_PROTOCOL, check_format
from dictdb_shm.persistence.saveload import images_of, write_file

log = logging.getLogger("dictdb_shm.backups")

CONFIG_KEYS = ("dir", "interval", "format", "min_interval", "incremental", "max_deltas", "keep")


def _checked(config: Any) -> dict:
    if not isinstance(config, dict) or set(config) != set(CONFIG_KEYS) or \
            not isinstance(config["dir"], str) or not os.path.isabs(config["dir"]):
        raise InvalidArgumentError("a backup schedule is a dict of " + ", ".join(CONFIG_KEYS))
    check_format(config["format"])
    return dict(config)


class Schedule:
    def __init__(self, config: dict) -> None:
        self.config = config
        self.started = False
        self.next_due = 0.0
        self.last_backup = 0.0             # time.monotonic() of the last success
        self.consecutive_failures = 0
        self.deltas_since_full = 0
        self.last_error: list | None = None
        self.known_tables: set[str] | None = None   # at the last backup (None: unknown)
        self.running = threading.Lock()

    def status(self) -> dict:
        return {"consecutive_failures": self.consecutive_failures,
                "deltas_since_full": self.deltas_since_full, "error": self.last_error,
                "started": self.started}


class BackupService:
    """The backup schedules of one database, in its coordinator."""

    def __init__(self, db: str, att: Any) -> None:
        self.db = db
        self.att = att
        self._schedules: dict[str, Schedule] = {}
        self._mutex = threading.Lock()

    # ----------------------------------------------------------- requests
    def handle(self, action: str, config: Any, kind: str | None = None) -> Any:
        schedule = self._schedule(_checked(config))
        if action == "start":
            schedule.config = _checked(config)
            schedule.started = True
            schedule.next_due = time.monotonic() + schedule.config["interval"]
            self._remember()
        elif action == "stop":
            schedule.started = False
            self._remember()
        elif action == "run":
            if kind not in ("now", "full", "delta"):
                raise InvalidArgumentError(f"unknown backup kind {kind!r}")
            self.run(schedule, kind)
        elif action == "notify":
            if time.monotonic() - schedule.last_backup >= schedule.config["min_interval"]:
                self._in_background(schedule, "now")
        elif action != "status":
            raise InvalidArgumentError(f"unknown backup request {action!r}")
        return schedule.status()

    def _schedule(self, config: dict) -> Schedule:
        with self._mutex:
            found = self._schedules.get(config["dir"])
            if found is None:
                found = self._schedules[config["dir"]] = Schedule(config)
            return found

    def _remember(self) -> None:
        """Keep the started schedules in the catalog header."""
        started = [s.config for s in self._schedules.values() if s.started]
        self.att.catalog.set_backups(msgpack.packb(started))

    def resume(self) -> None:
        """A new coordinator: start again the schedules the header lists."""
        try:
            configs = msgpack.unpackb(self.att.catalog.backups() or msgpack.packb([]))
        except Exception:
            log.warning("the backup schedules in the catalog of %s do not decode", self.db)
            return
        for config in configs if isinstance(configs, list) else []:
            try:
                self.handle("start", config)
                log.info("resumed backups of %s into %s", self.db, config["dir"])
            except DictDBError as exc:
                log.warning("could not resume a backup schedule of %s: %s", self.db, exc)

    # -------------------------------------------------------------- timing
    def tick(self) -> None:
        """From housekeeping: start the periodic backups that are due."""
        now = time.monotonic()
        for schedule in list(self._schedules.values()):
            if schedule.started and now >= schedule.next_due:
                schedule.next_due = now + schedule.config["interval"]
                self._in_background(schedule, "now")

    def _in_background(self, schedule: Schedule, kind: str) -> None:
        if schedule.running.locked():
            return
        threading.Thread(target=self.run, args=(schedule, kind), name="backup",
                         daemon=True).start()

    # ---------------------------------------------------------------- runs
    def run(self, schedule: Schedule, kind: str) -> None:
        with schedule.running:
            c = schedule.config
            try:
                if kind == "now":
                    kind = "delta" if c["incremental"] and \
                        schedule.deltas_since_full < c["max_deltas"] else "full"
                done = self._delta(schedule) if kind == "delta" else None
                if done == "written":
                    schedule.deltas_since_full += 1
                elif done is None:               # a full backup asked for, or needed
                    self._full(schedule)
                schedule.last_backup = time.monotonic()
                schedule.consecutive_failures = 0
                schedule.last_error = None
            except Exception as exc:
                schedule.consecutive_failures += 1
                schedule.last_error = ([type(exc).__name__, exc.message, exc.hint]
                                       if isinstance(exc, DictDBError)
                                       else ["FileAccessError", f"backup into {c['dir']} "
                                             f"failed: {exc!r}", None])
                log.error("backup of %s into %s failed (%d in a row): %s", self.db, c["dir"],
                          schedule.consecutive_failures, exc)

    def _full(self, schedule: Schedule) -> None:
        c = schedule.config
        images = images_of(self.att)
        path = new_name(c["dir"], FULL_PREFIX, c["format"])
        write_file(path, images, c["format"])
        tracking.mark_reported(self.att, images)
        schedule.deltas_since_full = 0
        schedule.known_tables = {i.name for i in images}
        log.info("full backup of %s: %s", self.db, path)
        if c["keep"]:
            _retain(c["dir"], c["keep"])

    def _delta(self, schedule: Schedule) -> str | None:
        """Write a delta: "written", "unchanged" (no file), or None when a full
        backup is needed instead (no backup yet from this coordinator, or a
        table's changes were lost to a compaction)."""
        if schedule.known_tables is None:
            return None
        c = schedule.config
        images = images_of(self.att)
        doc = tracking.delta_of(images, schedule.known_tables)
        if doc is None:
            return None
        if not doc["tables"] and not doc["dropped"]:
            return "unchanged"
        doc["timestamp"] = time.time()
        path = new_name(c["dir"], DELTA_PREFIX, c["format"])
        try:
            with atomic_file(path) as f:
                if c["format"] == "pickle":
                    pickle.dump(doc, f, protocol=PICKLE_PROTOCOL)
                else:
                    f.write(json.dumps(doc).encode())
        except OSError as exc:
            raise FileAccessError(f"cannot write {path}: {exc.strerror or exc}") from None
        tracking.mark_reported(self.att, images)
        schedule.known_tables = {i.name for i in images}
        log.info("delta backup of %s: %s", self.db, path)
        return "written"


def new_name(directory: str, prefix: str, fmt: str) -> str:
    while True:
        stamp = time.time()
        seconds = int(stamp)
        path = os.path.join(directory, f"{prefix}{seconds}_{int((stamp - seconds) * 1e6):06d}"
                                       f".{fmt}")
        if not os.path.exists(path):
            return path
        time.sleep(1e-6)


def _retain(directory: str, keep: int) -> None:
    """Keep the newest ``keep`` full backups and the deltas after the oldest of them."""
    fulls = backup_files(directory, FULL_PREFIX)
    if len(fulls) <= keep:
        return
    oldest_kept = fulls[-keep]
    for name in fulls[:-keep]:
        os.unlink(os.path.join(directory, name))
    cutoff = oldest_kept[len(FULL_PREFIX):]
    for name in backup_files(directory, DELTA_PREFIX):
        if name[len(DELTA_PREFIX):] < cutoff:
            os.unlink(os.path.join(directory, name))
