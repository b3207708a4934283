"""Reading one field of every live record straight from the heap, vectorised.

Owns: finding the live records a directory points at (as numpy arrays),
walking their msgpack maps in lockstep to the wanted top-level key, and
turning the values found into ``ColumnArrays`` (engine/columns.py) indexed
by directory slot.  Records whose map it cannot walk (a nested container
or an extension type before the key, a body that is not a map) are decoded
one by one instead, so the result is always what decoding would give.
Must never: write anything, or evaluate queries.

Why: decoding a million records costs about a second; the columns of one
field cost a few numpy passes over the heap, which is what makes a column
or hash index build on a million rows take well under a second.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dictdb_shm.engine import (COL_BOOL, COL_EMPTY, COL_FLOAT, COL_INT, COL_MISSING, COL_NULL,
                               COL_OTHER, COL_STR)
from dictdb_shm.engine import records as R
from dictdb_shm.engine.columns import MISSING, ColumnArrays, classify

_MISSING = MISSING
MAX_GATHERED_STR = 64          # longer strings are sliced one by one

# Size of a msgpack element from its first byte: > 0 fixed, 0 length-prefixed
# (str, bin), -1 not walked here (containers, extensions).
_SIZE = np.full(256, -1, np.int64)
_SIZE[0x00:0x80] = 1
_SIZE[0xe0:0x100] = 1
_SIZE[0xa0:0xc0] = 1 + np.arange(32)
_SIZE[[0x80, 0x90]] = 1                                    # empty map, empty list
_SIZE[[0xc0, 0xc2, 0xc3]] = 1
_SIZE[[0xca, 0xcb, 0xcc, 0xcd, 0xce, 0xcf]] = [5, 9, 2, 3, 5, 9]
_SIZE[[0xd0, 0xd1, 0xd2, 0xd3]] = [2, 3, 5, 9]
_SIZE[[0xc4, 0xc5, 0xc6, 0xd9, 0xda, 0xdb]] = 0
_PREFIX = np.zeros(256, np.int64)                          # bytes of the length prefix
_PREFIX[[0xc4, 0xd9]] = 1
_PREFIX[[0xc5, 0xda]] = 2
_PREFIX[[0xc6, 0xdb]] = 4


def live_records(dir_buf: Any, dir_cap: int, heap: Any) -> tuple[Any, Any]:
    """(directory slots, record offsets) of every live record, slot order."""
    words = np.frombuffer(dir_buf, np.uint64, 2 * dir_cap)
    eo = words[1::2]
    slots = np.flatnonzero((eo != 0) & (eo != np.uint64(R.TOMBSTONE)))
    offs = ((eo[slots] & np.uint64(R.OFFSET_MASK)) - np.uint64(1)).astype(np.int64)
    h = np.frombuffer(heap, np.uint8)
    keep = h[offs + 8] == R.KIND_VALUE
    return slots[keep], offs[keep]


_BE_TYPES = {1: ">u1", 2: ">u2", 4: ">u4", 8: ">u8"}


def _be(h: Any, pos: Any, n: int) -> Any:
    """The big-endian unsigned ``n``-byte integers at ``pos``."""
    if n == 1:
        return h[pos].astype(np.uint64)
    raw = h[pos[:, None] + np.arange(n)]
    return raw.view(_BE_TYPES[n]).ravel().astype(np.uint64)


def _sizes(h: Any, pos: Any) -> Any:
    """Size of the msgpack element at each ``pos`` (-1: not walked)."""
    first = h[pos]
    size = _SIZE[first]
    var = np.flatnonzero(size == 0)
    if len(var):
        n, length = _lengths(h, pos[var], first[var])
        size[var] = 1 + n + length
    return size


def _lengths(h: Any, pos: Any, first: Any) -> tuple[Any, Any]:
    """(prefix bytes, payload length) of the str/bin elements at ``pos``."""
    n = _PREFIX[first]
    length = np.zeros(len(pos), np.int64)
    for width in (1, 2, 4):
        sel = np.flatnonzero(n == width)
        if len(sel):
            length[sel] = _be(h, pos[sel] + 1, width).astype(np.int64)
    return n, length


def read_field(dir_buf: Any, dir_cap: int, heap: Any, field: str) -> ColumnArrays:
    """``field`` of every live record, as slot-indexed ColumnArrays."""
    if not dir_cap:
        return ColumnArrays.of(np.zeros(0, np.uint8), np.zeros(0, np.int64), [])
    slots, offs = live_records(dir_buf, dir_cap, heap)
    h = np.frombuffer(heap, np.uint8)
    pklen = h[offs + 10].astype(np.int64) | (h[offs + 11].astype(np.int64) << 8)
    start = offs + R.RECORD_HEADER + pklen
    first = h[start]
    nkeys = np.where((first & 0xf0) == 0x80, (first & 0x0f).astype(np.int64), -1)
    pos = start + 1
    m16 = first == 0xde
    if m16.any():
        nkeys[m16] = _be(h, start[m16] + 1, 2).astype(np.int64)
        pos[m16] += 2
    key = R._packb(field)
    n = len(slots)
    found = np.full(n, -1, np.int64)          # position of the value, when found
    slow = nkeys < 0                          # decoded one by one
    active = np.flatnonzero(nkeys > 0)
    left = nkeys.copy()
    first_key, rest_key = key[0], key[1:]
    while len(active):
        p = pos[active]
        kt = h[p]
        cand = np.flatnonzero(kt == first_key)
        if len(cand):
            cp = p[cand]
            for k, byte in enumerate(rest_key, 1):
                ok = h[cp + k] == byte
                cand, cp = cand[ok], cp[ok]
            found[active[cand]] = cp + len(key)
            keep = np.ones(len(active), bool)
            keep[cand] = False
            active, p, kt = active[keep], p[keep], kt[keep]
        ksize = _SIZE[kt]
        if (ksize <= 0).any():
            ksize = _sizes(h, p)
        vsize = _sizes(h, p + np.maximum(ksize, 0))
        bad = (ksize < 0) | (vsize < 0)
        if bad.any():
            slow[active[bad]] = True
            good = ~bad
            active, p, ksize, vsize = active[good], p[good], ksize[good], vsize[good]
        pos[active] = p + ksize + vsize
        left[active] -= 1
        active = active[left[active] > 0]
    tags = np.full(dir_cap, COL_EMPTY, np.uint8)
    ints = np.zeros(dir_cap, np.int64)
    tags[slots] = COL_MISSING
    got = np.flatnonzero(found >= 0)
    strings = _values(h, found[got], slots[got], tags, ints)
    slow_rows = np.flatnonzero(slow)
    if len(slow_rows):
        _decode_slow(heap, offs[slow_rows], slots[slow_rows], field, tags, ints, strings)
    return ColumnArrays.of(tags, ints, strings)


def _values(h: Any, vpos: Any, slots: Any, tags: Any, ints: Any) -> list[str]:
    """Fill tags/ints at ``slots`` from the msgpack values at ``vpos``;
    returns the dictionary of the strings (codes written into ``ints``)."""
    t = h[vpos]
    floats = ints.view(np.float64)
    tags[slots] = COL_OTHER

    def put(sel: Any, tag: int, values: Any, as_float: bool = False) -> None:
        tags[slots[sel]] = tag
        (floats if as_float else ints)[slots[sel]] = values

    sel = (t < 0x80) | (t >= 0xe0)
    put(sel, COL_INT, t[sel].view(np.int8).astype(np.int64))     # fixints are int8
    for code, n in ((0xcc, 1), (0xcd, 2), (0xce, 4)):
        sel = t == code
        put(sel, COL_INT, _be(h, vpos[sel] + 1, n).astype(np.int64))
    sel = t == 0xcf
    big = _be(h, vpos[sel] + 1, 8)
    fits = big <= np.uint64(R.INT_MAX)
    idx = np.flatnonzero(sel)[fits]
    tags[slots[idx]] = COL_INT
    ints[slots[idx]] = big[fits].astype(np.int64)
    for code, n, dt in ((0xd0, 1, np.int8), (0xd1, 2, np.int16), (0xd2, 4, np.int32),
                        (0xd3, 8, np.int64)):
        sel = t == code
        raw = _be(h, vpos[sel] + 1, n)
        put(sel, COL_INT, raw.astype({1: np.uint8, 2: np.uint16, 4: np.uint32,
                                      8: np.uint64}[n]).view(dt).astype(np.int64))
    sel = t == 0xcb
    put(sel, COL_FLOAT, h[vpos[sel][:, None] + np.arange(1, 9)].view(">f8").ravel(),
        as_float=True)
    sel = t == 0xca
    put(sel, COL_FLOAT, _be(h, vpos[sel] + 1, 4).astype(np.uint32).view(np.float32)
        .astype(np.float64), as_float=True)
    sel = t == 0xc0
    put(sel, COL_NULL, 0)
    sel = (t == 0xc2) | (t == 0xc3)
    put(sel, COL_BOOL, (t[sel] == 0xc3).astype(np.int64))
    sel = np.flatnonzero(((t & 0xe0) == 0xa0) | (t == 0xd9) | (t == 0xda) | (t == 0xdb))
    if not len(sel):
        return []
    p, f = vpos[sel], t[sel]
    n, length = _lengths(h, p, f)
    fix = (f & 0xe0) == 0xa0
    length[fix] = (f[fix] & 0x1f).astype(np.int64)
    begin = p + 1 + n
    strings, codes = _dictionary(h, begin, length)
    tags[slots[sel]] = COL_STR
    ints[slots[sel]] = codes
    return strings


def _dictionary(h: Any, begin: Any, length: Any) -> tuple[list[str], Any]:
    """(distinct strings, code of each) of the UTF-8 strings at ``begin``."""
    width = int(length.max()) if len(length) else 0
    if width > MAX_GATHERED_STR:
        mv = memoryview(h)
        codes_of: dict[str, int] = {}
        codes = np.empty(len(begin), np.int64)
        for i, (b, n) in enumerate(zip(begin.tolist(), length.tolist())):
            s = str(mv[b:b + n], "utf-8")
            c = codes_of.get(s)
            if c is None:
                c = codes_of[s] = len(codes_of)
            codes[i] = c
        return list(codes_of), codes
    cols = np.arange(width + 1)
    grid = np.zeros((len(begin), width + 1), np.uint8)
    inside = cols[None, :width] < length[:, None]
    grid[:, :width] = np.where(inside, h[np.minimum(begin[:, None] + cols[None, :width],
                                                    len(h) - 1)], 0)
    grid[:, width] = length            # "ab" and "ab\0" differ by length
    words = grid.shape[1] + 7 >> 3
    packed = np.zeros((len(begin), 8 * words), np.uint8)
    packed[:, :width + 1] = grid
    lanes = packed.view(np.uint64)
    fingerprint = np.zeros(len(begin), np.uint64)
    for k in range(words):      # a polynomial hash of each row, then proof it did not collide
        fingerprint = fingerprint * np.uint64(0x9E3779B97F4A7C15) + lanes[:, k]
    _, first, codes = np.unique(fingerprint, return_index=True, return_inverse=True)
    codes = codes.ravel()
    if (lanes == lanes[first[codes]]).all():
        strings = [bytes(r[:r[width]]).decode() for r in grid[first]]
        return strings, codes.astype(np.int64)
    keys = np.ascontiguousarray(grid).view(f"V{width + 1}").ravel()
    uniq, codes = np.unique(keys, return_inverse=True)
    raw = uniq.view(np.uint8).reshape(len(uniq), width + 1)
    strings = [bytes(r[:r[width]]).decode() for r in raw]
    return strings, codes.astype(np.int64).ravel()


def _decode_slow(heap: Any, offs: Any, slots: Any, field: str, tags: Any, ints: Any,
                 strings: list[str]) -> None:
    codes = {s: i for i, s in enumerate(strings)}
    floats = ints.view(np.float64)
    for off, slot in zip(offs.tolist(), slots.tolist()):
        record = R.decode_at(heap, off)
        value = record.get(field, _MISSING) if isinstance(record, dict) else _MISSING
        tag, v = classify(value)
        if tag == COL_STR:
            c = codes.get(v)
            if c is None:
                c = codes[v] = len(strings)
                strings.append(v)
            ints[slot] = c
        elif tag == COL_FLOAT:
            floats[slot] = v
        else:
            ints[slot] = v
        tags[slot] = tag
