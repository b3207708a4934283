"""The peers dictdb_shm is measured against, set up one way for every
benchmark: a plain dict, ``multiprocessing.Manager().dict()``, LMDB (py-lmdb),
Redis (a redis-server this module starts on 127.0.0.1 and stops), Memcached
(likewise, with pymemcache), and sqlite3 in memory.  A missing server is
installed with Debian's package (``ensure_apt``) when this runs as root.

It owns how each peer is opened, loaded and read, so that every script
measures the same thing under the same name: LMDB keys are 8-byte big-endian
ints and values msgpack bytes, with no fsync; Redis values are msgpack bytes;
sqlite3 runs in autocommit mode with loads in one explicit transaction.  It
must never time anything (the scripts do, with harness.py) and never leave a
server, a manager or an environment open: every opener registers its
teardown with the caller's harness.Cleanup, or is a context manager.

Adding a peer: an opener ``start_x(cleanup, ...)`` returning the handle (or
None, logged, when the peer is not installed), and the op closures a script
times (``x_get(handle)``, ``x_put(handle)``), so that setup is never
written twice.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import time
from typing import Any, Callable, Iterable, Sequence

import lmdb
import msgpack

from harness import BenchError, Cleanup, log

_LMDB_KEY = struct.Struct(">Q")          # LMDB keys: 8-byte big-endian unsigned ints
lmdb_key = _LMDB_KEY.pack
REDIS_MSET_KEYS = 10_000                 # keys per MSET call of a bulk load
MANAGER_UPDATE_ROWS = 50_000             # rows per update() call loading a Manager dict


def versions() -> dict[str, str]:
    """Versions of the peers' libraries (redis-server's comes from the server)."""
    return {"py-lmdb": lmdb.__version__, "LMDB": ".".join(map(str, lmdb.version())),
            "msgpack": ".".join(map(str, msgpack.version)), "sqlite": sqlite3.sqlite_version}


# -------------------------------------------------------------------- LMDB
def open_lmdb_writer(path: str, rows: int = 0) -> Any:
    """A writable env with room for ``rows`` small rows; ``sync=False,
    metasync=False``: no fsync, as fair to RAM-only shared memory."""
    return lmdb.open(path, map_size=max(1 << 30, rows * 2048), sync=False, metasync=False,
                     max_readers=64)


def open_lmdb_reader(path: str) -> Any:
    """A read-only env, opened in the reading process (never inherited)."""
    return lmdb.open(path, readonly=True, lock=True, max_readers=64, readahead=False)


def lmdb_get(env: Any) -> Callable[[int], Any]:
    """A point read: read txn + get + ``msgpack.unpackb``."""
    begin, unpackb = env.begin, msgpack.unpackb

    def get(k: int) -> Any:
        with begin() as txn:
            return unpackb(txn.get(lmdb_key(k)))
    return get


def lmdb_put(env: Any) -> Callable[[dict], None]:
    """A single-row insert: one write txn per put of the packed row."""
    begin, packb = env.begin, msgpack.packb

    def put(row: dict) -> None:
        with begin(write=True) as txn:
            txn.put(lmdb_key(row["id"]), packb(row))
    return put


def lmdb_load(env: Any, rows: Iterable[dict]) -> None:
    """All ``rows`` in one write transaction."""
    packb = msgpack.packb
    with env.begin(write=True) as txn:
        put = txn.put
        for r in rows:
            put(lmdb_key(r["id"]), packb(r))


# ------------------------------------------------------------------- Redis
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """preexec_fn: SIGTERM the child if the benchmark dies (Linux prctl)."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class RedisServer:
    """A redis-server on 127.0.0.1:<free port>, with no persistence."""

    def __init__(self, proc: subprocess.Popen, port: int) -> None:
        self.proc: subprocess.Popen | None = proc
        self.port = port

    def client(self, db: int = 0) -> Any:
        import redis
        return redis.Redis(host="127.0.0.1", port=self.port, db=db, socket_timeout=30)

    def version(self) -> str:
        c = self.client()
        try:
            return c.info("server").get("redis_version", "?")
        finally:
            c.close()

    def stop(self) -> None:
        p, self.proc = self.proc, None
        _stop_process(p)


