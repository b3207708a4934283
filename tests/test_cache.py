"""The shared cache (dictdb_shm/cache/), across real processes that attach
by name: exact incr, one add winner, memoize computing once per key and
surviving a SIGKILLed computer, TTL seen by every process and swept by the
coordinator, eviction holding its bound under concurrent writers, pickle,
key types, stats, and the settings contract."""

from __future__ import annotations

import datetime
import decimal
import json
import math
import os
import random
import signal
import sys
import time
from typing import Iterator

import pytest

from conftest import ROOT, Worker, spawner, wait_until
from dictdb_shm import (DictDB, InvalidArgumentError, InvalidNameError, LockTimeoutError,
                        UnstorableValueError)
from dictdb_shm.crashpoints import ENV as PAUSE
from dictdb_shm.engine import layout as L
from proctools import process_state

CACHE_WORKERS = os.path.join(ROOT, "tests", "cache_workers.py")


@pytest.fixture
def spawn_cache() -> Iterator:
    """conftest's ``spawn`` for tests/cache_workers.py scenarios."""
    yield from spawner(CACHE_WORKERS)


@pytest.fixture
def spawn_cache_paused(monkeypatch) -> Iterator:
    """``spawn_cache`` whose workers stop themselves (SIGSTOP) at the crash
    point ``patch_written`` (engine/inplace.py): an in-place edit's bytes
    are written, its commit is not.  This process is not armed."""
    monkeypatch.setenv(PAUSE, "patch_written")
    workers = spawner(CACHE_WORKERS)
    start = next(workers)
    monkeypatch.delenv(PAUSE)
    yield start
    next(workers, None)


@pytest.fixture
def db(db_name) -> Iterator[DictDB]:
    d = DictDB(db_name)
    yield d
    d.close()


def start_together(workers: list[Worker]) -> None:
    for w in workers:
        w.expect("READY")
    for w in workers:
        w.send("GO")


def result_of(w: Worker) -> object:
    """The worker's RESULT, past any progress lines (COMPUTING) before it."""
    while True:
        kind, _, rest = w.read_line().partition(" ")
        if kind == "RESULT":
            return json.loads(rest)


def results(workers: list[Worker]) -> list:
    out = [result_of(w) for w in workers]
    for w in workers:
        w.finish()
    return out


# ------------------------------------------------------------------ basics
def test_get_set_add_delete_touch_and_in(db):
    c = db.cache("basics")
    assert c.get("a") is None and c.get("a", 7) == 7
    c.set("a", {"x": [1, 2]})
    assert c.get("a") == {"x": [1, 2]} and "a" in c and "b" not in c
    assert c.add("a", 2) is False and c.get("a") == {"x": [1, 2]}
    assert c.add("b", None) is True and "b" in c and c.get("b", 5) is None
    assert len(c) == 2
    assert c.touch("a", 100) is True and c.touch("zz", 100) is False
    assert c.delete("a") is True and c.delete("a") is False and "a" not in c
    c.clear()
    assert len(c) == 0 and c.get("b", "gone") == "gone"


def test_key_types_are_distinct_and_others_refused(db):
    c = db.cache("keys")
    c.set("1", "str")
    c.set(b"1", "bytes")
    c.set(1, "int")
    c.set(2**64 - 1, "big")
    c.set(-2**63, "small")
    assert [c.get(k) for k in ("1", b"1", 1, 2**64 - 1, -2**63)] == \
        ["str", "bytes", "int", "big", "small"]
    assert len(c) == 5
    for bad in (1.5, ("a",), None, True, 2**64):
        with pytest.raises(InvalidArgumentError):
            c.set(bad, 1)


def test_incr(db):
    c = db.cache("n")
    assert c.incr("x") == 1 and c.incr("x", 10) == 11 and c.incr("x", -1) == 10
    assert c.incr("y", default=100) == 101
    c.set("s", "text")
    with pytest.raises(InvalidArgumentError):
        c.incr("s")
    with pytest.raises(InvalidArgumentError):
        c.incr("x", 1.5)


