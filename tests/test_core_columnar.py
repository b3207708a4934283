"""Column indexes: every query answered from them equals the plain scan's
answer (rows in the same order, counts, aggregates, group-by, to_numpy),
through every write path, across processes and after SIGKILL."""

from __future__ import annotations

import json
import math
import random
import time

import numpy as np
import pytest

from dictdb_shm import And, Avg, Count, DictDB, Max, Min, Not, Or, Sum
from dictdb_shm.core import planner
from dictdb_shm.query import aggregate_rows

VALUES = [0, 1, 2, 2.5, -3, 10**12, True, False, 7.0, "a", "ab", "abc" * 10, "B", "",
          b"x", None, [1, "a"], {"k": 1}, float("nan"), "héllo", -0.0, 2**63 + 5, -2**63,
          float("inf"), 1e300, "a\0"]
COLUMNS = ("a", "b", "s")           # column-indexed; "x" is not indexed
AGGS = {"n": Count(), "na": Count("a"), "sa": Sum("a"), "ab": Avg("b"), "mina": Min("a"),
        "maxa": Max("a"), "mins": Min("s"), "maxs": Max("s"), "sb": Sum("b")}


@pytest.fixture
def db(db_name):
    d = DictDB(db_name)
    yield d
    d.close()


def record(rng, i):
    r = {"id": i}
    if rng.random() < 0.9:
        r["a"] = rng.choice(VALUES) if rng.random() < 0.15 else rng.randrange(30)
    if rng.random() < 0.9:
        r["b"] = rng.choice(VALUES) if rng.random() < 0.1 else round(rng.uniform(-5, 30), 2)
    if rng.random() < 0.9:
        r["s"] = rng.choice(VALUES) if rng.random() < 0.1 else f"k{rng.randrange(40)}"
    r["x"] = rng.randrange(10)
    return r


def leaf(rng, t):
    f = t[rng.choice(COLUMNS + ("x",))]
    v = rng.choice(VALUES[:14] + ["k1", "k2", "k3", 2**63 + 5, float("nan"), 1e300])
    if rng.random() < 0.5:
        v = rng.choice([rng.randrange(30), round(rng.uniform(-5, 30), 1), f"k{rng.randrange(40)}"])
    op = rng.randrange(15)
    if op < 6:
        return [f == v, f != v, f < v, f <= v, f > v, f >= v][op]
    if op == 6:
        return f.is_in([v, rng.randrange(30), "k5", None])
    if op == 7:
        lo = rng.randrange(20)
        return f.between(lo, lo + rng.randrange(10) + rng.random())
    if op == 8:
        return f.between("k1", "k3")
    if op == 9:
        return f.is_null() if rng.random() < 0.5 else f.is_not_null()
    if op == 10:
        return f.startswith("k1")
    if op == 11:
        return f.contains(rng.choice(["1", "a", "k2"]))
    if op == 12:
        return f.like("k_")
    if op == 13:
        return f.iequals("K7")
    return f == rng.randrange(30)


def query(rng, t, depth=0):
    if depth > 2 or rng.random() < 0.4:
        return leaf(rng, t)
    kind = rng.randrange(3)
    if kind == 2:
        return Not(query(rng, t, depth + 1))
    parts = [query(rng, t, depth + 1) for _ in range(rng.randint(2, 3))]
    return And(*parts) if kind == 0 else Or(*parts)


def same(a, b):
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9,
                                                                  abs_tol=1e-9)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def check(t, rng, queries=40):
    rows = t.all()                                       # the plain scan, in scan order
    kinds = t._store.read(lambda s: s.indexes())
    used = 0
    for _ in range(queries):
        q = query(rng, t)
        want = [r for r in rows if q(r)]
        got = t.select(where=q)
        assert [r["id"] for r in got] == [r["id"] for r in want], repr(q)
        used += planner.choose(q, "id", kinds).kind == "column"
        assert t.aggregate(n=Count(), where=q) == {"n": len(want)}, repr(q)
        assert same(t.aggregate(where=q, **AGGS), aggregate_rows(want, **AGGS)), repr(q)
        for group_by in ("s", "a", ["s", "x"]):
            got_groups = t.aggregate(group_by=group_by, where=q, **AGGS)
            assert same(got_groups, aggregate_rows(want, group_by, **AGGS)), (q, group_by)
        arrays = t.to_numpy(["a", "b", "s", "x"], where=q)
        for field, arr in arrays.items():
            expect = [r.get(field) for r in want]
            values = [None if np.ma.is_masked(v) else v for v in
                      (arr.tolist() if not isinstance(arr, np.ma.MaskedArray)
                       else [arr[i] if not arr.mask[i] else np.ma.masked
                             for i in range(len(arr))])]
            assert len(values) == len(expect), (q, field)
            for v, e in zip(values, expect):
                assert same(_plain(v), e) or (isinstance(e, (int, float)) and
                                              not isinstance(e, bool) and
                                              same(float(_plain(v)), float(e))), (q, field)
    assert used > queries // 4          # the column path really was taken
    whole = t.aggregate(group_by="s", **AGGS)
    assert same(whole, aggregate_rows(rows, "s", **AGGS))


def _plain(v):
    return v.item() if isinstance(v, np.generic) else v


