"""Reaching a database's coordinator: start it when none runs, send it a request.

Owns: spawning the coordinator process (detached, so a named database
outlives its creator) and the request/reply protocol's client side.  Must
never: be called on the data path (get, insert, select); only for rare
operations such as create_table, drop_table and destroy.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from typing import Any

from multiprocess.connection import Client

from dictdb_shm import errors, names
from dictdb_shm.engine.catalog import Catalog, remove_database_objects
from dictdb_shm.procinfo import is_alive

START_TIMEOUT = float(os.environ.get("DICTDB_SHM_START_TIMEOUT", "30"))
REQUEST_TIMEOUT = 60.0
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def coordinator_running(db: str) -> bool:
    """True while a coordinator holds the database's lock file."""
    path = names.coordinator_lockfile(db)
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def catalog_exists(db: str) -> bool:
    return os.path.exists(os.path.join(names.SHM_DIR, names.catalog_segment(db)[1:]))


def ensure_running(db: str, *, create: bool, private: bool = False,
                   owner: tuple[int, int] = (0, 0)) -> None:
    """Make sure ``db`` exists and has a running coordinator.

    ``create=False`` attaches only: DatabaseNotFoundError when the catalog is
    absent.  A database whose coordinator died is adopted by a new one.
    """
    if coordinator_running(db):
        if catalog_exists(db):
            _wait_ready(db, create)
            return
    elif not create and not catalog_exists(db):
        raise errors.DatabaseNotFoundError(f"no database named {db!r} on this machine")
    _spawn(db, private, owner)
    _wait_ready(db, create)


def _spawn(db: str, private: bool, owner: tuple[int, int]) -> None:
    """Start ``python -m dictdb_shm.coordinator serve db`` in its own session,
    as a grandchild, so that it is nobody's zombie and outlives its creator."""
    argv = [sys.executable, "-m", "dictdb_shm.coordinator", "serve", db]
    if private:
        argv += ["--private", "--owner", str(owner[0]), str(owner[1])]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
    logpath = names.coordinator_log(db)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the forked child
        try:
            os.setsid()
            if os.fork() == 0:
                fd = os.open(logpath, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                null = os.open(os.devnull, os.O_RDONLY)
                os.dup2(null, 0)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                os.closerange(3, 65536)
                os.execve(sys.executable, argv, env)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def _wait_ready(db: str, create: bool) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if not create and not catalog_exists(db) and not coordinator_running(db):
            # Destroyed while we were attaching.
            raise errors.DatabaseNotFoundError(f"no database named {db!r} on this machine")
        if catalog_exists(db) and os.path.exists(names.coordinator_socket(db)):
            try:
                request(db, "ping", timeout=5)
                return
            except (errors.CoordinatorError, errors.DatabaseNotFoundError, OSError):
                pass
        if time.monotonic() > deadline:
            raise errors.CoordinatorError(
                f"the coordinator of {db!r} did not start within {START_TIMEOUT:.0f} s; "
                f"see {names.coordinator_log(db)}")
        time.sleep(0.005)


def request(db: str, op: str, *args: Any, timeout: float = REQUEST_TIMEOUT) -> Any:
    """Send one request to the coordinator of ``db`` and return its answer."""
    catalog = Catalog.attach(db)
    authkey = catalog.authkey
    del catalog
    try:
        conn = Client(names.coordinator_socket(db), family="AF_UNIX", authkey=authkey)
    except (OSError, EOFError) as exc:
        raise errors.CoordinatorError(
            f"cannot reach the coordinator of {db!r}: {exc}") from None
    try:
        conn.send((op, args))
        if not conn.poll(timeout):
            raise errors.CoordinatorError(f"the coordinator of {db!r} did not answer {op!r} "
                                          f"within {timeout:.0f} s")
        status, value = conn.recv()
    except (OSError, EOFError) as exc:
        raise errors.CoordinatorError(f"lost the coordinator of {db!r} during {op!r}: {exc}")
    finally:
        conn.close()
    if status == "ok":
        return value
    cls_name, message = value
    cls = getattr(errors, cls_name, errors.CoordinatorError)
    exc = cls(message)
    raise exc


def destroy(db: str) -> None:
    """Remove ``db`` for everyone.  Works when its coordinator is gone too."""
    if coordinator_running(db):
        try:
            request(db, "destroy", timeout=30)
        except errors.DictDBError:
            pass
        deadline = time.monotonic() + 10
        while coordinator_running(db) and time.monotonic() < deadline:
            time.sleep(0.005)
    remove_database_objects(db)
    for path in (names.coordinator_socket(db), names.coordinator_lockfile(db),
                 names.coordinator_log(db)):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def sweep_orphaned_private() -> list[str]:
    """Destroy private databases whose creator and coordinator are both gone.

    A coordinator removes its private database when the creator dies; this
    covers the case where the coordinator was killed too.  Such a database
    has no coordinator holding its lock file and a dead owner, so nobody can
    be using it.  Called whenever a new private database is made.
    """
    swept = []
    try:
        entries = os.listdir(names.SHM_DIR)
    except FileNotFoundError:
        return swept
    for entry in entries:
        if not (entry.startswith("dictdb_p") and entry.endswith(".catalog")):
            continue
        db = entry[len("dictdb_"):-len(".catalog")]
        if coordinator_running(db):
            continue
        try:
            catalog = Catalog.attach(db)
        except errors.DictDBError:
            continue
        try:
            orphaned = catalog.private and not is_alive(*catalog.owner())
        finally:
            catalog.close()
        if orphaned and not coordinator_running(db):
            destroy(db)
            swept.append(db)
    return swept


def status(db: str) -> dict:
    info: dict[str, Any] = {"name": db, "exists": catalog_exists(db),
                            "coordinator_running": coordinator_running(db)}
    if info["exists"]:
        try:
            cat = Catalog.attach(db)
            pid, ticks = cat.coordinator()
            info["coordinator_pid"] = pid if is_alive(pid, ticks) else None
            info["private"] = cat.private
            info["tables"] = [e.name for e in cat.entries()]
            cat.close()
        except errors.DictDBError as exc:
            info["error"] = str(exc)
    return info
