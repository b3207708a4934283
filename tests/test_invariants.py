"""Visibility, atomicity, isolation and liveness across real, unrelated processes:

* a write call that returned is seen by every process's next read;
* each write call is all-or-nothing, even when its process is SIGKILLed;
* a read sees the table between whole write calls, never a torn record;
* a process that dies holding a lock delays the others for a bounded time,
  and nothing committed is lost.

Every other process here is a fresh interpreter started by ``spawn`` that
attaches by name; crashes are real SIGKILLs.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time

import pytest

from dictdb_shm import DictDB
from dictdb_shm.query import compile_predicate

pytestmark = pytest.mark.slow


@pytest.fixture
def db(db_name):
    d = DictDB(db_name, lock_timeout=20)
    yield d
    d.close()


def test_visibility_both_ways(db, spawn):
    db.create_table("users")
    users = db.get_table("users")
    users.insert({"id": 7, "name": "Ada"})
    w = spawn("read_all", db.name, "users")
    assert json.loads(w.expect("RESULT")) == [{"id": 7, "name": "Ada"}]
    w.finish()

    w = spawn("wait_for_key_then_update", db.name, "users", json.dumps(8))
    users.insert({"id": 8, "name": "Bob"})
    assert w.expect("RESULT") == "updated"
    w.finish()
    assert users.get(8) == {"id": 8, "name": "Bob", "seen": True}
    assert users.select(where=users.seen == True) == [  # noqa: E712
        {"id": 8, "name": "Bob", "seen": True}]


def test_four_processes_inserting_at_once(db, spawn):
    db.create_table("events")
    n = 1500
    workers = [spawn("insert_many_auto", db.name, "events", i, n) for i in range(4)]
    pks = []
    for w in workers:
        w.expect("READY")
    for w in workers:
        pks += json.loads(w.expect("RESULT", timeout=120))
        w.finish()
    events = db.get_table("events")
    assert len(pks) == len(set(pks)) == 4 * n
    assert events.count() == 4 * n
    stored = events.copy()
    assert sorted(stored) == sorted(pks)
    for w in range(4):
        mine = [r["i"] for r in events.select(where=events.worker == w, order_by="i")]
        assert mine == list(range(n))


def test_no_lost_updates_under_write_lock(db, spawn):
    db.create_table("counters", primary_key="key")
    counters = db.get_table("counters")
    counters.insert({"key": "counter", "value": 0})
    per_worker = 300
    workers = [spawn("increment", db.name, "counters", per_worker) for _ in range(4)]
    for w in workers:
        assert w.expect("RESULT", timeout=120) == "done"
        w.finish()
    assert counters.get("counter")["value"] == 4 * per_worker


def test_readers_never_see_torn_or_partial_updates(db, spawn):
    db.create_table("grid")
    grid = db.get_table("grid")
    grid.insert([{"id": i, "v": 0, "check": "v0"} for i in range(2000)])
    readers = [spawn("check_isolation", db.name, "grid", 4) for _ in range(2)]
    for r in readers:
        r.expect("READY")
    writer = spawn("rewrite_all", db.name, "grid", 60)
    writer.expect("READY")
    for r in readers:
        stats = json.loads(r.expect("RESULT", timeout=60))
        r.finish()
        assert stats["reads"] > 0
    writer.expect("RESULT", timeout=120)
    writer.finish()
    assert {r["v"] for r in grid.all()} == {60}


def test_sigkill_during_bulk_insert_is_all_or_nothing(db, spawn):
    """SIGKILL a 200,000-row insert at random moments: 0 or 200,000 rows, and
    the table keeps working.  Each round kills a fresh process."""
    db.create_table("bulk")
    bulk = db.get_table("bulk")
    rng = random.Random(1234)
    outcomes = []
    expected = 0
    for round_no in range(6):
        start = round_no * 1_000_000
        w = spawn("bulk_insert", db.name, "bulk", 200_000, start)
        w.expect("START", timeout=60)
        time.sleep(rng.uniform(0.0, 1.5))
        w.kill()
        n = bulk.count()                       # recovers the dead writer if needed
        assert n - expected in (0, 200_000), f"round {round_no}: {n - expected} rows"
        if n - expected:
            assert bulk.get(start) is not None and bulk.get(start + 199_999) is not None
            expected = n
            outcomes.append("all")
        else:
            assert bulk.get(start) is None and bulk.get(start + 199_999) is None
            outcomes.append("none")
        assert len(bulk.select(where=(bulk.id >= start) & (bulk.id < start + 200_000))) \
            == n - (expected if outcomes[-1] == "none" else expected - 200_000)
        bulk.insert({"id": -round_no - 1, "name": "after"})   # still writable
        expected += 1
    assert bulk.count() == expected
    print("outcomes", outcomes)


@pytest.mark.parametrize("kind", ["read", "write"])
def test_killed_lock_holder_does_not_block_others(db, spawn, kind):
    db.create_table("t")
    t = db.get_table("t")
    t.insert({"id": 1, "v": "before"})
    holder = spawn("hold_lock", db.name, "t", kind)
    holder.expect("READY")
    holder.kill()
    started = time.monotonic()
    t.insert({"id": 2, "v": "after"})         # lock_timeout=20 bounds the wait
    t.update({"v": "changed"}, where=t.id == 1)
    waited = time.monotonic() - started
    assert t.get(1) == {"id": 1, "v": "changed"} and t.count() == 2
    print(f"waited {waited:.3f} s after the {kind} holder died")


def test_lock_timeout_names_table_and_holder(db, spawn):
    db.create_table("t")
    holder = spawn("hold_lock_briefly", db.name, "t", 30)
    holder.expect("READY")
    w = spawn("try_insert_with_timeout", db.name, "t", 0.3)
    result = json.loads(w.expect("RESULT"))
    w.finish()
    assert result["holder"] == holder.pid
    assert result["table"] == "t"
    assert str(holder.pid) in result["error"] and "'t'" in result["error"]
    holder.kill()


def test_growth_to_150mb_while_another_process_reads(db, spawn):
    db.create_table("big")
    reader_rows = [{"id": i, "blob": "seed", "n": i} for i in range(1000)]
    db.get_table("big").insert(reader_rows)
    reader = spawn("read_while_growing", db.name, "big", 6)
    reader.expect("READY")
    grower = spawn("grow", db.name, "big", 1000, 151_000, 1000)
    grower.expect("READY")
    stats = json.loads(grower.expect("RESULT", timeout=240))
    grower.finish()
    seen = json.loads(reader.expect("RESULT", timeout=60))
    reader.finish()
    assert stats["heap_capacity"] >= 150 * 2**20
    assert seen["reads"] > 0 and seen["misses"] == 0
    big = db.get_table("big")
    assert big.count() == 151_000
    assert big.get(150_999)["n"] == 150_999


def test_sigkill_during_multi_row_updates(db, spawn):
    """Kill a process that rewrites 2,000 rows per call: every row must then
    carry the same round (the last whole call), never a mix."""
    db.create_table("grid")
    grid = db.get_table("grid")
    grid.insert([{"id": i, "v": 0, "check": "v0"} for i in range(2000)])
    rng = random.Random(99)
    for _ in range(5):
        writer = spawn("rewrite_all", db.name, "grid", 1000)
        writer.expect("READY")
        time.sleep(rng.uniform(0.05, 0.6))
        writer.kill()
        rows = grid.all()
        assert len(rows) == 2000
        assert len({r["v"] for r in rows}) == 1, "half of an update survived a crash"
        assert all(r["check"] == f"v{r['v']}" for r in rows)
    grid.update({"v": -1, "check": "v-1"})
    assert {r["v"] for r in grid.all()} == {-1}


def test_sigkill_storm_on_an_indexed_table(db, spawn):
    """A writer of random whole-batch inserts, group updates, batch deletes and
    upserts on a table with a hash and a sorted index is SIGKILLed at random
    100 times (each writer a fork of an attached process).  A reader checks the table the whole time, and after each kill
    this process checks it too: count equals the scan, no torn record, every
    batch whole or absent, and each index answers what a scan answers."""
    from workers import storm_problem
    t = db.create_table("s")
    t.create_index("grp", "hash")
    t.create_index("n", "sorted")
    reader = spawn("storm_reader", db.name, "s", 600)
    reader.expect("READY")
    launcher = spawn("storm_launcher", db.name, "s")
    launcher.expect("READY")
    rng = random.Random(2026)
    recoveries = []
    for kill in range(100):
        launcher.send(f"go {kill}")
        pid = int(launcher.expect("PID"))
        time.sleep(rng.uniform(0.01, 0.15))
        os.kill(pid, signal.SIGKILL)
        launcher.send(f"reap {pid}")
        launcher.expect("REAPED")
        started = time.monotonic()
        t.count()                       # takes the lock, and repairs, if the kill left a write
        recoveries.append(time.monotonic() - started)
        problem = storm_problem(t)
        assert problem is None, f"after kill {kill}: {problem}"
        g, lo = rng.randrange(20), rng.randrange(1000)
        everything = t.all()
        for where in (t.grp == g, t.n.between(lo, lo + 50), (t.grp == g) & (t.n >= lo)):
            by_index = sorted(str(r["id"]) for r in t.select(where=where))
            pred = compile_predicate(where)
            assert by_index == sorted(str(r["id"]) for r in everything if pred(r)), \
                f"after kill {kill}: the index disagrees with a scan on {where!r}"
    reader.proc.terminate()
    assert reader.proc.wait(timeout=30) in (0, -15), reader.stderr()
    recoveries.sort()
    print(f"\nstorm: 100 kills, {t.count()} rows; first read (and repair) after a kill "
          f"median {recoveries[50] * 1000:.1f} ms, max {recoveries[-1] * 1000:.1f} ms")
