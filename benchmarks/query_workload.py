"""The query benchmark's workload: its rows, the same queries written for
dictdb_shm, sqlite3 and a plain list of dicts, the check that all three
return the same rows, and how calls are timed (the systems take turns).

It owns what bench_query.py measures; it must never print or judge (the
script's sections do) nor set up a peer in its own way (peers.py does).
"""

from __future__ import annotations

import dataclasses
import gc
import random
import sqlite3
from typing import Any, Callable

import peers
from harness import BenchError, Latency, log, seconds, summarize, time_each

from dictdb_shm import Avg, Count

CITIES = ("Amsterdam", "Athens", "Barcelona", "Belgrade", "Berlin", "Bern", "Bordeaux",
          "Bratislava", "Brussels", "Bucharest", "Budapest", "Cologne", "Copenhagen",
          "Dublin", "Edinburgh", "Florence", "Frankfurt", "Geneva", "Genoa", "Hamburg",
          "Helsinki", "Krakow", "Lille", "Lisbon", "Ljubljana", "London", "Lyon", "Madrid",
          "Manchester", "Marseille", "Milan", "Munich", "Naples", "Nice", "Oslo", "Paris",
          "Porto", "Prague", "Reykjavik", "Riga", "Rome", "Rotterdam", "Seville", "Sofia",
          "Stockholm", "Tallinn", "Turin", "Valencia", "Vienna", "Vilnius")
SQL_COLUMNS = (("id", "INTEGER"), ("code", "INTEGER"), ("age", "INTEGER"), ("city", "TEXT"),
               ("score", "REAL"), ("name", "TEXT"))
COLUMNS = tuple(name for name, _type in SQL_COLUMNS)
AGE_MIN, AGE_MAX = 18, 90
SCORE_CUT = 0.9
INSERT_TURN = 100              # single-row inserts a table does before the next one's turn

QUERIES = {
    "eq": "1. indexed equality `t.code == k` (~10 rows)",
    "range": "2a. sorted-index range `t.age.between(a, a+1)` (~2.7 % of rows)",
    "narrow": "2b. sorted-index range `t.age.between(a, a)` (~1.4 % of rows)",
    "scan": "3. non-indexed scan `(t.city == X) & (t.score > 0.9)` (~0.2 % of rows)",
    "agg": "4. `aggregate(group_by=\"city\", n=Count(), avg=Avg(\"score\"))`",
}
SQL = {
    "eq": "SELECT * FROM people WHERE code = ?",
    "range": "SELECT * FROM people WHERE age BETWEEN ? AND ?",
    "scan": "SELECT * FROM people WHERE city = ? AND score > ?",
    "agg": "SELECT city, COUNT(*) AS n, AVG(score) AS avg FROM people GROUP BY city",
}
# The analytic queries (issue 9), measured without and then with column
# indexes on score and city, against sqlite3 and DuckDB (one thread).
ANALYTIC = {
    "count": "A1. `aggregate(n=Count(), where=t.score > c)` (c near 0.9)",
    "and": "A2. `(t.city == X) & (t.score > 0.9)` as dicts (~0.2 % of rows)",
    "group": "A3. `aggregate(group_by=\"city\", n=Count(), avg=Avg(\"score\"))`",
    "contains": "A4. `t.name.contains(\"77\")` as dicts (decode-bound: name has no index)",
}
ANALYTIC_SQL = {
    "count": "SELECT COUNT(*) FROM people WHERE score > ?",
    "and": SQL["scan"],
    "group": SQL["agg"],
    "contains": "SELECT * FROM people WHERE instr(name, ?) > 0",
}
DUCK_SQL = dict(ANALYTIC_SQL, contains="SELECT * FROM people WHERE contains(name, ?)")
SQL_FOR_PLAN = {"eq": (SQL["eq"], (1,)), "range": (SQL["range"], (30, 31)),
                "narrow": (SQL["range"], (30, 30)), "scan": (SQL["scan"], ("Oslo", SCORE_CUT)),
                "agg": (SQL["agg"], ())}


def make_rows(n: int, seed: int, start: int = 0) -> list[dict]:
    rnd = random.Random(seed)
    randint, rand, choice = rnd.randint, rnd.random, rnd.choice
    return [{"id": i, "code": i // 10, "age": randint(AGE_MIN, AGE_MAX), "city": choice(CITIES),
             "score": rand(), "name": f"user{i}"} for i in range(start, start + n)]


