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
    keep = h[offs + R.KIND_AT] == R.KIND_VALUE
    return slots[keep], offs[keep]



def _be(h: Any, pos: Any, n: int) -> Any:
    """The big-endian unsigned ``n``-byte integers at ``pos``."""
    if n == 1:
        return h[pos].astype(np.uint64)
    return _words_at(h, pos).byteswap() >> np.uint64(64 - 8 * n)


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
    pklen = (h[offs + R.PK_LEN_AT].astype(np.int64)
             | (h[offs + R.PK_LEN_AT + 1].astype(np.int64) << 8))
    start = offs + R.RECORD_HEADER + pklen
    first = h[start]
    nkeys = np.where((first & 0xf0) == 0x80, (first & 0x0f).astype(np.int64), -1)
    pos = start + 1
    m16 = first == 0xde
    if m16.any():
        nkeys[m16] = _be(h, start[m16] + 1, 2).astype(np.int64)
        pos[m16] += 2
    key = R._packb(field)
    found = np.full(len(slots), -1, np.int64)    # position of the value, when found
    slow = nkeys < 0                              # decoded one by one
    _walk_to_key(h, key, pos, nkeys, found, slow)
    tags = np.full(dir_cap, COL_EMPTY, np.uint8)
    ints = np.zeros(dir_cap, np.int64)
    tags[slots] = COL_MISSING
    got = np.flatnonzero(found >= 0)
    strings = _values(h, found[got], slots[got], tags, ints)
    slow_rows = np.flatnonzero(slow)
    if len(slow_rows):
        _decode_slow(heap, offs[slow_rows], slots[slow_rows], field, tags, ints, strings)
    return ColumnArrays.of(tags, ints, strings)


def _walk_to_key(h: Any, key: bytes, pos: Any, nkeys: Any, found: Any, slow: Any) -> None:
    """Step every record's map, key by key, until ``key`` (set ``found``
    to its value's position) or the map's end; mark in ``slow`` the rows
    with an element this walk cannot size.  The rows still walking are kept
    packed (their row numbers in ``rows``), so a step is a few passes over
    contiguous arrays, and repacking happens only when some rows stop."""
    rows = np.flatnonzero(nkeys > 0)
    p, left = pos[rows], nkeys[rows]
    first_key, rest_key = key[0], key[1:]
    while len(rows):
        kt = h[p]
        stop = None                  # the rows that stop walking after this step
        cand = np.flatnonzero(kt == first_key)
        if len(cand):
            cp = p[cand]
            for k, byte in enumerate(rest_key, 1):
                ok = h[cp + k] == byte
                cand, cp = cand[ok], cp[ok]
            if len(cand):
                found[rows[cand]] = cp + len(key)
                stop = np.zeros(len(rows), bool)
                stop[cand] = True
        ksize = _SIZE[kt]
        if (ksize <= 0).any():
            ksize = _sizes(h, p)
        vsize = _sizes(h, p + np.maximum(ksize, 0))
        bad = (ksize < 0) | (vsize < 0)
        if bad.any():
            slow[rows[bad]] = True
            stop = bad if stop is None else stop | bad
        p += ksize + vsize
        left -= 1
        ended = left <= 0
        if ended.any():
            stop = ended if stop is None else stop | ended
        if stop is not None:
            keep = ~stop
            rows, p, left = rows[keep], p[keep], left[keep]


