"""What the processes bench_persist.py spawns run: the rows, and a writer
that times every single-row insert while the parent saves.

Every body reports through workers.report_to and detaches (``close()``)
before it exits; only the parent destroys the database.  It must never set
up a peer (peers.py does) or decide what is reported (bench_persist.py does).
"""

from __future__ import annotations

import time
from typing import Any

from workers import report_to

CITIES = ("Paris", "Lyon", "Berlin", "Madrid", "Rome", "Oslo", "Vienna", "Prague")


def make_row(i: int) -> dict:
    return {"id": i, "name": f"user{i}", "age": i % 100, "city": CITIES[i % len(CITIES)]}


def timed_writer(q: Any, db_name: str, first_id: int, ready: Any, stop: Any) -> None:
    """Insert rows one call at a time until ``stop`` is set; report each
    call's (start, seconds) as monotonic times, which the parent's clock shares."""
    report_to(q, lambda: _timed_writer(db_name, first_id, ready, stop))


def _timed_writer(db_name: str, first_id: int, ready: Any, stop: Any) -> list:
    from dictdb_shm import DictDB
    db = DictDB.attach(db_name)
    t = db.get_table("w")
    clock = time.monotonic
    calls = []
    i = first_id
    ready.set()
    while not stop.is_set():
        t0 = clock()
        t.insert({"id": i, "v": i})
        calls.append((t0, clock() - t0))
        i += 1
        time.sleep(0.0005)
    db.close()
    return calls