# ------------------------------------------------------------------ tables
def dictdb_table(db: Any, name: str, rows: list[dict], indexed: bool) -> tuple[Any, dict]:
    """A table loaded by one ``t.insert(rows)``, then (``indexed``) a hash
    index on code and a sorted one on age; returns it and each step's seconds."""
    db.create_table(name, primary_key="id")
    t = db.get_table(name)
    took = {"insert": seconds(lambda: t.insert(rows))}
    if indexed:
        took["idx_code"] = seconds(lambda: t.create_index("code", "hash"))
        took["idx_age"] = seconds(lambda: t.create_index("age", "sorted"))
    if len(t) != len(rows):
        raise BenchError(f"dictdb_shm {name} holds {len(t)} rows, expected {len(rows)}")
    return t, took


def sqlite_table(con: sqlite3.Connection, name: str, rows: list[dict],
                 indexed: bool) -> tuple[str, dict]:
    """The same table in sqlite3 (CREATE INDEX on code and on age); returns
    its INSERT statement and each step's seconds."""
    insert_sql = peers.sqlite_create(con, name, SQL_COLUMNS)
    took = {"insert": seconds(lambda: peers.sqlite_load(con, insert_sql, rows))}
    if indexed:
        took["idx_code"] = seconds(
            lambda: con.execute(f"CREATE INDEX {name}_code ON {name}(code)"))
        took["idx_age"] = seconds(lambda: con.execute(f"CREATE INDEX {name}_age ON {name}(age)"))
    return insert_sql, took


def count_rows(t: Any, con: sqlite3.Connection, name: str, want: int) -> None:
    got = {"dictdb_shm": len(t),
           "sqlite3": con.execute(f"SELECT COUNT(*) FROM {name}").fetchone()[0]}
    for system, n in got.items():
        if n != want:
            raise BenchError(f"{system} {name} holds {n} rows, expected {want}")


# ----------------------------------------------------------------- queries
def list_group_by(rows: list[dict]) -> dict:
    acc: dict[str, list] = {}
    for r in rows:
        a = acc.get(r["city"])
        if a is None:
            acc[r["city"]] = [1, r["score"]]
        else:
            a[0] += 1
            a[1] += r["score"]
    return acc


def query_functions(t: Any, con: sqlite3.Connection, rows: list[dict]) -> dict:
    """name -> {system: fn(const) -> list of dicts}.  The dictdb_shm condition is
    built on every call, as a user writes it; sqlite3's rows are made dicts."""
    execute = con.execute

    def sql_dicts(sql: str) -> Callable[..., list[dict]]:
        def run(*params: Any) -> list[dict]:
            return [dict(zip(COLUMNS, r)) for r in execute(sql, params).fetchall()]
        return run

    q_eq, q_range, q_scan = sql_dicts(SQL["eq"]), sql_dicts(SQL["range"]), sql_dicts(SQL["scan"])

    def sqlite_agg(_c: Any = None) -> list[dict]:
        return [{"city": c, "n": n, "avg": a} for c, n, a in execute(SQL["agg"]).fetchall()]

    def list_agg(_c: Any = None) -> list[dict]:
        return [{"city": c, "n": n, "avg": s / n} for c, (n, s) in list_group_by(rows).items()]

    return {
        "eq": {"dictdb_shm": lambda k: t.select(where=t.code == k, workers=1),
               "sqlite3": lambda k: q_eq(k),
               "list": lambda k: [dict(r) for r in rows if r["code"] == k]},
        "range": {"dictdb_shm": lambda a: t.select(where=t.age.between(a, a + 1), workers=1),
                  "sqlite3": lambda a: q_range(a, a + 1),
                  "list": lambda a: [dict(r) for r in rows if a <= r["age"] <= a + 1]},
        "narrow": {"dictdb_shm": lambda a: t.select(where=t.age.between(a, a), workers=1),
                   "sqlite3": lambda a: q_range(a, a),
                   "list": lambda a: [dict(r) for r in rows if a <= r["age"] <= a]},
        "scan": {"dictdb_shm": lambda c: t.select(where=(t.city == c) & (t.score > SCORE_CUT),
                                                   workers=1),
                 "sqlite3": lambda c: q_scan(c, SCORE_CUT),
                 "list": lambda c: [dict(r) for r in rows
                                    if r["city"] == c and r["score"] > SCORE_CUT]},
        "agg": {"dictdb_shm": lambda _c: t.aggregate(group_by="city", n=Count(),
                                                     avg=Avg("score"), workers=1),
                "sqlite3": sqlite_agg, "list": list_agg},
    }


