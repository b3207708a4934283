"""memoize: a function's results shared by every process, computed once per
key even when many processes miss it at the same moment.

Owns: the cache key of a call, the claim that elects the one process that
computes, waiting for its result, and taking over from a claimer that died.
Must never hold a lock while the function runs, or wait without a deadline.

The protocol, all through the cache's own calls:

* a call's key is ``b"\\0memo:" + name + msgpack([args, sorted kwargs])``
  (pickle when msgpack cannot pack the arguments): the same in every process;
* on a miss the process tries ``add(claim key, [pid, start ticks])``; ``add``
  has one winner across processes;
* the winner looks once more for a result (another may have finished in
  between), else calls the function, stores the result, and removes its claim
  (also when the function raised: then a waiter takes over and calls it);
* the others poll for the result, backing off from 1 ms to 50 ms, until
  ``timeout`` (then LockTimeoutError naming the claimer).  Each poll also
  reads the claim: when its process has ended (procinfo.is_alive: pid and
  start time, so a reused pid is not mistaken for it) the claim is removed,
  under the cache's write lock and only if it is still that one, and the
  waiters race to ``add`` a claim of their own.

A claim never expires by itself (a slow computation keeps it), so only the
death of its process frees it early.  An eviction under memory pressure can
remove a claim, which at worst lets a second process compute.
"""

from __future__ import annotations

import functools
import math
import pickle
import time
from typing import Any, Callable

import msgpack

from dictdb_shm.errors import LockTimeoutError
from dictdb_shm.procinfo import is_alive, own_identity

_MISS = object()
_pack = msgpack.Packer(use_bin_type=True).pack
FIRST_WAIT = 0.001
LONGEST_WAIT = 0.05


def call_key(name: bytes, args: tuple, kwargs: dict) -> bytes:
    parts = [list(args), sorted(kwargs.items())]
    try:
        raw = _pack(parts)
    except (TypeError, ValueError, OverflowError):
        raw = b"p" + pickle.dumps(parts, protocol=4)
    return b"\0memo:" + name + b":" + raw


def memoizer(cache: Any, ttl: float | None, timeout: float,
             name: str | None) -> Callable[[Callable], Callable]:
    def decorate(func: Callable) -> Callable:
        fname = (name or f"{func.__module__}.{func.__qualname__}").encode()

        @functools.wraps(func)
        def memoized(*args: Any, **kwargs: Any) -> Any:
            key = call_key(fname, args, kwargs)
            value = cache.get(key, _MISS)
            if value is not _MISS:
                return value
            return _compute_once(cache, key, func, args, kwargs, ttl, timeout)
        return memoized
    return decorate


def _compute_once(cache: Any, key: bytes, func: Callable, args: tuple, kwargs: dict,
                  ttl: float | None, timeout: float) -> Any:
    claim = b"\0claim" + key
    me = list(own_identity())
    deadline = time.monotonic() + timeout
    wait = FIRST_WAIT
    while True:
        if cache.add(claim, me, ttl=math.inf):
            try:
                value = cache.get(key, _MISS)
                if value is _MISS:
                    value = func(*args, **kwargs)
                    cache.set(key, value, ttl)
                return value
            finally:
                _release_if(cache, claim, me)
        holder = cache.get(claim, None)
        if holder is not None and not is_alive(*holder):
            _release_if(cache, claim, holder)     # its process died: race to take over
            continue
        value = cache.get(key, _MISS)
        if value is not _MISS:
            return value
        if time.monotonic() > deadline:
            pid = holder[0] if holder else "none"
            raise LockTimeoutError(
                f"memoize waited {timeout} s for pid {pid} to compute a result in cache "
                f"{cache.name!r}", hint="raise memoize(timeout=) for slow functions")
        time.sleep(wait)
        wait = min(wait * 2, LONGEST_WAIT)


def _release_if(cache: Any, claim: bytes, holder: list) -> None:
    """Remove the claim, only if ``holder`` still holds it."""
    with cache._lock.write_lock():
        if cache.get(claim, None) == holder:
            cache.delete(claim)
