"""SharedMutex: a robust, process-shared pthread mutex inside shared memory.

Owns: initialising a mutex in a shared mapping, and locking it with a
deadline, through glibc's pthread functions (ctypes).  Must never: decide
what the mutex protects (rwlock.py does) or touch the memory around it.

Why this primitive: the kernel knows who holds it.  glibc keeps each
thread's held robust mutexes on a list the kernel walks when the thread
dies; the next locker then gets EOWNERDEAD and owns the mutex.  A holder that
is merely paused (SIGSTOP, swap, a long GC) keeps it, so nobody is ever
"taken over" on a guess.  An uncontended lock and unlock are two atomic
instructions in user space (no system call), and a waiter sleeps in the
kernel with a deadline.

Rules the callers keep:

* The thread that locks unlocks (the mutex records its thread id).  It is an
  error-checking mutex: relocking by the owner is EDEADLK, never a deadlock.
* After EOWNERDEAD the new owner must mark it consistent before unlocking,
  or it becomes unusable for everyone; ``acquire`` does that itself and
  returns OWNER_DIED so the caller repairs what the dead owner protected.
* The mapping must outlive the mutex object: ``SharedMutex`` keeps a ctypes
  view of it, so the mmap cannot be unmapped under a waiting thread.
* Processes sharing a mutex share a PID namespace (the owner is a thread id).
"""

from __future__ import annotations

import ctypes
import errno
import time
from typing import Any

from dictdb_shm.errors import CorruptionError

MUTEX_SIZE = 64             # bytes reserved: glibc's pthread_mutex_t is 40 (x86-64) or 48

ACQUIRED = 0
OWNER_DIED = 1              # acquired; the previous owner died holding it
BUSY = 2                    # not acquired by the deadline

_CLOCK_MONOTONIC = 1        # the clock of time.monotonic() on Linux
_PTHREAD_MUTEX_ERRORCHECK = 2
_PTHREAD_PROCESS_SHARED = 1
_PTHREAD_MUTEX_ROBUST = 1
_ATTR_SIZE = 64


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_libc = ctypes.CDLL(None, use_errno=True)
_P = ctypes.c_void_p
_trylock = _libc.pthread_mutex_trylock
_unlock = _libc.pthread_mutex_unlock
_consistent = _libc.pthread_mutex_consistent
for _fn in (_trylock, _unlock, _consistent):
    _fn.argtypes = [_P]
    _fn.restype = ctypes.c_int
try:
    _clocklock = _libc.pthread_mutex_clocklock      # glibc 2.30 and later
    _clocklock.argtypes = [_P, ctypes.c_int, ctypes.POINTER(_Timespec)]
    _clocklock.restype = ctypes.c_int
except AttributeError:                                # pragma: no cover - old glibc
    _clocklock = None
    _timedlock = _libc.pthread_mutex_timedlock
    _timedlock.argtypes = [_P, ctypes.POINTER(_Timespec)]
    _timedlock.restype = ctypes.c_int


def initialize(buf: Any, offset: int) -> None:
    """Make the zeroed bytes at ``buf[offset:offset + MUTEX_SIZE]`` a robust,
    process-shared, error-checking mutex.  Only on memory nobody uses yet."""
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    view = ctypes.c_char.from_buffer(buf, offset)
    try:
        for rc in (_libc.pthread_mutexattr_init(attr),
                   _libc.pthread_mutexattr_setpshared(attr, _PTHREAD_PROCESS_SHARED),
                   _libc.pthread_mutexattr_setrobust(attr, _PTHREAD_MUTEX_ROBUST),
                   _libc.pthread_mutexattr_settype(attr, _PTHREAD_MUTEX_ERRORCHECK),
                   _libc.pthread_mutex_init(ctypes.c_void_p(ctypes.addressof(view)), attr)):
            if rc:
                raise CorruptionError(f"cannot set up a table lock: pthread error "
                                      f"{errno.errorcode.get(rc, rc)}",
                                      hint="this needs Linux with glibc")
    finally:
        _libc.pthread_mutexattr_destroy(attr)
        del view


class SharedMutex:
    """The mutex at ``buf[offset]`` (initialised by ``initialize``)."""

    __slots__ = ("_view", "_ptr", "name")

    def __init__(self, buf: Any, offset: int, name: str) -> None:
        self._view = ctypes.c_char.from_buffer(buf, offset)    # pins the mapping
        self._ptr = ctypes.c_void_p(ctypes.addressof(self._view))
        self.name = name

    def try_acquire(self) -> int:
        """ACQUIRED, OWNER_DIED or BUSY, without waiting."""
        return self._result(_trylock(self._ptr))

    def acquire(self, timeout: float) -> int:
        """ACQUIRED, OWNER_DIED, or BUSY after ``timeout`` seconds.  Waits in
        the kernel, without the GIL.  Hot path: uncontended, one C call."""
        rc = _trylock(self._ptr)
        if rc == 0:
            return ACQUIRED
        if rc != errno.EBUSY or timeout <= 0:
            return self._result(rc)
        deadline = time.monotonic() + timeout
        if _clocklock is not None:
            ts = _Timespec(int(deadline), int((deadline % 1) * 1e9))
            rc = _clocklock(self._ptr, _CLOCK_MONOTONIC, ctypes.byref(ts))
        else:                                          # pragma: no cover - old glibc
            wall = time.time() + timeout
            rc = _timedlock(self._ptr, ctypes.byref(_Timespec(int(wall), int((wall % 1) * 1e9))))
        return self._result(rc)

    def release(self) -> None:
        rc = _unlock(self._ptr)
        if rc:
            raise RuntimeError(f"unlocking {self.name} failed: {errno.errorcode.get(rc, rc)} "
                               "(only the thread that locked it may unlock it)")

    def _result(self, rc: int) -> int:
        if rc == 0:
            return ACQUIRED
        if rc == errno.EOWNERDEAD:
            _consistent(self._ptr)
            return OWNER_DIED
        if rc in (errno.EBUSY, errno.ETIMEDOUT):
            return BUSY
        if rc == errno.EDEADLK:
            raise RuntimeError(f"this thread already holds {self.name}")
        if rc == errno.ENOTRECOVERABLE:
            raise CorruptionError(f"{self.name} is unusable: a holder died and its "
                                  "successor did not repair it",
                                  hint="destroy and recreate the database")
        raise CorruptionError(f"locking {self.name} failed: {errno.errorcode.get(rc, rc)}")
