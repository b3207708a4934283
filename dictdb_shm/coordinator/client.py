"""Reaching a database's coordinator: start it when none runs, send it a request.

Owns: spawning the coordinator process (detached, so a named database
outlives its creator) and reading its start-up report, the client side of
the control channel, destroy when no coordinator runs, and the sweep of
orphaned private databases.  Must never: be called on the data path (get,
insert, select); only for rare operations such as create_table, drop_table
and destroy.

Every step is bounded.  Starting a coordinator waits at most START_TIMEOUT,
and fails at once when the new coordinator reports an error through the pipe
it inherits (a full /dev/shm is a DatabaseFullError within milliseconds).
A request's connect and greeting wait at most CONNECT_TIMEOUT, so a
coordinator that is stopped or hung gives a CoordinatorError within seconds;
its answer waits at most the request's ``timeout``.  When nobody listens
(the coordinator died), ``request`` starts a new one, which repairs what the
dead one left, and asks again.

Every entry point checks the database name first, and refuses a database
whose catalog another user owns: at once, with an OwnershipError.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import stat
import sys
import time
from typing import Any

import msgpack

from dictdb_shm import errors, names
from dictdb_shm.attachment import Attachment
from dictdb_shm.coordinator import claim, protocol, teardown
from dictdb_shm.engine.catalog import Catalog, remove_database_objects
from dictdb_shm.engine.segment import check_owned
from dictdb_shm.procinfo import is_alive

log = logging.getLogger("dictdb_shm.coordinator")

START_TIMEOUT = float(os.environ.get("DICTDB_SHM_START_TIMEOUT", "30"))
REQUEST_TIMEOUT = 60.0
CONNECT_TIMEOUT = 5.0
DESTROY_WAIT = 10.0
_POLL = 0.01
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _NotListening(errors.CoordinatorError):
    """Nobody accepts connections at the coordinator's socket."""


class _Busy(errors.CoordinatorError):
    """The coordinator refused us: too many connections open."""


# ------------------------------------------------------------------ state
def coordinator_running(db: str) -> bool:
    """True while a coordinator holds the database's claim."""
    return claim.held(names.check_db_name(db))


def catalog_exists(db: str) -> bool:
    return os.path.lexists(names.shm_path(names.catalog_segment(db)))


def _check_not_foreign(db: str) -> None:
    """OwnershipError when ``db``'s catalog exists and is not ours."""
    path = names.shm_path(names.catalog_segment(db))
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISREG(st.st_mode) and st.st_uid != os.geteuid():
        raise errors.OwnershipError(
            f"database {db!r} belongs to another user (uid {st.st_uid})",
            hint="use another database name; this one is taken on this machine")
    check_owned(st, path)


# ------------------------------------------------------------------ start
def ensure_running(db: str, *, create: bool, private: bool = False,
                   owner: tuple[int, int] = (0, 0),
                   persist: tuple[str, str] | None = None) -> None:
    """Make sure ``db`` exists and has a coordinator that answers.

    ``create=False`` attaches only: DatabaseNotFoundError when the catalog is
    absent.  A database whose coordinator died is adopted by a new one (with
    the private flag, owner and directory of its catalog header).
    ``persist`` is (directory, durability) for a durable database that a
    new coordinator restores from that directory before anyone sees it.
    """
    names.check_db_name(db)
    _check_not_foreign(db)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if coordinator_running(db) and _wait_answering(db, deadline):
            return
        exists = catalog_exists(db)
        if not create and not exists:
            raise errors.DatabaseNotFoundError(f"no database named {db!r} on this machine")
        if exists:
            private, owner = _header_identity(db, private, owner)
        if _spawn(db, private, owner, existing_only=not create, deadline=deadline,
                  persist=None if exists else persist) == "ok":
            return
        # "served": another coordinator won the claim; wait for it (loop).
        if time.monotonic() > deadline:
            raise errors.CoordinatorError(
                f"the coordinator of {db!r} did not start within {START_TIMEOUT:.0f} s; "
                f"see {names.coordinator_log(db)}")


def _header_identity(db: str, private: bool,
                     owner: tuple[int, int]) -> tuple[bool, tuple[int, int]]:
    try:
        catalog = Catalog.attach(db, require_ready=False, check_tables=False)
    except errors.DatabaseNotFoundError:
        return private, owner
    try:
        if catalog.ready:
            return catalog.private, tuple(catalog.owner())  # type: ignore[return-value]
        return private, owner
    finally:
        catalog.close()


