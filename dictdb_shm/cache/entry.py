"""A cache entry as stored: its body, its key, its deadline, its serializer.

Owns: the record body of a cache entry (``[expires_at, value]``, or
``[expires_at, pickled bytes, PICKLED]``), the counter form of an int entry
and the in-place edit ``incr`` makes to it, which keys a cache takes, how a
ttl becomes a deadline, and the ``"pickle"`` serializer.  Must never touch
shared memory or take a lock (the edit works on a copy of the body's bytes).

The deadline lives in the body, not the record header, so one decode gives
a reader the value and whether it may return it; 0 means "never expires".
Wall-clock seconds (``time.time``), so every process and the coordinator
agree on it.

*Counters.*  ``incr`` writes its result in a fixed-width form
(``counter_body``): the msgpack array ``[expires_at, value]`` with the value
always a 9-byte int64 (``0xd3`` and 8 big-endian bytes) and the deadline the
1-byte 0 or a 9-byte float64, so a body is 11 or 19 bytes.  Adding to the
value changes 8 bytes and never the length, which is what lets the next
``incr`` edit it in place (``incr_edit``, for CacheStore.patch_body).  It
reads back as a plain int; an int stored by ``set`` is packed in its
shortest form and is rewritten in the counter form by its first ``incr``.
"""

from __future__ import annotations

import pickle
import struct
from time import time
from typing import Any

from dictdb_shm.errors import InvalidArgumentError, UnstorableValueError

NEVER = 0
_FOREVER = float("inf")              # ttl=math.inf: never expires, whatever the default
PICKLED = 1
SERIALIZERS = ("msgpack", "pickle")
_INT_MIN, _UINT_MAX = -(1 << 63), (1 << 64) - 1
_INT64_MAX = (1 << 63) - 1

# The counter form (module docstring): its msgpack bytes, named.
_ARRAY_OF_2 = b"\x92"
_NEVER_BYTE = b"\x00"                 # msgpack of NEVER (positive fixint 0)
_FLOAT64 = b"\xcb"
_INT64 = b"\xd3"
_F64 = struct.Struct(">d")            # msgpack numbers are big-endian
_I64 = struct.Struct(">q")
_COUNTER_NEVER = _ARRAY_OF_2 + _NEVER_BYTE + _INT64
_COUNTER_NEVER_SIZE = len(_COUNTER_NEVER) + _I64.size            # 11
_DEADLINE_AT = len(_ARRAY_OF_2 + _FLOAT64)                         # 2
_INT64_TAG_AT = _DEADLINE_AT + _F64.size                           # 10
_COUNTER_DEADLINE_SIZE = _INT64_TAG_AT + len(_INT64) + _I64.size   # 19
_FLOAT64_BYTE, _INT64_BYTE = _FLOAT64[0], _INT64[0]
_NEVER_VALUE_AT = len(_COUNTER_NEVER)                              # 3
_DEADLINE_VALUE_AT = _INT64_TAG_AT + len(_INT64)                   # 11


def check_key(key: Any) -> Any:
    """``key`` when a cache can hold it: a str, bytes or an int that fits 64 bits."""
    t = type(key)
    if t is str or t is bytes:
        return key
    if t is int:
        if _INT_MIN <= key <= _UINT_MAX:
            return key
        raise InvalidArgumentError(f"cache key {key} does not fit in 64 bits",
                                   hint="use a str key for bigger numbers")
    if isinstance(key, (str, bytes)) or (isinstance(key, int) and not isinstance(key, bool)):
        return check_key(_base(key))
    raise InvalidArgumentError(f"a cache key is a str, bytes or int, not {t.__name__}",
                               hint="turn the key into a str, e.g. with repr() or json.dumps()")


def _base(key: Any) -> Any:
    if isinstance(key, str):
        return str.__str__(key)
    if isinstance(key, bytes):
        return bytes(key)
    return int.__index__(key)


def check_ttl(ttl: Any, what: str = "ttl") -> float | None:
    """``ttl`` in seconds (None: no ttl); InvalidArgumentError unless a positive number."""
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
        raise InvalidArgumentError(f"{what} must be a positive number of seconds or None, "
                                   f"not {ttl!r}")
    return float(ttl)


def deadline(ttl: float | None, now: float | None = None) -> float:
    """The ``expires_at`` of an entry written now with ``ttl`` (NEVER for None)."""
    if ttl is None or ttl == _FOREVER:
        return NEVER
    return (time() if now is None else now) + ttl


def body(value: Any, expires_at: float, pickled: bool) -> list:
    if pickled:
        try:
            raw = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise UnstorableValueError(f"the cache value {value!r} cannot be pickled: {exc}"
                                       ) from None
        return [expires_at, raw, PICKLED]
    return [expires_at, value]


def value_of(stored: list) -> Any:
    """The value a body holds (unpickled when it was pickled)."""
    return stored[1] if len(stored) == 2 else pickle.loads(stored[1])


def is_live(stored: list, now: float) -> bool:
    exp = stored[0]
    return not exp or exp > now


def counter_body(expires_at: float, value: int) -> bytes | None:
    """The counter form of ``[expires_at, value]`` (module docstring), or
    None when ``value`` does not fit an int64 (then it is stored as usual)."""
    if not _INT_MIN <= value <= _INT64_MAX:
        return None
    if not expires_at:
        return _COUNTER_NEVER + _I64.pack(value)
    return _ARRAY_OF_2 + _FLOAT64 + _F64.pack(expires_at) + _INT64 + _I64.pack(value)


def incr_edit(stored: bytes, delta: int, now: float) -> tuple[int, bytes, int] | None:
    """The in-place edit adding ``delta`` to a live counter: ``(offset of the
    value's 8 bytes in the body, their new bytes, the new value)``; None
    when ``stored`` is not a live counter in the counter form or the sum
    leaves int64 (incr then rewrites the entry).  Hot path."""
    n = len(stored)
    if n == _COUNTER_NEVER_SIZE and stored[:_NEVER_VALUE_AT] == _COUNTER_NEVER:
        at = _NEVER_VALUE_AT
    elif n == _COUNTER_DEADLINE_SIZE and stored[1] == _FLOAT64_BYTE and \
            stored[_INT64_TAG_AT] == _INT64_BYTE and stored[0] == _ARRAY_OF_2[0]:
        if _F64.unpack_from(stored, _DEADLINE_AT)[0] <= now:
            return None                  # expired: incr starts it again from default
        at = _DEADLINE_VALUE_AT
    else:
        return None
    value = _I64.unpack_from(stored, at)[0] + delta
    if not _INT_MIN <= value <= _INT64_MAX:
        return None
    return at, _I64.pack(value), value
