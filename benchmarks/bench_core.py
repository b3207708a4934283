"""Core benchmark of dictdb_shm against its peers, every figure from one run.

    .venv/bin/python benchmarks/bench_core.py                # 1,000,000 rows (make bench)
    .venv/bin/python benchmarks/bench_core.py --quick        # smoke run, seconds
    .venv/bin/python benchmarks/bench_core.py --write-docs   # also rewrite its docs section

Measures (benchmarks/README.md says what each figure means):

1. point reads by primary key from a process that attached by name
   (t.get and t.select) vs a plain dict, Manager().dict(), LMDB and Redis;
2. single-row inserts from one process vs LMDB (one write txn per put),
   Redis SET, Manager dict set and a plain dict;
3. bulk insert of --rows rows vs LMDB (one txn), sqlite3 executemany
   (in-memory) and building a plain dict;
4. read scaling: 1 vs 2 reader processes, dictdb_shm and LMDB;
5. attach cost: time and added USS of attach + get_table + first get.

This script owns the core workload and its report; the worker bodies are in
core_workers.py, the peers in peers.py, the conventions in harness.py.  It
must never leave anything behind: the database is destroyed, workers and
servers are stopped and the temporary directory goes, also on Ctrl-C and
SIGTERM (harness.Cleanup).
"""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

import harness  # noqa: I001 - first: it makes the checkout importable
import core_workers
import machine
import peers
from core_workers import BATCH, make_row
from harness import BenchError, CpuMeter, Report, log, measure_batches, seconds
from workers import MIN_CPU_SHARE, Workers, disturbed, timed_run
from dictdb_shm import DictDB

TARGETS = {
    "get_vs_lmdb": 1.0,        # get at least as fast as LMDB (speed ratio >= 1)
    "select_vs_lmdb": 2.0,     # select takes at most 2x LMDB's time
    "get_vs_redis": 40.0,      # get at least 40x faster than Redis
    "scale_2p": 1.8,           # 2 readers reach >= 1.8x one
    "insert_per_s": 150_000,
    "bulk_1m_s": 5.0,          # for 1,000,000 rows
    "attach_ms": 50.0,
    "attach_mb": 30.0,
}
SQL_COLUMNS = (("id", "INTEGER"), ("name", "TEXT"), ("age", "INTEGER"), ("city", "TEXT"))
BUSY_BEFORE_LIMIT = 0.3        # busy CPUs before the run above this: a disturbed run
BUSY_PHASE_LIMIT = 1.3         # ... and during a one-process phase


def configure(cfg: dict, args: Any) -> dict:
    quick = cfg["quick"]
    return {
        "read_ops": 20_000 if quick else 300_000,        # get, LMDB, dict
        "select_ops": 5_000 if quick else 100_000,
        "slow_ops": 2_000 if quick else 20_000,          # Manager, Redis
        "warm": 5_000 if quick else 100_000,
        "insert_ops": 5_000 if quick else 100_000,       # dictdb, LMDB, dict
        "slow_insert_ops": 2_000 if quick else 20_000,   # Manager, Redis
        "duration": 1.0 if quick else 2.0,               # per read-scaling run
        "scale_keys": 200_000 if quick else 1_500_000,   # random keys per reader
        "attach_probes": 1 if quick else 3,
        "pin": not args.no_pin,
    }


def add_arguments(p: Any) -> None:
    p.add_argument("--no-pin", action="store_true",
                   help="do not pin each read-scaling reader to its own CPU")


# ------------------------------------------------------------------ phases
def bench_bulk(t: Any, rows: list[dict], lmdb_dir: str,
               redis_srv: peers.RedisServer | None) -> dict:
    n = len(rows)
    res: dict[str, Any] = {}
    log(f"3. bulk insert of {n:,} rows: dictdb_shm")
    res["dictdb"] = seconds(lambda: t.insert(rows), collect_first=True)
    if len(t) != n:
        raise BenchError(f"bulk insert left {len(t)} rows, expected {n}")
    log("3. bulk insert: LMDB (one write txn)")
    with peers.open_lmdb_writer(lmdb_dir, n) as env:
        res["lmdb"] = seconds(lambda: peers.lmdb_load(env, rows), collect_first=True)
        if env.stat()["entries"] != n:
            raise BenchError("LMDB bulk load lost rows")
    log("3. bulk insert: sqlite3 executemany (in-memory)")
    with contextlib.closing(peers.sqlite_memory()) as con:
        sql = peers.sqlite_create(con, "t", SQL_COLUMNS)
        res["sqlite"] = seconds(lambda: peers.sqlite_load(con, sql, rows), collect_first=True)
    log("3. bulk insert: plain dict")
    holder: list[dict] = []
    res["dict"] = seconds(lambda: holder.append({r["id"]: r for r in rows}), collect_first=True)
    del holder
    if redis_srv is not None:
        log("3. bulk insert: Redis MSET, 10,000 keys a call (also loads the read peer)")
        with contextlib.closing(redis_srv.client()) as c:
            res["redis"] = seconds(lambda: peers.redis_load(c, rows), collect_first=True)
            if c.dbsize() != n:
                raise BenchError("Redis load lost rows")
    return res


