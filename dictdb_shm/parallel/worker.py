"""The worker process of parallel queries.

Owns: a worker's life: attach to the database by name (the process-wide
Attachment, as any process does), say it is ready, then answer one task at a
time with the part's answer (part.py), and exit on a stop message or when
its pipe closes (the process that started it ended or died).  Must never:
take a table lock (the process that sent the task holds the read lock for
the whole query; a worker that waited for a lock could deadlock with a
writer queued behind it), write to a table, or outlive its parent.

Messages are pickles on a private pipe, both ways: to the worker a
``PartTask`` (or None: stop); from it ``("ready", pid)`` once, then
``("ok", bytes)`` or ``("error", exception)`` per task.
"""

from __future__ import annotations

import os
import pickle
import signal
import time
from typing import Any

from dictdb_shm import crashpoints
from dictdb_shm.attachment import Attachment
from dictdb_shm.errors import DictDBError, ParallelQueryError, TableNotFoundError
from dictdb_shm.parallel import part

READY = "ready"
OK = "ok"
ERROR = "error"
# A crash point (crashpoints.py) a test arms to stop a worker inside a query.
TASK_POINT = "parallel_task"


def serve(conn: Any, db: str) -> None:
    """The worker's main loop (the target of its process)."""
    # Ctrl-C reaches the whole process group; the caller decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        att = Attachment.get(db, wait=5)
    except BaseException as exc:
        _send(conn, (ERROR, _portable(exc)))
        return
    stores: dict[int, Any] = {}
    try:
        _send(conn, (READY, os.getpid()))
        while True:
            try:
                task = pickle.loads(conn.recv_bytes())
            except (EOFError, OSError):
                return
            if task is None:
                return
            crashpoints.reach(TASK_POINT)
            try:
                started = time.perf_counter()
                found = part.answer(_store(att, stores, task.part.table_uid), task)
                reply: tuple = (OK, (found, time.perf_counter() - started))
            except BaseException as exc:  # every failure goes back to the caller
                reply = (ERROR, _portable(exc))
            _send(conn, reply)
    finally:
        att.release()


def _store(att: Attachment, stores: dict[int, Any], uid: int) -> Any:
    store = stores.get(uid)
    if store is None:
        entry = next((e for e in att.catalog.entries() if e.uid == uid), None)
        if entry is None:
            raise TableNotFoundError(f"the table of a parallel query (uid {uid}) was dropped")
        store = stores[uid] = att.table(entry)[1]
    return store


def _send(conn: Any, message: tuple) -> None:
    try:
        conn.send_bytes(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))
    except (OSError, EOFError):
        pass                       # the caller is gone; the loop ends on its next read


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives a pickle round trip as a DictDBError, else a
    ParallelQueryError saying what it was."""
    if isinstance(exc, DictDBError):
        try:
            back = pickle.loads(pickle.dumps(exc))
            if type(back) is type(exc):
                return exc
        except Exception:
            pass
    return ParallelQueryError(f"a worker of a parallel query failed: "
                              f"{type(exc).__name__}: {exc}")
