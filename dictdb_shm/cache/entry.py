"""A cache entry as stored: its body, its key, its deadline, its serializer.

Owns: the record body of a cache entry (``[expires_at, value]``, or
``[expires_at, pickled bytes, PICKLED]``), which keys a cache takes, how a
ttl becomes a deadline, and the ``"pickle"`` serializer.  Must never touch
shared memory or take a lock.

The deadline lives in the body, not the record header, so one decode gives
a reader the value and whether it may return it; 0 means "never expires".
Wall-clock seconds (``time.time``), so every process and the coordinator
agree on it.
"""

from __future__ import annotations

import pickle
from time import time
from typing import Any

from dictdb_shm.errors import InvalidArgumentError, UnstorableValueError

NEVER = 0
_FOREVER = float("inf")              # ttl=math.inf: never expires, whatever the default
PICKLED = 1
SERIALIZERS = ("msgpack", "pickle")
_INT_MIN, _UINT_MAX = -(1 << 63), (1 << 64) - 1


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
