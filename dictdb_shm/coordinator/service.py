"""The coordinator process of one database.

Owns: creating or adopting the catalog (and repairing what a coordinator that
died left half done), creating and dropping tables (so those edits are
serialised), destroying the database, and housekeeping: removing a private
database whose creator died, repairing tables whose lock holder died even
when nobody waits on them, and sweeping expired cache entries and TTL
records (sweep.py).  Must never: sit on the data path; workers
read and write shared memory without it.

One coordinator per database: it holds the claim on the catalog file
(claim.py) from before the catalog is published until it exits.  Start-up:
create the catalog, or find one and claim it.  A catalog found unpublished
under a claim nobody held is taken for a creator that died and is made
again (a creator that was alive after all then fails to claim its file,
which is no longer the catalog, and reports "served").  An adopted catalog
gets ``repair_interrupted_edit`` and ``remove_orphans`` before anything is
served, and a catalog marked destroyed has its destroy finished.  The outcome goes to the spawning process through the
pipe it passed (``--report-fd``): ``["ok"]``, ``["served"]`` (another
coordinator won), or ``["error", class name, message, hint]``.

Control channel: a Unix socket in the per-user runtime directory (mode 0700,
socket 0600), whose path is published in the catalog header; protocol.py's
framed msgpack with a challenge-response on the catalog's authkey; and a
SO_PEERCRED check that the peer runs as our user.  Each connection is served
by a thread of its own (at most MAX_CONNECTIONS, each bounded by
PEER_TIMEOUT), so a slow or idle peer never delays the others; catalog edits
still run one at a time under ``_edit``.

Started by ``DictDB(name)`` (see client.py) or as a service:
``python -m dictdb_shm.coordinator serve NAME``.  SIGTERM or
``python -m dictdb_shm.coordinator stop NAME`` destroys the database.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import stat
import struct
import sys
import threading
import time
from typing import Any

import msgpack

from dictdb_shm import errors, names
from dictdb_shm.attachment import Attachment
from dictdb_shm.coordinator import claim, protocol, teardown
from dictdb_shm.coordinator.sweep import Sweeper
from dictdb_shm.engine.catalog import Catalog, remove_database_objects
from dictdb_shm.engine.segment import unlink
from dictdb_shm.persistence.backup_service import BackupService
from dictdb_shm.persistence.durable import durability_code
from dictdb_shm.persistence.keeper import Keeper
from dictdb_shm.procinfo import is_alive, own_identity

log = logging.getLogger("dictdb_shm.coordinator")

HOUSEKEEPING_INTERVAL = 0.2
MAX_CONNECTIONS = 32
PEER_TIMEOUT = 5.0
EDIT_WAIT_ON_DESTROY = 5.0
_OPEN_ATTEMPTS = 50
_OPS = frozenset({"ping", "create_table", "drop_table", "destroy", "checkpoint", "backup"})


class AlreadyServed(Exception):
    """Another coordinator holds the claim on this database."""


class Coordinator:
    def __init__(self, db: str, private: bool, owner: tuple[int, int], *,
                 existing_only: bool = False, keeper: Keeper | None = None) -> None:
        self.db = db
        self.keeper = keeper                 # a durable database's persistence (keeper.py)
        self.backups: BackupService | None = None
        self.sweeper: Sweeper | None = None  # expired cache entries and TTL records (sweep.py)
        self.private = private
        self.owner = owner
        self.existing_only = existing_only
        self._claim_fd = -1
        self._created = False
        self._sock: socket.socket | None = None
        self._socket_path = ""
        self._socket_ino = 0
        self._att: Attachment | None = None
        self._authkey = b""
        self._edit = threading.Lock()
        self._connections = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._exiting = threading.Lock()
        self._torn_down = False
        self._stopping = False

    @property
    def att(self) -> Attachment:
        """The coordinator's own attachment (``open_catalog`` makes it)."""
        if self._att is None:
            raise errors.CoordinatorError(f"the coordinator of {self.db!r} has not opened "
                                          "its catalog yet")
        return self._att

    @property
    def sock(self) -> socket.socket:
        if self._sock is None:
            raise errors.CoordinatorError(f"the coordinator of {self.db!r} is not listening")
        return self._sock

    # -------------------------------------------------------------- start-up
    def open_catalog(self) -> None:
        """Create the catalog, or claim and repair the existing one.
        AlreadyServed when another coordinator holds it."""
        for _ in range(_OPEN_ATTEMPTS):
            created = None
            if not self.existing_only:
                try:
                    created = Catalog.create(self.db, private=self.private, owner=self.owner)
                except FileExistsError:
                    pass
            try:
                fd = claim.take(self.db)
            except FileNotFoundError:
                if self.existing_only:
                    raise errors.DatabaseNotFoundError(
                        f"no database named {self.db!r} on this machine") from None
                continue
            if fd is None:
                raise AlreadyServed(self.db)
            catalog = self._claimed(fd, created)
            if catalog is None:
                os.close(fd)
                continue
            self._claim_fd = fd
            self._created = catalog is created
            if self._created:
                self._remove_orphans(catalog)
                if self.keeper is not None:      # restored before anyone can see it
                    self.keeper.restore_into(catalog)
                catalog.publish()
                log.info("created database %s (private=%s)", self.db, self.private)
            else:
                self._adopt(catalog)
            catalog.close()
            break
        else:
            raise errors.CoordinatorError(f"the catalog of {self.db!r} kept changing while "
                                          "the coordinator opened it")
        self._att = Attachment.get(self.db)
        self.private = self.att.catalog.private
        self.owner = tuple(self.att.catalog.owner())  # type: ignore[assignment]
        self._authkey = self.att.catalog.authkey
        if not self._created:
            found = Keeper.of_catalog(self.db, self.att.catalog)
            if self.keeper is not None and (found is None or found.path != self.keeper.path):
                raise errors.InvalidArgumentError(
                    f"database {self.db!r} exists with directory "
                    f"{found.path if found else None!r}, not {self.keeper.path!r}")
            self.keeper = found
        if self.keeper is not None:
            self.keeper.open(self.att)
        self.backups = BackupService(self.db, self.att)
        self.sweeper = Sweeper(self.att)
        self.backups.resume()
        self.att.catalog.set_coordinator(*own_identity())

    def _claimed(self, fd: int, created: Catalog | None) -> Catalog | None:
        """The catalog under claim ``fd``, or None (after cleaning up what
        needs it) when the caller must start over."""
        if not claim.is_current(self.db, fd):
            return None                                   # replaced meanwhile
        catalog = created
        if catalog is None:
            try:
                catalog = Catalog.attach(self.db, require_ready=False, check_tables=False)
            except errors.DatabaseNotFoundError:
                catalog = None
        if catalog is None or catalog.segment.ino != os.fstat(fd).st_ino:
            # Unsized, or not the file we claimed: its creator died before
            # sizing it (nobody else could hold the claim on it).
            if catalog is None and claim.is_current(self.db, fd):
                unlink(names.catalog_segment(self.db))
            return None
        if catalog is created:
            return catalog
        if not catalog.ready:
            log.warning("the creator of %s died before publishing it: making it again",
                        self.db)
            unlink(names.catalog_segment(self.db))
            return None
        if catalog.is_destroyed():
            log.warning("finishing the interrupted destroy of %s", self.db)
            remove_database_objects(self.db)
            if self.existing_only:
                raise errors.DatabaseNotFoundError(
                    f"no database named {self.db!r} on this machine")
            return None
        return catalog

    def _adopt(self, catalog: Catalog) -> None:
        log.info("adopted the existing catalog of %s", self.db)
        done = catalog.repair_interrupted_edit()
        if done:
            log.warning("repaired the catalog of %s: %s", self.db, done)
        self._remove_orphans(catalog)

    def _remove_orphans(self, catalog: Catalog) -> None:
        removed = catalog.remove_orphans()
        if removed:
            log.warning("removed objects of tables that are gone: %s", ", ".join(removed))

    def listen(self) -> None:
        path = names.coordinator_socket(self.db)
        if len(path.encode()) > names.MAX_SOCKET_PATH:
            raise errors.CoordinatorError(
                f"the socket path {path} is longer than {names.MAX_SOCKET_PATH} bytes",
                hint="set DICTDB_SHM_RUNTIME_DIR to a shorter directory of yours")
        try:
            os.unlink(path)                    # a dead coordinator's (never follows links)
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)                  # no other thread runs yet
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        sock.listen(64)
        self._sock = sock
        self._socket_path = path
        self._socket_ino = os.lstat(path).st_ino
        self.att.catalog.set_socket_path(path)

    def abandon(self) -> None:
        """Undo a start-up that failed: remove what this process created."""
        if self._created:
            remove_database_objects(self.db)
        self._remove_socket()

    # ----------------------------------------------------------------- serve
    def serve_forever(self) -> None:
        signal.signal(signal.SIGTERM, self._on_sigterm)
        threading.Thread(target=self._housekeeping, name="housekeeping", daemon=True).start()
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError as exc:
                log.warning("accept failed: %s", exc)
                time.sleep(0.05)
                continue
            if not _same_user(conn):
                log.warning("refused a peer of another user")
                conn.close()
                continue
            if not self._connections.acquire(blocking=False):
                protocol.refuse_busy(conn, 1.0)
                conn.close()
                continue
            threading.Thread(target=self._serve_connection, args=(conn,),
                             name="connection", daemon=True).start()

    def _serve_connection(self, conn: socket.socket) -> None:
        op = None
        try:
            op = protocol.serve_one(conn, self._authkey, self._dispatch, PEER_TIMEOUT)
        except protocol.ChannelError as exc:
            log.info("dropped a connection: %s", exc.reason)
        except Exception:
            log.exception("a connection failed")
        finally:
            conn.close()
            self._connections.release()
        if op == "destroy" and self._torn_down:
            self._exit()

    def _dispatch(self, op: str, args: list) -> tuple[str, Any]:
        if op not in _OPS:
            return "error", ["CoordinatorError", f"unknown request {op!r}", None]
        try:
            return "ok", getattr(self, "op_" + op)(*args)
        except errors.DictDBError as exc:
            return "error", [type(exc).__name__, exc.message, exc.hint]
        except Exception as exc:
            log.exception("request %s failed", op)
            return "error", ["CoordinatorError", f"{op} failed in the coordinator: {exc!r}",
                             None]

    # ------------------------------------------------------------ operations
    def op_ping(self) -> int:
        return os.getpid()

    def op_create_table(self, name: str, meta: dict) -> list[int]:
        names.check_table_name(name)
        if not isinstance(meta, dict):
            raise errors.InvalidArgumentError("a table definition is a dict")
        with self._edit:
            self._check_serving()
            if self.keeper is not None and self.att.catalog.find(name) is None:
                entry = self.keeper.create_table(
                    name, meta, lambda: self.att.catalog.add_table(name, meta))
            else:
                entry = self.att.catalog.add_table(name, meta)
        return [entry.index, entry.uid]

    def op_drop_table(self, name: str) -> None:
        with self._edit:
            self._check_serving()
            entry = self.att.catalog.find(name)
            if entry is None:
                raise errors.TableNotFoundError(f"no table {name!r} in database {self.db!r}")
            lock, _ = self.att.table(entry)
            lock.acquire_write()
            try:
                self.att.catalog.remove_table(entry)
                if self.keeper is not None:
                    self.keeper.drop_table(name)
            finally:
                lock.release_write()
            self.att.forget_table(entry.uid)

    def op_destroy(self) -> None:
        self._teardown("a destroy request")

    def op_checkpoint(self) -> dict:
        if self.keeper is None:
            raise errors.InvalidArgumentError(
                f"database {self.db!r} has no path, so nothing to checkpoint",
                hint="open it with DictDB(name, path=DIR) to make it durable")
        self._check_serving()
        return self.keeper.checkpoint(self._edit)

    def op_backup(self, action: str, config: dict, kind: str | None = None) -> dict:
        """BackupManager's requests (persistence/backup_service.py)."""
        if self.backups is None:
            raise errors.CoordinatorError(f"the coordinator of {self.db!r} is not serving yet")
        self._check_serving()
        return self.backups.handle(action, config, kind)

    def _check_serving(self) -> None:
        if self._stopping:
            raise errors.DatabaseClosedError(f"database {self.db!r} is being destroyed")

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
        if not claim.is_current(self.db, self._claim_fd):
            log.warning("the catalog of %s was removed from outside: exiting", self.db)
            self.destroy_and_exit()
        if self.keeper is not None:
            self.keeper.tick(self._edit)
        if self.backups is not None:
            self.backups.tick()
        if self.sweeper is not None:
            self.sweeper.tick(self._edit)
        with self._edit:
            for entry in self.att.catalog.entries():
                lock, _ = self.att.table(entry)
                pid, ticks = lock.holder()
                if lock.repair_abandoned() and pid and not is_alive(pid, ticks):
                    log.info("pid %d died holding table %s: repaired", pid, entry.name)

    # ------------------------------------------------------------- shutdown
    def _on_sigterm(self, *_: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        self.destroy_and_exit()

    def destroy_and_exit(self) -> None:
        self._teardown("SIGTERM or housekeeping")
        self._exit()

    def _teardown(self, reason: str) -> None:
        """Destroy the database (teardown.py says in what order), once.  When
        the catalog at our name is no longer the one we claimed, it belongs
        to someone else now: only our mapping is marked, nothing unlinked."""
        with self._exiting:
            if self._torn_down:
                return
            if self.keeper is not None and claim.is_current(self.db, self._claim_fd):
                self.keeper.close(self._edit)    # a last snapshot: the directory stays
            self._stopping = True
            edit_free = self._edit.acquire(timeout=EDIT_WAIT_ON_DESTROY)
            try:
                if claim.is_current(self.db, self._claim_fd):
                    log.info("destroying database %s (%s)", self.db, reason)
                    teardown.destroy(self.att)
                    self._remove_socket()
                    _unlink_quietly(names.coordinator_log(self.db))
                else:
                    self.att.catalog.mark_destroyed()
            finally:
                if edit_free:
                    self._edit.release()
            self._torn_down = True

    def _remove_socket(self) -> None:
        """Unlink our socket, unless a newer coordinator has bound that path."""
        if not self._socket_path:
            return
        try:
            if os.lstat(self._socket_path).st_ino == self._socket_ino:
                os.unlink(self._socket_path)
        except FileNotFoundError:
            pass

    def _exit(self) -> None:
        logging.shutdown()
        os._exit(0)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _same_user(conn: socket.socket) -> bool:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", creds)
    return uid == os.geteuid()


class _StartupReport:
    """The one message a spawned coordinator sends back about its start-up."""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd
        if fd is not None and not stat.S_ISFIFO(os.fstat(fd).st_mode):
            self._fd = None

    def send(self, *message: Any) -> None:
        if self._fd is None:
            return
        try:
            os.write(self._fd, msgpack.packb(list(message)))
        except OSError:
            pass                               # the spawner gave up waiting
        finally:
            os.close(self._fd)
            self._fd = None


def run(db: str, private: bool, owner: tuple[int, int], *, report_fd: int | None = None,
        existing_only: bool = False, path: str | None = None,
        durability: str = "everysec") -> int:
    logging.basicConfig(level=os.environ.get("DICTDB_SHM_LOG", "INFO"),
                        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    report = _StartupReport(report_fd)
    try:
        names.check_db_name(db)
        keeper = Keeper(db, os.path.abspath(path), durability_code(durability)) if path else None
        coord = Coordinator(db, private, owner, existing_only=existing_only, keeper=keeper)
    except errors.DictDBError as exc:
        report.send("error", type(exc).__name__, exc.message, exc.hint)
        return 1
    try:
        coord.open_catalog()
        coord.listen()
    except AlreadyServed:
        log.info("another coordinator serves %s", db)
        report.send("served")
        return 0
    except errors.DictDBError as exc:
        log.error("could not start the coordinator of %s: %s", db, exc)
        coord.abandon()
        report.send("error", type(exc).__name__, exc.message, exc.hint)
        return 1
    except Exception as exc:
        log.exception("could not start the coordinator of %s", db)
        coord.abandon()
        report.send("error", "CoordinatorError",
                    f"the coordinator of {db!r} failed to start: {exc!r}", None)
        return 1
    log.info("serving %s as pid %d", db, os.getpid())
    report.send("ok")
    sys.stdout.flush()
    coord.serve_forever()
    return 0
