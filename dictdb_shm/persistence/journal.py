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

Appends use ``O_APPEND``, one ``write`` per entry, by many processes at
once.  A process killed inside that ``write`` can leave part of an entry,
and others append after it, so a torn entry may sit anywhere.  Reading
tells one apart from damage: a torn entry is followed, within the length
its header claims, by the next valid entry (or by the end of the file);
anything else that does not check out is damage (CorruptionError).
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from typing import Any, Iterator

import msgpack

from dictdb_shm.engine import DELETE
from dictdb_shm.engine import layout as L
from dictdb_shm.errors import CorruptionError, FileAccessError
from dictdb_shm.persistence.atomic import read_whole

MAGIC = b"DDJ1"
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
        fd = self._fd
        if self._w[self._gen_w] != self._gen or os.getpid() != self._pid:
            fd = self._open()
        try:
            n = os.write(fd, entry)
            if n != len(entry):
                raise OSError(28, f"only {n} of {len(entry)} bytes were written")
            if self._sync:
                os.fdatasync(fd)
        except OSError as exc:
            raise FileAccessError(
                f"a write to table {table!r} is applied in memory but could not be "
                f"journaled in {self.directory}: {exc.strerror or exc}",
                hint="free space on that disk; the coordinator's next snapshot makes the "
                     "write durable") from None

    def _open(self) -> int:
        with self._reopen:
            gen = self._w[self._gen_w]
            if gen == self._gen and os.getpid() == self._pid:
                return self._fd
            path = journal_path(self.directory, gen)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
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
        fd = self._fd if self._pid == os.getpid() else -1
        if self._w[self._gen_w] != self._gen or fd < 0:
            fd = self._open()
        os.fdatasync(fd)

    def close(self) -> None:
        if self._fd >= 0 and self._pid == os.getpid():
            os.close(self._fd)
        self._fd, self._gen = -1, -1


# ------------------------------------------------------------------ reading
def entries(path: str) -> Iterator[list]:
    """The entries of the journal at ``path``, each ``[kind, table, data]``,
    skipping entries cut short by a crash (see the module docstring)."""
    data = read_whole(path, "the journal")
    pos, end = 0, len(data)
    while pos < end:
        payload, size = _entry_at(data, pos)
        if payload is not None:
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
            pos += size
            continue
        nxt = _next_entry(data, pos, size)
        if nxt is None:
            raise CorruptionError(f"{path}: damaged bytes at byte {pos} (not an entry, and "
                                  "no entry follows where a torn one would end)",
                                  hint=DAMAGE_HINT)
        pos = nxt                     # a torn entry: skipped (or the torn end of the file)


DAMAGE_HINT = ("the journal was changed or damaged on disk; move it aside to restore "
               "from the snapshot alone (losing what it held)")


def _entry_at(data: bytes, pos: int) -> tuple[bytes | None, int]:
    """(payload, entry size) of a valid entry at ``pos``, else (None, the
    size a torn entry there could have had)."""
    if pos + HEAD.size > len(data):
        return None, HEAD.size
    magic, length, crc = HEAD.unpack_from(data, pos)
    if magic != MAGIC or length > MAX_ENTRY:
        return None, HEAD.size
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
    # A torn entry is shorter than its header says: the next one starts
    # strictly inside the claimed span (an entry of full length that does
    # not check out was damaged, not torn).
    stop = min(end, pos + span - 1) + len(MAGIC)
    q = data.find(MAGIC, pos + 1, stop)
    while q >= 0:
        if _entry_at(data, q)[0] is not None:
            return q
        q = data.find(MAGIC, q + 1, stop)
    if pos + span > end:
        return end
    return None

