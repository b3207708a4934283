"""Indexes in shared memory: what an index answers is what a scan answers,
through every kind of write, across processes and crashes."""

from __future__ import annotations

import json
import random
import time

import pytest

from dictdb_shm import DictDB, InvalidNameError, RecordNotFoundError
from dictdb_shm.query import compile_predicate

VALUES = [0, 1, 2, 2.5, -3, 10**12, True, False, 7.0, "a", "ab", "abc" * 10, "B", "",
          b"x", None, [1], {"k": 1}, float("nan"), "héllo", -0.0]


@pytest.fixture
def db(db_name):
    d = DictDB(db_name)
    yield d
    d.close()


def reference(t, where):
    pred = compile_predicate(where)
    return sorted(r["id"] for r in t.all() if pred(r))


def ids(rows):
    return sorted(r["id"] for r in rows)


def random_records(rng, n, start=0):
    out = []
    for i in range(start, start + n):
        r = {"id": i}
        for f in ("h", "s"):
            if rng.random() < 0.9:
                r[f] = rng.choice(VALUES) if rng.random() < 0.3 else rng.randrange(40)
        out.append(r)
    return out


def random_query(rng, t):
    f = t[rng.choice(["h", "s"])]
    v = rng.choice(VALUES[:-5]) if rng.random() < 0.3 else rng.randrange(45)
    op = rng.randrange(9)
    if op == 0:
        return f == v
    if op == 1:
        return f.is_in([v, rng.randrange(40), "a"])
    if op == 2:
        return f < v
    if op == 3:
        return f <= v
    if op == 4:
        return f > v
    if op == 5:
        return f >= v
    if op == 6:
        lo = rng.randrange(40)
        return f.between(lo, lo + rng.randrange(10))
    if op == 7:
        return (f >= v) & (t.id < 500)
    return (t.h == rng.randrange(40)) & (t.s > rng.randrange(40))


def test_index_answers_equal_scan_answers(db):
    rng = random.Random(7)
    db.create_table("t")
    t = db.get_table("t")
    t.insert(random_records(rng, 1500))
    t.create_index("h", "hash")
    t.create_index("s", "sorted")
    assert t.indexed_fields() == ["h", "s"] and t.has_index("s") and not t.has_index("x")
    for round_no in range(6):
        for _ in range(60):
            q = random_query(rng, t)
            assert ids(t.select(where=q)) == reference(t, q), repr(q)
        # mutate through every write path, small (in place) and big (rebuilt)
        t.update({"s": rng.randrange(40)}, where=t.id.between(round_no * 100, round_no * 100 + 20))
        doomed = t.h == rng.randrange(40)
        expected = reference(t, doomed)
        if expected:
            assert t.delete(where=doomed) == len(expected)
        else:
            with pytest.raises(RecordNotFoundError):
                t.delete(where=doomed)
        t.upsert({"id": rng.randrange(1500), "h": "up", "s": rng.random()})
        t.insert(random_records(rng, 30, 10_000 + round_no * 100))
        t.insert(random_records(rng, 1100, 20_000 + round_no * 2000))   # bulk path
        t.update({"h": rng.randrange(40)})                                # every row
    assert ids(t.select(where=t.h == "up")) == reference(t, t.h == "up")


def test_many_new_distinct_values_in_small_writes(db):
    """Over 4096 new distinct values through small writes: the sorted index's
    overflow is merged and every value stays reachable."""
    db.create_table("t")
    t = db.get_table("t")
    t.create_index("x", "sorted")
    for start in range(0, 6000, 50):
        t.insert([{"id": i, "x": f"k{i:05d}"} for i in range(start, start + 50)])
    assert ids(t.select(where=t.x == "k04321")) == [4321]
    assert ids(t.select(where=t.x.between("k01000", "k01009"))) == list(range(1000, 1010))
    t.delete(where=t.x < "k03000")
    assert ids(t.select(where=t.x <= "k03001")) == [3000, 3001]
    assert len(t.select(where=t.x >= "k0")) == 3000


def test_index_on_empty_table_and_errors(db):
    db.create_table("t")
    t = db.get_table("t")
    t.create_index("x")
    t.create_index("x")                    # again: nothing happens
    assert t.indexed_fields() == ["x"]
    with pytest.raises(ValueError):
        t.create_index("y", "btree")
    with pytest.raises(InvalidNameError):
        t.create_index("y" * 100)
    t.insert({"x": 5})
    assert t.select(where=t.x == 5) == [{"x": 5, "id": 1}]


def test_index_made_in_one_process_is_used_by_another(db, spawn):
    db.create_table("t")
    t = db.get_table("t")
    t.insert([{"id": i, "v": i % 10} for i in range(3000)])
    t.create_index("v", "sorted")
    segment = t._store.read(lambda s: s.stats())["index_segment"]
    w = spawn("index_queries", db.name, "t")
    res = json.loads(w.expect("RESULT"))
    w.finish()
    assert res["indexed"] == ["v"]
    assert res["eq"] == [i for i in range(3000) if i % 10 == 7]
    assert res["range"] == [i for i in range(3000) if 3 <= i % 10 <= 5]
    # the other process mapped the same segment: attaching built nothing
    assert res["segment"] == segment == t._store.read(lambda s: s.stats())["index_segment"]


@pytest.mark.slow
def test_sigkill_during_indexed_writes_keeps_indexes_consistent(db, spawn):
    db.create_table("t")
    t = db.get_table("t")
    rng = random.Random(5)
    t.insert([{"id": i, "v": rng.randrange(50), "name": f"n{rng.randrange(300)}"}
              for i in range(2000)])
    t.create_index("v", "hash")
    t.create_index("name", "sorted")
    for seed in range(6):
        w = spawn("churn_indexed", db.name, "t", seed)
        w.expect("READY")
        time.sleep(rng.uniform(0.05, 0.5))
        w.kill()
        for q in (t.v == 7, t.v.is_in([1, 2, 3]), t.name < "n1", t.name.between("n2", "n25"),
                  (t.v > 10) & (t.name >= "n200")):
            assert ids(t.select(where=q)) == reference(t, q), repr(q)
