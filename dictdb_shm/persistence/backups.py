"""BackupManager and apply_delta: DictDB's backup API, served by the coordinator.

Owns: the BackupManager a user holds (each call is a request to the
database's coordinator, which runs the schedule: backup_service.py), calling
``on_backup_failure`` in the process that registered it, the names of
backup files, and ``apply_delta``.  Must never: write a backup itself (the
coordinator does, so that backups go on when this process exits: gunicorn
recycles the worker that started them) or swallow an error of its own
arguments.

Files in the backup directory: full backups ``dictdb_backup_<s>_<us>.<fmt>``
(the ``save`` format), deltas ``dictdb_delta_<s>_<us>.<fmt>`` holding
``{"type": "delta", "timestamp", "tables": {name: {"upserts": [...],
"deletes": [pks], "primary_key", "schema"}}, "dropped": [names]}``
(DictDB's delta layout; the last three keys are ours, DictDB ignores them).
"""

from __future__ import annotations

import json
import os
import re
import threading
from typing import Any, Callable

from dictdb_shm.coordinator import client
from dictdb_shm.errors import (CorruptionError, DictDBError, FileAccessError,
                               InvalidArgumentError)
from dictdb_shm.persistence import formats, unpickler
from dictdb_shm.persistence.atomic import read_whole
from dictdb_shm.persistence.saveload import fspath

FULL_PREFIX, DELTA_PREFIX = "dictdb_backup_", "dictdb_delta_"
STAMP = re.compile(r"(\d+)_(\d{6})\.")
STATUS_POLL = 0.5                      # how often the registering process looks for failures
BACKUP_TIMEOUT = 600.0

FailureCallback = Callable[[Exception, int], None]


def backup_files(directory: str, prefix: str) -> list[str]:
    """Names of ``prefix`` files in ``directory``, oldest first."""
    found = []
    for name in os.listdir(directory):
        m = STAMP.match(name, len(prefix)) if name.startswith(prefix) else None
        if m:
            found.append(((int(m.group(1)), int(m.group(2))), name))
    return [name for _, name in sorted(found)]


class BackupManager:
    """Periodic and on-demand backups of ``db`` into ``backup_dir``, run by
    the database's coordinator (see the module docstring).  ``keep`` (ours):
    how many full backups to keep (older ones, and the deltas before the
    oldest one kept, are removed); None keeps everything."""

    def __init__(self, db: Any, backup_dir: str | os.PathLike, backup_interval: float = 300,
                 file_format: str = "json", min_backup_interval: float = 5.0,
                 on_backup_failure: FailureCallback | None = None, incremental: bool = False,
                 max_deltas_before_full: int = 10, keep: int | None = None) -> None:
        directory = os.path.abspath(fspath(backup_dir))
        for name, value in (("backup_interval", backup_interval),
                            ("min_backup_interval", min_backup_interval)):
            if not isinstance(value, (int, float)) or value < 0:
                raise InvalidArgumentError(f"{name} must be a number of seconds, not {value!r}")
        if not isinstance(max_deltas_before_full, int) or max_deltas_before_full < 0:
            raise InvalidArgumentError("max_deltas_before_full must be an int >= 0")
        if keep is not None and (not isinstance(keep, int) or keep < 1):
            raise InvalidArgumentError("keep must be None or an int >= 1")
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise FileAccessError(f"cannot create {directory}: {exc.strerror}") from None
        self.db = db
        self.backup_dir = directory
        self.config = {"dir": directory, "interval": float(backup_interval),
                       "format": formats.check_format(file_format),
                       "min_interval": float(min_backup_interval),
                       "incremental": bool(incremental),
                       "max_deltas": max_deltas_before_full, "keep": keep}
        self._on_failure = on_backup_failure
        self._seen_failures = 0
        self._poller: threading.Thread | None = None
        self._stop_polling = threading.Event()

    def _ask(self, action: str, *args: Any) -> Any:
        return client.request(self.db.name, "backup", action, self.config, *args,
                              timeout=BACKUP_TIMEOUT)

    # -------------------------------------------------------------- schedule
    def start(self) -> None:
        """Start periodic backups; they go on after this process exits."""
        self._ask("start")
        if self._on_failure is not None and self._poller is None:
            self._stop_polling.clear()
            self._poller = threading.Thread(target=self._poll, name="backup-failures",
                                            daemon=True)
            self._poller.start()

    def stop(self) -> None:
        """Stop the periodic backups into this directory, whoever started them."""
        self._stop_polling.set()
        self._ask("stop")
        poller, self._poller = self._poller, None
        if poller is not None and poller is not threading.current_thread():
            poller.join(timeout=5)

    # ----------------------------------------------------------------- runs
    def backup_now(self) -> None:
        """A delta when incremental (a full backup every max_deltas_before_full), else full."""
        self._report(self._ask("run", "now"))

    def backup_full(self) -> None:
        self._report(self._ask("run", "full"))

    def backup_delta(self) -> None:
        """A delta of the changes since the last backup (none: nothing written)."""
        self._report(self._ask("run", "delta"))

    def notify_change(self) -> None:
        """Back up soon, unless the last backup is younger than min_backup_interval."""
        self._ask("notify")

    @property
    def consecutive_failures(self) -> int:
        return int(self._ask("status")["consecutive_failures"])

    @property
    def deltas_since_full(self) -> int:
        return int(self._ask("status")["deltas_since_full"])

    # ------------------------------------------------------------- failures
    def _report(self, status: dict) -> None:
        n = int(status.get("consecutive_failures", 0))
        if n > self._seen_failures and status.get("error"):
            self._seen_failures = n
            self._call_back(status)
        elif n == 0:
            self._seen_failures = 0

    def _call_back(self, status: dict) -> None:
        if self._on_failure is None:
            return
        cls_name, message, hint = status["error"]
        error = client.error_named(cls_name, message, hint)
        try:
            self._on_failure(error, int(status["consecutive_failures"]))
        except Exception:
            import logging
            logging.getLogger("dictdb_shm.backups").exception("on_backup_failure raised")

    def _poll(self) -> None:
        while not self._stop_polling.wait(min(STATUS_POLL, max(0.05, self.config["interval"]))):
            try:
                self._report(self._ask("status"))
            except DictDBError:
                if self._stop_polling.is_set():
                    return