def ensure_apt(binary: str, package: str) -> str | None:
    """The path of ``binary``, installing Debian's ``package`` with apt-get
    first when it is missing (as root only; the package lists are updated
    once if the install fails without them); None, logged, when it stays
    missing."""
    exe = shutil.which(binary)
    if exe is not None:
        return exe
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        log(f"{binary} not found and cannot be installed here "
            f"(as root: apt-get install {package})")
        return None
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = [apt, "install", "-y", "-q", "--no-install-recommends", package]
    log(f"{binary} not found: apt-get install {package}")
    for step in ([install], [[apt, "update", "-q"], install]):
        for cmd in step:
            done = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  timeout=600)
        if done.returncode == 0 and shutil.which(binary):
            return shutil.which(binary)
    log(f"apt-get install {package} failed: {done.stderr.decode(errors='replace')[-300:]}")
    return None


def _wait_until_up(proc: subprocess.Popen, answers: Callable[[], bool], what: str,
                   logpath: str, timeout: float) -> None:
    """Poll ``answers()`` until it is True; BenchError if ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while not answers():
        if proc.poll() is not None:
            raise BenchError(f"{what} exited with {proc.returncode}; see {logpath}")
        if time.monotonic() > deadline:
            raise BenchError(f"{what} did not answer within {timeout} s; see {logpath}")
        time.sleep(0.05)


def _start_server(cmd: Sequence[str], logpath: str) -> subprocess.Popen:
    with open(logpath, "wb") as logf:
        # Own session: a Ctrl-C must not stop it before we are done with it;
        # its stop() ends it, and so does our death (PDEATHSIG).
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=_die_with_parent)


def _stop_process(p: subprocess.Popen | None) -> None:
    if p is None or p.poll() is not None:
        return
    p.terminate()
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(timeout=10)


def start_redis(cleanup: Cleanup, workdir: str, timeout: float = 15.0,
                extra: Sequence[str] = ()) -> RedisServer | None:
    """Start redis-server (its log in ``workdir``) and wait for PING; None,
    logged, when the binary (after ``ensure_apt``) or the redis package is
    missing.  ``extra`` settings come last and win (``("--appendonly",
    "yes")`` for an AOF peer)."""
    exe = ensure_apt("redis-server", "redis-server")
    if exe is None:
        log("skipped Redis: no redis-server")
        return None
    try:
        import redis
    except ImportError:
        log("skipped Redis: the redis Python package is missing (pip install redis)")
        return None
    port = free_port()
    logpath = os.path.join(workdir, "redis.log")
    proc = _start_server(
        [exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
         "--appendonly", "no", "--dir", workdir, "--protected-mode", "yes",
         "--daemonize", "no", *extra], logpath)
    server = RedisServer(proc, port)
    cleanup.add(server.stop, "redis-server")
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.exceptions.ConnectionError:
            return False
    try:
        _wait_until_up(proc, answers, "redis-server", logpath, timeout)
    finally:
        client.close()
    return server


def redis_client(port: int, db: int = 0) -> Any:
    """A client of the server on ``port``, in any process (a worker gets the port)."""
    import redis
    return redis.Redis(host="127.0.0.1", port=port, db=db, socket_timeout=30)


def redis_get(client: Any) -> Callable[[int], Any]:
    """A point read: ``GET`` + ``msgpack.unpackb``."""
    rget, unpackb = client.get, msgpack.unpackb

    def get(k: int) -> Any:
        return unpackb(rget(k))
    return get


def redis_set(client: Any) -> Callable[[dict], None]:
    """A single-row insert: ``SET`` of the packed row."""
    rset, packb = client.set, msgpack.packb

    def put(row: dict) -> None:
        rset(row["id"], packb(row))
    return put


def redis_load(client: Any, rows: Sequence[dict]) -> None:
    """``MSET`` of REDIS_MSET_KEYS packed rows a call."""
    packb = msgpack.packb
    for start in range(0, len(rows), REDIS_MSET_KEYS):
        client.mset({r["id"]: packb(r) for r in rows[start:start + REDIS_MSET_KEYS]})


# --------------------------------------------------------------- Memcached
class MemcachedServer:
    """A memcached on 127.0.0.1:<free port> (no UDP), 64 MiB of memory."""

    def __init__(self, proc: subprocess.Popen, port: int) -> None:
        self.proc: subprocess.Popen | None = proc
        self.port = port

    def version(self) -> str:
        c = memcached_client(self.port)
        try:
            return c.version().decode()
        finally:
            c.close()

    def stop(self) -> None:
        p, self.proc = self.proc, None
        _stop_process(p)


def start_memcached(cleanup: Cleanup, workdir: str,
                    timeout: float = 15.0) -> MemcachedServer | None:
    """Start memcached (its log in ``workdir``) and wait until it answers
    ``version``; None, logged, when the binary (after ``ensure_apt``) or the
    pymemcache package is missing."""
    exe = ensure_apt("memcached", "memcached")
    if exe is None:
        log("skipped Memcached: no memcached")
        return None
    try:
        import pymemcache  # noqa: F401
    except ImportError:
        log("skipped Memcached: the pymemcache package is missing (pip install pymemcache)")
        return None
    port = free_port()
    logpath = os.path.join(workdir, "memcached.log")
    user = ["-u", "nobody"] if os.geteuid() == 0 else []      # it refuses to run as root
    proc = _start_server([exe, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "64",
                          *user], logpath)
    server = MemcachedServer(proc, port)
    cleanup.add(server.stop, "memcached")

    def answers() -> bool:
        try:
            c = memcached_client(port, timeout=2)
            try:
                return bool(c.version())
            finally:
                c.close()
        except OSError:
            return False
    _wait_until_up(proc, answers, "memcached", logpath, timeout)
    return server


def memcached_client(port: int, timeout: float = 30) -> Any:
    """A pymemcache client of the server on ``port``, waiting for every reply
    (``default_noreply=False``: a set returns once the server stored it, as
    with the other peers)."""
    from pymemcache.client.base import Client
    return Client(("127.0.0.1", port), connect_timeout=timeout, timeout=timeout,
                  default_noreply=False, no_delay=True)


# ---------------------------------------------------------------- Manager
def start_manager(cleanup: Cleanup, ctx: Any) -> Any:
    """A ``multiprocessing`` Manager (its own server process), shut down in cleanup."""
    manager = ctx.Manager()
    cleanup.add(manager.shutdown, "the Manager")
    return manager


def manager_load(d: Any, rows: Sequence[dict]) -> None:
    """Rows into a Manager dict by pk, MANAGER_UPDATE_ROWS per proxy call."""
    for start in range(0, len(rows), MANAGER_UPDATE_ROWS):
        d.update({r["id"]: r for r in rows[start:start + MANAGER_UPDATE_ROWS]})


def dict_put(d: Any) -> Callable[[dict], None]:
    """A single-row insert ``d[k] = row`` into a plain or a Manager dict."""
    def put(row: dict) -> None:
        d[row["id"]] = row
    return put


# ----------------------------------------------------------------- sqlite3
def sqlite_memory() -> sqlite3.Connection:
    """An in-memory database in autocommit mode: each statement is its own
    transaction unless a load opens one (``sqlite_load``)."""
    return sqlite3.connect(":memory:", isolation_level=None)


def sqlite_create(con: sqlite3.Connection, table: str,
                  columns: Sequence[tuple[str, str]]) -> str:
    """CREATE TABLE with ``columns`` (name, SQL type; the first is the
    primary key); returns the INSERT statement of a row dict."""
    cols = [f"{n} {t}" for n, t in columns]
    cols[0] += " PRIMARY KEY"
    con.execute(f"CREATE TABLE {table} ({', '.join(cols)})")
    return (f"INSERT INTO {table} VALUES "
            f"({', '.join(':' + n for n, _t in columns)})")


def sqlite_load(con: sqlite3.Connection, insert_sql: str, rows: Iterable[dict]) -> None:
    """``executemany`` of the row dicts (named parameters) in one transaction."""
    con.execute("BEGIN")
    con.executemany(insert_sql, rows)
    con.execute("COMMIT")
