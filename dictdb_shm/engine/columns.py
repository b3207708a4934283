"""Column indexes: a typed copy of one field, one entry per directory slot.

Owns: the byte layout of a column index inside a table's index segment
(index.py owns the segment's headers), writing one slot's value in place,
the string dictionary, and numpy views of it all (``ColumnArrays``).  Must
never: decide when to rebuild (store.py, growth.py), evaluate queries
(core/columnar.py does, on the arrays), or decode records (its callers hand
it values).

Layout at the index's base, for a directory of ``C`` slots::

    tags:     C x u8, rounded up to 8 (engine/__init__.py's COL_* tags)
    payload:  C x 8 bytes: int64 (INT, BOOL), float64 (FLOAT), code (STR)
    ends:     DCAP x u64, end of dictionary string i in the bytes area
    bytes:    BCAP bytes of UTF-8, the strings one after another

The index's header (index.py) holds, after its kind: dictionary strings
used, dictionary bytes used, DCAP, BCAP.  The dictionary only grows within a
segment: a string's code never changes, and strings [0, used) are complete
before ``used`` counts them (stores are ordered, store.py), so a lock-free
reader may cache them.  When it is full, ColumnFull makes the writer build a
fresh segment instead (store.py).
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

from dictdb_shm.engine import (COL_BOOL, COL_EMPTY, COL_FLOAT, COL_INT, COL_MISSING, COL_NULL,
                               COL_OTHER, COL_STR)

KIND_COLUMN = 3
MIN_STRINGS = 64
MIN_STRING_BYTES = 1024

_U64 = struct.Struct("<Q")
_I64 = struct.Struct("<q")
_F64 = struct.Struct("<d")
_CAPS = struct.Struct("<QQQQ")        # used, bytes used, DCAP, BCAP (header words 1-4)
_INT_MIN, _INT_MAX = -(1 << 63), (1 << 63) - 1
MISSING = object()          # the value of a field a record lacks
_MISSING = MISSING


class ColumnFull(Exception):
    """The dictionary has no room for a new string: build a fresh segment."""


class ColumnArrays(NamedTuple):
    """One field over the directory's slots: ``tags[slot]`` says what
    ``ints``/``floats`` (one buffer, two views) hold there; STR codes index
    ``strings``.  Plain arrays: a query needs nothing else."""

    tags: Any
    ints: Any
    floats: Any
    strings: list
    code_of: Any               # str -> its code, or None

    @classmethod
    def of(cls, tags: Any, ints: Any, strings: list) -> "ColumnArrays":
        """Arrays built in this process (not an index's): codes looked up
        in a dict made on first use."""
        table: dict[str, int] = {}

        def code_of(s: str) -> int | None:
            if len(table) != len(strings):
                table.update((x, i) for i, x in enumerate(strings))
            return table.get(s)
        return cls(tags, ints, ints.view("float64"), strings, code_of)


def _round8(n: int) -> int:
    return (n + 7) & ~7


def column_size(dir_cap: int, dcap: int, bcap: int) -> int:
    return _round8(dir_cap) + 8 * dir_cap + 8 * dcap + _round8(bcap)


def dictionary_caps(n_strings: int, n_bytes: int) -> tuple[int, int]:
    """Room for twice the strings a build found, so small writes stay in place."""
    return max(MIN_STRINGS, 2 * n_strings), _round8(max(MIN_STRING_BYTES, 2 * n_bytes))


def write_caps(buf: Any, hdr: int, n_strings: int, n_bytes: int, dcap: int,
               bcap: int) -> None:
    _CAPS.pack_into(buf, hdr + 8, n_strings, n_bytes, dcap, bcap)


def read_caps(buf: Any, hdr: int) -> tuple[int, int]:
    return _CAPS.unpack_from(buf, hdr + 8)[2:]


def classify(value: Any) -> tuple[int, Any]:
    """(tag, payload) of one value as the column stores it (the payload of a
    STR is the str itself)."""
    t = type(value)
    if t is float:
        return COL_FLOAT, value
    if t is str:
        return COL_STR, value
    if t is int:
        return (COL_INT, value) if _INT_MIN <= value <= _INT_MAX else (COL_OTHER, 0)
    if t is bool:
        return COL_BOOL, int(value)
    if value is None:
        return COL_NULL, 0
    if value is _MISSING:
        return COL_MISSING, 0
    # Subclasses are stored (and read back) as their base type.
    if isinstance(value, float):
        return COL_FLOAT, float(value)
    if isinstance(value, str):
        return COL_STR, str(value)
    if isinstance(value, int):
        return classify(int(value))
    return COL_OTHER, 0


class Column:
    """One column index inside a mapped index segment (``buf``)."""

    __slots__ = ("buf", "j", "kind", "hdr", "cap", "tags_at", "payload_at", "ends_at",
                 "bytes_at", "dcap", "bcap", "_strings", "_codes")

    def __init__(self, buf: Any, j: int, hdr: int, base: int, dir_cap: int) -> None:
        self.buf = buf
        self.j = j
        self.kind = KIND_COLUMN
        self.hdr = hdr
        self.cap = dir_cap
        self.dcap, self.bcap = read_caps(buf, hdr)
        self.tags_at = base
        self.payload_at = base + _round8(dir_cap)
        self.ends_at = self.payload_at + 8 * dir_cap
        self.bytes_at = self.ends_at + 8 * self.dcap
        self._strings: list[str] = []       # a cache of the dictionary's first strings
        self._codes: dict[str, int] = {}

    def room_for(self, new_values: int) -> bool:
        used = _CAPS.unpack_from(self.buf, self.hdr + 8)[0]
        return used + new_values <= self.dcap

    # ------------------------------------------------------------ dictionary
    def strings(self) -> list[str]:
        """The dictionary, code -> str (cached: strings never change)."""
        buf = self.buf
        used = _CAPS.unpack_from(buf, self.hdr + 8)[0]
        cached = self._strings
        if used > self.dcap:
            raise ValueError("torn dictionary count")
        if len(cached) < used:
            start = _U64.unpack_from(buf, self.ends_at + 8 * (len(cached) - 1))[0] \
                if cached else 0
            fresh = []
            for i in range(len(cached), used):
                end = _U64.unpack_from(buf, self.ends_at + 8 * i)[0]
                fresh.append(bytes(buf[self.bytes_at + start:self.bytes_at + end]).decode())
                start = end
            codes = self._codes
            for i, s in enumerate(fresh, len(cached)):
                codes[s] = i
            cached.extend(fresh)
        return cached if len(cached) == used else cached[:used]

    def code_of(self, s: str) -> int | None:
        self.strings()
        return self._codes.get(s)

    def _add_string(self, s: str) -> int:
        buf = self.buf
        used, nbytes = _CAPS.unpack_from(buf, self.hdr + 8)[:2]
        b = s.encode()
        if used >= self.dcap or nbytes + len(b) > self.bcap:
            raise ColumnFull
        buf[self.bytes_at + nbytes:self.bytes_at + nbytes + len(b)] = b
        _U64.pack_into(buf, self.ends_at + 8 * used, nbytes + len(b))
        # The count last: a reader trusts every string below it.
        _U64.pack_into(buf, self.hdr + 16, nbytes + len(b))
        _U64.pack_into(buf, self.hdr + 8, used + 1)
        return used

    # ----------------------------------------------------------------- slots
    def set(self, slot: int, record: dict | None, field: str) -> None:
        """Store ``record[field]`` (``record`` None: no live record) at ``slot``."""
        if record is None:
            self.buf[self.tags_at + slot] = COL_EMPTY
            return
        tag, value = classify(record.get(field, _MISSING))
        if tag == COL_FLOAT:
            _F64.pack_into(self.buf, self.payload_at + 8 * slot, value)
        elif tag == COL_STR:
            code = self.code_of(value)
            if code is None:
                code = self._add_string(value)
                self.strings()
            _I64.pack_into(self.buf, self.payload_at + 8 * slot, code)
        else:
            _I64.pack_into(self.buf, self.payload_at + 8 * slot, value)
        self.buf[self.tags_at + slot] = tag

    def copy_header_to(self, buf: Any, hdr: int) -> None:
        buf[hdr:hdr + 40] = self.buf[self.hdr:self.hdr + 40]

    def copy_body_to(self, other: "Column") -> None:
        end = self.bytes_at + self.bcap
        memoryview(other.buf)[other.tags_at:other.tags_at + end - self.tags_at] = \
            memoryview(self.buf)[self.tags_at:end]

    def arrays(self) -> ColumnArrays:
        import numpy as np
        buf, cap = self.buf, self.cap
        tags = np.frombuffer(buf, np.uint8, cap, self.tags_at)
        ints = np.frombuffer(buf, np.int64, cap, self.payload_at)
        return ColumnArrays(tags, ints, ints.view(np.float64), self.strings(), self.code_of)

    def fill(self, arrays: ColumnArrays) -> None:
        """Write a fresh index (zeroed, caps written) from slot-indexed arrays."""
        import numpy as np
        buf, cap = self.buf, self.cap
        np.frombuffer(buf, np.uint8, cap, self.tags_at)[:] = arrays.tags
        np.frombuffer(buf, np.int64, cap, self.payload_at)[:] = arrays.ints
        encoded = [s.encode() for s in arrays.strings]
        if encoded:
            ends = np.cumsum([len(b) for b in encoded], dtype=np.uint64)
            np.frombuffer(buf, np.uint64, len(ends), self.ends_at)[:] = ends
            blob = b"".join(encoded)
            buf[self.bytes_at:self.bytes_at + len(blob)] = blob
            _U64.pack_into(buf, self.hdr + 16, len(blob))
        _U64.pack_into(buf, self.hdr + 8, len(encoded))
        self._strings, self._codes = [], {}


def needed_caps(arrays: ColumnArrays) -> tuple[int, int]:
    """(DCAP, BCAP) of a fresh index holding ``arrays``."""
    return dictionary_caps(len(arrays.strings), sum(len(s.encode()) for s in arrays.strings))
