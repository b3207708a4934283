"""TableLock: the cross-process reader-writer lock of one table.

Owns: the lock region of a table's catalog slot (the table's mutex, the
writer record, the reader slots), the table's ``drain`` semaphore, and each
process's bookkeeping of which thread holds what.  Must never: touch
records; after a holder died it calls the store's ``recover`` and nothing
else.

Design
------
* **Ownership is known to the kernel.**  The table's mutex is a robust,
  process-shared pthread mutex in the lock region (robust_mutex.py).  The
  kernel reports its holder's death to the next locker (EOWNERDEAD), and
  nothing else ever frees it.  So there is no window in which the table is
  held but nobody can prove by whom: a live process, however long it is
  paused (SIGSTOP, swap, a long GC), is never taken over, and two writers
  can never hold a table at once.  Uncontended, taking and dropping it costs
  no system call.
* **Holder record.**  Right after taking the mutex a writer records itself
  (pid, start ticks) in the lock region and clears the record right before
  unlocking.  It is never proof of ownership; it names the pid in
  LockTimeoutError and tells housekeeping a dead writer may have left a
  table half-written.  Whoever takes the mutex and finds a record left
  (only a writer that died holding the mutex leaves one) runs the store's
  undo first.  Nothing here counts holders, so no count can pass one.
* **Readers** take the mutex only for the moment they claim one of
  ``READER_SLOTS`` flags (pid, start ticks, flag), and drop the flag without
  it.  A writer holding the mutex waits until every flag is clear, sleeping
  on the ``drain`` semaphore that a leaving reader posts, so once a writer
  holds the table no new reader gets in: writers are not starved.  Flags of
  dead readers are cleared only under the mutex (claims happen under it
  too, so a slot being re-claimed is never cleared).
* **The store's seq.**  Holding the table for writing makes the store's
  ``seq`` odd, which sends lock-free readers (store.py) to ``read_lock()``.
* **Stale handles.**  Under the mutex, before touching anything else in the
  slot, a handle checks the slot still holds its table (``uid``).  A handle
  of a dropped table raises TableNotFoundError, and one of a destroyed
  database DatabaseClosedError, having changed nothing.
* **Threads.**  The mutex belongs to a thread, so threads of one process
  exclude each other through it too.  The write lock is owned by one thread
  and is reentrant for it; that thread may also read.  Read locks are per
  thread and reentrant.  A thread holding only a read lock that asks to
  write gets LockUpgradeError (waiting would deadlock).
* **Fork.**  A child holds nothing: the mutex records its owner's thread id,
  which no thread of the child has, and the child's bookkeeping is reset
  (its holder identity becomes its own pid, so a dead child's locks are
  repaired like anyone's).  When the forking thread held this table's lock,
  the child is running code its parent meant to be inside that critical
  section, which the child cannot be: until the child has left those
  ``with`` blocks (their releases are no-ops in the child), ``write_lock()``
  and every write call raise ForkedLockError, and so does ``read_lock()``
  while the parent still holds the table for writing (waiting for it could
  deadlock a parent that waits for its child).  Lock-free reads go on.
* **Shared words** are read and written through one ``"Q"`` view of the
  catalog (engine/layout.py): ``struct.pack_into`` zero-fills before it
  writes, which a reader or a crash could see.

Liveness: a dead writer's mutex passes to the next waiter as the writer's
thread dies (the kernel walks its list of held robust mutexes then); that
waiter runs undo and goes on.  A dead reader's flag is cleared by the writer
waiting for it within ``DEAD_READER_CHECK`` seconds.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import posix_ipc

from dictdb_shm.engine import layout as L
from dictdb_shm.lock import robust_mutex
from dictdb_shm.lock.robust_mutex import BUSY, SharedMutex
from dictdb_shm.errors import (DatabaseClosedError, ForkedLockError, LockTimeoutError,
                               LockUpgradeError, TableNotFoundError)
from dictdb_shm.procinfo import is_alive, own_identity

POLL = 0.05                 # how often a reader retries when all slots are taken
DEAD_READER_CHECK = 0.1
DRAIN_POLL = 0.005

_SLOTS = L.READER_SLOTS
_get_ident = threading.get_ident
_monotonic = time.monotonic

# Test-only: point name ("mutex_taken", "write_recorded") -> callable run
# there.  Empty in normal use; tests/workers.py fills it to hold a process
# at an exact point.  (Rare paths use crashpoints.py's environment switch;
# this one is on every write, so it is a dict tested for emptiness.)
hooks: dict[str, Callable[[], None]] = {}

_all_locks: "weakref.WeakSet[TableLock]" = weakref.WeakSet()


def init_lock_region(buf: Any, slot_base: int) -> None:
    """Set up a new table's lock region (zeroed by the caller): its mutex."""
    robust_mutex.initialize(buf, slot_base + L.LOCK_REGION + L.LOCK_MUTEX)


