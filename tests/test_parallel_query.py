"""Parallel queries give what workers=1 gives: randomized select and
aggregate queries on a table written through every write path (inserts,
updates, deletes, growth), without and with column indexes, each run with
workers=1 and workers=2 (a real worker process that attaches by name)."""

from __future__ import annotations

import math
import random

import pytest

from dictdb_shm import Avg, Count, DictDB, InvalidArgumentError, Max, Min, Sum
from dictdb_shm.parallel import plan, pool

CITIES = ["Oslo", "Rome", "Lima", "Kyiv", "Pune", "Baku"]
WORDS = ["ant", "bee", "cat", "doge", "emu", "fox", "77", "gnu"]


def _record(rnd: random.Random, pk: int) -> dict:
    r = {"id": pk, "age": rnd.randrange(0, 60), "city": rnd.choice(CITIES),
         "name": f"{rnd.choice(WORDS)}{rnd.randrange(1000)}"}
    roll = rnd.random()
    if roll < 0.7:
        r["score"] = rnd.choice([rnd.random(), rnd.randrange(-5, 5)])
    elif roll < 0.85:
        r["score"] = None                      # else: missing
    if rnd.random() < 0.1:
        r["tags"] = [rnd.choice(WORDS) for _ in range(rnd.randrange(3))]
    return r


def _where(t, rnd: random.Random):
    leaves = [lambda: t.age > rnd.randrange(60), lambda: t.age == rnd.randrange(60),
              lambda: t.city == rnd.choice(CITIES), lambda: t.city.is_in(rnd.sample(CITIES, 2)),
              lambda: t.name.contains(rnd.choice(WORDS)), lambda: t.score >= rnd.random(),
              lambda: t.score.is_null(), lambda: t.name.startswith(rnd.choice(WORDS)),
              lambda: t.age.between(10, 30)]
    leaf = lambda: rnd.choice(leaves)()   # noqa: E731
    shape = rnd.randrange(5)
    if shape == 0:
        return None
    if shape == 1:
        return leaf()
    if shape == 2:
        return leaf() & leaf()
    if shape == 3:
        return leaf() | leaf()
    return ~leaf() & leaf()


def _same(a, b) -> bool:
    """Equal, floats within rounding (parallel sums add in another grouping)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9) or (a != a and b != b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b and type(a) is type(b)


def _write_everything(t, rnd: random.Random) -> None:
    t.insert([_record(rnd, i) for i in range(3000)])
    t.update({"age": 59, "city": "Lima"}, where=t.age < 5)              # moves rows to the end
    t.delete(where=t.name.startswith("emu"))
    for i in range(200):
        t.insert(_record(rnd, 10_000 + i))
    t.insert([_record(rnd, 20_000 + i) for i in range(8_000)])            # growth
    t.update({"score": 0.5}, where=t.city == "Rome")
    t.delete(where=t.age.between(40, 42))


def _check_queries(t, rnd: random.Random, rounds: int) -> None:
    aggs = {"n": Count(), "ns": Count("score"), "s": Sum("score"), "a": Avg("score"),
            "lo": Min("age"), "hi": Max("name")}
    for _ in range(rounds):
        where = _where(t, rnd)
        kw = {"where": where}
        if rnd.random() < 0.5:
            kw["order_by"] = rnd.choice(["age", "-age", ["city", "-score"], "name"])
        if rnd.random() < 0.4:
            kw["limit"] = rnd.randrange(0, 50)
        if rnd.random() < 0.3:
            kw["offset"] = rnd.randrange(0, 40)
        if rnd.random() < 0.3:
            kw["columns"] = rnd.choice([["city"], ["city", "age"], {"who": "name"}])
            kw["distinct"] = rnd.random() < 0.5
        one = t.select(workers=1, **kw)
        two = t.select(workers=2, **kw)
        assert one == two, f"select {kw!r}"
        group = rnd.choice([None, "city", ["city", "age"], "tags"])
        picked = dict(rnd.sample(sorted(aggs.items()), rnd.randrange(1, len(aggs))))
        one = t.aggregate(group_by=group, where=where, workers=1, **picked)
        two = t.aggregate(group_by=group, where=where, workers=2, **picked)
        assert _same(one, two), f"aggregate {group!r} {picked!r} where {where!r}"


def test_workers_two_equals_one_without_and_with_column_indexes(db_name):
    rnd = random.Random(9)
    db = DictDB(db_name)
    t = db.create_table("people")
    _write_everything(t, rnd)
    assert t._store.stats()["heap_segment"] > 1, "the table should have grown"
    _check_queries(t, rnd, 30)
    t.create_index("age", "sorted")
    t.create_index("city", "column")
    t.create_index("score", "column")
    t.update({"city": "Pune"}, where=t.age == 7)
    _check_queries(t, rnd, 20)
    running = pool.running(db_name)
    assert running is not None and len(running.pids()) == 1     # workers=2: this one and one more
    db.close()


def test_workers_argument_is_checked(table):
    table.insert([{"id": i} for i in range(5)])
    for bad in (0, -1, 1.5, "2", True, 10_000):
        with pytest.raises(InvalidArgumentError):
            table.select(workers=bad)
        with pytest.raises(InvalidArgumentError):
            table.aggregate(n=Count(), workers=bad)
    assert table.aggregate(workers=Count()) == {"workers": 5}     # an aggregate named "workers"
    assert table.select(where=table.id == 3, workers=2) == [{"id": 3}]


def test_small_tables_stay_in_one_process_by_default(table):
    table.insert([{"id": i, "v": i % 7} for i in range(1000)])
    assert len(table.select(where=table.v == 3)) == len([i for i in range(1000) if i % 7 == 3])
    assert table.aggregate(group_by="v", n=Count())[0] == {"v": 0, "n": 143}
    assert pool.running(table._db.name) is None


def test_the_callers_share_moves_towards_the_split_that_ends_every_part_together():
    """plan.rebalanced, from the times of one query's parts: a caller that
    finished first takes more next time, one that finished last less, within
    the bounds, and a query with no timing keeps the weight."""
    assert plan.rebalanced(1.0, 0.1, 0.2) == pytest.approx(1.5)       # target 2.0
    assert plan.rebalanced(1.0, 0.2, 0.1) == pytest.approx(0.75)      # target 0.5
    assert plan.rebalanced(1.0, 0.1, 0.1) == pytest.approx(1.0)
    assert plan.rebalanced(1.0, 0.001, 10.0) == pytest.approx(
        1.0 + plan.BALANCE_RATE * (plan.MAX_CALLER_WEIGHT - 1.0))
    assert plan.rebalanced(1.0, 10.0, 0.001) == pytest.approx(
        1.0 + plan.BALANCE_RATE * (plan.MIN_CALLER_WEIGHT - 1.0))
    assert plan.rebalanced(1.3, 0.0, 0.1) == 1.3
    weight = 1.0
    for _ in range(20):             # a worker that reads 1.5x slower per unit of weight
        weight = plan.rebalanced(weight, weight * 1.0, 1.5)
    assert weight == pytest.approx(1.5, rel=1e-3)
    assert plan.shares(3, weight) == [weight, 1.0, 1.0]
