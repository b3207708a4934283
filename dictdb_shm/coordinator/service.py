"""The coordinator process of one database.

Owns: creating the catalog, creating and dropping tables (so those edits are
serialised), destroying the database, and housekeeping: removing a private
database whose creator died, and repairing tables whose lock holder died
even when nobody waits on them.  Must never: sit on the data path; workers
read and write shared memory without it.

Control channel: a Unix socket in the per-user runtime directory (mode 0700,
socket 0600), ``multiprocess.connection`` with the authkey stored in the
catalog header (itself owner-only), and a SO_PEERCRED check that the peer
runs as our user.  One request per connection: ``(op, args)`` in,
``("ok", value)`` or ``("error", (class name, message))`` out.

Started by ``DictDB(name)`` (see client.py) or as a service:
``python -m dictdb_shm.coordinator serve NAME``.  SIGTERM or
``python -m dictdb_shm.coordinator stop NAME`` destroys the database.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import socket
import struct
import sys
import threading
import time
from typing import Any

from multiprocess.connection import Listener

from dictdb_shm import errors, names
from dictdb_shm.attachment import Attachment
from dictdb_shm.engine.catalog import Catalog, remove_database_objects
from dictdb_shm.procinfo import is_alive, own_identity

log = logging.getLogger("dictdb_shm.coordinator")

HOUSEKEEPING_INTERVAL = 0.2


class Coordinator:
    def __init__(self, db: str, private: bool, owner: tuple[int, int]) -> None:
        self.db = db
        self.private = private
        self.owner = owner
        self._lockfile_fd = -1
        self._listener: Any = None
        self._att: Attachment | None = None
        self._edit = threading.Lock()
        self._stopping = False

    # -------------------------------------------------------------- start-up
    def claim(self) -> bool:
        """Become the coordinator of ``db``; False when another one runs."""
        fd = os.open(names.coordinator_lockfile(self.db), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lockfile_fd = fd
        return True

    def open_catalog(self) -> None:
        try:
            catalog = Catalog.attach(self.db)
            log.info("adopted the existing catalog of %s", self.db)
        except errors.DatabaseNotFoundError:
            catalog = Catalog.create(self.db, private=self.private, owner=self.owner)
            log.info("created database %s (private=%s)", self.db, self.private)
        del catalog
        self._att = Attachment.get(self.db)
        self.private = self._att.catalog.private
        self.owner = tuple(self._att.catalog.owner())  # type: ignore[assignment]
        self._att.catalog.set_coordinator(*own_identity())

    def listen(self) -> None:
        path = names.coordinator_socket(self.db)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        old = os.umask(0o177)
        try:
            assert self._att is not None
            self._listener = Listener(path, family="AF_UNIX", authkey=self._att.catalog.authkey)
        finally:
            os.umask(old)

    # ----------------------------------------------------------------- serve
    def serve_forever(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.destroy_and_exit())
        threading.Thread(target=self._housekeeping, name="housekeeping", daemon=True).start()
        while True:
            try:
                conn = self._listener.accept()
            except (OSError, EOFError) as exc:
                if self._stopping:
                    return
                log.warning("rejected a connection: %s", exc)
                continue
            except Exception as exc:  # AuthenticationError and friends
                log.warning("rejected a connection: %s", exc)
                continue
            try:
                self._handle(conn)
            finally:
                conn.close()

    def _handle(self, conn: Any) -> None:
        if not _same_user(conn):
            log.warning("refused a peer of another user")
            return
        try:
            if not conn.poll(5):
                return
            op, args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            value = getattr(self, "op_" + op)(*args)
            reply: tuple = ("ok", value)
        except errors.DictDBError as exc:
            reply = ("error", (type(exc).__name__, exc.message))
        except Exception as exc:
            log.exception("request %s failed", op)
            reply = ("error", ("CoordinatorError", f"{op} failed in the coordinator: {exc!r}"))
        try:
            conn.send(reply)
        except OSError:
            pass
        if op == "destroy":
            self.destroy_and_exit()

    # ------------------------------------------------------------ operations
    def op_ping(self) -> int:
        return os.getpid()

    def op_create_table(self, name: str, meta: dict) -> tuple[int, int]:
        names.check_table_name(name)
        assert self._att is not None
        with self._edit:
            entry = self._att.catalog.add_table(name, meta)
        return entry.index, entry.uid

    def op_drop_table(self, name: str) -> None:
        assert self._att is not None
        with self._edit:
            entry = self._att.catalog.find(name)
            if entry is None:
                raise errors.TableNotFoundError(f"no table {name!r} in database {self.db!r}")
            lock, _ = self._att.table(entry)
            lock.acquire_write()
            try:
                self._att.catalog.remove_table(entry)
            finally:
                lock.release_write()
            self._att.forget_table(entry.uid)

    def op_destroy(self) -> None:
        return None

    # --------------------------------------------------------- housekeeping
    def _housekeeping(self) -> None:
        while not self._stopping:
            time.sleep(HOUSEKEEPING_INTERVAL)
            try:
                self._tick()
            except Exception:
                log.exception("housekeeping failed")

    def _tick(self) -> None:
        if self.private and not is_alive(*self.owner):
            log.info("the creator of private database %s is gone: removing it", self.db)
            self.destroy_and_exit()
        if not os.path.exists(os.path.join(names.SHM_DIR, names.catalog_segment(self.db)[1:])):
            log.warning("the catalog of %s was removed from outside: exiting", self.db)
            self.destroy_and_exit()
        assert self._att is not None
        with self._edit:
            for entry in self._att.catalog.entries():
                lock, _ = self._att.table(entry)
                pid, ticks = lock.holder()
                if lock.repair_abandoned() and pid and not is_alive(pid, ticks):
                    log.info("pid %d died holding table %s: repaired", pid, entry.name)

    def destroy_and_exit(self) -> None:
        self._stopping = True
        log.info("destroying database %s", self.db)
        remove_database_objects(self.db)
        for path in (names.coordinator_socket(self.db), names.coordinator_lockfile(self.db),
                     names.coordinator_log(self.db)):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        logging.shutdown()
        os._exit(0)


def _same_user(conn: Any) -> bool:
    sock = socket.socket(fileno=os.dup(conn.fileno()))
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    finally:
        sock.close()
    _, uid, _ = struct.unpack("3i", creds)
    return uid == os.getuid()


def run(db: str, private: bool, owner: tuple[int, int]) -> int:
    names.check_db_name(db)
    logging.basicConfig(level=os.environ.get("DICTDB_SHM_LOG", "INFO"),
                        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    coord = Coordinator(db, private, owner)
    if not coord.claim():
        log.info("another coordinator serves %s", db)
        return 0
    try:
        coord.open_catalog()
        coord.listen()
    except Exception:
        log.exception("could not start the coordinator of %s", db)
        if private:
            remove_database_objects(db)
        return 1
    log.info("serving %s as pid %d", db, os.getpid())
    sys.stdout.flush()
    coord.serve_forever()
    return 0
