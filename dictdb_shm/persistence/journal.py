"""The journal of a durable database: one entry per committed write call.

Owns: the journal files' names and entry format, appending an entry (by
the process that made the write, before its call returns, with an fsync
under ``"always"``), and reading a journal back, entries cut short by a
crash included.  Must never: apply an entry (restore.py does), or let an
entry that did not reach the file be acknowledged.

Files: ``<dir>/journal.<generation>.log``.  Every process appends to the
generation named in the catalog header (layout.JOURNAL_GENERATION_AT); the
coordinator moves it on when it writes a snapshot (restore.py), so a
snapshot says from which generation the journals are to be replayed.

An entry is ``MAGIC, u32 length, u32 crc32`` then ``length`` bytes of msgpack
``[kind, table, data]``:

* ``WRITE``: ``data`` a list of ``[op, pk, record]`` (``op`` PUT or DELETE);
  a write call is one entry, so a bulk insert is restored whole or not at all;
* ``CREATE`` (``data`` the table definition), ``DROP``, ``INDEX`` (``[field, kind]``).

Every entry is idempotent (a PUT of the whole record, a delete, a create
that exists already is skipped), so replaying entries a snapshot already
holds changes nothing: snapshots need not line up with the journal exactly.

Appends are positioned, by many processes at once: under the journal's
mutex in the catalog header (a robust process-shared mutex), a writer takes
the end offset from the header, writes its entry there with ``pwrite`` and
moves the end on; the fsync of ``"always"`` comes after the mutex.  The file
is filled with zeros ahead of the end (PREFILL bytes at a time), so an entry
overwrites blocks that exist: its ``fdatasync`` then flushes data alone, no
file size, which takes about two thirds of the time of an appending one.

A writer killed while it held the mutex leaves its reservation (the header's
``reserved`` length) at the end; the next writer finds the mutex's owner
dead and, unless that entry is whole, writes a PAD entry over it
(PAD_MAGIC, its length, the crc32 of zeros) so that readers step over it.
Reading therefore meets: valid entries, PAD entries, zeros from the end of
the last entry to the end of the file (the prefilled tail), and entries cut
short by a crash: one followed by zeros only (the last one, torn) or, in
journals written by earlier releases with ``O_APPEND``, one whose claimed
length holds the start of the next valid entry.  Anything else is damage
(CorruptionError).
"""

from __future__ import annotations

import errno
import os
import struct
import threading
import zlib
from typing import Any, Iterator

import msgpack

from dictdb_shm import crashpoints
from dictdb_shm.engine import DELETE
from dictdb_shm.engine import layout as L
from dictdb_shm.errors import CorruptionError, FileAccessError, LockTimeoutError
from dictdb_shm.lock import robust_mutex
from dictdb_shm.lock.robust_mutex import BUSY, OWNER_DIED, SharedMutex
from dictdb_shm.persistence.atomic import read_whole

MAGIC = b"DDJ1"
PAD_MAGIC = b"DDJ0"                      # a dead writer's reservation, stepped over
PREFILL = 1 << 20                        # zeros written ahead of the end at a time
APPEND_TIMEOUT = 30.0                    # the mutex is held for one pwrite
RESERVED_POINT = "journal.reserved"      # crashpoints: an entry reserved, not written
HEAD = struct.Struct("<4sII")            # magic, payload length, crc32 of the payload
PUT, DEL = 0, 1                          # the ops of a WRITE entry
WRITE, CREATE, DROP, INDEX = "w", "c", "d", "i"
FILE_PREFIX, FILE_SUFFIX = "journal.", ".log"
MAX_ENTRY = 1 << 31

_packb = msgpack.Packer(use_bin_type=True).pack
_head = HEAD.pack
_crc = zlib.crc32

DURABILITY_NAMES = {"no": L.DURABILITY_NO, "everysec": L.DURABILITY_EVERYSEC,
                    "always": L.DURABILITY_ALWAYS}