def bench_scaling(workers: Workers, spec: dict, kind: str, nproc: int) -> dict:
    """One run of ``nproc`` readers (workers.timed_run)."""
    log(f"4. read scaling: {kind}, {nproc} reader process(es), {spec['duration']:.0f} s")
    return timed_run(workers, core_workers.scaling_reader, lambda w: (kind, spec, w), nproc,
                     spec["duration"], f"read scaling ({kind})")


def bench_scaling_all(cfg: dict, workers: Workers, spec: dict) -> dict:
    """1 and 2 readers, alternated for ``rounds`` rounds (medians reported);
    a disturbed run is discarded and run again, up to ``retries`` times."""
    out: dict[str, Any] = {"discarded": []}
    for kind in ("dictdb", "lmdb"):
        runs: dict[int, list[dict]] = {1: [], 2: []}
        for _ in range(cfg["rounds"]):
            for k in (1, 2):
                for attempt in range(cfg["retries"] + 1):
                    res = bench_scaling(workers, spec, kind, k)
                    if not disturbed(res, k) or attempt == cfg["retries"]:
                        break
                    out["discarded"].append((kind, k, res))
                    log(f"   discarded: {res['busy']:.2f} CPUs busy with {k} reader(s), "
                        f"a reader got {res['cpu_share']:.0%} of a CPU; running it again "
                        f"(busiest other process: {machine.busiest_other_process()})")
                    time.sleep(2.0)
                runs[k].append(res)
        out[kind] = runs
    return out


def bench_inserts(cfg: dict, db: Any, lmdb_dir: str, redis_srv: peers.RedisServer | None,
                  manager: Any) -> dict:
    n_fast, n_slow = cfg["insert_ops"], cfg["slow_insert_ops"]
    rows = [make_row(i) for i in range(n_fast)]
    res: dict[str, Any] = {}
    log(f"2. single-row inserts: dictdb_shm ({n_fast:,})")
    db.create_table("ins", primary_key="id")
    ti = db.get_table("ins")
    res["dictdb"] = measure_batches(ti.insert, rows, BATCH)
    if len(ti) != len(rows) // BATCH * BATCH:
        raise BenchError(f"single inserts left {len(ti)} rows")
    db.drop_table("ins")
    log(f"2. single-row inserts: LMDB, one write txn per put ({n_fast:,})")
    with peers.open_lmdb_writer(lmdb_dir) as env:
        res["lmdb"] = measure_batches(peers.lmdb_put(env), rows, BATCH)
    if redis_srv is not None:
        log(f"2. single-row inserts: Redis SET ({n_slow:,}, into logical db 1)")
        with contextlib.closing(redis_srv.client(db=1)) as c:
            res["redis"] = measure_batches(peers.redis_set(c), rows[:n_slow], BATCH)
    log(f"2. single-row inserts: Manager().dict() ({n_slow:,})")
    res["manager"] = measure_batches(peers.dict_put(manager.dict()), rows[:n_slow], BATCH)
    log(f"2. single-row inserts: plain dict ({n_fast:,})")
    res["dict"] = measure_batches(peers.dict_put({}), rows, BATCH)
    return res


def destroy_database(db: Any) -> None:
    try:
        db.destroy()
    except Exception:
        log(f"could not destroy {db.name!r}; remove it with: "
            f"python -m dictdb_shm.coordinator stop {db.name}")
        raise