def duckdb_table(rows: list[dict], path: str) -> tuple[Any, float]:
    """An in-memory DuckDB (one thread) holding ``rows``, loaded from a CSV
    file written at ``path`` (the load is not timed as a build: DuckDB's
    build is not compared); returns the connection and the load's seconds."""
    import csv

    import duckdb
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, COLUMNS)
        w.writeheader()
        w.writerows(rows)
    con = duckdb.connect(":memory:")
    con.execute("SET threads TO 1")
    cols = ", ".join(f"'{n}': '{'BIGINT' if t == 'INTEGER' else 'DOUBLE' if t == 'REAL' else 'VARCHAR'}'"
                     for n, t in SQL_COLUMNS)
    took = seconds(lambda: con.execute(
        f"CREATE TABLE people AS SELECT * FROM read_csv('{path}', header=true, "
        f"columns={{{cols}}})"))
    n = con.execute("SELECT COUNT(*) FROM people").fetchone()[0]
    if n != len(rows):
        raise BenchError(f"DuckDB holds {n} rows, expected {len(rows)}")
    return con, took


def analytic_functions(t: Any, con: sqlite3.Connection, duck: Any) -> dict:
    """name -> {system: fn(const) -> list}: the analytic queries."""
    def dicts(execute: Callable, sql: str) -> Callable[..., list[dict]]:
        def run(*params: Any) -> list[dict]:
            return [dict(zip(COLUMNS, r)) for r in execute(sql, params).fetchall()]
        return run

    def sql_count(execute: Callable) -> Callable[[float], list]:
        return lambda c: [{"n": execute(ANALYTIC_SQL["count"], (c,)).fetchone()[0]}]

    def sql_group(execute: Callable) -> Callable[[Any], list]:
        return lambda _c: [{"city": c, "n": n, "avg": a}
                           for c, n, a in execute(SQL["agg"]).fetchall()]

    out: dict[str, dict] = {}
    for name, execute, sql in (("sqlite3", con.execute, ANALYTIC_SQL),
                               ("duckdb", duck.execute, DUCK_SQL)):
        and_q, contains_q = dicts(execute, sql["and"]), dicts(execute, sql["contains"])
        out.setdefault("count", {})[name] = sql_count(execute)
        out.setdefault("and", {})[name] = lambda c, q=and_q: q(c, SCORE_CUT)
        out.setdefault("group", {})[name] = sql_group(execute)
        out.setdefault("contains", {})[name] = contains_q
    out["count"]["dictdb_shm"] = lambda c: [t.aggregate(n=Count(), where=t.score > c, workers=1)]
    out["and"]["dictdb_shm"] = lambda c: t.select(where=(t.city == c) & (t.score > SCORE_CUT),
                                                  workers=1)
    out["group"]["dictdb_shm"] = lambda _c: t.aggregate(group_by="city", n=Count(),
                                                         avg=Avg("score"), workers=1)
    out["contains"]["dictdb_shm"] = lambda c: t.select(where=t.name.contains(c), workers=1)
    return {k: {s: v[s] for s in ("dictdb_shm", "sqlite3", "duckdb")} for k, v in out.items()}


def worker_functions(t: Any, workers: int) -> dict[str, Callable[[Any], list]]:
    """kind -> fn(const): dictdb_shm's analytic queries with ``workers=``."""
    return {
        "count": lambda c: [t.aggregate(n=Count(), where=t.score > c, workers=workers)],
        "and": lambda c: t.select(where=(t.city == c) & (t.score > SCORE_CUT), workers=workers),
        "group": lambda _c: t.aggregate(group_by="city", n=Count(), avg=Avg("score"),
                                        workers=workers),
        "contains": lambda c: t.select(where=t.name.contains(c), workers=workers),
    }


def analytic_constants(kind: str, count: int, rnd: random.Random) -> list[Any]:
    if kind == "count":
        return [SCORE_CUT + rnd.random() / 100 for _ in range(count)]
    if kind == "and":
        return [rnd.choice(CITIES) for _ in range(count)]
    if kind == "contains":
        return [f"{rnd.randrange(10, 100)}" for _ in range(count)]
    return [None] * count