DURABILITY_OF_CODE = {v: k for k, v in DURABILITY_NAMES.items()}


def journal_path(directory: str, generation: int) -> str:
    return os.path.join(directory, f"{FILE_PREFIX}{generation:012d}{FILE_SUFFIX}")


def generations(directory: str) -> list[int]:
    """The generations of the journal files in ``directory``, ascending."""
    found = []
    for name in os.listdir(directory):
        if name.startswith(FILE_PREFIX) and name.endswith(FILE_SUFFIX):
            middle = name[len(FILE_PREFIX):-len(FILE_SUFFIX)]
            if middle.isdigit():
                found.append(int(middle))
    return sorted(found)


def initialize(catalog: Any) -> None:
    """Set up the journal's words and mutex in a new catalog header, before
    it is published."""
    robust_mutex.initialize(catalog, L.JOURNAL_MUTEX_AT)


def frame(kind: str, table: str, data: Any) -> bytes:
    payload = _packb([kind, table, data])
    return _head(MAGIC, len(payload), _crc(payload)) + payload


def write_ops(changes: Any) -> list:
    """A table write's ``(pk, record, mode)`` changes as journal ops."""
    return [[DEL, pk, None] if mode == DELETE else [PUT, pk, record]
            for pk, record, mode in changes]


class Journal:
    """This process's appender to the journal of one durable database.

    ``write(table, changes)`` is the hook every write call of a Table runs
    under its write lock, right after the store committed.  It returns once
    the entry is in the file (and, under ``"always"``, on the disk)."""

    def __init__(self, directory: str, durability: int, catalog: Any) -> None:
        self.directory = directory
        self.durability = durability
        self._sync = durability == L.DURABILITY_ALWAYS
        self._w = L.words(catalog)
        self._gen_w = L.JOURNAL_GENERATION_AT // L.WORD
        self._file_w = L.JOURNAL_FILE_AT // L.WORD
        self._end_w = L.JOURNAL_END_AT // L.WORD
        self._filled_w = L.JOURNAL_FILLED_AT // L.WORD
        self._reserved_w = L.JOURNAL_RESERVED_AT // L.WORD
        self._mutex = SharedMutex(catalog, L.JOURNAL_MUTEX_AT, "the journal's mutex")
        self._fd = -1
        self._gen = -1
        self._pid = -1
        self._reopen = threading.Lock()

    def write(self, table: str, changes: Any) -> None:
        """Hot path: append the WRITE entry of one committed write call."""
        if len(changes) == 1:
            pk, record, mode = changes[0]
            ops = [[DEL, pk, None] if mode == DELETE else [PUT, pk, record]]
        else:
            ops = write_ops(changes)
        self.append(frame(WRITE, table, ops), table)

    def index(self, table: str, field: str, kind: str) -> None:
        self.append(frame(INDEX, table, [field, kind]), table)

    def append(self, entry: bytes, table: str = "") -> None:
        try:
            fd = self._place(entry, table)
            if self._sync:
                os.fdatasync(fd)
        except OSError as exc:
            raise FileAccessError(
                f"a write to table {table!r} is applied in memory but could not be "
                f"journaled in {self.directory}: {exc.strerror or exc}",
                hint="free space on that disk; the coordinator's next snapshot makes the "
                     "write durable") from None

    def _place(self, entry: bytes, table: str) -> int:
        """Write ``entry`` at the journal's end under its mutex; the fd written."""
        got = self._mutex.acquire(APPEND_TIMEOUT)
        if got == BUSY:
            raise LockTimeoutError(
                f"a write to table {table!r} is applied in memory but waited "
                f"{APPEND_TIMEOUT:.0f} s for the journal of {self.directory}",
                hint="a process holding the journal is stopped (SIGSTOP?): resume or kill "
                     "it; the coordinator's next snapshot makes the write durable",
                table=table)
        w = self._w
        try:
            if got == OWNER_DIED and w[self._reserved_w]:
                self._step_over_dead_reservation()
            gen = w[self._gen_w]
            fd = self._fd_for(gen)
            if w[self._file_w] != gen or w[self._filled_w] == 0:
                # The first entry of this generation's file (normally a new,
                # empty one): start after whatever it holds.
                start, torn = _logical_end(self._path(gen))
                if torn >= 0:
                    self._pad(fd, torn, start - torn)
                w[self._end_w] = w[self._filled_w] = start
                w[self._file_w] = gen
            pos, n = w[self._end_w], len(entry)
            if pos + n > w[self._filled_w]:
                self._prefill(fd, pos + n)
            w[self._reserved_w] = n
            crashpoints.reach(RESERVED_POINT)
            try:
                written = os.pwrite(fd, entry, pos)
                if written != n:
                    raise OSError(errno.EIO, f"only {written} of {n} bytes were written")
            except OSError:
                self._pad(fd, pos, n)         # readers step over what it left
                raise
            finally:
                w[self._end_w] = pos + n
                w[self._reserved_w] = 0
            return fd
        finally:
            self._mutex.release()

    def _prefill(self, fd: int, need: int) -> None:
        """Under the mutex: zeros in the file up to past ``need``."""
        w = self._w
        filled = w[self._filled_w]
        target = need + PREFILL
        zeros = bytes(min(PREFILL, target - filled))
        while filled < target:
            filled += os.pwrite(fd, zeros[:target - filled], filled)
        w[self._filled_w] = filled

    def _step_over_dead_reservation(self) -> None:
        """Under the mutex, whose last owner died holding it: keep its entry
        if it reached the file whole, else cover it with a PAD entry."""
        w = self._w
        pos, n = w[self._end_w], w[self._reserved_w]
        fd = self._fd_for(w[self._file_w])
        payload, size = _entry_at(os.pread(fd, n, pos), 0)
        if payload is None or size != n:
            self._pad(fd, pos, n)
        w[self._end_w] = pos + n
        w[self._reserved_w] = 0

    @staticmethod
    def _pad(fd: int, pos: int, n: int) -> None:
        if n > HEAD.size:                 # always: every entry has a payload
            os.pwrite(fd, _head(PAD_MAGIC, n - HEAD.size, _crc(bytes(n - HEAD.size)))
                      + bytes(n - HEAD.size), pos)

    def _path(self, gen: int) -> str:
        return journal_path(self.directory, gen)

    def _fd_for(self, gen: int) -> int:
        if gen == self._gen and os.getpid() == self._pid:
            return self._fd
        with self._reopen:
            if gen == self._gen and os.getpid() == self._pid:
                return self._fd
            path = self._path(gen)
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                raise FileAccessError(f"cannot open the journal {path}: "
                                      f"{exc.strerror or exc}") from None
            old = self._fd if self._pid == os.getpid() else -1
            self._fd, self._gen, self._pid = fd, gen, os.getpid()
            if old >= 0:
                os.close(old)
            return fd

    def after_fork(self) -> None:
        """In a forked child: a new thread lock (a parent's thread may have
        held this one).  The fd is reopened on the next append (pid check)."""
        self._reopen = threading.Lock()

    def sync(self) -> None:
        """fdatasync the current journal file (the coordinator's "everysec")."""
        os.fdatasync(self._fd_for(self._w[self._gen_w]))

    def close(self) -> None:
        if self._fd >= 0 and self._pid == os.getpid():
            os.close(self._fd)
        self._fd, self._gen = -1, -1


