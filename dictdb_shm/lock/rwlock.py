"""TableLock: the cross-process reader-writer lock of one table.

Owns: the lock region of a table's catalog slot, the table's two POSIX
semaphores, and each process's bookkeeping of which thread holds what.
Must never: touch records; after taking over from a dead writer it calls the
store's ``recover`` and nothing else.

Design
------
* ``W`` (a posix_ipc semaphore, value 1) is held by a writer for its whole
  write, and by a reader only for the moment it takes a reader slot.  Once a
  writer holds W no new reader gets in, so writers are not starved.
* A read lock is a flag in one of ``READER_SLOTS`` slots (pid, start ticks,
  flag), taken under W and dropped without it.  A writer holding W waits
  until every flag is clear, sleeping on the ``drain`` semaphore, which a
  reader posts when it leaves while a writer waits.
* Holding W for writing also makes the store's ``seq`` odd, which sends the
  lock-free readers of store.py to ``read_lock()``: to them, ``write_lock()``
  excludes readers exactly like a DictDB RWLock.
* Threads: the write lock is owned by one thread and is reentrant for it; a
  thread holding the write lock may also read.  Read locks are per thread and
  reentrant.  A thread holding only a read lock that asks to write gets
  LockUpgradeError (waiting would deadlock).  After ``fork`` the child holds
  nothing.

Liveness (DESIGN.md invariant 4)
--------------------------------
POSIX semaphores are not robust, so holders are recorded: W's holder as
(pid, start ticks, epoch) right after acquiring it, cleared (epoch + 1) right
before releasing it; a reader's slot likewise.  A waiter checks the recorded
holder every ``POLL`` seconds.  A dead W holder is *taken over*: under a
kernel ``lockf`` on the catalog file (released by the kernel if the repairer
dies too, so repairs never stack), the waiter checks the record is unchanged
and writes itself as holder; W's count is never posted twice.  It then runs
the store's undo and carries on as the new holder.  A holder killed between
acquiring W and recording itself leaves no record: W unavailable, no holder,
and the same epoch for ``ORPHAN_GRACE`` seconds is taken over the same way.
Dead readers' flags are cleared by a waiting writer.  With POLL = 0.05 s a dead
holder costs the others about 0.1 s, and ORPHAN_GRACE (1 s) in the rare case.
"""

from __future__ import annotations

import fcntl
import os
import struct
import threading
import time
import weakref
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import posix_ipc

from dictdb_shm.engine import layout as L
from dictdb_shm.errors import LockTimeoutError, LockUpgradeError
from dictdb_shm.procinfo import is_alive, own_identity

POLL = 0.05
ORPHAN_GRACE = 1.0
DEAD_READER_CHECK = 0.1

_HOLDER = L.THREE_U64
_U64 = L.U64
_FLAGS = struct.Struct(f"<{L.READER_SLOTS}Q")
_get_ident = threading.get_ident

_all_locks: "weakref.WeakSet[TableLock]" = weakref.WeakSet()


def _forget_after_fork() -> None:
    for lock in list(_all_locks):
        lock._reset_local()


os.register_at_fork(after_in_child=_forget_after_fork)