def run(cfg: dict) -> dict:
    n = cfg["rows"]
    res: dict[str, Any] = {"facts": machine.facts(), "versions": peers.versions()}
    db_name = f"bench-core-{os.getpid()}"
    with harness.Cleanup() as cleanup:
        cleanup.add(lambda: log(f"cleaned up: database {db_name!r} destroyed, workers and "
                                f"servers stopped"), "the last log line")
        tmp = tempfile.mkdtemp(prefix="bench-core-")
        cleanup.add(lambda: shutil.rmtree(tmp, ignore_errors=True), tmp)
        res["busy_before"] = machine.wait_idle(cfg["wait_idle"], "the run").busy_before
        if res["busy_before"] > BUSY_BEFORE_LIMIT:
            log(f"warning: {res['busy_before']:.2f} CPUs busy before the run: other processes "
                f"will disturb the figures (busiest: {machine.busiest_other_process()})")
        redis_srv = peers.start_redis(cleanup, tmp)
        res["redis_version"] = redis_srv.version() if redis_srv else None
        log(f"making {n:,} rows; creating database {db_name!r}")
        rows = [make_row(i) for i in range(n)]
        db = DictDB(db_name)
        cleanup.add(lambda: destroy_database(db), f"database {db_name!r}")
        db.create_table("t", primary_key="id")
        lmdb_read = os.path.join(tmp, "lmdb-read")
        with CpuMeter() as meter:
            res["bulk"] = bench_bulk(db.get_table("t"), rows, lmdb_read, redis_srv)
        res["busy_bulk"] = meter.busy

        workers = Workers()
        log("loading the Manager().dict() peer")
        manager = peers.start_manager(cleanup, workers.ctx)
        cleanup.add(workers.stop_all, "the worker processes")
        md = manager.dict()
        peers.manager_load(md, rows)
        if len(md) != n:
            raise BenchError("Manager dict load lost rows")
        del rows
        gc.collect()

        spec = {"db": db_name, "rows": n, "ops": cfg["read_ops"],
                "select_ops": cfg["select_ops"], "slow_ops": cfg["slow_ops"],
                "warm": cfg["warm"], "lmdb_path": lmdb_read,
                "redis_port": redis_srv.port if redis_srv else 0,
                "profile": cfg["profile"], "duration": cfg["duration"],
                "scale_keys": cfg["scale_keys"], "rounds": cfg["rounds"], "pin": cfg["pin"]}
        log(f"1. point reads in an attached process ({cfg['read_ops']:,} random keys; "
            f"Manager/Redis {cfg['slow_ops']:,})")
        with CpuMeter() as meter:
            res["reads"] = workers.run_one(core_workers.point_reads, (spec, md), timeout=900,
                                           what="point reads")
        res["busy_reads"] = meter.busy
        res["profile"] = res["reads"].pop("profile", None)
        md.clear()

        res["scaling"] = bench_scaling_all(cfg, workers, spec)
        res["attach"] = []
        for i in range(cfg["attach_probes"]):
            log(f"5. attach cost, fresh process {i + 1}/{cfg['attach_probes']}")
            res["attach"].append(workers.run_one(core_workers.attach_probe,
                                                 (db_name, (i * 7919) % n), timeout=120,
                                                 what="attach probe"))
        if redis_srv is not None:
            with contextlib.closing(redis_srv.client()) as c:
                c.flushall()
        with CpuMeter() as meter:
            res["inserts"] = bench_inserts(cfg, db, os.path.join(tmp, "lmdb-ins"),
                                           redis_srv, manager)
        res["busy_inserts"] = meter.busy
        return res


# ---------------------------------------------------------------- sections
def ratio(slow: harness.Latency | None, fast: harness.Latency | None) -> float | None:
    """How many times faster ``fast`` is than ``slow``, by mean time per op."""
    if not slow or not fast:
        return None
    return slow.mean_ns / fast.mean_ns