def test_incr_from_four_processes_is_exact(db, spawn_cache):
    db.cache("counters")
    workers = [spawn_cache("incr_many", db.name, "counters", 500) for _ in range(4)]
    start_together(workers)
    lasts = results(workers)
    assert db.cache("counters").get("counter") == 2000
    assert max(lasts) == 2000


def test_set_in_place_never_grows_and_readers_never_see_it_torn(db, spawn_cache):
    c = db.cache("inplace")
    c.set("k", {"v": "a" * 64})
    end = c._store.desc.heap_end
    reader = spawn_cache("read_untorn", db.name, "inplace", 1.5)
    reader.expect("READY")
    writes = 0
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        c.set("k", {"v": "ab"[writes % 2] * 64})
        writes += 1
    seen = result_of(reader)
    reader.finish()
    assert seen["bad"] == [] and seen["reads"] > 1000 and writes > 1000
    assert c._store.desc.heap_end == end              # every set was made in place
    assert c.get("k") == {"v": "ab"[(writes - 1) % 2] * 64}
    c.set("k", {"v": "longer" * 20})                   # another length: appended
    assert c._store.desc.heap_end > end and c.get("k") == {"v": "longer" * 20}


@pytest.mark.parametrize("call", ["incr", "set"])
def test_sigkill_in_the_middle_of_an_in_place_edit_takes_it_back(db, spawn_cache_paused, call):
    """A writer killed after it overwrote a committed body in place but
    before the edit committed: the next locker puts the old bytes back."""
    c = db.cache("n")
    if call == "incr":
        assert c.incr("k", 41) == 41      # written anew, in the counter form
        w = spawn_cache_paused("incr_once", db.name, "n", "k")
        old, new = 41, b"\xd3" + (42).to_bytes(8, "big")
    else:
        c.set("k", {"name": "before"})
        w = spawn_cache_paused("set_once", db.name, "n", "k", json.dumps({"name": "after!"}))
        old, new = {"name": "before"}, b"after!"
    w.expect("READY")
    wait_until(lambda: process_state(w.pid) == "T", 60, "the worker to stop mid-edit")
    store = c._store
    assert store._w[store._seq_w + L.STORE_PATCH_AT // L.WORD], "no edit was under way"
    assert new in bytes(store.heap[:store.desc.heap_end])     # the bytes were overwritten
    w.kill()
    assert c.get("k") == old              # the next locker undid the edit
    assert bytes(store.heap[store.desc.heap_end:store.desc.heap_cap]).count(0) == \
        store.desc.heap_cap - store.desc.heap_end             # and zeroed its copy
    if call == "incr":
        assert c.incr("k") == 42 and c.get("k") == 42
    else:
        c.set("k", {"name": "again!"})
        assert c.get("k") == {"name": "again!"} and len(c) == 1


def test_sigkill_storm_during_incr_loses_and_doubles_nothing(db, spawn_cache, tmp_path):
    """Workers incr while being SIGKILLed at random moments, one surviving:
    the counter is every acknowledged incr, plus at most the one call in
    flight in each killed worker (applied, not yet acknowledged)."""
    c = db.cache("storm")

    def acks_file(i: int) -> str:
        path = tmp_path / f"acks{i}"
        path.write_bytes(bytes(8))
        return str(path)

    survivor = spawn_cache("incr_acks", db.name, "storm", 3, acks_file(0))
    survivor.expect("READY")
    rng = random.Random(10)
    kills = 8
    for i in range(1, kills + 1):
        w = spawn_cache("incr_acks", db.name, "storm", 3600, acks_file(i))
        w.expect("READY")
        time.sleep(rng.uniform(0.02, 0.2))
        w.kill()
    survivor_acks = result_of(survivor)
    survivor.finish()
    acked = sum(int.from_bytes((tmp_path / f"acks{i}").read_bytes(), "little")
                for i in range(kills + 1))
    total = c.get("storm")
    assert type(total) is int and acked <= total <= acked + kills, (acked, total, kills)
    assert survivor_acks > 100 and acked > survivor_acks       # every worker really ran
    assert c.incr("storm") == total + 1


def test_add_has_one_winner_across_processes(db, spawn_cache):
    c = db.cache("race")
    workers = [spawn_cache("add_race", db.name, "race", 200) for _ in range(4)]
    start_together(workers)
    outcome = results(workers)
    winners: dict[int, int] = {}
    for r in outcome:
        for k in r["won"]:
            assert k not in winners, f"k{k} was added twice"
            winners[k] = r["pid"]
    assert sorted(winners) == list(range(200))
    assert all(c.get(f"k{k}") == pid for k, pid in winners.items())


# ------------------------------------------------------------------ memoize
def test_memoize_stampede_runs_once_per_key(db, spawn_cache):
    c = db.cache("memo")
    workers = [spawn_cache("memoize_stampede", db.name, "memo", 3) for _ in range(4)]
    start_together(workers)
    outcome = results(workers)
    assert all(r == {"0": 0, "1": 1, "2": 4} for r in outcome)
    assert [c.get(f"calls:{x}") for x in range(3)] == [1, 1, 1]


def test_memoize_in_process_and_none_results(db):
    c = db.cache("memo1")
    runs = []

    @c.memoize(ttl=60)
    def f(a, b=0):
        runs.append((a, b))
        return None if a == 0 else [a, b]
    assert f(1, b=2) == [1, 2] and f(1, b=2) == [1, 2] and f(0) is None and f(0) is None
    assert runs == [(1, 2), (0, 0)]


def test_memoize_takes_over_from_a_killed_computer(db, spawn_cache):
    c = db.cache("memo2")
    first = spawn_cache("memoize_one", db.name, "memo2", 7, 600)
    first.expect("READY")
    assert first.expect("COMPUTING") == "7"
    second = spawn_cache("memoize_one", db.name, "memo2", 7, 0)
    second.expect("READY")
    wait_until(lambda: c.get("calls:7") == 1, 30, "the first computer to claim")
    os.kill(first.proc.pid, signal.SIGKILL)
    assert second.expect("COMPUTING") == "7"
    assert result_of(second) == 49
    second.finish()
    assert c.get("calls:7") == 2


def test_memoize_waiter_times_out_on_a_live_stuck_computer(db, spawn_cache):
    c = db.cache("memo3")
    stuck = spawn_cache("memoize_one", db.name, "memo3", 3, 600)
    stuck.expect("READY")
    stuck.expect("COMPUTING")
    square = c.memoize(timeout=0.3, name="slow_square")(lambda x: x * x)
    with pytest.raises(LockTimeoutError):
        square(3)


# ---------------------------------------------------------------------- TTL
def test_ttl_expiry_is_seen_by_other_processes_and_swept(db, spawn_cache):
    c = db.cache("ttl")
    c.set("k", "v", ttl=math.inf)
    c.set("keep", "v")
    w = spawn_cache("wait_expired", db.name, "ttl", "k")
    assert json.loads(w.expect("SEEN")) == "v"
    assert c.touch("k", 0.2)
    assert json.loads(w.expect("RESULT")) == 1
    w.finish()
    assert c.get("k") is None and "k" not in c
    wait_until(lambda: c.stats()["items"] == 1, 30, "the coordinator to sweep the entry")
    assert c.stats()["expired"] == 1 and c.get("keep") == "v"


def test_default_ttl_and_add_over_an_expired_entry(db):
    c = db.cache("dttl", ttl=0.2)
    c.set("a", 1)
    c.set("b", 2, ttl=math.inf)
    wait_until(lambda: "a" not in c, 30, "the default ttl to expire the entry")
    assert c.get("a") is None and c.get("b") == 2
    assert c.add("a", 3) is True and c.get("a") == 3
    assert c.incr("fresh") == 1


# ----------------------------------------------------------------- eviction
def test_eviction_keeps_the_bound_under_two_writers(db, spawn_cache):
    c = db.cache("bounded", max_items=50)
    workers = [spawn_cache("set_many", db.name, "bounded", p, 1500) for p in ("a", "b")]
    start_together(workers)
    peak = 0
    while any(w.proc.poll() is None for w in workers):
        peak = max(peak, c.stats()["items"])
    results(workers)
    s = c.stats()
    assert peak <= 50 and s["items"] == 50 == len(c)
    assert s["evictions"] == 3000 - 50


def test_max_bytes_bound_and_least_recently_used_goes_first(db):
    c = db.cache("lru", max_items=100)
    for i in range(100):
        c.set(i, i)
    time.sleep(0.2)                       # past the stamps' 1/16 s resolution
    for i in range(10):
        c.get(i)                          # the reads stamp 0..9 as recent
    for i in range(100, 150):
        c.set(i, i)
    assert all(c.get(i) == i for i in range(10))
    assert sum(1 for i in range(10, 100) if i in c) == 40
    b = db.cache("bytes", max_bytes=4096)
    for i in range(200):
        b.set(i, "x" * 40)
    assert 0 < b.stats()["bytes"] <= 4096


# ------------------------------------------------------------------- values
def test_pickle_serializer_across_processes(db, spawn_cache):
    c = db.cache("pickled", serializer="pickle")
    c.set("when", datetime.date(2024, 2, 29))
    c.set("money", decimal.Decimal("1.10"))
    c.set("set", {1, 2, 3})
    c.set("n", 41)
    w = spawn_cache("pickled", db.name, "pickled")
    assert json.loads(w.expect("RESULT")) == {"when": True, "money": True, "set": True,
                                              "n": 42}
    w.finish()
    plain = db.cache("plain")
    with pytest.raises(UnstorableValueError, match="serializer='pickle'"):
        plain.set("when", datetime.date(2024, 2, 29))
    plain.set("t", (1, 2))
    assert plain.get("t") == [1, 2]


def test_stats_count_every_process(db, spawn_cache):
    c = db.cache("stats")
    w = spawn_cache("hits_and_misses", db.name, "stats", 10, 5)
    seen = json.loads(w.expect("RESULT"))
    w.finish()
    assert seen["hits"] == 10 and seen["misses"] == 5 and seen["items"] == 1
    c.get("here")
    c.get("nope")
    s = c.stats()                         # the worker's counts outlive it
    assert (s["hits"], s["misses"], s["items"]) == (11, 6, 1)
    assert s["bytes"] > 0 and s["evictions"] == 0


# ----------------------------------------------------------------- settings
def test_settings_are_fixed_at_creation_and_caches_are_no_tables(db, tmp_path):
    c = db.cache("fixed", max_items=10, ttl=5)
    assert db.cache("fixed").max_items == 10 and db.cache("fixed", max_items=10).ttl == 5
    with pytest.raises(InvalidArgumentError, match="max_items=10"):
        db.cache("fixed", max_items=20)
    with pytest.raises(InvalidArgumentError):
        db.cache("other", max_items=0)
    with pytest.raises(InvalidArgumentError):
        db.cache("other", serializer="json")
    c.set("a", 1)
    db.create_table("real").insert({"id": 1})
    assert db.list_tables() == ["real"]
    with pytest.raises(InvalidNameError):
        db.create_table("@cache:fixed")
    db.save(tmp_path / "d.json")
    assert list(json.loads((tmp_path / "d.json").read_text())["tables"]) == ["real"]


def test_cache_pickles_as_its_name(db):
    import pickle
    c = db.cache("named")
    c.set("a", 1)
    again = pickle.loads(pickle.dumps(c))
    assert again.get("a") == 1 and again.name == "named"