def test_column_answers_equal_scan_answers_through_every_write_path(db):
    rng = random.Random(11)
    t = db.create_table("t")
    t.insert([record(rng, i) for i in range(600)])
    for f in COLUMNS:
        t.create_index(f, "column")
    assert t._store.read(lambda s: s.indexes()) == dict.fromkeys(COLUMNS, "column")
    check(t, rng)
    for round_no in range(4):
        t.update({"a": rng.randrange(30), "s": f"new{round_no}"},
                 where=t.id.between(round_no * 50, round_no * 50 + 10))        # in place
        doomed = t.x == rng.randrange(10)
        t.delete(where=doomed)
        t.upsert({"id": rng.randrange(600), "a": 2.5, "b": None, "s": "up"})
        for k in range(30):                          # new strings in small writes: a full
            t.insert([{"id": 10_000 + round_no * 1000 + k * 3 + j,       # dictionary
                       "s": f"fresh{round_no}-{k}-{j}-" + "z" * 40, "a": k, "x": j}
                      for j in range(3)])
        t.insert([record(rng, i) for i in range(50_000 + round_no * 2000,
                                                51_200 + round_no * 2000)])  # bulk: rebuilt
        check(t, rng, 25)
    with t.lock.write_lock():
        t._store.compact()
    check(t, rng, 25)


def test_column_index_on_empty_table_then_growth(db):
    rng = random.Random(3)
    t = db.create_table("t")
    t.create_index("a", "column")
    t.create_index("s", "column")
    assert t.select(where=t.a > 3) == [] and t.aggregate(n=Count(), where=t.a > 3) == {"n": 0}
    assert t.to_numpy("a")["a"].shape == (0,)
    for start in range(0, 3000, 300):                # growth of heap and directory
        t.insert([record(rng, i) for i in range(start, start + 300)])
    check(t, rng, 20)


def test_sums_of_int_and_typed_results(db):
    t = db.create_table("t")
    t.create_index("v", "column")
    t.insert([{"id": 1, "v": 2**62}, {"id": 2, "v": 2**62}, {"id": 3, "v": True},
              {"id": 4, "v": 1}, {"id": 5}])
    got = t.aggregate(s=Sum("v"), mn=Min("v"), mx=Max("v"), c=Count("v"))
    assert got == {"s": 2**63 + 2, "mn": True, "mx": 2**62, "c": 4}
    assert type(got["mn"]) is bool                   # True came first among the equal ones
    arr = t.to_numpy("v", where=t.id.is_in([1, 2, 4]))["v"]
    assert arr.dtype == np.int64 and arr.tolist() == [2**62, 2**62, 1]
    mixed = t.to_numpy("v", where=t.id <= 4)["v"]    # a bool among ints stays a bool
    assert mixed.dtype == object and mixed.tolist() == [2**62, 2**62, True, 1]
    assert type(mixed[2]) is bool


def test_column_index_used_by_another_process(db, spawn):
    t = db.create_table("t")
    t.insert([{"id": i, "a": i % 37, "s": f"k{i % 11}"} for i in range(2000)])
    t.insert([{"id": 5000, "a": None, "s": "k3"}, {"id": 5001, "s": None}])
    t.create_index("a", "column")
    t.create_index("s", "column")
    w = spawn("column_queries", db.name, "t")
    res = json.loads(w.expect("RESULT"))
    w.finish()
    rows = t.all()
    assert res["kinds"] == {"a": "column", "s": "column"}
    assert res["and"] == [r["id"] for r in rows if (t.a > 10)(r) and (t.s == "k7")(r)]
    assert res["count"] == sum(1 for r in rows if (t.a >= 20)(r))
    assert res["groups"] == [[g["s"], g["n"]] for g in
                             aggregate_rows(rows, "s", n=Count()) if isinstance(g["s"], str)]
    assert res["numpy"] == [r.get("a") for r in rows if (t.s == "k3")(r)]
    # it answered from the segment this process built: attaching built nothing
    assert res["segment"] == t._store.read(lambda s: s.stats())["index_segment"]


@pytest.mark.slow
def test_sigkill_during_writes_keeps_column_indexes_consistent(db, spawn):
    rng = random.Random(9)
    t = db.create_table("t")
    t.insert([{"id": i, "v": rng.randrange(50), "name": f"n{rng.randrange(300)}"}
              for i in range(2000)])
    t.create_index("v", "column")
    t.create_index("name", "column")
    for seed in range(5):
        w = spawn("churn_indexed", db.name, "t", seed)
        w.expect("READY")
        time.sleep(rng.uniform(0.05, 0.4))
        w.kill()
        rows = t.all()
        for q in (t.v == 7, t.v.is_in([1, 2, 3]), t.name < "n1", t.name.between("n2", "n25"),
                  (t.v > 10) & (t.name >= "n200"), Or(t.v < 3, Not(t.name.startswith("n1")))):
            assert [r["id"] for r in t.select(where=q)] == [r["id"] for r in rows if q(r)]
            assert t.aggregate(n=Count(), where=q)["n"] == sum(1 for r in rows if q(r))
        assert same(t.aggregate(group_by="name", n=Count(), avg=Avg("v")),
                    aggregate_rows(rows, "name", n=Count(), avg=Avg("v")))