# ------------------------------------------------------------------ reading
def entries(path: str) -> Iterator[list]:
    """The entries of the journal at ``path``, each ``[kind, table, data]``,
    skipping PAD entries and entries cut short by a crash (see the module
    docstring)."""
    data = read_whole(path, "the journal")
    for what, pos, _size, payload in _scan(data, path):
        if what != ENTRY:
            continue
        try:
            entry = msgpack.unpackb(payload, raw=False, strict_map_key=False)
        except Exception as exc:
            raise CorruptionError(f"{path}: the entry at byte {pos} does not decode "
                                  f"({exc})", hint=DAMAGE_HINT) from None
        if not (isinstance(entry, list) and len(entry) == 3
                and entry[0] in (WRITE, CREATE, DROP, INDEX)
                and isinstance(entry[1], str)):
            raise CorruptionError(f"{path}: the entry at byte {pos} is not a journal "
                                  "entry", hint=DAMAGE_HINT)
        yield entry


ENTRY, PAD, TORN = "entry", "pad", "torn"


def _scan(data: bytes, path: str) -> Iterator[tuple[str, int, int, bytes]]:
    """(ENTRY | PAD | TORN, position, size, payload) of everything in a
    journal's bytes, in order, up to its zero tail; CorruptionError for damage."""
    pos, end = 0, len(data)
    while pos < end:
        payload, size = _entry_at(data, pos)
        if payload is not None:
            yield (PAD if data[pos:pos + len(PAD_MAGIC)] == PAD_MAGIC else ENTRY), pos, size, \
                payload
            pos += size
            continue
        if not data[pos:].strip(b"\0"):
            return                        # the prefilled tail
        nxt = _next_entry(data, pos, size)
        if nxt is None:
            raise CorruptionError(f"{path}: damaged bytes at byte {pos} (not an entry, and "
                                  "no entry follows where a torn one would end)",
                                  hint=DAMAGE_HINT)
        yield TORN, pos, size, b""
        pos = nxt                     # a torn entry: skipped (or the torn end of the file)


