"""Searched scans: find the records holding ``field == value`` (or a str
holding some text) by searching the heap's bytes, instead of decoding every
record.

Owns: which msgpack byte forms a value can take, the regular expression that
finds ``field: value`` pairs in a heap, and turning a match back into the
record around it (through the heap's offset log).  Must never: decide when to
search (core/planner.py does), or promise exact answers: it returns a
superset of the matching live records, which the caller re-checks.

Why it works: a record holding ``field: v`` holds the bytes msgpack(field)
followed by msgpack(v), because a msgpack map key is followed by its value.
Our packer is canonical (minimal ints, float64 floats), so the forms of a
number Python finds equal (``1``, ``1.0``, ``True``; ``0.0`` and ``-0.0``) are
a short, closed list.  Lists and dicts compare element-wise across types, so
their set of forms is open and they are not searched.

Called inside a read: without a lock the bytes may be torn, so a match the
offset log does not explain raises TornRead and the read is retried.
"""

from __future__ import annotations

import re
from itertools import islice
from typing import Any, Iterable, Iterator

from dictdb_shm.engine import records as R

_RHEAD = R.HEAD.unpack_from
_VALUE = R.KIND_VALUE
MATCH_BATCH = 4096          # matches placed in the offset log per numpy call


def value_encodings(value: Any) -> list[bytes] | None:
    """Every msgpack encoding of a value equal to ``value``, or None when that
    set is open (lists, dicts, other types) or empty (NaN)."""
    t = type(value)
    if t is str or t is bytes or value is None:
        return [R._packb(value)]
    if t is bool or t is int or t is float:
        if value != value:                     # NaN equals nothing
            return None
        try:
            f: float | None = float(value)
        except OverflowError:                  # an int beyond any float
            f = None
        forms = []
        if f is not None:
            forms.append(R._packb(f))
            if f == 0:                         # 0.0 == -0.0, encoded apart
                forms += [R._packb(0.0), R._packb(-0.0)]
        if f is None or f.is_integer():
            n = int(value)
            if R.INT_MIN <= n <= R.UINT_MAX:
                forms.append(R._packb(n))
            if n in (0, 1):
                forms.append(R._packb(bool(n)))
        return forms
    return None


def pair_pattern(field: str, values: Iterable[Any]) -> "re.Pattern[bytes] | None":
    """A pattern matching ``field`` followed by any form of any of ``values``;
    None when some value cannot be searched (the caller scans)."""
    forms: list[bytes] = []
    for v in values:
        enc = value_encodings(v)
        if enc is None:
            return None
        forms.extend(enc)
    if not forms:
        return None
    return re.compile(re.escape(R._packb(field)) + b"(?:" + b"|".join(
        re.escape(f) for f in dict.fromkeys(forms)) + b")")


def text_pattern(text: str) -> "re.Pattern[bytes]":
    """A pattern matching the UTF-8 bytes of ``text``: a str holding ``text``
    holds them, so every record with such a value (or list element) does."""
    return re.compile(re.escape(text.encode("utf-8", "surrogatepass")))


def records_around(heap: Any, heap_end: int, heap_cap: int, n_records: int,
                   needle: "re.Pattern[bytes]") -> Iterator[dict]:
    """The live records of ``heap`` that hold a match of ``needle``.

    The regular expression runs over the mapped bytes in C; a bisect of the
    offset log (after ``heap_cap``) names the record around each match, and
    only those records are decoded.
    """
    decode = R._unpackb
    for start, blen in match_spans(heap, 0, heap_end, heap_cap, 0, n_records, needle):
        yield decode(heap[start:start + blen], strict_map_key=False)


def match_spans(heap: Any, start: int, end: int, heap_cap: int, first: int, stop: int,
                needle: "re.Pattern[bytes]") -> Iterator[tuple[int, int]]:
    """``(body start, body length)`` of each live record holding a match of
    ``needle`` between bytes ``start`` and ``end``, which are the records
    ``first`` to ``stop - 1`` of the offset log (engine/ranges.py's parts;
    the whole heap is ``0, heap_end, 0, n_records``).

    Matches are taken ``MATCH_BATCH`` at a time (so a caller that stops
    early stops the search too) and placed in the log by one numpy
    ``searchsorted`` per batch rather than a bisect each.
    """
    import numpy as np                     # loaded by the first searched scan
    matches = needle.finditer(heap, start, end)
    last = -1
    while True:
        batch = [m.start() for m in islice(matches, MATCH_BATCH)]
        if not batch:
            return
        log = np.frombuffer(heap, np.uint64, stop - first, heap_cap + 8 * first)
        pos = np.array(batch, np.uint64)
        at = np.searchsorted(log, pos, side="right")
        if at.min() == 0:
            raise R.TornRead                  # a match before the part's first record
        at -= 1
        new = np.flatnonzero(np.r_[True, at[1:] != at[:-1]])   # each record's first match
        offsets, where = log[at[new]].tolist(), pos[new].tolist()
        del log                            # no export of the mapping outlives a batch
        for off, p in zip(offsets, where):
            if off == last:
                continue
            last = off
            total, blen, kind, flags, pklen = _RHEAD(heap, off)
            if off + total <= p:
                raise R.TornRead              # the log and the heap disagree
            if kind == _VALUE and not flags & R.SUPERSEDED:
                yield off + R.RECORD_HEADER + pklen, blen
        if len(batch) < MATCH_BATCH:
            return