# ----------------------------------------------------------------- deltas
def read_delta(path: str) -> dict:
    """The checked delta document at ``path`` (pickle by its extension, else JSON)."""
    data = read_whole(path)
    if not data.strip():
        raise CorruptionError(f"{path}: the file is empty", hint=formats.FILE_HINT)
    if path.endswith((".pickle", ".pkl")):
        doc = unpickler.loads(data, path)
    else:
        try:
            doc = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CorruptionError(f"{path}: not a JSON delta ({exc})",
                                  hint=formats.FILE_HINT) from None
    if not (isinstance(doc, dict) and doc.get("type") == "delta"
            and isinstance(doc.get("tables"), dict)):
        raise CorruptionError(f"{path}: not a delta file (no \"type\": \"delta\")",
                              hint=formats.FILE_HINT)
    for name, t in doc["tables"].items():
        if not (isinstance(t, dict) and isinstance(t.get("upserts", []), list)
                and isinstance(t.get("deletes", []), list)
                and all(isinstance(r, dict) for r in t.get("upserts", []))):
            raise CorruptionError(f"{path}: table {name!r} is not upserts and deletes",
                                  hint=formats.FILE_HINT)
    return doc


def apply_delta(db: Any, path: str | os.PathLike) -> int:
    """Replay the delta at ``path`` into ``db``: each table's upserts replace
    the records of their keys, its deletes remove theirs (one table at a
    time, under its write lock); a table the delta made is created, one it
    dropped is dropped.  Returns the number of records affected."""
    source = fspath(path)
    doc = read_delta(source)
    affected = 0
    present = set(db.list_tables())
    for name in doc.get("dropped") or []:
        if name in present:
            db.drop_table(name)
    for name, t in doc["tables"].items():
        if name not in present:
            if "primary_key" not in t:
                continue                      # DictDB's deltas never make tables
            db.create_table(name, primary_key=t["primary_key"], schema=formats.schema_types(
                t.get("schema"), source, name))
        table = db.get_table(name)
        pk = table.primary_key
        upserts = t.get("upserts", [])
        keys = [r[pk] for r in upserts if pk in r] + list(t.get("deletes", []))
        with table.lock.write_lock():
            existing = [k for k in keys if table.get(k) is not None]
            if existing:
                table.delete(where=table[pk].is_in(existing))
            if upserts:
                table.insert(upserts, skip_validation=True)
        affected += len(upserts) + sum(1 for k in t.get("deletes", []) if k in existing)
    return affected