def _logical_end(path: str) -> tuple[int, int]:
    """(where new entries of the journal at ``path`` go, where a torn last
    entry that they must cover with a PAD starts, or -1)."""
    try:
        data = read_whole(path, "the journal")
    except FileNotFoundError:
        return 0, -1
    last = (ENTRY, 0, 0, b"")
    for last in _scan(data, path):
        pass
    what, pos, size, _ = last
    return pos + size, (pos if what == TORN else -1)


DAMAGE_HINT = ("the journal was changed or damaged on disk; move it aside to restore "
               "from the snapshot alone (losing what it held)")


def _entry_at(data: bytes, pos: int) -> tuple[bytes | None, int]:
    """(payload, entry size) of a valid entry at ``pos``, else (None, the
    size a torn entry there could have had)."""
    if pos + HEAD.size > len(data):
        return None, HEAD.size
    magic, length, crc = HEAD.unpack_from(data, pos)
    if magic not in (MAGIC, PAD_MAGIC) or not 0 < length <= MAX_ENTRY:
        return None, HEAD.size          # (no entry is empty: a torn header's zeros)
    start = pos + HEAD.size
    payload = data[start:start + length]
    if len(payload) == length and _crc(payload) == crc:
        return payload, HEAD.size + length
    return None, HEAD.size + length


def _next_entry(data: bytes, pos: int, span: int) -> int | None:
    """Where reading goes on after an invalid entry at ``pos`` that claims
    ``span`` bytes: the next valid entry starting inside that span, or the
    end of the file if it comes first; None: damage."""
    end = len(data)
    # An appended torn entry is shorter than its header says: the next one
    # starts strictly inside the claimed span.  A positioned one keeps its
    # full span (a dead writer's is padded), so one of full length that does
    # not check out is damage, unless only zeros follow it: the torn last.
    stop = min(end, pos + span - 1) + len(MAGIC)
    q = data.find(MAGIC, pos + 1, stop)
    while q >= 0:
        if _entry_at(data, q)[0] is not None:
            return q
        q = data.find(MAGIC, q + 1, stop)
    if pos + span > end or not data[pos + span:].strip(b"\0"):
        return end                    # the last entry, torn: the file or its zeros end
    return None

