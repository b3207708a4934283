"""The worker processes of parallel queries: one pool per process and database.

Owns: starting worker processes (``multiprocess`` with the spawn context: a
fresh interpreter each, never a fork of this possibly threaded process),
handing them tasks and collecting the answers, noticing a worker that died
(its process sentinel) or did not answer in time, ending a pool (when the
last handle of its database in this process closes, at interpreter exit,
and after any failure, so that the next query starts a sound one), and the
registry of pools.  Must never: read tables or run query parts itself
(worker.py and part.py do), or leave a worker behind: workers exit when
their pipe closes, which happens when this process ends or dies.

One query at a time uses a pool (``lease``): a second query of the same
process and database that comes while the pool is busy runs in its own
process alone (``lease`` returns None), which gives the same results and
cannot deadlock with the table locks the first one holds.

Workers are spawned without the caller's ``__main__`` module: they need
nothing from it, and a script without an ``if __name__ == "__main__"`` guard
would otherwise run again in every worker.  multiprocess names the main
module to import in the preparation data it sends a spawned child
(``spawn.get_preparation_data(process name)``); ``_without_main`` wraps
that function, once, to leave the main module out for processes named as
our workers only.  (Emptying ``sys.modules["__main__"]`` around ``start()``
would do the same, but other threads could see it empty meanwhile.)
"""

from __future__ import annotations

import atexit
import os
import pickle
import threading
import time
from typing import Any, Sequence

from dictdb_shm import attachment
from dictdb_shm.errors import ParallelQueryError, WorkerLostError
from dictdb_shm.parallel import plan
from dictdb_shm.parallel import worker as W

START_TIMEOUT = 60.0       # a worker's interpreter start, imports and attach
ANSWER_TIMEOUT = 600.0     # one part of one query
STOP_TIMEOUT = 2.0         # a stopped worker exits within this, else it is killed

_pools: dict[str, "WorkerPool"] = {}
_pools_lock = threading.Lock()
_start_lock = threading.Lock()
WORKER_NAME = "dictdb_shm query worker"


def _without_main() -> None:
    """Make multiprocess spawn our workers without the main module (see the
    module docstring); other processes are started as before."""
    from multiprocess import spawn
    with _start_lock:
        original = spawn.get_preparation_data
        if getattr(original, "leaves_out_main_for", None) == WORKER_NAME:
            return

        def get_preparation_data(name: str) -> dict:
            data = original(name)
            if name.startswith(WORKER_NAME):
                data.pop("init_main_from_name", None)
                data.pop("init_main_from_path", None)
            return data
        get_preparation_data.leaves_out_main_for = WORKER_NAME  # type: ignore[attr-defined]
        spawn.get_preparation_data = get_preparation_data


class _Worker:
    def __init__(self, process: Any, conn: Any) -> None:
        self.process = process
        self.conn = conn
        self.pid = process.pid
        self.ready = False