def _forget_after_fork() -> None:
    forking_thread = _get_ident()        # the child's one thread is the one that forked
    for lock in list(_all_locks):
        lock._after_fork(forking_thread)


os.register_at_fork(after_in_child=_forget_after_fork)


class TableLock:
    """Reader-writer lock of one table, shared by every process.

    ``read_lock()`` and ``write_lock()`` are context managers; ``timeout``
    (seconds) bounds every wait and raises LockTimeoutError naming the
    table and the pid seen holding the lock.
    """

    def __init__(self, db: str, table: str, uid: int, catalog: Any, slot_index: int,
                 drain: posix_ipc.Semaphore, timeout: float) -> None:
        self.db = db
        self.table = table
        self.uid = uid
        self.timeout = timeout
        self.recover: Callable[[], None] | None = None
        # Every shared word is read and written through one "Q" view (one
        # 8-byte load or store each: see engine/layout.py).
        self._w = L.words(catalog)
        slot = L.slot_offset(slot_index)
        lock_w = (slot + L.LOCK_REGION) // L.WORD
        self._pid_w = lock_w + L.LOCK_WRITER // L.WORD
        self._ticks_w = self._pid_w + 1
        self._waiting_w = lock_w + L.LOCK_WRITER_WAITING // L.WORD
        self._hwm_w = lock_w + L.LOCK_READER_HWM // L.WORD
        self._flags_w = lock_w + L.LOCK_READER_FLAGS // L.WORD
        self._rpid_w = lock_w + L.LOCK_READER_PIDS // L.WORD
        self._rticks_w = lock_w + L.LOCK_READER_TICKS // L.WORD
        self._seq_w = (slot + L.STORE_REGION + L.STORE_SEQ) // L.WORD
        self._uid_w = (slot + L.STORE_REGION + L.STORE_UID) // L.WORD
        self._mutex = SharedMutex(catalog, slot + L.LOCK_REGION + L.LOCK_MUTEX,
                                  f"the lock of table {table!r}")
        self._drain = drain
        self._reset_local()
        _all_locks.add(self)

    def _reset_local(self) -> None:
        self._owner: int | None = None
        self._depth = 0
        self._tls = threading.local()
        self._me = own_identity()
        # Fork bookkeeping (see "Fork" above): how deep the forking thread
        # held this lock for writing and for reading, and who it was.
        self._inherited = 0
        self._inherited_write = 0
        self._inherited_read = 0
        self._inherited_by = 0                  # the thread still inside those blocks
        self._parent: tuple[int, int] = (0, 0)  # the process whose write we must not wait for

    def _after_fork(self, forking_thread: int) -> None:
        """In a forked child: hold nothing, and remember what the parent's
        forking thread held (its blocks still have to be left here), plus
        what that thread had inherited itself (a child forked by a child)."""
        write = self._depth if self._owner == forking_thread else 0
        read = getattr(self._tls, "depth", 0)
        writer = self._me if write else self._parent
        if self._inherited and self._inherited_by == forking_thread:
            write += self._inherited_write
            read += self._inherited_read
        me = self._me
        self._reset_local()
        if write or read:
            self._inherited_write, self._inherited_read = write, read
            self._inherited = write + read
            self._inherited_by = forking_thread
            self._parent = writer if write else me

    # ------------------------------------------------------------ public API
    @contextmanager
    def read_lock(self, timeout: float | None = None) -> Iterator[None]:
        self.acquire_read(timeout)
        try:
            yield
        finally:
            self.release_read()

    @contextmanager
    def write_lock(self, timeout: float | None = None) -> Iterator[None]:
        self.acquire_write(timeout)
        try:
            yield
        finally:
            self.release_write()

    def held_by_me(self) -> bool:
        return self._owner == _get_ident() or getattr(self._tls, "depth", 0) > 0

    def write_held_by_me(self) -> bool:
        return self._owner == _get_ident()

    def holder(self) -> tuple[int, int]:
        """(pid, start ticks) recorded as the writer, (0, 0) when none."""
        w = self._w
        return w[self._pid_w], w[self._ticks_w]

    # --------------------------------------------------------------- writing
    def acquire_write(self, timeout: float | None = None) -> None:
        """Hot path (every write call): uncontended, one C call to lock."""
        me = _get_ident()
        if self._owner == me:
            self._depth += 1
            return
        if getattr(self._tls, "depth", 0):
            raise LockUpgradeError(f"this thread holds a read lock on table {self.table!r}")
        if self._inherited:
            raise self._forked_error("write to")
        if timeout is None:
            timeout = self.timeout
        self._enter(timeout)
        try:
            w = self._w
            dead_writer = w[self._pid_w]
            w[self._ticks_w] = self._me[1]
            w[self._pid_w] = self._me[0]
            if hooks:
                _run_hook("write_recorded")
            seq = w[self._seq_w]
            if not seq & 1:
                w[self._seq_w] = seq + 1
            if dead_writer and self.recover is not None:
                self.recover()
            if w[self._hwm_w]:
                self._wait_for_readers(_monotonic() + timeout)
        except BaseException:
            self._end_write()
            raise
        self._owner = me
        self._depth = 1

    def release_write(self) -> None:
        if self._owner != _get_ident():
            if self._inherited_write and self._owner is None:
                self._leave_inherited(write=True)     # a block entered before the fork
                return
            raise RuntimeError(f"release_write on table {self.table!r} by a thread that "
                               "does not hold the write lock")
        self._depth -= 1
        if self._depth:
            return
        self._owner = None
        self._end_write()

    def _end_write(self) -> None:
        w = self._w
        seq = w[self._seq_w]
        if seq & 1 and seq != L.SEQ_DROPPED:
            w[self._seq_w] = seq + 1
        w[self._pid_w] = 0
        w[self._ticks_w] = 0
        self._mutex.release()

    def _end_seq(self) -> None:
        """Make the store's seq even again: the table is consistent."""
        w = self._w
        seq = w[self._seq_w]
        if seq & 1 and seq != L.SEQ_DROPPED:
            w[self._seq_w] = seq + 1

    def _flags(self) -> list[int]:
        return self._w[self._flags_w:self._flags_w + _SLOTS].tolist()

    def _wait_for_readers(self, deadline: float) -> None:
        w = self._w
        if not any(self._flags()):
            return
        w[self._waiting_w] = 1
        try:
            last_check = 0.0
            while any(self._flags()):
                now = _monotonic()
                if now - last_check >= DEAD_READER_CHECK:
                    self._clear_dead_readers()
                    last_check = now
                    continue
                if now > deadline:
                    raise LockTimeoutError(
                        f"timed out waiting for readers of table {self.table!r} to finish",
                        table=self.table, holder_pid=self._first_reader_pid())
                try:
                    self._drain.acquire(DRAIN_POLL)
                except posix_ipc.BusyError:
                    pass
        finally:
            w[self._waiting_w] = 0

    # --------------------------------------------------------------- reading
    def acquire_read(self, timeout: float | None = None) -> None:
        tls = self._tls
        depth = getattr(tls, "depth", 0)
        if depth or self._owner == _get_ident():
            if not depth:
                tls.slot = -1            # reading under our own write lock
            tls.depth = depth + 1
            return
        if self._inherited_write and self._parent_still_writes():
            raise self._forked_error("read")
        deadline = _monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            self._enter(max(0.0, deadline - _monotonic()))
            try:
                self._repair_if_writer_died()
                slot = self._claim_reader_slot()
            finally:
                self._mutex.release()
            if slot >= 0:
                break
            if _monotonic() > deadline:
                raise LockTimeoutError(
                    f"all {L.READER_SLOTS} reader slots of table {self.table!r} are taken",
                    table=self.table, holder_pid=self._first_reader_pid(),
                    hint="fewer threads may hold read_lock() at once; release them sooner")
            time.sleep(POLL)
        tls.slot = slot
        tls.depth = 1

    def release_read(self) -> None:
        tls = self._tls
        depth = getattr(tls, "depth", 0)
        if not depth:
            if self._inherited_read:
                self._leave_inherited(write=False)    # a block entered before the fork
                return
            raise RuntimeError(f"release_read on table {self.table!r} without a read lock")
        tls.depth = depth - 1
        if depth > 1 or tls.slot < 0:
            return
        w = self._w
        w[self._flags_w + tls.slot] = 0
        if w[self._waiting_w]:
            self._drain.release()

    def _claim_reader_slot(self) -> int:
        """Under the table's mutex: a free reader slot, flagged as ours, or -1."""
        w = self._w
        flags = self._flags()
        try:
            i = flags.index(0)
        except ValueError:
            self._clear_dead_readers()
            flags = self._flags()
            if 0 not in flags:
                return -1
            i = flags.index(0)
        pid, ticks = self._me
        w[self._rpid_w + i] = pid
        w[self._rticks_w + i] = ticks
        w[self._flags_w + i] = 1
        if w[self._hwm_w] <= i:
            w[self._hwm_w] = i + 1
        return i

    def _clear_dead_readers(self) -> int:
        """Under the table's mutex: drop the read locks of dead processes."""
        w = self._w
        cleared = 0
        for i, flag in enumerate(self._flags()):
            if flag and not is_alive(w[self._rpid_w + i], w[self._rticks_w + i]):
                w[self._flags_w + i] = 0
                cleared += 1
        return cleared

    def _first_reader_pid(self) -> int | None:
        for i, flag in enumerate(self._flags()):
            if flag:
                return self._w[self._rpid_w + i]
        return None

    # ------------------------------------------------------------------ fork
    def _leave_inherited(self, write: bool) -> None:
        if write:
            self._inherited_write -= 1
        else:
            self._inherited_read -= 1
        self._inherited -= 1

    def _parent_still_writes(self) -> bool:
        pid, ticks = self.holder()
        return (pid, ticks) == self._parent and is_alive(pid, ticks)

    def _forked_error(self, what: str) -> ForkedLockError:
        held = "write" if self._inherited_write else "read"
        return ForkedLockError(
            f"cannot {what} table {self.table!r} in this process (pid {os.getpid()}): it was "
            f"forked while its parent (pid {self._parent[0]}) held the table's {held} lock, "
            "and the code that runs here is still inside that lock's block, which this "
            "process does not hold", table=self.table, holder_pid=self._parent[0])

    # ----------------------------------------------------- repair when idle
    def repair_abandoned(self) -> bool:
        """Clean up after dead holders if the table is free right now: clear
        dead readers' flags, and undo a dead writer's unfinished call.  Never
        waits; False when the table is busy (a live holder repairs nothing).
        For housekeeping, so a table nobody waits on does not stay half-written."""
        if not self._abandoned() or self.held_by_me():
            return False
        got = self._mutex.try_acquire()
        if got == BUSY:
            return False
        try:
            self._check_still_mine()
            self._repair_if_writer_died()
            self._clear_dead_readers()
        finally:
            self._mutex.release()
        return True

    def _abandoned(self) -> bool:
        """Without the lock, a hint: does a dead process hold anything here?"""
        pid, ticks = self.holder()
        if pid and not is_alive(pid, ticks):
            return True
        w = self._w
        return any(flag and not is_alive(w[self._rpid_w + i], w[self._rticks_w + i])
                   for i, flag in enumerate(self._flags()))

    def _repair_if_writer_died(self) -> None:
        """Under the table's mutex: a writer record left behind means its writer
        died inside a write call; undo it and end its write."""
        w = self._w
        if not w[self._pid_w]:
            return
        if self.recover is not None:
            self.recover()
        self._end_seq()
        w[self._pid_w] = 0
        w[self._ticks_w] = 0

    # ------------------------------------------------------------ the mutex
    def _enter(self, timeout: float) -> None:
        """Take the table's mutex within ``timeout`` seconds; raise (not
        holding it) if the slot no longer holds our table.  The slot is
        checked before too: a dropped table's slot may hold another table,
        whose mutex a stale handle must not even wait for."""
        if self._w[self._uid_w] != self.uid:
            self._check_still_mine()
        if self._mutex.acquire(timeout) == BUSY:
            raise self._timeout_error()
        if hooks:
            _run_hook("mutex_taken")
        if self._w[self._uid_w] != self.uid:
            self._mutex.release()
            self._check_still_mine()

    def _check_still_mine(self) -> None:
        """The slot must still hold this table."""
        if self._w[self._uid_w] == self.uid:
            return
        if self._w[L.DESTROYED_AT // L.WORD]:
            raise DatabaseClosedError(f"database {self.db!r} was destroyed")
        raise TableNotFoundError(f"table {self.table!r} was dropped")

    def _timeout_error(self) -> LockTimeoutError:
        pid = self.holder()[0]
        return LockTimeoutError(
            f"timed out waiting for the lock of table {self.table!r}"
            + (f" held by pid {pid}" if pid else ""),
            table=self.table, holder_pid=pid or None)

    def __repr__(self) -> str:
        return f"<TableLock {self.db}/{self.table}>"


def _run_hook(point: str) -> None:
    hook = hooks.get(point)
    if hook is not None:
        hook()
