"""Persistence benchmark of dictdb_shm against its peers, every figure from one run.

    .venv/bin/python benchmarks/bench_persist.py              # 1,000,000 rows
    .venv/bin/python benchmarks/bench_persist.py --quick      # smoke run
    .venv/bin/python benchmarks/bench_persist.py --write-docs # also rewrite its docs section

Measures:

1. single-row inserts under each durability ("no path", "no", "everysec",
   "always") vs sqlite3 WAL (synchronous=FULL and NORMAL, a file on the same
   disk) and Redis with AOF (appendfsync always and everysec);
2. save and load of --rows rows in each format vs the stdlib floor
   (json.dumps/json.loads, pickle.dumps/pickle.loads of the same list of
   dicts, plus writing or reading the bytes) and sqlite3's backup API;
3. the longest stall of a writer process during a save;
4. restoring a durable database after kill -9 of everything and removal of
   its /dev/shm entries, vs reading its files with ``cat`` (the disk's limit).

This script owns the persistence workload and its report; the writer
process is in persist_workers.py, the peers in peers.py, the conventions in
harness.py.  It must never leave anything behind: databases are destroyed,
servers and workers stopped, the temporary directory removed (harness.Cleanup).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from typing import Any

import harness  # noqa: I001 - first: it makes the checkout importable
import machine
import peers
import persist_workers
from harness import BenchError, Report, log, measure_batches, seconds
from persist_workers import make_row
from workers import Workers, collect
from dictdb_shm import DictDB, names
from dictdb_shm.coordinator import client
from dictdb_shm.engine.catalog import Catalog

TARGETS = {"everysec_vs_none": 0.5, "always_vs_sqlite_full": 1.0, "save_load_floor": 1.3,
           "stall_ms": 100.0, "restore_s": 1.0}
BATCH = 50
DURABILITIES = ("none", "no", "everysec", "always")


def configure(cfg: dict, args: Any) -> dict:
    quick = cfg["quick"]
    return {"inserts": 2_000 if quick else 50_000,          # fast policies and peers
            "synced_inserts": 200 if quick else 3_000}       # fsync per insert


# ------------------------------------------------------------------ inserts
def _dictdb_inserts(cfg: dict, tmp: str, durability: str) -> harness.Latency:
    name = f"bench-persist-{os.getpid()}-{durability}"
    path = None if durability == "none" else os.path.join(tmp, f"ins-{durability}")
    db = DictDB(name) if path is None else DictDB(name, path=path, durability=durability)
    try:
        db.create_table("t")
        t = db.get_table("t")
        n = cfg["synced_inserts"] if durability == "always" else cfg["inserts"]
        rows = [make_row(i) for i in range(n + 500)]
        return measure_batches(t.insert, rows[500:], BATCH, warm=rows[:500])
    finally:
        db.destroy()


def _sqlite_inserts(cfg: dict, tmp: str, sync: str) -> harness.Latency:
    path = os.path.join(tmp, f"sqlite-{sync}.db")
    con = sqlite3.connect(path, isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute(f"PRAGMA synchronous={sync}")
        sql = peers.sqlite_create(con, "t", (("id", "INTEGER"), ("name", "TEXT"),
                                             ("age", "INTEGER"), ("city", "TEXT")))
        n = cfg["synced_inserts"] if sync == "FULL" else cfg["inserts"]
        rows = [make_row(i) for i in range(n + 500)]
        return measure_batches(lambda r: con.execute(sql, r), rows[500:], BATCH,
                               warm=rows[:500])
    finally:
        con.close()


def _redis_inserts(cfg: dict, tmp: str, fsync: str, cleanup: harness.Cleanup) -> Any:
    work = os.path.join(tmp, f"redis-{fsync}")
    os.makedirs(work)
    server = peers.start_redis(cleanup, work, extra=("--appendonly", "yes",
                                                     "--appendfsync", fsync))
    if server is None:
        return None
    c = server.client()
    try:
        n = cfg["synced_inserts"] if fsync == "always" else cfg["inserts"]
        rows = [make_row(i) for i in range(n + 500)]
        return measure_batches(peers.redis_set(c), rows[500:], BATCH, warm=rows[:500])
    finally:
        c.close()
        server.stop()


# ------------------------------------------------------------ save and load
def _floor(rows: list[dict], tmp: str) -> dict:
    out = {}
    path = os.path.join(tmp, "floor")
    for fmt, dumps, loads in (("json", lambda r: json.dumps(r).encode(), json.loads),
                              ("pickle", lambda r: pickle.dumps(r, protocol=5),
                               pickle.loads)):
        def save() -> None:
            with open(path, "wb") as f:
                f.write(dumps(rows))
                f.flush()
                os.fsync(f.fileno())
        out[f"{fmt}_save"] = seconds(save, collect_first=True)

        def load() -> None:
            with open(path, "rb") as f:
                loads(f.read())
        out[f"{fmt}_load"] = seconds(load, collect_first=True)
    return out


def _sqlite_backup(rows: list[dict], tmp: str) -> float:
    con = peers.sqlite_memory()
    sql = peers.sqlite_create(con, "t", (("id", "INTEGER"), ("name", "TEXT"),
                                         ("age", "INTEGER"), ("city", "TEXT")))
    peers.sqlite_load(con, sql, rows)
    path = os.path.join(tmp, "backup.sqlite")

    def backup() -> None:
        dst = sqlite3.connect(path)
        con.backup(dst)
        dst.close()
    try:
        return seconds(backup)
    finally:
        con.close()


def _save_load(cfg: dict, tmp: str, db: DictDB, workers: Workers) -> dict:
    out: dict[str, Any] = {}
    for fmt in ("json", "pickle"):
        path = os.path.join(tmp, f"save.{fmt}")
        out[f"{fmt}_save"] = seconds(lambda: db.save(path, fmt), collect_first=True)
        loaded: list = []
        out[f"{fmt}_load"] = seconds(lambda: loaded.append(DictDB.load(path, fmt)),
                                     collect_first=True)
        if loaded[0].get_table("t").count() != cfg["rows"]:
            raise BenchError(f"the {fmt} load lost rows")
        loaded[0].destroy()
        out[f"{fmt}_bytes"] = os.path.getsize(path)
    out["stall"] = _stall(cfg, tmp, db, workers)
    return out


def _stall(cfg: dict, tmp: str, db: DictDB, workers: Workers) -> dict:
    """The longest single insert of a writer process during a JSON save."""
    db.create_table("w")
    ready, stop = workers.ctx.Event(), workers.ctx.Event()
    q = workers.ctx.Queue()
    p = workers.start(persist_workers.timed_writer, (q, db.name, 0, ready, stop))
    if not ready.wait(120):
        raise BenchError("the writer did not start")
    time.sleep(0.3)
    t0 = time.monotonic()
    db.save(os.path.join(tmp, "stall.json"))
    t1 = time.monotonic()
    time.sleep(0.3)
    stop.set()
    calls = collect(q, 1, 120, "the timed writer")[0]
    workers.stop(p)
    db.drop_table("w")                       # a retry of the phase starts afresh
    during = [d for start, d in calls if t0 <= start + d and start <= t1]
    before = [d for start, d in calls if start + d < t0]
    return {"save_s": t1 - t0, "max_ms": 1e3 * max(during, default=0.0),
            "calls": len(during), "max_before_ms": 1e3 * max(before, default=0.0)}


# ------------------------------------------------------------------ restore
def _restore(cfg: dict, tmp: str, rows: list[dict]) -> dict:
    name = f"bench-persist-{os.getpid()}-restore"
    path = os.path.join(tmp, "durable")
    db = DictDB(name, path=path, durability="everysec")
    try:
        db.create_table("t")
        t = db.get_table("t")
        t.insert(rows)
        db.checkpoint()
        for r in rows[:1000]:                   # some journal to replay too
            t.update({"age": -1}, where=t.id == r["id"])
        time.sleep(1.5)                          # everysec: on disk
        cat = Catalog.attach(name, check_tables=False)
        pid = cat.coordinator()[0]
        cat.close()
        db._att = None
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while client.coordinator_running(name) and time.monotonic() < deadline:
            time.sleep(0.01)
        for entry in names.shm_entries(name):
            os.unlink(os.path.join(names.SHM_DIR, entry))
        files = [os.path.join(path, f) for f in sorted(os.listdir(path))]
        cat_s = seconds(lambda: subprocess.run(["cat", *files], stdout=subprocess.DEVNULL,
                                               check=True))
        opened: list = []
        restore_s = seconds(lambda: opened.append(DictDB(name, path=path,
                                                         durability="everysec")))
        if opened[0].get_table("t").count() != len(rows):
            raise BenchError("the restore lost rows")
        return {"restore_s": restore_s, "cat_s": cat_s,
                "bytes": sum(os.path.getsize(f) for f in files)}
    finally:
        client.destroy(name)


# ---------------------------------------------------------------------- run
def run(cfg: dict) -> dict:
    res: dict[str, Any] = {"facts": machine.facts(), "versions": peers.versions()}
    phases = machine.Phases(cfg["wait_idle"], cfg["retries"], busy_limit=1.5)
    with harness.Cleanup() as cleanup:
        tmp = tempfile.mkdtemp(prefix="bench-persist-", dir=os.getcwd())
        cleanup.add(lambda: shutil.rmtree(tmp, ignore_errors=True), "the temporary directory")
        workers = Workers()
        cleanup.add(workers.stop_all, "the workers")

        def inserts(_attempt: int) -> dict:
            out: dict[str, Any] = {}
            for d in DURABILITIES:
                log(f"inserts: durability {d}")
                out[d] = _dictdb_inserts(cfg, tmp, d)
            for sync in ("FULL", "NORMAL"):
                out[f"sqlite_{sync}"] = _sqlite_inserts(cfg, tmp, sync)
            for fsync in ("always", "everysec"):
                out[f"redis_{fsync}"] = _redis_inserts(cfg, tmp, fsync, cleanup)
            return out
        res["inserts"] = phases.run("single-row inserts", inserts)

        rows = [make_row(i) for i in range(cfg["rows"])]
        db = DictDB(f"bench-persist-{os.getpid()}")
        cleanup.add(db.destroy, "the database")
        db.create_table("t")
        db.get_table("t").insert(rows)
        res["floor"] = phases.run("stdlib floor", lambda _a: _floor(rows, tmp))
        res["sqlite_backup_s"] = phases.run("sqlite3 backup", lambda _a: _sqlite_backup(
            rows, tmp))
        res["saveload"] = phases.run("save and load", lambda _a: _save_load(
            cfg, tmp, db, workers))
        res["restore"] = phases.run("restore after kill -9", lambda _a: _restore(
            cfg, tmp, rows))
        res["phases"] = phases
    return res


# ------------------------------------------------------------------ report
def section_intro(rep: Report, cfg: dict, r: dict) -> None:
    f = r["facts"]
    rep.para(f"Produced by `{cfg['invocation']}`; every figure below is from the same run.")
    rep.bullets([f"date: {f['date']}", f"machine: {f['cpus']} CPUs, {f['cpu']}, {f['os']}; "
                 f"Python {f['python']}; sqlite {r['versions']['sqlite']}; dictdb_shm at "
                 f"`{f['commit']}`", f"{cfg['rows']:,} rows like `{make_row(7)}`",
                 "files are written to a temporary directory under the current directory "
                 "(the same disk for every system)"])


def section_inserts(rep: Report, cfg: dict, r: dict) -> None:
    ins = r["inserts"]
    rep.heading("### 1. Single-row inserts under each durability")
    rep.para(f"One `t.insert(row)` call per row into an empty table, timed in batches of "
             f"{BATCH}. \"none\" is a database without a path (no journal); the others "
             "journal every call: \"no\" writes the entry (the OS flushes it), \"everysec\" "
             "writes it before the call returns and the coordinator fsyncs once a second, "
             "\"always\" fsyncs before the call returns. sqlite3 in WAL mode and Redis with "
             "AOF write to the same disk.")
    labels = [(f"dictdb_shm, durability {d}", ins.get(d)) for d in DURABILITIES] + [
        ("sqlite3 WAL, synchronous=FULL", ins.get("sqlite_FULL")),
        ("sqlite3 WAL, synchronous=NORMAL", ins.get("sqlite_NORMAL")),
        ("Redis AOF, appendfsync always", ins.get("redis_always")),
        ("Redis AOF, appendfsync everysec", ins.get("redis_everysec"))]
    rep.latency_table(labels)
    none, every, always, full = ins["none"], ins["everysec"], ins["always"], ins["sqlite_FULL"]
    ratio = every.ops_per_s / none.ops_per_s
    rep.target("everysec inserts", ">= 50% of no journal", f"{ratio:.0%}",
               ratio >= TARGETS["everysec_vs_none"])
    vs = always.ops_per_s / full.ops_per_s
    rep.target("always inserts", ">= sqlite3 WAL FULL", f"{vs:.2f}x", vs >= 1.0)


def section_saveload(rep: Report, cfg: dict, r: dict) -> None:
    s, fl = r["saveload"], r["floor"]
    rep.heading(f"### 2. Save and load of {cfg['rows']:,} rows")
    rep.para("dictdb_shm: `db.save(path, fmt)` (a consistent capture of every table, "
             "encoded outside the locks, written to a temporary file, fsynced, renamed) and "
             "`DictDB.load(path, fmt)` (the file read and checked whole, then each table "
             "filled in one step and published with one flip). A JSON file holds dicts: "
             "saving decodes every record, loading encodes every record and builds the "
             "bodies, offset log, directory and indexes in one pass. A pickle file holds "
             "each table's sections as the engine keeps them (the records' msgpack bytes, "
             "the offset log, directory and index, with a crc32): saving compacts and "
             "copies bytes, loading checks and copies them in, decoding nothing. Both loads "
             "include starting the new database's coordinator process. The floor: the "
             "stdlib encoding of the same list of dicts written to a file and fsynced, and "
             "read back and decoded. sqlite3: `Connection.backup` of an in-memory database "
             "to a file.")
    rows = []
    for fmt in ("json", "pickle"):
        for op in ("save", "load"):
            ours, floor = s[f"{fmt}_{op}"], fl[f"{fmt}_{op}"]
            rows.append((f"{fmt} {op}", f"{ours:.2f} s", f"{floor:.2f} s",
                         f"{ours / floor:.2f}x"))
            rep.target(f"{fmt} {op}", "<= 1.3x the stdlib floor", f"{ours / floor:.2f}x",
                       ours <= TARGETS["save_load_floor"] * floor if cfg["rows"] >= 1_000_000
                       else None)
    rows.append(("sqlite3 backup API", f"{r['sqlite_backup_s']:.2f} s", "", ""))
    rep.table(["what", "dictdb_shm", "stdlib floor", "ratio"], rows)
    st = s["stall"]
    rep.heading("### 3. Writer stall during a save")
    rep.para(f"A writer process inserts one row per call (0.5 ms apart) while the parent "
             f"saves the {cfg['rows']:,}-row table as JSON ({st['save_s']:.2f} s). Its longest "
             f"call during the save: **{st['max_ms']:.1f} ms** over {st['calls']:,} calls "
             f"(before the save: {st['max_before_ms']:.1f} ms). The writer waits only for "
             "the copy of the table's bytes, never for the encoding.")
    rep.target("writer stall during a save", "< 100 ms", f"{st['max_ms']:.1f} ms",
               st["max_ms"] < TARGETS["stall_ms"])


def section_restore(rep: Report, cfg: dict, r: dict) -> None:
    x = r["restore"]
    rep.heading("### 4. Restore after kill -9")
    rep.para(f"A durable database of {cfg['rows']:,} rows (a snapshot and a journal of "
             f"1,000 updates, {x['bytes'] / 2**20:.0f} MiB of files): every process killed "
             f"with SIGKILL and its /dev/shm entries removed, then `DictDB(name, path=DIR)` "
             f"timed until it returns (a new coordinator process starts, copies the "
             f"snapshot's segments into shared memory and replays the journal). `cat` of "
             f"the same files (warm in the page cache) is the disk's limit.")
    rep.table(["what", "seconds"], [("restore (DictDB(name, path=DIR))",
                                     f"{x['restore_s']:.2f}"),
                                    ("cat of the files", f"{x['cat_s']:.3f}")])
    rep.para(f"Restore takes {x['restore_s'] / x['cat_s']:.1f}x the time of `cat`.")
    rep.target("restore", "< 1 s for 1,000,000 rows", f"{x['restore_s']:.2f} s",
               x["restore_s"] < TARGETS["restore_s"] if cfg["rows"] >= 1_000_000 else None)


def section_phases(rep: Report, cfg: dict, r: dict) -> None:
    r["phases"].section(rep)


BENCH = harness.Benchmark(
    name="bench_persist", heading="## Persistence", doc=__doc__, run=run,
    configure=configure,
    defaults=harness.Defaults(rows=1_000_000, quick_rows=20_000, min_rows=1000, rounds=1,
                              quick_rounds=1, retries=1, quick_retries=0),
    sections=(section_intro, section_inserts, section_saveload, section_restore,
              harness.targets_section, section_phases))

if __name__ == "__main__":
    sys.exit(BENCH.main())