class WorkerPool:
    """The worker processes of one database in this process."""

    def __init__(self, db: str) -> None:
        self.db = db
        self.owner = os.getpid()
        self.workers: list[_Worker] = []
        self._busy = threading.Lock()
        self.ended = False
        # The calling process's share of a split, by query kind: learnt from
        # the queries run (plan.rebalanced), since how fast a worker reads
        # relative to the caller depends on the machine and the query.
        self.caller_weight: dict[str, float] = dict(plan.CALLER_WEIGHT)

    def pids(self) -> list[int]:
        return [w.pid for w in self.workers]

    # ------------------------------------------------------------- leasing
    def lease(self, n: int, wait: bool) -> "Lease | None":
        """``n`` ready workers for one query, or None: the pool is busy with
        another query, or (``wait`` False) its workers are still starting."""
        if not self._busy.acquire(blocking=False):
            return None
        try:
            self._grow(n)
            if wait:
                self._wait_ready(n)
            elif not self._poll_ready(n):
                self._busy.release()
                return None
        except BaseException:
            self._busy.release()
            raise
        return Lease(self, self.workers[:n])

    def _grow(self, n: int) -> None:
        import multiprocess                   # only processes that run parallel queries
        ctx = multiprocess.get_context("spawn")
        while len(self.workers) < n:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=W.serve, args=(child, self.db), daemon=True,
                               name=f"{WORKER_NAME} ({self.db})")
            _without_main()
            proc.start()
            child.close()
            self.workers.append(_Worker(proc, parent))

    def _poll_ready(self, n: int) -> bool:
        for w in self.workers[:n]:
            if not w.ready:
                if not w.conn.poll(0):
                    if not w.process.is_alive():
                        raise self._fail(WorkerLostError(
                            f"a worker process (pid {w.pid}) of database {self.db!r} died "
                            "starting"))
                    return False
                self._hello(w)
        return True

    def _wait_ready(self, n: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        for w in self.workers[:n]:
            if not w.ready:
                self._hello(w, deadline)

    def _hello(self, w: _Worker, deadline: float | None = None) -> None:
        kind, value = self._receive(w, deadline)
        if kind != W.READY:
            raise self._fail(value if isinstance(value, BaseException) else ParallelQueryError(
                f"a worker process of database {self.db!r} did not start: {value!r}"))
        w.ready = True

    # ------------------------------------------------------------ messages
    def _receive(self, w: _Worker, deadline: float | None) -> tuple:
        """The next message of ``w``; WorkerLostError when it died first,
        ParallelQueryError past ``deadline``.  Either ends the pool."""
        from multiprocess.connection import wait
        while not w.conn.poll(0):
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise self._fail(ParallelQueryError(
                    f"a worker process (pid {w.pid}) of database {self.db!r} did not answer "
                    f"in time", hint="the pool was ended; run the query again"))
            ready = wait([w.conn, w.process.sentinel], left)
            if w.conn in ready:
                break
            if w.process.sentinel in ready:
                if w.conn.poll(0):
                    break
                w.process.join(0)
                raise self._fail(WorkerLostError(
                    f"worker process {w.pid} of a parallel query on database {self.db!r} "
                    f"died (exit code {w.process.exitcode}) before it answered"))
        try:
            return pickle.loads(w.conn.recv_bytes())
        except (EOFError, OSError):
            raise self._fail(WorkerLostError(
                f"worker process {w.pid} of a parallel query on database {self.db!r} "
                f"closed its pipe before it answered")) from None

    def _fail(self, exc: BaseException) -> BaseException:
        """End the pool (the next query starts a new one); returns ``exc`` to raise."""
        self.end()
        return exc

    # --------------------------------------------------------------- ending
    def end(self) -> None:
        """Stop every worker (a stop message, then a kill for a slow one)."""
        with _pools_lock:
            if _pools.get(self.db) is self:
                del _pools[self.db]
        self.ended = True
        if os.getpid() != self.owner:
            return                    # a forked child: the workers are the parent's
        workers, self.workers = self.workers, []
        for w in workers:
            try:
                w.conn.send_bytes(pickle.dumps(None))
            except (OSError, EOFError):
                pass
        deadline = time.monotonic() + STOP_TIMEOUT
        for w in workers:
            w.process.join(max(0.0, deadline - time.monotonic()))
            if w.process.is_alive():
                w.process.kill()
                w.process.join(STOP_TIMEOUT)
            w.conn.close()


class Lease:
    """Workers of a pool, held for one query."""

    def __init__(self, pool: WorkerPool, workers: Sequence[_Worker]) -> None:
        self.pool = pool
        self.workers = list(workers)
        self._sent: list[_Worker] = []
        self.worker_seconds: list[float] = []     # each answer's time in its worker

    def send(self, tasks: Sequence[Any]) -> None:
        """One task to each of the first ``len(tasks)`` workers."""
        for w, task in zip(self.workers, tasks):
            try:
                w.conn.send_bytes(pickle.dumps(task, pickle.HIGHEST_PROTOCOL))
            except (OSError, EOFError):
                raise self.pool._fail(WorkerLostError(
                    f"worker process {w.pid} of database {self.pool.db!r} is gone"))
            self._sent.append(w)

    def collect(self) -> list[bytes]:
        """The answers of the tasks sent, in order; a worker's failure is
        raised here (a DictDBError as the worker raised it)."""
        deadline = time.monotonic() + ANSWER_TIMEOUT
        out = []
        errors = []
        sent, self._sent = self._sent, []
        self.worker_seconds = []
        for w in sent:
            kind, value = self.pool._receive(w, deadline)
            if kind == W.OK:
                out.append(value[0])
                self.worker_seconds.append(value[1])
            else:
                errors.append(value)
        if errors:
            raise errors[0]
        return out

    def release(self) -> None:
        """Give the workers back.  When answers are still owed (the caller
        failed before collecting them) the pool is ended instead of waited
        for: its workers may still be reading a table this query no longer
        holds, and a new pool is quick to start."""
        try:
            if self._sent:
                self._sent = []
                self.pool.end()
        finally:
            self.pool._busy.release()


def pool_of(db: str) -> WorkerPool:
    """This process's pool for ``db`` (made, not yet started, when missing)."""
    with _pools_lock:
        pool = _pools.get(db)
        if pool is None or pool.owner != os.getpid():
            pool = _pools[db] = WorkerPool(db)
        return pool


def running(db: str) -> WorkerPool | None:
    """This process's pool for ``db`` when it has one (for tests and tools)."""
    with _pools_lock:
        pool = _pools.get(db)
    return pool if pool is not None and pool.owner == os.getpid() else None


def end_pool(db: str) -> None:
    """End this process's pool for ``db``, if any (its last handle closed)."""
    pool = running(db)
    if pool is not None:
        pool.end()


def _end_all() -> None:
    for pool in list(_pools.values()):
        try:
            pool.end()
        except Exception:  # exiting: the workers also exit when their pipes close
            pass


attachment.detach_hooks.append(end_pool)
atexit.register(_end_all)