class TableLock:
    """Reader-writer lock of one table, shared by every process.

    ``read_lock()`` and ``write_lock()`` are context managers; ``timeout``
    (seconds) bounds every wait and raises LockTimeoutError naming the
    table and the pid seen holding the lock.
    """

    def __init__(self, db: str, table: str, catalog: Any, repair_fd: int, slot_index: int,
                 wsem: posix_ipc.Semaphore, drain: posix_ipc.Semaphore,
                 timeout: float) -> None:
        self.db = db
        self.table = table
        self.timeout = timeout
        self.recover: Callable[[], None] | None = None
        self._cat = catalog
        self._repair_fd = repair_fd
        self._slot_index = slot_index
        slot = L.slot_offset(slot_index)
        self._lbase = slot + L.LOCK_REGION
        self._seq_at = slot + L.STORE_REGION + L.STORE_SEQ
        self._w = wsem
        self._drain = drain
        self._repair_mutex = threading.Lock()
        self._reset_local()
        _all_locks.add(self)

    def _reset_local(self) -> None:
        self._owner: int | None = None
        self._depth = 0
        self._tls = threading.local()
        self._me = own_identity()

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

    # --------------------------------------------------------------- writing
    def acquire_write(self, timeout: float | None = None) -> None:
        me = _get_ident()
        if self._owner == me:
            self._depth += 1
            return
        if getattr(self._tls, "depth", 0):
            raise LockUpgradeError(f"this thread holds a read lock on table {self.table!r}")
        took_over = self._acquire_w(timeout)
        try:
            seq = _U64.unpack_from(self._cat, self._seq_at)[0]
            if not seq & 1:
                _U64.pack_into(self._cat, self._seq_at, seq + 1)
            if took_over and self.recover is not None:
                self.recover()
            if _U64.unpack_from(self._cat, self._lbase + L.LOCK_READER_HWM)[0]:
                deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
                self._wait_for_readers(deadline)
        except BaseException:
            self._end_write()
            raise
        self._owner = me
        self._depth = 1

    def release_write(self) -> None:
        if self._owner != _get_ident():
            raise RuntimeError(f"release_write on table {self.table!r} by a thread that "
                               "does not hold the write lock")
        self._depth -= 1
        if self._depth:
            return
        self._owner = None
        self._end_write()

    def _end_write(self) -> None:
        seq = _U64.unpack_from(self._cat, self._seq_at)[0]
        if seq & 1 and seq != L.SEQ_DROPPED:
            _U64.pack_into(self._cat, self._seq_at, seq + 1)
        self._release_w()

    def _wait_for_readers(self, deadline: float) -> None:
        cat, base = self._cat, self._lbase
        if not any(_FLAGS.unpack_from(cat, base + L.LOCK_READER_FLAGS)):
            return
        _U64.pack_into(cat, base + L.LOCK_WRITER_WAITING, 1)
        try:
            last_check = 0.0
            while any(_FLAGS.unpack_from(cat, base + L.LOCK_READER_FLAGS)):
                now = time.monotonic()
                if now - last_check >= DEAD_READER_CHECK:
                    self.clear_dead_readers()
                    last_check = now
                    continue
                if now > deadline:
                    raise LockTimeoutError(
                        f"timed out waiting for readers of table {self.table!r} to finish",
                        table=self.table, holder_pid=self._first_reader_pid())
                try:
                    self._drain.acquire(0.005)
                except posix_ipc.BusyError:
                    pass
        finally:
            _U64.pack_into(cat, base + L.LOCK_WRITER_WAITING, 0)

    # --------------------------------------------------------------- reading
    def acquire_read(self, timeout: float | None = None) -> None:
        tls = self._tls
        depth = getattr(tls, "depth", 0)
        if depth or self._owner == _get_ident():
            if not depth:
                tls.slot = -1            # reading under our own write lock
            tls.depth = depth + 1
            return
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            took_over = self._acquire_w(max(0.0, deadline - time.monotonic()))
            try:
                if took_over:
                    if self.recover is not None:
                        self.recover()
                    seq = _U64.unpack_from(self._cat, self._seq_at)[0]
                    if seq & 1 and seq != L.SEQ_DROPPED:
                        _U64.pack_into(self._cat, self._seq_at, seq + 1)
                slot = self._claim_reader_slot()
            finally:
                self._release_w()
            if slot >= 0:
                break
            if time.monotonic() > deadline:
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
            raise RuntimeError(f"release_read on table {self.table!r} without a read lock")
        tls.depth = depth - 1
        if depth > 1 or tls.slot < 0:
            return
        cat, base = self._cat, self._lbase
        _U64.pack_into(cat, base + L.LOCK_READER_FLAGS + 8 * tls.slot, 0)
        if _U64.unpack_from(cat, base + L.LOCK_WRITER_WAITING)[0]:
            self._drain.release()

    def _claim_reader_slot(self) -> int:
        """Under W: a free reader slot, flagged as ours, or -1 when all are taken."""
        cat, base = self._cat, self._lbase
        flags = _FLAGS.unpack_from(cat, base + L.LOCK_READER_FLAGS)
        try:
            i = flags.index(0)
        except ValueError:
            self.clear_dead_readers()
            flags = _FLAGS.unpack_from(cat, base + L.LOCK_READER_FLAGS)
            if 0 not in flags:
                return -1
            i = flags.index(0)
        pid, ticks = self._me
        _U64.pack_into(cat, base + L.LOCK_READER_PIDS + 8 * i, pid)
        _U64.pack_into(cat, base + L.LOCK_READER_TICKS + 8 * i, ticks)
        _U64.pack_into(cat, base + L.LOCK_READER_FLAGS + 8 * i, 1)
        if _U64.unpack_from(cat, base + L.LOCK_READER_HWM)[0] <= i:
            _U64.pack_into(cat, base + L.LOCK_READER_HWM, i + 1)
        return i

    def clear_dead_readers(self) -> int:
        """Drop the read locks of dead processes.  Safe without W: only a slot's
        owner ever sets its flag, and a dead owner never will again."""
        cat, base = self._cat, self._lbase
        flags = _FLAGS.unpack_from(cat, base + L.LOCK_READER_FLAGS)
        cleared = 0
        for i, flag in enumerate(flags):
            if flag:
                pid = _U64.unpack_from(cat, base + L.LOCK_READER_PIDS + 8 * i)[0]
                ticks = _U64.unpack_from(cat, base + L.LOCK_READER_TICKS + 8 * i)[0]
                if not is_alive(pid, ticks):
                    _U64.pack_into(cat, base + L.LOCK_READER_FLAGS + 8 * i, 0)
                    cleared += 1
        return cleared

    def _first_reader_pid(self) -> int | None:
        cat, base = self._cat, self._lbase
        for i, flag in enumerate(_FLAGS.unpack_from(cat, base + L.LOCK_READER_FLAGS)):
            if flag:
                return _U64.unpack_from(cat, base + L.LOCK_READER_PIDS + 8 * i)[0]
        return None

    # ------------------------------------------------------------ W and repair
    def _acquire_w(self, timeout: float | None) -> bool:
        """Take W within ``timeout`` seconds (None: the lock's own), recording
        ourselves as holder.  True when taken over from a dead holder (the
        caller must then run the store's undo)."""
        took_over = False
        try:
            self._w.acquire(0)
        except posix_ipc.BusyError:
            deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
            took_over = self._wait_w(deadline)
        if not took_over:
            epoch = _HOLDER.unpack_from(self._cat, self._lbase)[2]
            pid, ticks = self._me
            _HOLDER.pack_into(self._cat, self._lbase, pid, ticks, epoch + 1)
        return took_over

    def _wait_w(self, deadline: float) -> bool:
        unowned_epoch = None
        unowned_since = 0.0
        while True:
            try:
                self._w.acquire(POLL)
                return False
            except posix_ipc.BusyError:
                pass
            pid, ticks, epoch = _HOLDER.unpack_from(self._cat, self._lbase)
            now = time.monotonic()
            if pid:
                unowned_epoch = None
                if not is_alive(pid, ticks) and self._take_over(pid, ticks, epoch):
                    return True
            elif unowned_epoch != epoch:
                unowned_epoch, unowned_since = epoch, now
            elif now - unowned_since >= ORPHAN_GRACE and self._take_over(0, 0, epoch):
                return True
            if now > deadline:
                raise LockTimeoutError(
                    f"timed out waiting for the lock of table {self.table!r}"
                    + (f" held by pid {pid}" if pid else ""),
                    table=self.table, holder_pid=pid or None)

    def _take_over(self, pid: int, ticks: int, epoch: int) -> bool:
        """Become W's holder in place of a dead one, if nobody did it first."""
        with self._repair_mutex:
            fcntl.lockf(self._repair_fd, fcntl.LOCK_EX, 1, self._slot_index)
            try:
                if _HOLDER.unpack_from(self._cat, self._lbase) != (pid, ticks, epoch):
                    return False
                if self._w.value != 0:
                    return False
                me, my_ticks = self._me
                _HOLDER.pack_into(self._cat, self._lbase, me, my_ticks, epoch + 1)
                return True
            finally:
                fcntl.lockf(self._repair_fd, fcntl.LOCK_UN, 1, self._slot_index)

    def _release_w(self) -> None:
        epoch = _HOLDER.unpack_from(self._cat, self._lbase)[2]
        _HOLDER.pack_into(self._cat, self._lbase, 0, 0, epoch + 1)
        self._w.release()

    def holder(self) -> tuple[int, int]:
        """(pid, start ticks) recorded as W's holder, (0, 0) when free."""
        pid, ticks, _ = _HOLDER.unpack_from(self._cat, self._lbase)
        return pid, ticks

    def __repr__(self) -> str:
        return f"<TableLock {self.db}/{self.table}>"