def _values(h: Any, vpos: Any, slots: Any, tags: Any, ints: Any) -> list[str]:
    """Fill tags/ints at ``slots`` from the msgpack values at ``vpos``;
    returns the dictionary of the strings (codes written into ``ints``)."""
    t = h[vpos]
    floats = ints.view(np.float64)
    tags[slots] = COL_OTHER
    present = np.bincount(t, minlength=256) > 0    # most fields hold one or two types

    def put(sel: Any, tag: int, values: Any, as_float: bool = False) -> None:
        tags[slots[sel]] = tag
        (floats if as_float else ints)[slots[sel]] = values

    if present[:0x80].any() or present[0xe0:].any():
        sel = (t < 0x80) | (t >= 0xe0)
        put(sel, COL_INT, t[sel].view(np.int8).astype(np.int64))     # fixints are int8
    for code, n in ((0xcc, 1), (0xcd, 2), (0xce, 4)):
        if present[code]:
            sel = t == code
            put(sel, COL_INT, _be(h, vpos[sel] + 1, n).astype(np.int64))
    if present[0xcf]:
        sel = t == 0xcf
        big = _be(h, vpos[sel] + 1, 8)
        fits = big <= np.uint64(R.INT_MAX)
        idx = np.flatnonzero(sel)[fits]
        tags[slots[idx]] = COL_INT
        ints[slots[idx]] = big[fits].astype(np.int64)
    for code, n, dt in ((0xd0, 1, np.int8), (0xd1, 2, np.int16), (0xd2, 4, np.int32),
                        (0xd3, 8, np.int64)):
        if present[code]:
            sel = t == code
            raw = _be(h, vpos[sel] + 1, n)
            put(sel, COL_INT, raw.astype({1: np.uint8, 2: np.uint16, 4: np.uint32,
                                          8: np.uint64}[n]).view(dt).astype(np.int64))
    if present[0xcb]:
        sel = np.flatnonzero(t == 0xcb)
        put(sel, COL_FLOAT, _be(h, vpos[sel] + 1, 8).view(np.float64), as_float=True)
    if present[0xca]:
        sel = t == 0xca
        put(sel, COL_FLOAT, _be(h, vpos[sel] + 1, 4).astype(np.uint32).view(np.float32)
            .astype(np.float64), as_float=True)
    if present[0xc0]:
        put(t == 0xc0, COL_NULL, 0)
    if present[0xc2] or present[0xc3]:
        sel = (t == 0xc2) | (t == 0xc3)
        put(sel, COL_BOOL, (t[sel] == 0xc3).astype(np.int64))
    if not (present[0xa0:0xc0].any() or present[[0xd9, 0xda, 0xdb]].any()):
        return []
    sel = np.flatnonzero(((t & 0xe0) == 0xa0) | (t == 0xd9) | (t == 0xda) | (t == 0xdb))
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
    # Each string as little-endian 8-byte lanes, zeroed past its end, and a
    # polynomial fingerprint of its lanes and length; equal fingerprints are
    # then proven equal lane by lane (else the exact, slower grouping).
    lanes = np.empty((len(begin), max(1, width + 7 >> 3)), np.uint64)
    fingerprint = length.astype(np.uint64) * _FP_MUL
    for k in range(lanes.shape[1]):
        lane = _lanes_at(h, begin + 8 * k, length - 8 * k)
        lanes[:, k] = lane
        fingerprint = (fingerprint ^ lane) * _FP_MUL
    _, first, codes = np.unique(fingerprint, return_index=True, return_inverse=True)
    codes = codes.ravel()
    if not ((lanes == lanes[first[codes]]).all() and (length == length[first[codes]]).all()):
        keys = np.concatenate([lanes, length[:, None].astype(np.uint64)], axis=1)
        _, first, codes = np.unique(keys, axis=0, return_index=True, return_inverse=True)
        codes = codes.ravel()
    mv = memoryview(h)
    strings = [str(mv[b:b + n], "utf-8")
               for b, n in zip(begin[first].tolist(), length[first].tolist())]
    return strings, codes.astype(np.int64)


_FP_MUL = np.uint64(0x9E3779B97F4A7C15)


def _lanes_at(h: Any, pos: Any, left: Any) -> Any:
    """The 8 bytes at each ``pos`` as a little-endian u64, keeping only the
    first ``left`` of them (all when ``left`` >= 8, none when <= 0)."""
    lane = _words_at(h, pos)
    short = np.flatnonzero(left < 8)
    keep = np.clip(left[short], 0, 7).astype(np.uint64) * np.uint64(8)
    lane[short] &= (np.uint64(1) << keep) - np.uint64(1)
    return lane


def _words_at(h: Any, pos: Any) -> Any:
    """The 8 bytes at each ``pos`` as a little-endian u64 (zeros past the
    buffer's end): two aligned word loads and shifts, not eight byte loads."""
    words = h[:len(h) & ~7].view("<u8")
    at = np.minimum(pos >> 3, len(words) - 2)
    shift = ((pos & 7) * 8).astype(np.uint64)
    lane = ((words[at] >> shift) | (words[at + 1] << (np.uint64(64) - shift))).astype(np.uint64)
    aligned = np.flatnonzero(shift == 0)          # a shift by 64 is not 0 everywhere
    lane[aligned] = words[at[aligned]]
    for i in np.flatnonzero(at != pos >> 3).tolist():      # the buffer's last bytes
        lane[i] = int.from_bytes(bytes(h[pos[i]:pos[i] + 8]), "little")
    return lane


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
