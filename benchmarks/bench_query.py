"""Query benchmark (issue 3): dictdb_shm vs sqlite3 (in-memory) vs a plain
Python list of dicts, all built and measured in the same run.

    .venv/bin/python benchmarks/bench_query.py              # 1,000,000 rows
    .venv/bin/python benchmarks/bench_query.py --quick      # 50,000 rows, fewer reps
    .venv/bin/python benchmarks/bench_query.py --rows 200000 --profile

Rows: {"id": i, "code": i // 10, "age": random 18..90, "city": one of 50
names, "score": random float in [0, 1), "name": f"user{i}"}, primary key id.
dictdb_shm gets a hash index on code and a sorted index on age; sqlite3 gets
CREATE INDEX on code and on age.  The list has no index: for the "indexed"
queries it scans, which the report says next to every list figure.

Measured (each query repeated with different constants, every call timed on
its own with perf_counter_ns; the systems take turns call by call):

1. indexed equality ``t.code == k`` (~10 rows), results as full dicts;
2. sorted-index ranges ``t.age.between(a, a + 1)`` (~2.7 % of the rows) and
   ``t.age.between(a, a)`` (~1.4 %);
3. a non-indexed filtered scan ``(t.city == X) & (t.score > 0.9)``;
4. ``aggregate(group_by="city", n=Count(), avg=Avg("score"))`` vs GROUP BY;
5. index maintenance: single-row inserts into a 100,000-row table without
   indexes and with one hash + one sorted index, dictdb_shm and sqlite3.

Also the build time of each system (bulk insert, then each index).

Fairness: sqlite3 results are made into dicts in Python (``fetchall()`` then
``dict(zip(columns, row))`` per row), because dictdb_shm and the list return
dicts; the list peer copies the rows it returns (``dict(r)``) because
dictdb_shm's results are the caller's own.  sqlite3 runs in autocommit mode,
so each single-row INSERT is its own transaction, as each ``t.insert(row)``
is for dictdb_shm.

The report is markdown on stdout (progress on stderr).  It does not write
docs/benchmarks.md: copy the figures into the section "Queries (issue 3)".
Another benchmark (bench_core.py) running at the same time would skew the
figures: before each phase this script waits (at most ``--wait-idle``
seconds) until no such process is left, and it reports how busy the CPUs
were during each phase.  The database is destroyed in a ``finally`` block
(also on Ctrl-C and SIGTERM).
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as _dt
import gc
import io
import math
import os
import platform
import pstats
import random
import signal
import sqlite3
import subprocess
import sys
import time
import traceback
from typing import Any, Callable, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:   # run from a checkout without installing the package
    sys.path.insert(0, ROOT)

from dictdb_shm import Avg, Count, DictDB  # noqa: E402

CITIES = ("Amsterdam", "Athens", "Barcelona", "Belgrade", "Berlin", "Bern", "Bordeaux",
          "Bratislava", "Brussels", "Bucharest", "Budapest", "Cologne", "Copenhagen",
          "Dublin", "Edinburgh", "Florence", "Frankfurt", "Geneva", "Genoa", "Hamburg",
          "Helsinki", "Krakow", "Lille", "Lisbon", "Ljubljana", "London", "Lyon", "Madrid",
          "Manchester", "Marseille", "Milan", "Munich", "Naples", "Nice", "Oslo", "Paris",
          "Porto", "Prague", "Reykjavik", "Riga", "Rome", "Rotterdam", "Seville", "Sofia",
          "Stockholm", "Tallinn", "Turin", "Valencia", "Vienna", "Vilnius")
COLUMNS = ("id", "code", "age", "city", "score", "name")
AGE_MIN, AGE_MAX = 18, 90
SCORE_CUT = 0.9
INSERT_BASE = 100_000          # rows already in the tables of the insert benchmark
BUSY_LIMIT = 1.3               # busy CPUs above this during a phase: something else ran

TARGETS = {
    "eq_p50_us": 50.0,          # indexed equality, p50 under 50 µs
    "scan_vs_sqlite": 2.0,      # non-indexed scan within 2x of sqlite3's time
    "index_cost": 2.0,          # hash + sorted index: single-row insert at most 2x slower
}

SQL_CREATE = ("CREATE TABLE {t} (id INTEGER PRIMARY KEY, code INTEGER, age INTEGER, "
              "city TEXT, score REAL, name TEXT)")
SQL_INSERT = "INSERT INTO {t} VALUES (:id, :code, :age, :city, :score, :name)"


def log(msg: str) -> None:
    print(f"[bench_query {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(RuntimeError):
    pass


# ------------------------------------------------------------ configuration
def config(args: argparse.Namespace) -> dict:
    quick = args.quick
    rows = args.rows if args.rows is not None else (50_000 if quick else 1_000_000)
    if rows < 10_000:
        raise SystemExit("--rows must be at least 10000")
    return {
        "quick": quick,
        "rows": rows,
        "seed": args.seed,
        # reps per query: (dictdb_shm and sqlite3, list)
        "eq_reps": (100, 30) if quick else (200, 50),
        "range_reps": (15, 15) if quick else (30, 30),
        "narrow_reps": (15, 15) if quick else (30, 30),
        "scan_reps": (10, 10) if quick else (20, 20),
        "agg_reps": (10, 10) if quick else (20, 20),
        "insert_base": min(INSERT_BASE, rows),
        "insert_ops": 3_000 if quick else 20_000,   # timed single-row inserts per table
        "insert_warm": 200,
        "wait_idle": max(0.0, args.wait_idle),
        "profile": args.profile,
        "retries": max(0, args.retries),
    }


# --------------------------------------------------------------- machine state
class CpuMeter:
    """Busy CPUs of the whole machine between start() and stop(), from /proc/stat."""

    def __init__(self) -> None:
        self.t0: tuple[int, int] | None = None

    @staticmethod
    def _read() -> tuple[int, int] | None:
        try:
            with open("/proc/stat", encoding="ascii") as f:
                parts = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
        total = sum(parts[:8])
        return total - idle, total

    def start(self) -> None:
        self.t0 = self._read()

    def stop(self) -> float:
        t1 = self._read()
        if self.t0 is None or t1 is None or t1[1] == self.t0[1]:
            return float("nan")
        return (t1[0] - self.t0[0]) / (t1[1] - self.t0[1]) * (os.cpu_count() or 1)


def other_benchmarks() -> list[str]:
    """pids of running bench_core.py processes (never this process)."""
    try:
        out = subprocess.run(["pgrep", "-f", "bench_core.py"], capture_output=True,
                             text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    me = str(os.getpid())
    return [p for p in out.split() if p != me]


def busy_cpus(sample_s: float = 1.0) -> float:
    m = CpuMeter()
    m.start()
    time.sleep(sample_s)
    return m.stop()


def wait_idle(limit_s: float, phase: str, quiet_s: float = 60.0) -> dict:
    """Wait (bounded by ``limit_s``) until no bench_core.py runs, then (at most
    ``quiet_s`` more) until the other load of the machine is under half a CPU.
    Returns what was seen."""
    t0 = time.monotonic()
    pids = other_benchmarks()
    first = list(pids)
    while pids and time.monotonic() - t0 < limit_s:
        log(f"{phase}: bench_core.py is running (pid {', '.join(pids)}); waiting "
            f"({time.monotonic() - t0:.0f}/{limit_s:.0f} s)")
        time.sleep(min(10.0, max(0.5, limit_s - (time.monotonic() - t0))))
        pids = other_benchmarks()
    t1 = time.monotonic()
    busy = busy_cpus(0.5)
    while busy > 0.5 and time.monotonic() - t1 < min(quiet_s, limit_s):
        log(f"{phase}: {busy:.2f} CPUs busy with other work; waiting")
        time.sleep(4.0)
        busy = busy_cpus(1.0)
    return {"phase": phase, "seen": first, "waited_s": time.monotonic() - t0,
            "still": pids, "busy_before": busy}


# ------------------------------------------------------------------- the data
def make_rows(n: int, seed: int, start: int = 0) -> list[dict]:
    rnd = random.Random(seed)
    randint, rand, choice = rnd.randint, rnd.random, rnd.choice
    return [{"id": i, "code": i // 10, "age": randint(AGE_MIN, AGE_MAX), "city": choice(CITIES),
             "score": rand(), "name": f"user{i}"} for i in range(start, start + n)]


# ----------------------------------------------------------------- statistics
def pct(sorted_vals: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_vals:
        return float("nan")
    k = max(0, min(len(sorted_vals) - 1, math.ceil(p / 100 * len(sorted_vals)) - 1))
    return sorted_vals[k]


def summarize(ns: list[float]) -> dict:
    vals = sorted(ns)
    return {"n": len(vals), "p50": pct(vals, 50), "p90": pct(vals, 90), "p99": pct(vals, 99),
            "max": vals[-1] if vals else float("nan"),
            "mean": sum(vals) / len(vals) if vals else float("nan")}


def timer_overhead_ns(rounds: int = 20_000) -> float:
    clock = time.perf_counter_ns
    vals = []
    for _ in range(rounds):
        t0 = clock()
        vals.append(clock() - t0)
    vals.sort()
    return vals[len(vals) // 2]


def fmt_t(ns: float) -> str:
    if ns != ns:
        return "n/a"
    if ns < 1e6:
        return f"{ns / 1e3:.1f} µs"
    if ns < 1e9:
        return f"{ns / 1e6:.2f} ms"
    return f"{ns / 1e9:.2f} s"


def fmt_ratio(a: float, b: float) -> str:
    if not (a == a and b == b) or b == 0:
        return "n/a"
    r = a / b
    return f"{r:.2f}x" if r < 10 else f"{r:.0f}x" if r >= 100 else f"{r:.1f}x"


# -------------------------------------------------------------- the three peers
def build_dictdb(db: DictDB, rows: list[dict], res: dict) -> Any:
    db.create_table("people", primary_key="id")
    t = db.get_table("people")
    clock = time.perf_counter
    t0 = clock()
    t.insert(rows)
    t1 = clock()
    t.create_index("code", "hash")
    t2 = clock()
    t.create_index("age", "sorted")
    t3 = clock()
    if len(t) != len(rows):
        raise BenchError(f"dictdb_shm holds {len(t)} rows, expected {len(rows)}")
    res["build"]["dictdb_shm"] = {"insert": t1 - t0, "idx_code": t2 - t1, "idx_age": t3 - t2}
    return t


def build_sqlite(rows: list[dict], res: dict) -> sqlite3.Connection:
    con = sqlite3.connect(":memory:", isolation_level=None)   # autocommit; explicit BEGIN
    con.execute(SQL_CREATE.format(t="people"))
    clock = time.perf_counter
    t0 = clock()
    con.execute("BEGIN")
    con.executemany(SQL_INSERT.format(t="people"), rows)
    con.execute("COMMIT")
    t1 = clock()
    con.execute("CREATE INDEX people_code ON people(code)")
    t2 = clock()
    con.execute("CREATE INDEX people_age ON people(age)")
    t3 = clock()
    con.execute("ANALYZE")
    n = con.execute("SELECT COUNT(*) FROM people").fetchone()[0]
    if n != len(rows):
        raise BenchError(f"sqlite3 holds {n} rows, expected {len(rows)}")
    res["build"]["sqlite3"] = {"insert": t1 - t0, "idx_code": t2 - t1, "idx_age": t3 - t2}
    return con


def query_functions(t: Any, con: sqlite3.Connection, rows: list[dict]) -> dict:
    """name -> {system: fn(const) -> list of dicts}.  The dictdb_shm condition is
    built on every call, as a user writes it."""
    cols = COLUMNS
    execute = con.execute

    def sql_dicts(sql: str) -> Callable[..., list[dict]]:
        def run(*params: Any) -> list[dict]:
            return [dict(zip(cols, r)) for r in execute(sql, params).fetchall()]
        return run

    q_eq = sql_dicts("SELECT * FROM people WHERE code = ?")
    q_range = sql_dicts("SELECT * FROM people WHERE age BETWEEN ? AND ?")
    q_scan = sql_dicts("SELECT * FROM people WHERE city = ? AND score > ?")
    agg_sql = ("SELECT city, COUNT(*) AS n, AVG(score) AS avg FROM people GROUP BY city")

    def sqlite_agg(_c: Any = None) -> list[dict]:
        return [{"city": c, "n": n, "avg": a} for c, n, a in execute(agg_sql).fetchall()]

    def list_agg(_c: Any = None) -> list[dict]:
        acc = _list_group_by(rows)
        return [{"city": c, "n": n, "avg": s / n} for c, (n, s) in acc.items()]

    return {
        "eq": {
            "dictdb_shm": lambda k: t.select(where=t.code == k),
            "sqlite3": lambda k: q_eq(k),
            "list": lambda k: [dict(r) for r in rows if r["code"] == k],
        },
        "range": {
            "dictdb_shm": lambda a: t.select(where=t.age.between(a, a + 1)),
            "sqlite3": lambda a: q_range(a, a + 1),
            "list": lambda a: [dict(r) for r in rows if a <= r["age"] <= a + 1],
        },
        "narrow": {
            "dictdb_shm": lambda a: t.select(where=t.age.between(a, a)),
            "sqlite3": lambda a: q_range(a, a),
            "list": lambda a: [dict(r) for r in rows if a <= r["age"] <= a],
        },
        "scan": {
            "dictdb_shm": lambda c: t.select(where=(t.city == c) & (t.score > SCORE_CUT)),
            "sqlite3": lambda c: q_scan(c, SCORE_CUT),
            "list": lambda c: [dict(r) for r in rows
                               if r["city"] == c and r["score"] > SCORE_CUT],
        },
        "agg": {
            "dictdb_shm": lambda _c: t.aggregate(group_by="city", n=Count(), avg=Avg("score")),
            "sqlite3": sqlite_agg,
            "list": list_agg,
        },
    }


QUERIES = {
    "eq": ("1. indexed equality `t.code == k` (~10 rows)", "code = ? (index)"),
    "range": ("2a. sorted-index range `t.age.between(a, a+1)` (~2.7 % of rows)",
              "age BETWEEN ? AND ? (index)"),
    "narrow": ("2b. sorted-index range `t.age.between(a, a)` (~1.4 % of rows)",
               "age BETWEEN ? AND ? (index)"),
    "scan": ("3. non-indexed scan `(t.city == X) & (t.score > 0.9)` (~0.2 % of rows)",
             "city = ? AND score > ? (full scan)"),
    "agg": ("4. `aggregate(group_by=\"city\", n=Count(), avg=Avg(\"score\"))`",
            "GROUP BY city"),
}
SQL_FOR_PLAN = {
    "eq": ("SELECT * FROM people WHERE code = ?", (1,)),
    "range": ("SELECT * FROM people WHERE age BETWEEN ? AND ?", (30, 31)),
    "narrow": ("SELECT * FROM people WHERE age BETWEEN ? AND ?", (30, 30)),
    "scan": ("SELECT * FROM people WHERE city = ? AND score > ?", ("Oslo", SCORE_CUT)),
    "agg": ("SELECT city, COUNT(*) AS n, AVG(score) AS avg FROM people GROUP BY city", ()),
}


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


def _canon(result: list[dict]) -> list[tuple]:
    return sorted(tuple(r.get(c) for c in COLUMNS) for r in result)


def check_results(fns: dict, n_rows: int, rnd: random.Random) -> None:
    """The three systems return the same rows (3 constants per query)."""
    for kind, per in fns.items():
        for c in constants(kind, n_rows, 3 if kind != "agg" else 1, rnd):
            got = {s: f(c) for s, f in per.items()}
            if kind == "agg":
                canon = {s: sorted((g["city"], g["n"], round(g["avg"], 9)) for g in v)
                         for s, v in got.items()}
            else:
                canon = {s: _canon(v) for s, v in got.items()}
            ref = canon["sqlite3"]
            for s, v in canon.items():
                if v != ref:
                    raise BenchError(f"{kind}({c!r}): {s} returned {len(got[s])} rows that "
                                     f"differ from sqlite3's {len(got['sqlite3'])}")
            if kind != "agg" and all(len(v) == 0 for v in got.values()):
                log(f"check {kind}({c!r}): empty result")


def measure_query(per: dict, consts: list[Any], reps: tuple[int, int],
                  warm: list[Any], rounds: int = 5) -> dict:
    """Time every call on its own.  In each of ``rounds`` rounds dictdb_shm and
    sqlite3 take turns call by call (the order alternates) over their slice of
    the constants, then the list runs its slice in a block of its own (its
    scans would otherwise flush the caches between the other two's calls)."""
    systems = list(per)
    fast = [s for s in systems if s != "list"]
    limit = {s: (reps[1] if s == "list" else reps[0]) for s in systems}
    for s in systems:                       # warm-up with other constants
        for c in warm[:max(1, min(len(warm), limit[s] // 10))]:
            per[s](c)
    clock = time.perf_counter_ns
    times: dict[str, list[float]] = {s: [] for s in systems}
    sizes: dict[str, int] = {s: 0 for s in systems}

    def timed(s: str, c: Any) -> None:
        fn = per[s]
        t0 = clock()
        out = fn(c)
        times[s].append(clock() - t0)
        sizes[s] += len(out)

    for r in range(rounds):
        for i in range(r * reps[0] // rounds, (r + 1) * reps[0] // rounds):
            for j in range(len(fast)):
                timed(fast[(i + j) % len(fast)], consts[i])
        if "list" in per:
            for i in range(r * reps[1] // rounds, (r + 1) * reps[1] // rounds):
                timed("list", consts[i])
    return {s: {**summarize(times[s]), "rows": sizes[s] / max(1, len(times[s]))}
            for s in systems}


# --------------------------------------------------------- 5. index maintenance
def measure_inserts(db: DictDB, con: sqlite3.Connection, base: list[dict],
                    new_rows: list[dict], warm: int, suffix: str = "") -> dict:
    """Fresh tables (named ins_plain<suffix> and ins_idx<suffix>) in both systems."""
    targets: dict[str, Callable[[dict], Any]] = {}
    build: dict[str, float] = {}
    clock = time.perf_counter
    tables = {"plain": f"ins_plain{suffix}", "idx": f"ins_idx{suffix}"}
    for name, indexed in ((tables["plain"], False), (tables["idx"], True)):
        db.create_table(name, primary_key="id")
        t = db.get_table(name)
        t0 = clock()
        t.insert(base)
        if indexed:
            t.create_index("code", "hash")
            t.create_index("age", "sorted")
        build[f"dictdb_shm {name}"] = clock() - t0
        targets[f"dictdb_shm|{'idx' if indexed else 'plain'}"] = t.insert
        con.execute(SQL_CREATE.format(t=name))
        t0 = clock()
        con.execute("BEGIN")
        con.executemany(SQL_INSERT.format(t=name), base)
        con.execute("COMMIT")
        if indexed:
            con.execute(f"CREATE INDEX {name}_code ON {name}(code)")
            con.execute(f"CREATE INDEX {name}_age ON {name}(age)")
        build[f"sqlite3 {name}"] = clock() - t0
        sql = SQL_INSERT.format(t=name)

        def sqlite_insert(row: dict, _sql: str = sql) -> Any:
            return con.execute(_sql, row)       # autocommit: one transaction per row
        targets[f"sqlite3|{'idx' if indexed else 'plain'}"] = sqlite_insert

    names = list(targets)
    for name in names:
        fn = targets[name]
        for r in new_rows[:warm]:
            fn(r)
    clock_ns = time.perf_counter_ns
    times: dict[str, list[float]] = {n: [] for n in names}
    todo = new_rows[warm:]
    for b, start in enumerate(range(0, len(todo), 100)):
        chunk = todo[start:start + 100]
        for j in range(len(names)):
            name = names[(b + j) % len(names)]
            fn = targets[name]
            acc = times[name]
            for r in chunk:
                t0 = clock_ns()
                fn(r)
                acc.append(clock_ns() - t0)
    for name in tables.values():
        t = db.get_table(name)
        want = len(base) + len(new_rows)
        if len(t) != want:
            raise BenchError(f"dictdb_shm {name} holds {len(t)} rows, expected {want}")
        got = con.execute(f"SELECT COUNT(*) FROM {name}").fetchone()[0]
        if got != want:
            raise BenchError(f"sqlite3 {name} holds {got} rows, expected {want}")
    out: dict[str, Any] = {n: summarize(v) for n, v in times.items()}
    out["build"] = build
    out["tables"] = tables
    return out


# --------------------------------------------------------------------- profile
def profile_calls(fn: Callable[[Any], Any], args: Sequence[Any], top: int = 12) -> str:
    prof = cProfile.Profile()
    prof.enable()
    for a in args:
        fn(a)
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    text = out.getvalue()
    # keep the table, drop pstats' preamble lines about ordering
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return "\n".join(lines)


def _list_group_by(rows: list[dict]) -> dict:
    acc: dict[str, list] = {}
    for r in rows:
        a = acc.get(r["city"])
        if a is None:
            acc[r["city"]] = [1, r["score"]]
        else:
            a[0] += 1
            a[1] += r["score"]
    return acc


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
    store = t._store                      # internal, read-only: decode every record, no filter
    unpackb = msgpack.unpackb
    clock = time.perf_counter

    def best(fn: Callable[[], Any]) -> float:
        out = []
        for _ in range(reps):
            t0 = clock()
            fn()
            out.append(clock() - t0)
        return min(out)

    def decode_all(s: Any) -> int:
        k = 0
        for _r in s.scan():
            k += 1
        return k

    packed = [msgpack.packb(r) for r in rows]

    def unpack_only() -> None:
        for b in packed:
            unpackb(b)

    def pred_only() -> None:
        for r in rows:
            if r["city"] == city and r["score"] > SCORE_CUT:
                pass

    from dictdb_shm.query import aggregate_rows

    out = [
        ("dictdb_shm `t.select(where=(t.city == X) & (t.score > 0.9))`",
         best(lambda: t.select(where=(t.city == city) & (t.score > SCORE_CUT)))),
        ("dictdb_shm store scan alone: walk the heap, decode every record, no filter",
         best(lambda: store.read(decode_all))),
        ("`msgpack.unpackb` of every row from a Python list of bytes (no shared memory)",
         best(unpack_only)),
        ("the same filter in Python over already-decoded dicts (no copy)", best(pred_only)),
        ("sqlite3 `SELECT COUNT(*) ... WHERE city = ? AND score > ?` (scan in C, no rows out)",
         best(lambda: con.execute("SELECT COUNT(*) FROM people WHERE city = ? AND score > ?",
                                  (city, SCORE_CUT)).fetchone())),
        ("dictdb_shm `t.aggregate(group_by=\"city\", n=Count(), avg=Avg(\"score\"))`",
         best(lambda: t.aggregate(group_by="city", n=Count(), avg=Avg("score")))),
        ("the same `t.aggregate(...)` with the cyclic GC disabled (`gc.disable()`)",
         best(lambda: _without_gc(
             lambda: t.aggregate(group_by="city", n=Count(), avg=Avg("score"))))),
        ("its aggregation step alone: `aggregate_rows` over the already-decoded list",
         best(lambda: aggregate_rows(rows, "city", n=Count(), avg=Avg("score")))),
        ("a hand-written group-by loop over the same list (the list peer)",
         best(lambda: _list_group_by(rows))),
    ]
    del packed
    return out


# ---------------------------------------------------------------------- report
def machine_info() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    commit = "unknown"
    try:
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "dictdb_shm"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        if commit and dirty:
            commit += " (dictdb_shm/ has uncommitted changes)"
    except (OSError, subprocess.SubprocessError):
        pass
    return {"date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
            "commit": commit or "unknown",
            "nproc": os.cpu_count(), "cpu": cpu,
            "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
            "platform": platform.platform()}


def report(cfg: dict, res: dict) -> tuple[str, list[tuple[str, str, str, bool | None]]]:
    m = res["machine"]
    L: list[str] = []
    n = cfg["rows"]
    L.append(f"Produced by `benchmarks/bench_query.py{' --quick' if cfg['quick'] else ''}"
             f"{'' if n == 1_000_000 or (cfg['quick'] and n == 50_000) else f' --rows {n}'}`"
             f" on {m['date']}: {n:,} rows, `nproc` {m['nproc']}, {m['cpu']}, "
             f"Python {m['python']}, SQLite {m['sqlite']}, {m['platform']}; "
             f"dictdb_shm at commit {m['commit']}.")
    L.append("")
    # idleness
    L.append("**Machine state.** Before each phase the script checked `pgrep -f bench_core.py` "
             "and waited for it to finish, then waited (at most 60 s) for any other load to "
             "drop under half a CPU. A phase that was disturbed (busy CPUs "
             f"above {BUSY_LIMIT}, or bench_core.py running at its end) is measured again, up "
             f"to {cfg['retries']} times. \"Busy CPUs\" are for the whole machine, from "
             "/proc/stat: just before the phase (should be ~0) and during it (this "
             "benchmark alone keeps ~1 busy; more means other work ran alongside).")
    L.append("")
    L.append("| phase | bench_core.py at start | waited | busy CPUs just before | "
             "busy CPUs during | bench_core.py at end | figures |")
    L.append("|---|---|---|---:|---:|---|---|")
    disturbed = False
    for ph in res["phases"]:
        seen = "running (pid " + ", ".join(ph["seen"]) + ")" if ph["seen"] else "not running"
        if ph["still"]:
            seen += "; still running when the wait ran out"
        end = ("running (pid " + ", ".join(ph.get("seen_end", [])) + ")"
               if ph.get("seen_end") else "not running")
        kept = ph.get("kept", True)
        if kept and ph.get("disturbed"):
            disturbed = True
        verdict = ("kept" if kept else "dropped, measured again") + (
            " (disturbed)" if ph.get("disturbed") else "")
        L.append(f"| {ph['phase']} | {seen} | {ph['waited_s']:.0f} s | "
                 f"{ph['busy_before']:.2f} | {ph.get('busy', float('nan')):.2f} | {end} | "
                 f"{verdict} |")
    L.append("")
    L.append("Machine idle apart from this benchmark during the kept phases: "
             + ("**no**: some kept phases ran alongside other load (see above), their "
                "figures are pessimistic." if disturbed else "**yes**."))
    L.append("")

    # build
    b = res["build"]
    L.append("### Build")
    L.append("")
    L.append("| system | bulk insert | index on code | index on age | total |")
    L.append("|---|---:|---:|---:|---:|")
    for s in ("dictdb_shm", "sqlite3"):
        x = b[s]
        L.append(f"| {s} | {x['insert']:.2f} s | {x['idx_code']:.2f} s (hash) | "
                 f"{x['idx_age']:.2f} s (sorted) | "
                 f"{x['insert'] + x['idx_code'] + x['idx_age']:.2f} s |"
                 if s == "dictdb_shm" else
                 f"| {s} | {x['insert']:.2f} s | {x['idx_code']:.2f} s | {x['idx_age']:.2f} s | "
                 f"{x['insert'] + x['idx_code'] + x['idx_age']:.2f} s |")
    L.append(f"| list | {b['list']:.2f} s (making the {n:,} dicts; every peer is loaded "
             f"from them) | none | none | {b['list']:.2f} s |")
    L.append("")
    L.append("dictdb_shm: one `t.insert(rows)` (a single atomic write), then "
             "`create_index`. sqlite3: `executemany` of the same dicts (named parameters) "
             "in one transaction, then `CREATE INDEX`.")
    L.append("")

    # queries
    L.append("### Queries")
    L.append("")
    L.append("Every call timed on its own (`perf_counter_ns`, timer cost "
             f"{res['timer_ns']:.0f} ns, not subtracted); each rep uses another constant. "
             "In each of 5 rounds dictdb_shm and sqlite3 take turns call by call over a "
             "fifth of the constants, then the list runs its fifth in a block of its own. "
             "Ratios are time ÷ the other's "
             "time at p50 (mean in brackets): above 1 is slower. With 20-30 reps p99 is "
             "the slowest call or close to it.")
    L.append("")
    L.append("| query | system | reps | rows out | p50 | p90 | p99 | mean | ÷ sqlite3 | ÷ list |")
    L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for kind, (title, _sql) in QUERIES.items():
        q = res["queries"].get(kind)
        if q is None:
            continue
        for s in ("dictdb_shm", "sqlite3", "list"):
            x = q[s]
            label = s
            if s == "list" and kind in ("eq", "range", "narrow"):
                label = "list (scans: no index)"
            vs_sql = (f"{fmt_ratio(x['p50'], q['sqlite3']['p50'])} "
                      f"({fmt_ratio(x['mean'], q['sqlite3']['mean'])})")
            vs_list = (f"{fmt_ratio(x['p50'], q['list']['p50'])} "
                       f"({fmt_ratio(x['mean'], q['list']['mean'])})")
            L.append(f"| {title if s == 'dictdb_shm' else ''} | {label} | {x['n']} | "
                     f"{x['rows']:,.0f} | {fmt_t(x['p50'])} | {fmt_t(x['p90'])} | "
                     f"{fmt_t(x['p99'])} | {fmt_t(x['mean'])} | {vs_sql} | {vs_list} |")
    L.append("")
    L.append("sqlite3 results are made into dicts: `fetchall()`, then "
             "`dict(zip(columns, row))` per row (included in its time). The list peer copies "
             "the rows it returns (`dict(r)`), as dictdb_shm's results are the caller's own. "
             "sqlite3's plans (EXPLAIN QUERY PLAN):")
    L.append("")
    for kind, plan in res["plans"].items():
        L.append(f"* {kind}: `{plan}`")
    L.append("")

    # inserts
    ins = res.get("inserts")
    if ins:
        L.append("### Index maintenance: single-row inserts")
        L.append("")
        L.append(f"{cfg['insert_ops']:,} new rows inserted one call each into a table already "
                 f"holding {cfg['insert_base']:,} rows (after {cfg['insert_warm']} untimed "
                 "warm-up inserts), the four tables taking turns every 100 rows; every call "
                 "timed on its own. dictdb_shm: `t.insert(row)` (cross-process write lock, "
                 "commit). sqlite3: `INSERT` in autocommit mode (one transaction per row).")
        L.append("")
        L.append("| system | indexes | p50 | p90 | p99 | max | mean | inserts/s | "
                 "with ÷ without (mean) |")
        L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for s in ("dictdb_shm", "sqlite3"):
            plain, idx = ins[f"{s}|plain"], ins[f"{s}|idx"]
            for tag, x in (("none", plain), ("hash(code) + sorted(age)", idx)):
                ratio = fmt_ratio(idx["mean"], plain["mean"]) if x is idx else ""
                L.append(f"| {s} | {tag} | {fmt_t(x['p50'])} | {fmt_t(x['p90'])} | "
                         f"{fmt_t(x['p99'])} | {fmt_t(x['max'])} | {fmt_t(x['mean'])} | "
                         f"{1e9 / x['mean']:,.0f} | {ratio} |")
        L.append("")
        L.append("p50 ratio with ÷ without: dictdb_shm "
                 f"{fmt_ratio(ins['dictdb_shm|idx']['p50'], ins['dictdb_shm|plain']['p50'])}, "
                 f"sqlite3 {fmt_ratio(ins['sqlite3|idx']['p50'], ins['sqlite3|plain']['p50'])}. "
                 "Not measured for the list (no index to maintain).")
        L.append("")

    # targets
    verdicts: list[tuple[str, str, str, bool | None]] = []
    q = res["queries"]
    if "eq" in q:
        v = q["eq"]["dictdb_shm"]["p50"] / 1e3
        verdicts.append(("indexed equality (`t.code == k`, ~10 rows)",
                         f"under {TARGETS['eq_p50_us']:.0f} µs (p50)",
                         f"{v:.1f} µs p50, {q['eq']['dictdb_shm']['mean'] / 1e3:.1f} µs mean",
                         v < TARGETS["eq_p50_us"]))
    if "scan" in q:
        r50 = q["scan"]["dictdb_shm"]["p50"] / q["scan"]["sqlite3"]["p50"]
        rmean = q["scan"]["dictdb_shm"]["mean"] / q["scan"]["sqlite3"]["mean"]
        verdicts.append(("non-indexed scan vs sqlite3",
                         f"within {TARGETS['scan_vs_sqlite']:.0f}x of sqlite3's time (p50)",
                         f"{r50:.1f}x p50, {rmean:.1f}x mean",
                         r50 <= TARGETS["scan_vs_sqlite"]))
    if ins:
        r = ins["dictdb_shm|idx"]["mean"] / ins["dictdb_shm|plain"]["mean"]
        r50 = ins["dictdb_shm|idx"]["p50"] / ins["dictdb_shm|plain"]["p50"]
        rs = ins["sqlite3|idx"]["mean"] / ins["sqlite3|plain"]["mean"]
        verdicts.append(("index maintenance (hash + sorted) on single-row insert",
                         f"at most {TARGETS['index_cost']:.0f}x the unindexed time (mean)",
                         f"{r:.2f}x mean, {r50:.2f}x p50 (sqlite3: {rs:.2f}x mean)",
                         r <= TARGETS["index_cost"]))
    L.append("### Targets (goals, not pass/fail)")
    L.append("")
    L.append("| target | goal | measured | |")
    L.append("|---|---|---|---|")
    for name, goal, got, ok in verdicts:
        L.append(f"| {name} | {goal} | {got} | {'met' if ok else '**missed**'} |")
    L.append("")
    if res.get("breakdown"):
        L.append("### Where the scan's and the aggregate's time goes (best of 3, after the "
                 "timed runs)")
        L.append("")
        L.append(f"| step over {n:,} rows | time | per row |")
        L.append("|---|---:|---:|")
        for label, sec in res["breakdown"]:
            L.append(f"| {label} | {fmt_t(sec * 1e9)} | {sec / n * 1e9:,.0f} ns |")
        L.append("")
    if res.get("profiles"):
        L.append("### cProfile of dictdb_shm calls (top frames by own time)")
        L.append("")
        for title, text in res["profiles"].items():
            L.append(f"{title}:")
            L.append("")
            L.append("```")
            L.append(text)
            L.append("```")
            L.append("")
    return "\n".join(L), verdicts


# ----------------------------------------------------------------------- main
def _sigterm(_signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signal.SIGTERM)


def run(cfg: dict) -> dict:
    res: dict[str, Any] = {"machine": machine_info(), "build": {}, "queries": {},
                           "phases": [], "plans": {}, "timer_ns": timer_overhead_ns()}
    n, seed = cfg["rows"], cfg["seed"]
    meter = CpuMeter()

    def phase(name: str) -> dict:
        ph = wait_idle(cfg["wait_idle"], name)
        res["phases"].append(ph)
        gc.collect()
        meter.start()
        log(f"phase: {name}")
        return ph

    def end_phase(ph: dict) -> bool:
        """Close a phase; True when it was disturbed (bench_core.py started
        meanwhile, or the machine was busier than this benchmark alone)."""
        ph["busy"] = meter.stop()
        ph["seen_end"] = other_benchmarks()
        busy = ph["busy"]
        ph["disturbed"] = bool(ph["seen_end"]) or (busy == busy and busy > BUSY_LIMIT)
        ph["kept"] = True
        return ph["disturbed"]

    def repeated(name: str, body: Callable[[int], Any]) -> Any:
        """Run a measured phase, again (up to ``--retries`` times) while disturbed."""
        for attempt in range(cfg["retries"] + 1):
            ph = phase(name if not attempt else f"{name} (retry {attempt})")
            out = body(attempt)
            if not end_phase(ph) or attempt == cfg["retries"]:
                return out
            ph["kept"] = False
            log(f"{name} was disturbed (busy CPUs {ph['busy']:.2f}, bench_core.py "
                f"{'running' if ph['seen_end'] else 'not running'} at its end): measuring again")
        raise AssertionError("unreachable")

    db: DictDB | None = None
    con: sqlite3.Connection | None = None

    def build(attempt: int) -> tuple[list[dict], Any]:
        nonlocal db, con
        if db is not None:                 # a disturbed build: start again from nothing
            db.destroy()
            db = None
        if con is not None:
            con.close()
            con = None
        gc.collect()
        t0 = time.perf_counter()
        rows = make_rows(n, seed)
        res["build"]["list"] = time.perf_counter() - t0
        db = DictDB(f"benchq-{os.getpid()}" + (f"r{attempt}" if attempt else ""))
        t = build_dictdb(db, rows, res)
        con = build_sqlite(rows, res)
        return rows, t

    try:
        rows, t = repeated("build", build)
        log(f"built: dictdb_shm {sum(res['build']['dictdb_shm'].values()):.2f} s, "
            f"sqlite3 {sum(res['build']['sqlite3'].values()):.2f} s, "
            f"list {res['build']['list']:.2f} s")
        # Everything built so far lives to the end: keep it out of the cyclic
        # collector's way (1M dicts of the list peer would make every full
        # collection during the queries slow, for all three systems).
        gc.collect()
        gc.freeze()

        for kind, (sql, params) in SQL_FOR_PLAN.items():
            plan = con.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
            res["plans"][kind] = "; ".join(str(r[-1]) for r in plan)

        fns = query_functions(t, con, rows)
        rnd = random.Random(seed + 1)
        check_results(fns, n, rnd)
        log("results agree across dictdb_shm, sqlite3 and the list")

        for kind in QUERIES:
            reps = cfg[f"{kind}_reps"]

            def body(_attempt: int, kind: str = kind, reps: tuple[int, int] = reps) -> dict:
                consts = constants(kind, n, max(reps), rnd)
                warm = constants(kind, n, 20, rnd)
                return measure_query(fns[kind], consts, reps, warm)
            res["queries"][kind] = out = repeated(f"query {kind}", body)
            log(f"{kind}: " + ", ".join(f"{s} p50 {fmt_t(x['p50'])}" for s, x in out.items()))

        base = rows[:cfg["insert_base"]]
        new_rows = make_rows(cfg["insert_ops"] + cfg["insert_warm"], seed + 2,
                             start=cfg["insert_base"])
        res["inserts"] = repeated("single-row inserts", lambda attempt: measure_inserts(
            db, con, base, new_rows, cfg["insert_warm"], suffix=str(attempt)))
        log("inserts: " + ", ".join(f"{k} mean {fmt_t(v['mean'])}"
                                    for k, v in res["inserts"].items()
                                    if k not in ("build", "tables")))

        if cfg["profile"]:
            log("profiling dictdb_shm calls (not part of the timed figures)")
            prof = res["profiles"] = {}
            prof["indexed equality, 2,000 calls"] = profile_calls(
                fns["eq"]["dictdb_shm"], constants("eq", n, 2000, rnd))
            prof["range between(a, a+1), 5 calls"] = profile_calls(
                fns["range"]["dictdb_shm"], constants("range", n, 5, rnd))
            prof["non-indexed scan, 3 calls"] = profile_calls(
                fns["scan"]["dictdb_shm"], constants("scan", n, 3, rnd))
            prof["aggregate group_by city, 3 calls"] = profile_calls(
                fns["agg"]["dictdb_shm"], [None] * 3)
            res["breakdown"] = scan_breakdown(t, con, rows, CITIES[7])
            db.create_table("prof_idx", primary_key="id")
            tx = db.get_table("prof_idx")
            tx.insert(rows[:cfg["insert_base"]])
            prof[f"create_index hash on {cfg['insert_base']:,} rows"] = profile_calls(
                lambda f: tx.create_index(f, "hash"), ["code"])
            prof[f"create_index sorted on {cfg['insert_base']:,} rows"] = profile_calls(
                lambda f: tx.create_index(f, "sorted"), ["age"])
            extra = make_rows(5000, seed + 3, start=10_000_000)
            tp = db.get_table(res["inserts"]["tables"]["plain"])
            ti = db.get_table(res["inserts"]["tables"]["idx"])
            prof["single-row insert, no index, 5,000 calls"] = profile_calls(tp.insert, extra)
            prof["single-row insert, hash + sorted index, 5,000 calls"] = profile_calls(
                ti.insert, extra)
    finally:
        gc.unfreeze()
        if con is not None:
            con.close()
        if db is not None:
            try:
                db.destroy()
                log(f"destroyed database {db.name!r}")
            except Exception:  # noqa: BLE001 - report, keep cleaning
                log("destroying the database failed:\n" + traceback.format_exc())
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=None,
                   help="rows in the table (default 1,000,000; 50,000 with --quick)")
    p.add_argument("--quick", action="store_true", help="~50,000 rows and fewer reps")
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--wait-idle", type=float, default=900.0, metavar="SECONDS",
                   help="before each phase wait at most this long for bench_core.py to "
                        "finish (default 900; 0: do not wait)")
    p.add_argument("--retries", type=int, default=2,
                   help="measure a query or insert phase again, up to this many times, when "
                        "it was disturbed (default 2)")
    p.add_argument("--profile", action="store_true",
                   help="add a cProfile of dictdb_shm's calls (after the timed runs)")
    args = p.parse_args(argv)
    cfg = config(args)
    signal.signal(signal.SIGTERM, _sigterm)
    log(f"{cfg['rows']:,} rows{' (quick)' if cfg['quick'] else ''}")
    try:
        res = run(cfg)
    except BenchError as e:
        log(f"FAILED: {e}")
        return 1
    text, _verdicts = report(cfg, res)
    print(text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
