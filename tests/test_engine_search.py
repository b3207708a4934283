"""Searched scans (TableStore.scan_containing): string equality without an
index finds records by their bytes; it must return exactly what a full scan
returns, whatever the records hold around those bytes."""

from __future__ import annotations

import random


from dictdb_shm.query import compile_predicate

WORDS = ["Oslo", "Rome", "city", "", "Ös", "x" * 40, "Rome2", 0, 1, 5, 5.0, -0.0, 0.0, True,
         False, None, 2**40, 2.5, -7, 255, 256, 1.0]


def random_record(rng, i):
    r = {"id": i}
    if rng.random() < 0.8:
        r["city"] = rng.choice(WORDS + [b"Rome", 5, None, ["city", "Rome"]])
    if rng.random() < 0.4:
        r["note"] = rng.choice(WORDS)                       # the key's bytes as a value
    if rng.random() < 0.3:
        r["nested"] = {"city": rng.choice(WORDS)}           # same key, deeper
    if rng.random() < 0.2:
        r["pair"] = ["city", rng.choice(WORDS)]             # key, value bytes in a list
    return r


def check(t, rng, rounds):
    for _ in range(rounds):
        v = rng.choice(WORDS + [b"Rome"])
        for q in (t.city == v, t.city.is_in([v, "Oslo"]), (t.city == v) & (t.id >= 100),
                  t.note == v):
            got = sorted(r["id"] for r in t.select(where=q))
            pred = compile_predicate(q)
            assert got == sorted(r["id"] for r in t.all() if pred(r)), repr(q)


def test_search_equals_scan_through_writes(table):
    rng = random.Random(11)
    t = table
    t.insert([random_record(rng, i) for i in range(3000)])
    check(t, rng, 10)
    for round_no in range(5):
        t.update({"city": rng.choice(WORDS)}, where=t.id < 500 + round_no * 300)
        t.delete(where=t.id.between(round_no * 400, round_no * 400 + 50))
        t.insert([random_record(rng, 10_000 + round_no * 1000 + i) for i in range(700)])
        for i in range(30):                                 # small writes, heap growth
            t.upsert(random_record(rng, rng.randrange(4000)))
        check(t, rng, 6)
    # numbers: 5 == 5.0, 1 == 1.0 == True, 0 == -0.0 == False, across encodings
    for v in (5, 5.0, 1, True, 0, -0.0, False, None, 255, 2**40, 2.5):
        q = t.city == v
        pred = compile_predicate(q)
        assert sorted(r["id"] for r in t.select(where=q)) == \
            sorted(r["id"] for r in t.all() if pred(r)), v
    assert t.select(where=t.city == "Oslo", limit=3) == \
        [r for r in t.all() if r.get("city") == "Oslo"][:3]


def test_search_after_compaction_and_growth(table):
    t = table
    for n in range(40):
        t.insert([{"id": n * 100 + i, "city": "Rome" if i % 7 else "Oslo"} for i in range(100)])
        t.update({"city": "Paris"}, where=t.id == n * 100)
    t._lock.acquire_write()
    try:
        t._store.compact()
    finally:
        t._lock.release_write()
    oslo = sorted(r["id"] for r in t.select(where=t.city == "Oslo"))
    assert oslo == sorted(i for i in range(4000) if i % 100 % 7 == 0 and i % 100)
    assert len(t.select(where=t.city == "Paris")) == 40