def section_intro(rep: Report, cfg: dict, r: dict) -> None:
    f, v = r["facts"], r["versions"]
    rep.para(f"Produced by `{cfg['invocation']}` (`make bench`); every figure below is "
             f"from the same run.")
    phases = (r["busy_bulk"], r["busy_reads"], r["busy_inserts"])
    rep.bullets([
        f"date: {f['date']}",
        f"machine: {f['cpus']} CPUs (nproc {f['nproc']}), {f['cpu']}, {f['ram_gib']:.0f} GiB "
        f"RAM, {f['os']}",
        f"Python {f['python']} ({f['impl']}); py-lmdb {v['py-lmdb']} (LMDB {v['LMDB']}); "
        f"msgpack {v['msgpack']}; sqlite {v['sqlite']}; redis-server "
        f"{r['redis_version'] or 'not run'}; dictdb_shm at `{f['commit']}`",
        f"{cfg['rows']:,} rows like `{make_row(7)}`",
        "machine-wide busy CPUs (from /proc/stat; a clean run shows about 0 before and about "
        f"1 in the one-process phases): before the run {r['busy_before']:.2f}, bulk phase "
        f"{phases[0]:.2f}, point-read phase {phases[1]:.2f}, insert phase {phases[2]:.2f}",
        *(["**Disturbed:** other processes were using CPU during this run; the figures are "
           "pessimistic. Rerun on a quiet machine."]
          if r["busy_before"] > BUSY_BEFORE_LIMIT or max(phases) > BUSY_PHASE_LIMIT else []),
        f"latencies: each batch of {BATCH} consecutive ops is timed with `perf_counter_ns` "
        f"and divided by {BATCH}; p50/p90/p99 are over those batch means (so p99 is smoother "
        f"than a single-op p99). The harness (timer pair + empty loop) costs "
        f"{r['reads']['timer_overhead_ns']:.0f} ns/op, included in every figure. ops/s = ops "
        f"timed / summed batch time."])


def section_point_reads(rep: Report, cfg: dict, r: dict) -> None:
    rd = r["reads"]
    rep.heading("### 1. Point read by primary key, from a process that attached by name")
    rep.para(f"Random keys over {cfg['rows']:,} rows, warmed up first (with other random "
             f"keys). dictdb_shm, LMDB, Redis and Manager are read from one spawned process; "
             f"dictdb_shm get, select and LMDB take turns over {cfg['rounds']} slices of the "
             f"key sequence; the plain dict is built and read last, inside that process. "
             f"LMDB: read txn + get + `msgpack.unpackb`, 8-byte keys, env opened in the "
             f"reader. Redis: redis-py `GET` on 127.0.0.1 + `msgpack.unpackb`.")
    rep.latency_table([
        ("dictdb_shm `t.get(pk)`", rd.get("dictdb_get")),
        ("dictdb_shm `t.select(where=t.id == pk)`", rd.get("dictdb_select")),
        ("plain dict `.get` (in-process)", rd.get("dict")),
        ("`Manager().dict()` `.get` (client process)", rd.get("manager")),
        ("LMDB txn + get + unpackb", rd.get("lmdb")),
        ("Redis GET + unpackb", rd.get("redis"))])
    g, s = rd["dictdb_get"], rd["dictdb_select"]
    r_gl, r_sl = ratio(rd["lmdb"], g), ratio(s, rd["lmdb"])
    r_gr, r_gm, r_dg = ratio(rd.get("redis"), g), ratio(rd["manager"], g), ratio(g, rd["dict"])
    rep.para("Ratios (by mean time per op):")
    rep.bullets([f"get vs LMDB: get is **{r_gl:.2f}x** as fast as LMDB",
                 f"select vs LMDB: select takes **{r_sl:.2f}x** LMDB's time",
                 "get vs Redis: " + (f"get is **{r_gr:.1f}x** faster than Redis"
                                     if r_gr else "Redis skipped"),
                 f"get vs Manager: get is **{r_gm:.1f}x** faster than a Manager dict",
                 f"for scale: a plain in-process dict is {r_dg:.1f}x faster than get"])
    rep.target("point read: get vs LMDB", "get no slower than LMDB (>= 1.00x)",
               f"{r_gl:.2f}x", r_gl >= TARGETS["get_vs_lmdb"])
    rep.target("point read: select vs LMDB", "select within 2x of LMDB (<= 2.00x)",
               f"{r_sl:.2f}x", r_sl <= TARGETS["select_vs_lmdb"])
    rep.target("point read: get vs Redis", ">= 40x faster",
               f"{r_gr:.1f}x" if r_gr else "Redis skipped",
               None if r_gr is None else r_gr >= TARGETS["get_vs_redis"])