def check_analytic(fns: dict, rnd: random.Random) -> None:
    """dictdb_shm, sqlite3 and DuckDB agree on every analytic query."""
    for kind, per in fns.items():
        for c in analytic_constants(kind, 2 if kind != "group" else 1, rnd):
            got = {s: f(c) for s, f in per.items()}
            if kind == "group":
                canon = {s: sorted((g["city"], g["n"], round(g["avg"], 9)) for g in v)
                         for s, v in got.items()}
            elif kind == "count":
                canon = got
            else:
                canon = {s: sorted(tuple(r.get(col) for col in COLUMNS) for r in v)
                         for s, v in got.items()}
            for s, v in canon.items():
                if v != canon["sqlite3"]:
                    raise BenchError(f"{kind}({c!r}): {s} disagrees with sqlite3")


def column_bytes_per_row(t: Any, field: str) -> float:
    """Bytes the column index on ``field`` takes in the index segment, per
    live row (read-only look at the store's mapped index)."""
    from dictdb_shm.engine import columns as C

    def size(s: Any) -> float:
        ix = s.indexes_by_field[field]
        return C.column_size(ix.cap, ix.dcap, ix.bcap) / max(1, s.desc.live)
    return t._store.read(size)


def constants(kind: str, n_rows: int, count: int, rnd: random.Random) -> list[Any]:
    if kind == "eq":
        return [rnd.randrange(n_rows // 10) for _ in range(count)]
    if kind == "range":
        return [rnd.randint(AGE_MIN, AGE_MAX - 1) for _ in range(count)]
    if kind == "narrow":
        return [rnd.randint(AGE_MIN, AGE_MAX) for _ in range(count)]
    if kind == "scan":
        return [rnd.choice(CITIES) for _ in range(count)]
    return [None] * count        # the aggregate has no constant: the same query each time


def check_results(fns: dict, n_rows: int, rnd: random.Random) -> None:
    """The three systems return the same rows (3 constants per query)."""
    for kind, per in fns.items():
        for c in constants(kind, n_rows, 3 if kind != "agg" else 1, rnd):
            got = {s: f(c) for s, f in per.items()}
            if kind == "agg":
                canon = {s: sorted((g["city"], g["n"], round(g["avg"], 9)) for g in v)
                         for s, v in got.items()}
            else:
                canon = {s: sorted(tuple(r.get(col) for col in COLUMNS) for r in v)
                         for s, v in got.items()}
            for s, v in canon.items():
                if v != canon["sqlite3"]:
                    raise BenchError(f"{kind}({c!r}): {s} returned {len(got[s])} rows that "
                                     f"differ from sqlite3's {len(got['sqlite3'])}")
            if kind != "agg" and all(len(v) == 0 for v in got.values()):
                log(f"check {kind}({c!r}): empty result")


@dataclasses.dataclass(frozen=True)
class QueryTimes:
    latency: Latency
    rows_out: float            # mean rows a call returned


def measure_query(per: dict, consts: list[Any], reps: tuple[int, int],
                  warm: list[Any], rounds: int) -> dict[str, QueryTimes]:
    """Time every call on its own.  In each of ``rounds`` rounds dictdb_shm and
    sqlite3 take turns call by call (the order alternates) over their slice of
    the constants, then the list runs its slice in a block of its own (its
    scans would otherwise flush the caches between the other two's calls).
    ``reps``: calls of (dictdb_shm and sqlite3, the list)."""
    systems = list(per)
    fast = [s for s in systems if s != "list"]
    limit = {s: (reps[1] if s == "list" else reps[0]) for s in systems}
    for s in systems:                       # warm-up with other constants
        for c in warm[:max(1, min(len(warm), limit[s] // 10))]:
            per[s](c)
    times: dict[str, list[float]] = {s: [] for s in systems}
    sizes: dict[str, int] = {s: 0 for s in systems}

    def timed(s: str, c: Any) -> None:
        (out,) = time_each(per[s], (c,), times[s])
        sizes[s] += len(out)

    for r in range(rounds):
        for i in range(r * reps[0] // rounds, (r + 1) * reps[0] // rounds):
            for j in range(len(fast)):
                timed(fast[(i + j) % len(fast)], consts[i])
        if "list" in per:
            for i in range(r * reps[1] // rounds, (r + 1) * reps[1] // rounds):
                timed("list", consts[i])
    return {s: QueryTimes(summarize(times[s]), sizes[s] / max(1, len(times[s])))
            for s in systems}


# -------------------------------------------------------- index maintenance
def measure_inserts(db: Any, con: sqlite3.Connection, base: list[dict],
                    new_rows: list[dict], warm: int, suffix: str = "") -> dict:
    """Single-row inserts into fresh tables ins_plain<suffix> (no index) and
    ins_idx<suffix> (hash on code, sorted on age) in both systems, which take
    turns every INSERT_TURN rows.  Keys "<system>|plain" and "<system>|idx"
    hold each Latency, "tables" the two names."""
    inserts: dict[str, Callable[[dict], Any]] = {}
    tables = {"plain": f"ins_plain{suffix}", "idx": f"ins_idx{suffix}"}
    for kind, name in tables.items():
        t, _took = dictdb_table(db, name, base, indexed=kind == "idx")
        inserts[f"dictdb_shm|{kind}"] = t.insert
        sql, _took = sqlite_table(con, name, base, indexed=kind == "idx")
        inserts[f"sqlite3|{kind}"] = lambda row, _sql=sql: con.execute(_sql, row)  # autocommit

    names = list(inserts)
    for name in names:
        for r in new_rows[:warm]:
            inserts[name](r)
    times: dict[str, list[float]] = {n: [] for n in names}
    todo = new_rows[warm:]
    for turn, start in enumerate(range(0, len(todo), INSERT_TURN)):
        chunk = todo[start:start + INSERT_TURN]
        for j in range(len(names)):
            name = names[(turn + j) % len(names)]
            time_each(inserts[name], chunk, times[name])
    for name in tables.values():
        count_rows(db.get_table(name), con, name, len(base) + len(new_rows))
    out: dict[str, Any] = {n: summarize(v) for n, v in times.items()}
    out["tables"] = tables
    return out


# ------------------------------------------------------- where time goes
def _without_gc(fn: Callable[[], Any]) -> Any:
    was = gc.isenabled()
    gc.disable()
    try:
        return fn()
    finally:
        if was:
            gc.enable()


def scan_breakdown(t: Any, con: sqlite3.Connection, rows: list[dict], city: str,
                   reps: int = 3) -> list[tuple[str, float]]:
    """Where a non-indexed scan's time goes (best of ``reps``, seconds).  Uses
    the table's store directly (read-only) to time decoding alone."""
    import msgpack

    from dictdb_shm.query import aggregate_rows
    store = t._store                      # internal, read-only: decode every record, no filter
    unpackb = msgpack.unpackb
    packed = [msgpack.packb(r) for r in rows]

    def best(fn: Callable[[], Any]) -> float:
        return min(seconds(fn) for _ in range(reps))

    def decode_all(s: Any) -> int:
        return sum(1 for _r in s.scan())

    def unpack_only() -> None:
        for b in packed:
            unpackb(b)

    def pred_only() -> None:
        for r in rows:
            if r["city"] == city and r["score"] > SCORE_CUT:
                pass

    def agg() -> Any:
        return t.aggregate(group_by="city", n=Count(), avg=Avg("score"), workers=1)

    out = [
        ("dictdb_shm `t.select(where=(t.city == X) & (t.score > 0.9))`",
         best(lambda: t.select(where=(t.city == city) & (t.score > SCORE_CUT), workers=1))),
        ("dictdb_shm store scan alone: walk the heap, decode every record, no filter",
         best(lambda: store.read(decode_all))),
        ("`msgpack.unpackb` of every row from a Python list of bytes (no shared memory)",
         best(unpack_only)),
        ("the same filter in Python over already-decoded dicts (no copy)", best(pred_only)),
        ("sqlite3 `SELECT COUNT(*) ... WHERE city = ? AND score > ?` (scan in C, no rows out)",
         best(lambda: con.execute("SELECT COUNT(*) FROM people WHERE city = ? AND score > ?",
                                  (city, SCORE_CUT)).fetchone())),
        ("dictdb_shm `t.aggregate(group_by=\"city\", n=Count(), avg=Avg(\"score\"))`",
         best(agg)),
        ("the same `t.aggregate(...)` with the cyclic GC disabled (`gc.disable()`)",
         best(lambda: _without_gc(agg))),
        ("its aggregation step alone: `aggregate_rows` over the already-decoded list",
         best(lambda: aggregate_rows(rows, "city", n=Count(), avg=Avg("score")))),
        ("a hand-written group-by loop over the same list (the list peer)",
         best(lambda: list_group_by(rows))),
    ]
    del packed
    return out
