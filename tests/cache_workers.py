"""Cache scenarios the tests run in separate, unrelated processes.

``python tests/cache_workers.py SCENARIO ARGS...``, like tests/workers.py:
each attaches to the database by name, prints ``READY`` when it has opened
the cache and, where the test wants processes to start together, waits for
a ``GO`` line on stdin; it ends with ``RESULT <json>``.
"""

from __future__ import annotations

import json
import os
import sys
import time

from dictdb_shm import DictDB


def out(*parts: object) -> None:
    print(*parts, flush=True)


def ready_then_go() -> None:
    out("READY")
    if sys.stdin.readline().strip() != "GO":
        sys.exit("expected GO")


def incr_many(db: str, cache: str, n: str) -> None:
    c = DictDB.attach(db).cache(cache)
    ready_then_go()
    last = 0
    for _ in range(int(n)):
        last = c.incr("counter")
    out("RESULT", json.dumps(last))


def incr_once(db: str, cache: str, key: str) -> None:
    c = DictDB.attach(db).cache(cache)
    out("READY")
    out("RESULT", json.dumps(c.incr(key)))


def set_once(db: str, cache: str, key: str, value_json: str) -> None:
    c = DictDB.attach(db).cache(cache)
    out("READY")
    c.set(key, json.loads(value_json))
    out("RESULT", json.dumps("set"))


def incr_acks(db: str, cache: str, seconds: str, acks_file: str) -> None:
    """incr "storm" for ``seconds`` (or until killed), storing after each
    call that returned how many have, in the 8-byte file ``acks_file``
    (mapped: the count survives a SIGKILL): the acknowledged increments."""
    import mmap
    c = DictDB.attach(db).cache(cache)
    with open(acks_file, "r+b") as f:
        acks = memoryview(mmap.mmap(f.fileno(), 8)).cast("Q")
    out("READY")
    deadline = time.monotonic() + float(seconds)
    n = 0
    while time.monotonic() < deadline:
        c.incr("storm")
        n += 1
        acks[0] = n
    out("RESULT", json.dumps(n))


def read_untorn(db: str, cache: str, seconds: str) -> None:
    """Read "k" for ``seconds`` while another process overwrites it in place
    with ``{"v": c * 64}`` for one letter c: report reads and any other value."""
    c = DictDB.attach(db).cache(cache)
    out("READY")
    deadline = time.monotonic() + float(seconds)
    reads, bad = 0, []
    while time.monotonic() < deadline:
        v = c.get("k")
        reads += 1
        if not (type(v) is dict and len(v["v"]) == 64 and len(set(v["v"])) == 1):
            bad.append(repr(v))
    out("RESULT", json.dumps({"reads": reads, "bad": bad[:5]}))


def add_race(db: str, cache: str, keys: str) -> None:
    """Try to add each of ``keys`` keys with this pid as the value; report the wins."""
    c = DictDB.attach(db).cache(cache)
    ready_then_go()
    won = [k for k in range(int(keys)) if c.add(f"k{k}", os.getpid())]
    out("RESULT", json.dumps({"pid": os.getpid(), "won": won}))


def set_many(db: str, cache: str, prefix: str, n: str) -> None:
    c = DictDB.attach(db).cache(cache)
    ready_then_go()
    for i in range(int(n)):
        c.set(f"{prefix}{i}", "x" * (i % 50))
    out("RESULT", json.dumps("done"))


def slow_square(c, calls_key: str, seconds: float):
    """A memoized function that counts its runs in the cache itself."""
    @c.memoize(name="slow_square")
    def square(x: int) -> int:
        c.incr(f"{calls_key}{x}")
        out("COMPUTING", x)
        time.sleep(seconds)
        return x * x
    return square


def memoize_stampede(db: str, cache: str, keys: str) -> None:
    c = DictDB.attach(db).cache(cache)
    square = slow_square(c, "calls:", 0.2)
    ready_then_go()
    results = {x: square(x) for x in range(int(keys))}
    out("RESULT", json.dumps(results))


def memoize_one(db: str, cache: str, x: str, seconds: str) -> None:
    """Compute square(x) through memoize; the function takes ``seconds``."""
    c = DictDB.attach(db).cache(cache)
    square = slow_square(c, "calls:", float(seconds))
    out("READY")
    out("RESULT", json.dumps(square(int(x))))


def get_json(db: str, cache: str, key_json: str) -> None:
    """Print the value at a key (a JSON str or int; "b:..." for bytes)."""
    c = DictDB.attach(db).cache(cache)
    key = json.loads(key_json)
    if isinstance(key, str) and key.startswith("b:"):
        key = key[2:].encode()
    out("RESULT", json.dumps(c.get(key, "<absent>"), default=repr))


def wait_expired(db: str, cache: str, key: str) -> None:
    """Report that ``key`` is live, then poll (bounded) until it is not."""
    c = DictDB.attach(db).cache(cache)
    out("SEEN", json.dumps(c.get(key)))
    deadline = time.monotonic() + 30
    while c.get(key) is not None or key in c:
        if time.monotonic() > deadline:
            sys.exit("the entry never expired")
        time.sleep(0.01)
    out("RESULT", json.dumps(len(c)))


def wait_table_expired(db: str, table: str, pk: str) -> None:
    """Wait (bounded) for record ``pk`` to appear, report it, then poll
    until it has expired."""
    t = DictDB.attach(db).get_table(table)
    out("READY")
    deadline = time.monotonic() + 30
    while t.get(int(pk)) is None:
        if time.monotonic() > deadline:
            sys.exit("the record never appeared")
        time.sleep(0.002)
    out("SEEN", json.dumps(t.get(int(pk))))
    while t.get(int(pk)) is not None or t.count():
        if time.monotonic() > deadline:
            sys.exit("the record never expired")
        time.sleep(0.01)
    out("RESULT", json.dumps([t.count(), t.select(), t.get(int(pk))]))


def hits_and_misses(db: str, cache: str, hits: str, misses: str) -> None:
    c = DictDB.attach(db).cache(cache)
    c.set("here", 1)
    for _ in range(int(hits)):
        c.get("here")
    for _ in range(int(misses)):
        c.get("not here")
    out("RESULT", json.dumps(c.stats()))


def pickled(db: str, cache: str) -> None:
    import datetime
    import decimal
    c = DictDB.attach(db).cache(cache)
    out("RESULT", json.dumps({"when": c.get("when") == datetime.date(2024, 2, 29),
                              "money": c.get("money") == decimal.Decimal("1.10"),
                              "set": c.get("set") == {1, 2, 3}, "n": c.incr("n")}))


if __name__ == "__main__":
    globals()[sys.argv[1]](*sys.argv[2:])