def section_inserts(rep: Report, cfg: dict, r: dict) -> None:
    ins = r["inserts"]
    rep.heading("### 2. Single-row insert, one process")
    rep.para("Rows like the above with new keys into an empty table, one call per row. "
             "dictdb_shm: `t.insert(row)`, which takes the cross-process write lock. LMDB: "
             "one write txn per put (`sync=False, metasync=False`: no fsync, like shared "
             "memory). Redis: `SET` of the msgpack bytes. Manager: `d[k] = row`.")
    rep.latency_table([
        ("dictdb_shm `t.insert(row)`", ins.get("dictdb")),
        ("plain dict `d[k] = row`", ins.get("dict")),
        ("`Manager().dict()` `d[k] = row`", ins.get("manager")),
        ("LMDB write txn + put (packb)", ins.get("lmdb")),
        ("Redis SET (packb)", ins.get("redis"))])
    di = ins["dictdb"]
    rr = ratio(ins.get("redis"), di)
    rep.para(f"dictdb_shm inserts {di.ops_per_s:,.0f} rows/s: "
             f"{ratio(ins['lmdb'], di):.2f}x LMDB's speed, "
             + (f"{rr:.1f}x Redis's, " if rr else "")
             + f"{ratio(ins['manager'], di):.1f}x a Manager dict's.")
    rep.target("single-row insert", ">= 150,000 inserts/s", f"{di.ops_per_s:,.0f}/s",
               di.ops_per_s >= TARGETS["insert_per_s"])


def section_bulk(rep: Report, cfg: dict, r: dict) -> None:
    b, n = r["bulk"], cfg["rows"]
    rep.heading(f"### 3. Bulk insert of {n:,} rows")
    labels = (("dictdb_shm `t.insert(rows)` (one atomic write)", "dictdb"),
              ("LMDB, one write txn, put of packb", "lmdb"),
              ("sqlite3 `executemany`, in-memory, one txn", "sqlite"),
              ("plain dict comprehension", "dict"),
              ("Redis `MSET` 10,000 keys a call (packb)", "redis"))
    rep.table(["what", "seconds", "rows/s", "vs dictdb_shm"],
              [(label, "skipped", "", "") if key not in b else
               (label, f"{b[key]:.2f}", f"{n / b[key]:,.0f}",
                f"{b[key] / b['dictdb']:.2f}x the time") for label, key in labels])
    judged = n == 1_000_000
    rep.target("bulk insert of 1,000,000 rows", "< 5 s",
               f"{b['dictdb']:.2f} s" + ("" if judged else f" for {n:,} rows (not judged)"),
               b["dictdb"] < TARGETS["bulk_1m_s"] if judged else None)