def _wait_answering(db: str, deadline: float) -> bool:
    """Ping until the running coordinator answers: True; False when it is gone.
    CoordinatorError when it accepts connections but does not answer."""
    while True:
        try:
            _ask(db, "ping", [], CONNECT_TIMEOUT)
            return True
        except (_NotListening, _Busy, errors.DatabaseNotFoundError):
            if not coordinator_running(db):
                return False
        if time.monotonic() > deadline:
            raise errors.CoordinatorError(
                f"the coordinator of {db!r} runs but did not start listening within "
                f"{START_TIMEOUT:.0f} s; see {names.coordinator_log(db)}")
        time.sleep(_POLL)


def _open_log(db: str) -> int:
    """The coordinator's log, opened for appending; never through a link."""
    path = names.coordinator_log(db)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW
                     | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise errors.OwnershipError(f"cannot open the coordinator log {path}: "
                                    f"{exc.strerror}") from None
    try:
        check_owned(os.fstat(fd), path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _spawn(db: str, private: bool, owner: tuple[int, int], *, existing_only: bool,
           deadline: float, persist: tuple[str, str] | None = None) -> str:
    """Start ``python -m dictdb_shm.coordinator serve db`` in its own session,
    as a grandchild (nobody's zombie, outlives its creator), and wait for its
    report: "ok" (serving) or "served" (another coordinator was first).
    An error it reports is raised here as the class it names."""
    argv = [sys.executable, "-m", "dictdb_shm.coordinator", "serve", db, "--report-fd", "3"]
    if private:
        argv += ["--private", "--owner", str(owner[0]), str(owner[1])]
    if existing_only:
        argv.append("--existing")
    if persist is not None:
        argv += ["--path", persist[0], "--durability", persist[1]]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
    log_fd = _open_log(db)
    report_r, report_w = os.pipe()
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the forked child
            try:
                os.setsid()
                if os.fork() == 0:
                    null = os.open(os.devnull, os.O_RDONLY)
                    os.dup2(null, 0)
                    os.dup2(log_fd, 1)
                    os.dup2(log_fd, 2)
                    os.dup2(report_w, 3)
                    os.set_inheritable(3, True)
                    os.closerange(4, 65536)
                    os.execve(sys.executable, argv, env)
            finally:
                os._exit(0)
        os.close(report_w)
        report_w = -1
        os.waitpid(pid, 0)
        report = _read_report(db, report_r, deadline)
    finally:
        os.close(log_fd)
        os.close(report_r)
        if report_w >= 0:
            os.close(report_w)
    if report and report[0] in ("ok", "served"):
        return report[0]
    if not catalog_exists(db):      # nothing left to log about
        _unlink_quietly(names.coordinator_log(db))
    if report and report[0] == "error" and len(report) == 4:
        raise error_named(report[1], report[2], report[3])
    raise errors.CoordinatorError(f"the coordinator of {db!r} exited while starting; see "
                                  f"{names.coordinator_log(db)}")


def _read_report(db: str, fd: int, deadline: float) -> list | None:
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise errors.CoordinatorError(
                f"the coordinator of {db!r} did not start within {START_TIMEOUT:.0f} s; "
                f"see {names.coordinator_log(db)}")
        if not select.select([fd], [], [], left)[0]:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    try:
        report = msgpack.unpackb(data) if data else None
    except (ValueError, TypeError):
        return None
    return report if isinstance(report, list) and report else None


def error_named(class_name: Any, message: Any, hint: Any) -> errors.DictDBError:
    """The DictDBError subclass ``class_name`` (else CoordinatorError) with
    ``message`` and ``hint``: how an error crosses the control channel."""
    cls = getattr(errors, str(class_name), None)
    if not (isinstance(cls, type) and issubclass(cls, errors.DictDBError)):
        cls = errors.CoordinatorError
    return cls(str(message), hint=str(hint) if hint else None)


# ---------------------------------------------------------------- request
def request(db: str, op: str, *args: Any, timeout: float = REQUEST_TIMEOUT) -> Any:
    """Send one request to the coordinator of ``db`` and return its answer.

    When no coordinator runs, one is started (it repairs what the dead one
    left) and asked instead.  Errors the coordinator raised come back as the
    same DictDBError class; an unreachable or silent coordinator is a
    CoordinatorError."""
    names.check_db_name(db)
    _check_not_foreign(db)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            return _ask(db, op, list(args), timeout)
        except _Busy:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
        except _NotListening:
            if op == "destroy" or time.monotonic() > deadline:
                raise
            ensure_running(db, create=False)


def _ask(db: str, op: str, args: list, timeout: float) -> Any:
    catalog = Catalog.attach(db, check_tables=False)
    try:
        authkey = catalog.authkey
        path = catalog.socket_path() or names.coordinator_socket(db)
        pid = catalog.coordinator()[0]
    finally:
        catalog.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(CONNECT_TIMEOUT)
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            raise _NotListening(f"no coordinator of {db!r} listens at {path}") from None
        except socket.timeout:
            raise _silent(db, pid, "does not accept connections") from None
        except OSError as exc:
            raise errors.CoordinatorError(f"cannot reach the coordinator of {db!r} at "
                                          f"{path}: {exc.strerror}") from None
        try:
            status, value = protocol.ask(sock, authkey, op, args,
                                         handshake_timeout=CONNECT_TIMEOUT,
                                         reply_timeout=timeout)
        except protocol.ChannelBusy as exc:
            raise _Busy(f"the coordinator of {db!r} refused {op!r}: {exc.reason}") from None
        except protocol.ChannelTimeout as exc:
            raise _silent(db, pid, exc.reason) from None
        except protocol.ChannelError as exc:
            raise errors.CoordinatorError(
                f"lost the coordinator of {db!r} during {op!r}: {exc.reason}") from None
    finally:
        sock.close()
    if status == "ok":
        return value
    if isinstance(value, list) and len(value) == 3:
        raise error_named(*value)
    raise errors.CoordinatorError(f"the coordinator of {db!r} sent a malformed error")


def _silent(db: str, pid: int, what: str) -> errors.CoordinatorError:
    return errors.CoordinatorError(
        f"the coordinator of {db!r} (pid {pid}) {what}",
        hint=f"it may be stopped (SIGSTOP) or overloaded; resume it (kill -CONT {pid}) or "
             f"kill it, and the next call starts a new one; see {names.coordinator_log(db)}")


# ---------------------------------------------------------------- destroy
def destroy(db: str) -> None:
    """Remove ``db`` for everyone.  Works when its coordinator is gone too:
    then this process marks the catalog destroyed and unlinks everything."""
    names.check_db_name(db)
    _check_not_foreign(db)
    sockets = {names.coordinator_socket(db)}
    try:
        catalog = Catalog.attach(db, check_tables=False)
        sockets.add(catalog.socket_path() or names.coordinator_socket(db))
        catalog.close()
    except errors.DictDBError:
        pass
    if coordinator_running(db):
        try:
            request(db, "destroy", timeout=30)
        except errors.DictDBError as exc:
            log.info("the coordinator of %s did not destroy it (%s): doing it here", db, exc)
        else:
            deadline = time.monotonic() + DESTROY_WAIT
            while coordinator_running(db) and time.monotonic() < deadline:
                time.sleep(_POLL)
    if catalog_exists(db):
        _destroy_here(db)
    remove_database_objects(db)
    for path in (*sockets, names.coordinator_log(db)):
        _unlink_quietly(path)


def _destroy_here(db: str) -> None:
    try:
        att = Attachment.get(db)
    except errors.DictDBError:
        # Not complete (its creator died) or holding objects not ours: the
        # flag still goes first.
        try:
            catalog = Catalog.attach(db, require_ready=False, check_tables=False)
        except errors.DictDBError:      # gone, or another layout we cannot mark
            return
        catalog.mark_destroyed()
        catalog.close()
        return
    try:
        teardown.destroy(att)
    finally:
        att.forget()


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def sweep_orphaned_private() -> list[str]:
    """Destroy private databases of ours whose creator and coordinator are both gone.

    A coordinator removes its private database when the creator dies; this
    covers the case where the coordinator was killed too.  Such a database
    has no coordinator holding its claim and a dead owner, so nobody can
    be using it.  Called whenever a new private database is made.  Another
    user's databases, and anything that is not quite a database, are skipped.
    """
    swept = []
    for entry in names.shm_listing():
        if not (entry.startswith("dictdb_p") and entry.endswith(".catalog")):
            continue
        db = entry[len("dictdb_"):-len(".catalog")]
        try:
            names.check_db_name(db)
            _check_not_foreign(db)
            if coordinator_running(db):
                continue
            catalog = Catalog.attach(db, check_tables=False)
        except (errors.DictDBError, OSError):
            continue
        try:
            orphaned = catalog.private and not is_alive(*catalog.owner())
        finally:
            catalog.close()
        if orphaned and not coordinator_running(db):
            try:
                destroy(db)
            except (errors.DictDBError, OSError) as exc:
                log.warning("could not sweep private database %s: %s", db, exc)
                continue
            swept.append(db)
    return swept


def status(db: str) -> dict:
    names.check_db_name(db)
    info: dict[str, Any] = {"name": db, "exists": catalog_exists(db),
                            "coordinator_running": coordinator_running(db)}
    if info["exists"]:
        try:
            _check_not_foreign(db)
            cat = Catalog.attach(db, check_tables=False)
            pid, ticks = cat.coordinator()
            info["coordinator_pid"] = pid if is_alive(pid, ticks) else None
            info["private"] = cat.private
            info["tables"] = [e.name for e in cat.entries()]
            cat.close()
        except errors.DictDBError as exc:
            info["error"] = str(exc)
    return info
