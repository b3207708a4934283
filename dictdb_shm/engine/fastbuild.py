"""Building fresh hash and sorted indexes with numpy, from one pass over the heap.

Owns: turning a field's values (read by extract.py, one vectorised pass)
into the bytes of index.py's value table, chains and sorted array, the same
structures ``Index.add`` maintains one record at a time.  Value identities
are index.py's: numbers get theirs here, vectorised, with the same
arithmetic as ``index.identity``; strings and the rare other values (bytes,
floats beyond int64 that are whole) go through ``index.identity`` itself.
Must never: decide what to index or when (indexing.py, store.py), or write
anything but the fresh, unpublished indexes it is given.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dictdb_shm.engine import COL_BOOL, COL_FLOAT, COL_INT, COL_OTHER, COL_STR
from dictdb_shm.engine import index as IX
from dictdb_shm.engine import records as R
from dictdb_shm.engine.extract import live_records, read_field

_U64 = np.uint64
_SALT_INT, _SALT_FLOAT = _U64(0x4E55), _U64(0x464C)
_GOLDEN = _U64(R.GOLDEN)
_SIGN = _U64(1 << 63)


def _mix(x: Any, salt: Any) -> Any:
    h = (x ^ salt) * _GOLDEN
    h[h == 0] = 1                       # 0 marks an empty value-table slot
    return h


def _number_keys(f: Any) -> Any:
    """index._number_key of each float64, as (n, 16) bytes."""
    f = np.where(f == 0, 0.0, f)        # -0.0 and 0.0 share a key
    bits = f.view(_U64)
    bits = np.where(bits >> _U64(63) != 0, ~bits, bits | _SIGN)
    out = np.zeros((len(f), 16), np.uint8)
    out[:, 0] = IX.TAG_NUMBER
    out[:, 1:9] = bits.astype(">u8").view(np.uint8).reshape(-1, 8)
    return out


def identities(dir_buf: Any, dir_cap: int, heap: Any, field: str) -> tuple[Any, Any, Any]:
    """(slots, value hashes, order keys (n, 16)) of every live record whose
    ``field`` is indexable, as ``index.identity`` defines it."""
    with np.errstate(over="ignore", invalid="ignore"):
        col = read_field(dir_buf, dir_cap, heap, field)
        tags, ints, floats = col.tags, col.ints, col.floats
        parts = []
        sl = np.flatnonzero((tags == COL_INT) | (tags == COL_BOOL))
        v = ints[sl]
        parts.append((sl, _mix(v.view(_U64), _SALT_INT), _number_keys(v.astype(np.float64))))
        sl = np.flatnonzero(tags == COL_FLOAT)
        f = floats[sl]
        ok = ~np.isnan(f)
        sl, f = sl[ok], f[ok]
        whole = (f == np.floor(f)) & (np.abs(f) < 2.0 ** 63)
        vh = np.where(whole, _mix(np.where(whole, f, 0).astype(np.int64).view(_U64), _SALT_INT),
                      _mix(f.view(_U64), _SALT_FLOAT))
        huge = np.isinf(f) | ((f == np.floor(f)) & ~whole)
        keep = ~huge
        parts.append((sl[keep], vh[keep], _number_keys(f[keep])))
        odd = list(sl[huge].tolist())                  # whole floats past int64: identity()
        sl = np.flatnonzero(tags == COL_STR)
        if len(sl):
            ids = [IX.identity(s) for s in col.strings]
            hashes = np.array([i[0] for i in ids], _U64)
            keys = np.frombuffer(b"".join(i[1] for i in ids), np.uint8).reshape(-1, 16)
            codes = ints[sl]
            parts.append((sl, hashes[codes], keys[codes]))
        odd += np.flatnonzero(tags == COL_OTHER).tolist()
        if odd:
            parts.append(_python_identities(dir_buf, heap, odd, field, floats, tags))
    slots = np.concatenate([p[0] for p in parts]).astype(np.int64)
    return slots, np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])


def _python_identities(dir_buf: Any, heap: Any, slots: list[int], field: str, floats: Any,
                       tags: Any) -> tuple[Any, Any, Any]:
    got_slots, hashes, keys = [], [], []
    for slot in slots:
        if tags[slot] == COL_FLOAT:
            value: Any = float(floats[slot])
        else:
            eo = R.ENTRY.unpack_from(dir_buf, R.entry_at(slot))[1]
            value = (R.decode_at(heap, R.entry_record(eo)) or {}).get(field)
        ident = IX.identity(value)
        if ident is not None:
            got_slots.append(slot)
            hashes.append(ident[0])
            keys.append(ident[1])
    return (np.array(got_slots, np.int64), np.array(hashes, _U64),
            np.frombuffer(b"".join(keys), np.uint8).reshape(-1, 16))


def build(fresh: list[tuple[str, IX.Index]], dir_buf: Any, dir_cap: int, heap: Any) -> None:
    """Fill each fresh (zeroed) hash or sorted index of ``fresh`` from the heap."""
    for field, ix in fresh:
        slots, vh, keys = identities(dir_buf, dir_cap, heap, field)
        _fill(ix, slots, vh, keys)


def _fill(ix: IX.Index, slots: Any, vh: Any, keys: Any) -> None:
    buf, cap = ix.buf, ix.cap
    # One stable sort groups the rows by value hash, slots ascending inside
    # each group (np.unique plus a lexsort cost three times as much).
    by_slot = np.argsort(slots, kind="stable")
    order = by_slot[np.argsort(vh[by_slot], kind="stable")]
    s, v = slots[order], vh[order]
    n = len(s)
    same_prev = np.zeros(n, bool)
    same_prev[1:] = v[1:] == v[:-1]
    starts = np.flatnonzero(~same_prev)
    uniq = v[starts]
    counts = np.diff(np.append(starts, n))
    g = np.cumsum(~same_prev) - 1                   # each row's value, as an index into uniq
    same_next = np.zeros(n, bool)
    same_next[:-1] = same_prev[1:]
    nxt = np.zeros(n, _U64)                          # a chain runs from the largest slot down
    nxt[1:] = np.where(same_prev[1:], s[:-1] + 1, 0)
    prev = np.zeros(n, _U64)
    prev[:-1] = np.where(same_next[:-1], s[1:] + 1, 0)
    links = np.frombuffer(buf, _U64, 2 * cap, ix.links).reshape(cap, 2)
    links[s, 0] = prev | (nxt << _U64(32))
    links[s, 1] = v
    heads = np.zeros(len(uniq), np.int64)
    last = np.flatnonzero(~same_next)
    heads[g[last]] = s[last]
    _place_values(ix, uniq, heads, counts)
    d = len(uniq)
    IX._HDR.pack_into(buf, ix.hdr, ix.kind, d, d, 0, 0)
    if ix.kind == IX.KIND_SORTED and d:
        k = keys[order[starts]]
        hi = k[:, :8].copy().view(">u8").ravel()
        by_key = np.argsort(hi, kind="stable")
        if (hi[by_key][1:] == hi[by_key][:-1]).any():    # ties on the first half: all of it
            lo = k[:, 8:].copy().view(">u8").ravel()
            by_key = np.lexsort((uniq, lo, hi))
        entries = np.zeros((d, 24), np.uint8)
        entries[:, :16] = k[by_key]
        entries[:, 16:] = uniq[by_key].astype("<u8").view(np.uint8).reshape(-1, 8)
        np.frombuffer(buf, np.uint8, 24 * d, ix.sorted)[:] = entries.ravel()
        IX._HDR.pack_into(buf, ix.hdr, ix.kind, d, d, d, 0)


def _place_values(ix: IX.Index, uniq: Any, heads: Any, counts: Any) -> None:
    """Write the value table: each distinct value at the first free slot
    from its home, as linear probing (Index._find) expects."""
    cap = ix.cap
    home = (uniq >> _U64(ix.shift)).astype(np.int64) if ix.shift < 64 else \
        np.zeros(len(uniq), np.int64)
    order = np.argsort(home, kind="stable")
    h = home[order]
    rank = np.arange(len(h))
    pos = rank + np.maximum.accumulate(h - rank) if len(h) else h
    table = np.frombuffer(ix.buf, _U64, 2 * cap, ix.values).reshape(cap, 2)
    fits = pos < cap
    idx = order[fits]
    table[pos[fits], 0] = uniq[idx]
    table[pos[fits], 1] = (heads[idx] + 1).astype(_U64) | (counts[idx].astype(_U64) << _U64(32))
    for i in order[~fits].tolist():                 # wrapped past the end: probe from home
        p = int(home[i])
        while table[p, 0]:
            p = (p + 1) % cap
        table[p, 0] = uniq[i]
        table[p, 1] = np.uint64(int(heads[i]) + 1) | (np.uint64(int(counts[i])) << _U64(32))


__all__ = ["build", "identities", "live_records"]