def section_scaling(rep: Report, cfg: dict, r: dict) -> None:
    sc = r["scaling"]
    rep.heading("### 4. Read scaling: 1 vs 2 processes reading at once")
    rep.para(f"Each reader is a spawned process that attaches (or opens the LMDB env), warms "
             f"up with {core_workers.SCALING_WARM:,} reads, waits at a barrier, then reads "
             f"along its own sequence of {cfg['scale_keys']:,} random keys (not the "
             f"warm-up's) for {cfg['duration']:.0f} s. ",
             "Reader i is pinned to CPU i (`sched_setaffinity`), which removes scheduler "
             "migrations from the figures. " if cfg["pin"] else
             "Readers are not pinned to CPUs (`--no-pin`). ",
             f"Aggregate = sum of each reader's ops/s. 1 and 2 readers alternate for "
             f"{cfg['rounds']} round(s); medians shown. \"CPUs busy\" is the whole machine's "
             f"busy CPUs during the window (from /proc/stat, {os.cpu_count()} CPUs): about 1 "
             f"and 2 when nothing else ran; \"readers' CPU share\" is the lowest CPU time / "
             f"wall time of a reader (about 100% when nothing took its CPU). A run where a "
             f"reader got under {MIN_CPU_SHARE:.0%} or the machine was busier than the "
             f"readers is discarded and run again (up to {cfg['retries']} times).")
    med = {key: {k: {f: statistics.median(x[f] for x in sc[key][k])
                     for f in ("ops_s", "busy", "cpu_share")} for k in (1, 2)}
           for key in ("dictdb", "lmdb")}
    rep.table(["what", "1 process ops/s", "2 processes ops/s", "2-proc / 1-proc",
               "CPUs busy, 1 / 2 readers", "readers' CPU share, 1 / 2"],
              [(label, f"{m[1]['ops_s']:,.0f}", f"{m[2]['ops_s']:,.0f}",
                f"{m[2]['ops_s'] / m[1]['ops_s']:.2f}x",
                f"{m[1]['busy']:.2f} / {m[2]['busy']:.2f}",
                f"{m[1]['cpu_share']:.0%} / {m[2]['cpu_share']:.0%}")
               for label, m in (("dictdb_shm `t.get`", med["dictdb"]),
                                ("LMDB txn + get + unpackb", med["lmdb"]))])

    def described(x: dict) -> str:
        return f"{x['busy']:.2f} CPUs busy, a reader got {x['cpu_share']:.0%} of a CPU"
    noisy = [f"{key} {k}p ({described(x)})" for key in ("dictdb", "lmdb")
             for k in (1, 2) for x in sc[key][k] if disturbed(x, k)]
    if noisy:
        rep.para(f"**Disturbed:** other processes used CPU during some runs "
                 f"({'; '.join(noisy)}); the ratios are unreliable.")
    if sc["discarded"]:
        rep.para(f"{len(sc['discarded'])} run(s) were discarded and run again because other "
                 f"processes used CPU meanwhile: "
                 + "; ".join(f"{kind} {k}p {x['ops_s']:,.0f} ops/s ({described(x)})"
                             for kind, k, x in sc["discarded"]) + ".")
    if len(sc["dictdb"][1]) > 1:
        rep.para("Each run (ops/s, in the order run):")
        rep.bullets(f"{label}: " + "; ".join(f"1p {a['ops_s']:,.0f}, 2p {b['ops_s']:,.0f}"
                                            for a, b in zip(sc[key][1], sc[key][2]))
                    for label, key in (("dictdb_shm", "dictdb"), ("LMDB", "lmdb")))
    r2 = med["dictdb"][2]["ops_s"] / med["dictdb"][1]["ops_s"]
    rep.target("read scaling, 2 processes", ">= 1.8x one process", f"{r2:.2f}x",
               r2 >= TARGETS["scale_2p"])


def section_attach(rep: Report, cfg: dict, r: dict) -> None:
    at = r["attach"]
    med = {f: statistics.median(a[f] for a in at) for f in ("ms", "uss_mb", "rss_mb")}
    rep.heading("### 5. Attach cost")
    rep.para(f"A fresh spawned process that has already imported dictdb_shm times "
             f"`DictDB.attach(name)` + `get_table('t')` + the first `get` on the "
             f"{cfg['rows']:,}-row table, and measures the USS "
             f"(`psutil.Process().memory_full_info().uss`) that added. "
             f"{len(at)} fresh process(es); median shown.")
    each = [("each run", ", ".join(f"{a['ms']:.1f}" for a in at),
             ", ".join(f"{a['uss_mb']:.2f}" for a in at),
             ", ".join(f"{a['rss_mb']:.2f}" for a in at))] if len(at) > 1 else []
    rep.table(["what", "time ms", "added USS MiB", "added RSS MiB"],
              [("attach + get_table + first get (median)", f"{med['ms']:.1f}",
                f"{med['uss_mb']:.2f}", f"{med['rss_mb']:.2f}"), *each])
    rep.para("USS counts only this process's private pages; RSS also counts the shared "
             "pages it has touched (the catalog, and the pages of the one record read), "
             "which every attached process shares.")
    rep.target("attach time", "< 50 ms", f"{med['ms']:.1f} ms", med["ms"] < TARGETS["attach_ms"])
    rep.target("attach memory", "< 30 MB added USS", f"{med['uss_mb']:.2f} MiB",
               med["uss_mb"] < TARGETS["attach_mb"])


def section_profile(rep: Report, cfg: dict, r: dict) -> None:
    if r.get("profile"):
        rep.code(f"### cProfile of {min(100_000, cfg['read_ops']):,} `t.get` calls "
                 f"(attached process)", r["profile"])


BENCH = harness.Benchmark(
    name="bench_core", heading="## Core", doc=__doc__, run=run,
    configure=configure, add_arguments=add_arguments,
    defaults=harness.Defaults(rows=1_000_000, quick_rows=20_000, min_rows=1000,
                              rounds=5, quick_rounds=2, retries=3, quick_retries=1),
    sections=(section_intro, section_point_reads, section_inserts, section_bulk,
              section_scaling, section_attach, harness.targets_section, section_profile))

if __name__ == "__main__":
    sys.exit(BENCH.main())
