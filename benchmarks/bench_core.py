"""Core benchmark of dictdb_shm against its peers, every figure from one run.

    .venv/bin/python benchmarks/bench_core.py              # full: 1,000,000 rows (make bench)
    .venv/bin/python benchmarks/bench_core.py --quick      # smoke run, seconds
    .venv/bin/python benchmarks/bench_core.py --rows 200000 --no-docs

Measures (see benchmarks/README.md for what each figure means):

1. point reads by primary key from a process that attached by name
   (t.get and t.select) vs a plain dict, Manager().dict(), LMDB and Redis;
2. single-row inserts from one process vs LMDB (one write txn per put),
   Redis SET, Manager dict set and a plain dict;
3. bulk insert of --rows rows vs LMDB (one txn), sqlite3 executemany
   (in-memory) and building a plain dict;
4. read scaling: 1 vs 2 reader processes, dictdb_shm and LMDB;
5. attach cost: time and added USS of attach + get_table + first get.

The report is printed as markdown and, on a full run, written into
docs/benchmarks.md as the section "Core (issue 2)" (``--no-docs`` skips that).
Redis is started here on 127.0.0.1 and skipped when redis-server is missing.
Everything created is removed in ``finally`` blocks: the database is
destroyed, workers and servers are stopped, the temporary directory goes.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import multiprocessing as mp
import os
import platform
import queue
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if HERE not in sys.path:
    sys.path.insert(0, HERE)
if ROOT not in sys.path:   # run from a checkout without installing the package
    sys.path.insert(1, ROOT)

import lmdb  # noqa: E402
import msgpack  # noqa: E402
import psutil  # noqa: E402

import _peers  # noqa: E402
from _peers import BATCH, lmdb_key, make_row, measure  # noqa: E402
from dictdb_shm import DictDB  # noqa: E402

DOCS = os.path.join(ROOT, "docs", "benchmarks.md")
SECTION = "## Core (issue 2)"

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


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(RuntimeError):
    pass


# ------------------------------------------------------------ configuration
def config(args: argparse.Namespace) -> dict:
    quick = args.quick
    rows = args.rows if args.rows is not None else (20_000 if quick else 1_000_000)
    if rows < 1000:
        raise SystemExit("--rows must be at least 1000")
    return {
        "quick": quick,
        "rows": rows,
        "read_ops": 20_000 if quick else 300_000,        # get, LMDB, dict
        "select_ops": 5_000 if quick else 100_000,
        "read_rounds": 2 if quick else 5,               # get/select/LMDB take turns
        "slow_ops": 2_000 if quick else 20_000,          # Manager, Redis
        "warm": 5_000 if quick else 100_000,
        "insert_ops": 5_000 if quick else 100_000,       # dictdb, LMDB, dict
        "slow_insert_ops": 2_000 if quick else 20_000,   # Manager, Redis
        "duration": 1.0 if quick else 2.0,               # per read-scaling run
        "scale_rounds": 1 if quick else 5,               # 1 and 2 readers, alternated
        "scale_keys": 200_000 if quick else 1_500_000,   # random keys per reader
        "scale_retries": 1 if quick else 3,              # reruns of a disturbed run
        "attach_probes": 1 if quick else 3,
        "profile": args.profile,
        "wait_quiet": max(0.0, args.wait_quiet),
        "no_pin": args.no_pin,
    }


# ------------------------------------------------------------------- helpers
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """preexec_fn: SIGTERM the child if this benchmark dies (Linux prctl)."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class RedisServer:
    """redis-server on 127.0.0.1:<free port>, no persistence; stop() in finally."""

    def __init__(self, workdir: str) -> None:
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.workdir = workdir

    def start(self, timeout: float = 15.0) -> bool:
        exe = shutil.which("redis-server")
        if exe is None:
            log("skipped Redis: redis-server not found (apt-get install redis-server)")
            return False
        try:
            import redis
        except ImportError:
            log("skipped Redis: the redis Python package is missing (pip install redis)")
            return False
        self.port = free_port()
        logf = open(os.path.join(self.workdir, "redis.log"), "wb")
        try:
            self.proc = subprocess.Popen(
                [exe, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                 "--appendonly", "no", "--dir", self.workdir, "--protected-mode", "yes",
                 "--daemonize", "no"],
                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                # Own session: a Ctrl-C must not stop it before we are done with
                # it; stop() ends it, and so does our death (PDEATHSIG).
                start_new_session=True, preexec_fn=_die_with_parent)
        finally:
            logf.close()
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.proc.poll() is not None:
                    raise BenchError(f"redis-server exited with {self.proc.returncode}; see "
                                     f"{os.path.join(self.workdir, 'redis.log')}")
                try:
                    if client.ping():
                        return True
                except redis.exceptions.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    raise BenchError(f"redis-server did not answer PING within {timeout} s")
                time.sleep(0.05)
        finally:
            client.close()

    def client(self, db: int = 0) -> Any:
        import redis
        return redis.Redis(host="127.0.0.1", port=self.port, db=db, socket_timeout=30)

    def version(self) -> str:
        c = self.client()
        try:
            return c.info("server").get("redis_version", "?")
        finally:
            c.close()

    def stop(self) -> None:
        p, self.proc = self.proc, None
        if p is None or p.poll() is not None:
            return
        p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)


class Children:
    """Every worker process started, so that finally can stop them all."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.procs: list[Any] = []

    def start(self, target: Callable, args: tuple) -> Any:
        p = self.ctx.Process(target=target, args=args, daemon=True)
        p.start()
        self.procs.append(p)
        return p

    def reap(self, p: Any, timeout: float = 10.0) -> None:
        p.join(timeout)
        if p.is_alive():
            p.terminate()
            p.join(5)
        if p.is_alive():
            p.kill()
            p.join(5)
        if p in self.procs and not p.is_alive():
            self.procs.remove(p)

    def reap_all(self) -> None:
        for p in list(self.procs):
            self.reap(p, timeout=2.0)


def collect(q: Any, n: int, timeout: float, what: str) -> list[Any]:
    """``n`` results from workers; a worker's traceback becomes BenchError."""
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise BenchError(f"{what}: timed out after {timeout:.0f} s waiting for workers")
        try:
            status, value = q.get(timeout=left)
        except queue.Empty:
            continue
        if status != "ok":
            raise BenchError(f"{what}: a worker failed:\n{value}")
        out.append(value)
    return out


def timed(fn: Callable[[], Any]) -> float:
    """Seconds for one call of ``fn``, from a clean garbage-collector state
    (the collector stays on, as in real use)."""
    gc.collect()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def fmt_us(x: float) -> str:
    return f"{x:.2f}" if x < 100 else f"{x:.0f}"


def fmt_int(x: float) -> str:
    return f"{x:,.0f}"


def status(ok: bool | None) -> str:
    return "n/a" if ok is None else ("MET" if ok else "MISSED")


def latency_table(rows: list[tuple[str, dict | None]]) -> list[str]:
    out = ["| what | ops timed | p50 µs/op | p90 µs/op | p99 µs/op | mean µs/op | ops/s |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for label, s in rows:
        if s is None:
            out.append(f"| {label} | skipped | | | | | |")
            continue
        out.append(f"| {label} | {fmt_int(s['ops'])} | {fmt_us(s['p50_us'])} | "
                   f"{fmt_us(s['p90_us'])} | {fmt_us(s['p99_us'])} | {fmt_us(s['mean_us'])} | "
                   f"{fmt_int(s['ops_s'])} |")
    return out


# ----------------------------------------------------------------- sections
def bench_bulk(cfg: dict, t: Any, rows: list[dict], lmdb_dir: str,
               redis_srv: RedisServer | None) -> dict:
    n = cfg["rows"]
    res: dict[str, Any] = {}
    log(f"3. bulk insert of {n:,} rows: dictdb_shm")
    res["dictdb"] = timed(lambda: t.insert(rows))
    if len(t) != n:
        raise BenchError(f"bulk insert left {len(t)} rows, expected {n}")

    log("3. bulk insert: LMDB (one write txn)")
    packb = msgpack.packb
    env = lmdb.open(lmdb_dir, map_size=max(1 << 30, n * 2048), sync=False, metasync=False,
                    max_readers=64)
    try:
        def lmdb_bulk() -> None:
            with env.begin(write=True) as txn:
                put = txn.put
                for r in rows:
                    put(lmdb_key(r["id"]), packb(r))
        res["lmdb"] = timed(lmdb_bulk)
        if env.stat()["entries"] != n:
            raise BenchError("LMDB bulk load lost rows")
    finally:
        env.close()

    log("3. bulk insert: sqlite3 executemany (in-memory)")
    con = sqlite3.connect(":memory:")
    try:
        con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, age INTEGER, "
                    "city TEXT)")

        def sqlite_bulk() -> None:
            with con:
                con.executemany("INSERT INTO t VALUES (:id, :name, :age, :city)", rows)
        res["sqlite"] = timed(sqlite_bulk)
    finally:
        con.close()

    log("3. bulk insert: plain dict")
    holder: list[dict] = []
    res["dict"] = timed(lambda: holder.append({r["id"]: r for r in rows}))
    del holder

    if redis_srv is not None:
        log("3. bulk insert: Redis MSET, 10,000 keys a call (also loads the read peer)")
        c = redis_srv.client()
        try:
            def redis_bulk() -> None:
                for start in range(0, n, 10_000):
                    c.mset({r["id"]: packb(r) for r in rows[start:start + 10_000]})
            res["redis"] = timed(redis_bulk)
            if c.dbsize() != n:
                raise BenchError("Redis load lost rows")
        finally:
            c.close()
    return res


def bench_point_reads(cfg: dict, kids: Children, spec: dict, manager_dict: Any) -> dict:
    log(f"1. point reads in an attached process ({cfg['read_ops']:,} random keys; "
        f"Manager/Redis {cfg['slow_ops']:,})")
    q = kids.ctx.Queue()
    p = kids.start(_peers.point_reads, (q, spec, manager_dict))
    try:
        (res,) = collect(q, 1, timeout=900, what="point reads")
    finally:
        kids.reap(p)
    return res


def _busy_cores(before: Any, after: Any) -> float:
    """Average number of CPUs busy (any process) between two psutil.cpu_times()."""
    total = sum(after) - sum(before)
    idle = ((after.idle + getattr(after, "iowait", 0.0))
            - (before.idle + getattr(before, "iowait", 0.0)))
    if total <= 0:
        return float("nan")
    return max(0.0, (total - idle) / total * (os.cpu_count() or 1))


def busiest_other_process() -> str:
    """The process outside this benchmark using the most CPU right now (for logs)."""
    mine = {os.getpid()} | {c.pid for c in psutil.Process().children(recursive=True)}
    procs = []
    for p in psutil.process_iter(["pid"]):
        if p.pid not in mine:
            try:
                p.cpu_percent(None)
                procs.append(p)
            except psutil.Error:
                pass
    time.sleep(0.3)
    best, best_pct = None, 0.0
    for p in procs:
        try:
            pct = p.cpu_percent(None)
        except psutil.Error:
            continue
        if pct > best_pct:
            best, best_pct = p, pct
    if best is None:
        return "none found"
    try:
        cmd = " ".join(best.cmdline())[:80] or best.name()
    except psutil.Error:
        cmd = "?"
    return f"pid {best.pid} at {best_pct:.0f}% CPU: {cmd}"


class CpuWindow:
    """``with CpuWindow() as w:`` ... ``w.busy``: machine-wide busy CPUs meanwhile."""

    busy = float("nan")

    def __enter__(self) -> "CpuWindow":
        self._t0 = psutil.cpu_times()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.busy = _busy_cores(self._t0, psutil.cpu_times())


def bench_scaling(cfg: dict, kids: Children, spec: dict, kind: str, nproc: int) -> dict:
    """One run of ``nproc`` readers: aggregate ops/s, and how many CPUs the
    whole machine kept busy meanwhile (about ``nproc`` when nothing else ran)."""
    log(f"4. read scaling: {kind}, {nproc} reader process(es), {spec['duration']:.0f} s")
    q = kids.ctx.Queue()
    barrier = kids.ctx.Barrier(nproc + 1)
    procs = [kids.start(_peers.scaling_reader, (q, barrier, kind, spec, w))
             for w in range(nproc)]
    try:
        try:
            barrier.wait(timeout=180)
        except Exception:  # BrokenBarrierError or timeout: a worker failed to get ready
            barrier.abort()
            collect(q, nproc, timeout=10, what=f"read scaling ({kind})")
            raise BenchError(f"read scaling ({kind}): workers never reached the barrier")
        cpu0 = psutil.cpu_times()
        time.sleep(spec["duration"] * 0.9)   # the readers' window, without their exit
        cpu1 = psutil.cpu_times()
        results = collect(q, nproc, timeout=spec["duration"] + 120,
                          what=f"read scaling ({kind})")
    finally:
        for p in procs:
            kids.reap(p)
    return {"ops_s": sum(ops / secs for ops, secs, _ in results),
            "busy": _busy_cores(cpu0, cpu1),
            "cpu_share": min(cpu_s / secs for _, secs, cpu_s in results)}


def _disturbed(res: dict, readers: int) -> bool:
    return res["cpu_share"] < 0.9 or res["busy"] > readers + 0.3


def bench_scaling_all(cfg: dict, kids: Children, spec: dict) -> dict:
    """1 and 2 readers, alternated for ``rounds`` rounds; medians are reported.

    A run in which a reader got less than 90% of a CPU, or the machine had
    clearly more CPUs busy than readers (another process was running), is
    discarded and run again, up to ``scale_retries`` times; the discarded
    ones are listed in the report.
    """
    out: dict[str, Any] = {"discarded": []}
    for kind in ("dictdb", "lmdb"):
        runs: dict[int, list[dict]] = {1: [], 2: []}
        for _ in range(cfg["scale_rounds"]):
            for k in (1, 2):
                for attempt in range(cfg["scale_retries"] + 1):
                    res = bench_scaling(cfg, kids, spec, kind, k)
                    if not _disturbed(res, k) or attempt == cfg["scale_retries"]:
                        break
                    out["discarded"].append((kind, k, res))
                    log(f"   discarded: {res['busy']:.2f} CPUs busy with {k} reader(s), "
                        f"a reader got {res['cpu_share']:.0%} of a CPU; running it again "
                        f"(busiest other process: {busiest_other_process()})")
                    time.sleep(2.0)
                runs[k].append(res)
        out[kind] = runs
    return out


def bench_attach(cfg: dict, kids: Children, db_name: str) -> list[dict]:
    out = []
    for i in range(cfg["attach_probes"]):
        log(f"5. attach cost, fresh process {i + 1}/{cfg['attach_probes']}")
        q = kids.ctx.Queue()
        p = kids.start(_peers.attach_probe, (q, db_name, (i * 7919) % cfg["rows"]))
        try:
            (res,) = collect(q, 1, timeout=120, what="attach probe")
        finally:
            kids.reap(p)
        out.append(res)
    return out


def bench_inserts(cfg: dict, db: Any, lmdb_dir: str, redis_srv: RedisServer | None,
                  manager: Any) -> dict:
    n_fast, n_slow = cfg["insert_ops"], cfg["slow_insert_ops"]
    rows = [make_row(i) for i in range(n_fast)]
    packb = msgpack.packb
    res: dict[str, Any] = {}

    log(f"2. single-row inserts: dictdb_shm ({n_fast:,})")
    db.create_table("ins", primary_key="id")
    ti = db.get_table("ins")
    res["dictdb"] = measure(ti.insert, rows)
    if len(ti) != len(rows) // BATCH * BATCH:
        raise BenchError(f"single inserts left {len(ti)} rows")
    db.drop_table("ins")

    log(f"2. single-row inserts: LMDB, one write txn per put ({n_fast:,})")
    env = lmdb.open(lmdb_dir, map_size=1 << 30, sync=False, metasync=False)
    try:
        begin = env.begin

        def lmdb_put(r: dict) -> None:
            with begin(write=True) as txn:
                txn.put(lmdb_key(r["id"]), packb(r))
        res["lmdb"] = measure(lmdb_put, rows)
    finally:
        env.close()

    if redis_srv is not None:
        log(f"2. single-row inserts: Redis SET ({n_slow:,}, into logical db 1)")
        c = redis_srv.client(db=1)
        try:
            rset = c.set

            def redis_set(r: dict) -> None:
                rset(r["id"], packb(r))
            res["redis"] = measure(redis_set, rows[:n_slow])
        finally:
            c.close()

    log(f"2. single-row inserts: Manager().dict() ({n_slow:,})")
    md = manager.dict()

    def manager_set(r: dict) -> None:
        md[r["id"]] = r
    res["manager"] = measure(manager_set, rows[:n_slow])

    log(f"2. single-row inserts: plain dict ({n_fast:,})")
    plain: dict = {}

    def dict_set(r: dict) -> None:
        plain[r["id"]] = r
    res["dict"] = measure(dict_set, rows)
    return res


# ----------------------------------------------------------------- the report
def machine_facts(redis_version: str | None) -> list[str]:
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    mem = psutil.virtual_memory().total / 2**30
    return [
        f"* date: {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"* machine: {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {model}, "
        f"{mem:.0f} GiB RAM, {platform.system()} {platform.release()}",
        f"* Python {platform.python_version()} ({platform.python_implementation()}); "
        f"py-lmdb {lmdb.__version__} (LMDB {'.'.join(map(str, lmdb.version()))}); "
        f"msgpack {'.'.join(map(str, msgpack.version))}; sqlite {sqlite3.sqlite_version}; "
        f"redis-server {redis_version or 'not run'}"
        + (f"; dictdb_shm at `{commit}`" if commit else ""),
    ]


def ratio(slow: dict | None, fast: dict | None) -> float | None:
    """How many times faster ``fast`` is than ``slow``, by mean time per op."""
    if not slow or not fast:
        return None
    return slow["mean_us"] / fast["mean_us"]


def render(cfg: dict, r: dict) -> tuple[str, list[tuple[str, bool | None]]]:
    n = cfg["rows"]
    L: list[str] = []
    verdicts: list[tuple[str, bool | None]] = []
    targets: list[str] = ["| target | goal | measured | status |", "|---|---|---|---|"]

    def target(name: str, goal: str, measured: str, ok: bool | None) -> None:
        targets.append(f"| {name} | {goal} | {measured} | {status(ok)} |")
        verdicts.append((name, ok))

    L.append(SECTION)
    L.append("")
    L.append(f"Produced by `benchmarks/bench_core.py{' --quick' if cfg['quick'] else ''}"
             f"{'' if n == 1_000_000 or cfg['quick'] else f' --rows {n}'}` "
             f"(`make bench`); every figure below is from the same run.")
    L.append("")
    L.extend(machine_facts(r.get("redis_version")))
    L.append(f"* {n:,} rows like `{make_row(7)}`")
    L.append(f"* machine-wide busy CPUs (from /proc/stat; a clean run shows about 0 before "
             f"and about 1 in the one-process phases): before the run "
             f"{r['busy_before']:.2f}, bulk phase {r['busy_bulk']:.2f}, point-read phase "
             f"{r['busy_reads']:.2f}, insert phase {r['busy_inserts']:.2f}")
    if (r["busy_before"] > 0.3 or
            max(r["busy_bulk"], r["busy_reads"], r["busy_inserts"]) > 1.3):
        L.append("* **Disturbed:** other processes were using CPU during this run; "
                 "the figures are pessimistic. Rerun on a quiet machine.")
    ov = r["reads"]["timer_overhead_ns"]
    L.append(f"* latencies: each batch of {BATCH} consecutive ops is timed with "
             f"`perf_counter_ns` and divided by {BATCH}; p50/p90/p99 are over those "
             f"batch means (so p99 is smoother than a single-op p99). The harness "
             f"(timer pair + empty loop) costs {ov:.0f} ns/op, included in every figure. "
             f"ops/s = ops timed / summed batch time.")
    L.append("")

    # 1. reads
    rd = r["reads"]
    L.append(f"### 1. Point read by primary key, from a process that attached by name")
    L.append("")
    L.append(f"Random keys over {n:,} rows, warmed up first (with other random keys). "
             f"dictdb_shm, LMDB, Redis and Manager are read from one spawned process; "
             f"dictdb_shm get, select and LMDB take turns over {cfg['read_rounds']} slices "
             f"of the key sequence; the plain dict is built and read last, inside that "
             f"process. LMDB: read txn + get + `msgpack.unpackb`, 8-byte keys, "
             f"env opened in the reader. Redis: redis-py `GET` on 127.0.0.1 + "
             f"`msgpack.unpackb`.")
    L.append("")
    L.extend(latency_table([
        ("dictdb_shm `t.get(pk)`", rd.get("dictdb_get")),
        ("dictdb_shm `t.select(where=t.id == pk)`", rd.get("dictdb_select")),
        ("plain dict `.get` (in-process)", rd.get("dict")),
        ("`Manager().dict()` `.get` (client process)", rd.get("manager")),
        ("LMDB txn + get + unpackb", rd.get("lmdb")),
        ("Redis GET + unpackb", rd.get("redis")),
    ]))
    L.append("")
    g, s = rd.get("dictdb_get"), rd.get("dictdb_select")
    r_gl, r_sl = ratio(rd.get("lmdb"), g), ratio(s, rd.get("lmdb"))
    r_gr, r_gm = ratio(rd.get("redis"), g), ratio(rd.get("manager"), g)
    r_dg = ratio(g, rd.get("dict"))
    L.append("Ratios (by mean time per op):")
    L.append("")
    L.append(f"* get vs LMDB: get is **{r_gl:.2f}x** as fast as LMDB")
    L.append(f"* select vs LMDB: select takes **{r_sl:.2f}x** LMDB's time")
    L.append("* get vs Redis: " + (f"get is **{r_gr:.1f}x** faster than Redis"
                                   if r_gr else "Redis skipped"))
    L.append(f"* get vs Manager: get is **{r_gm:.1f}x** faster than a Manager dict")
    L.append(f"* for scale: a plain in-process dict is {r_dg:.1f}x faster than get")
    L.append("")
    target("point read: get vs LMDB", "get no slower than LMDB (>= 1.00x)",
           f"{r_gl:.2f}x", r_gl >= TARGETS["get_vs_lmdb"])
    target("point read: select vs LMDB", "select within 2x of LMDB (<= 2.00x)",
           f"{r_sl:.2f}x", r_sl <= TARGETS["select_vs_lmdb"])
    target("point read: get vs Redis", ">= 40x faster",
           f"{r_gr:.1f}x" if r_gr else "Redis skipped",
           None if r_gr is None else r_gr >= TARGETS["get_vs_redis"])

    # 2. single inserts
    ins = r["inserts"]
    L.append("### 2. Single-row insert, one process")
    L.append("")
    L.append(f"Rows like the above with new keys into an empty table, one call per row. "
             f"dictdb_shm: `t.insert(row)`, which takes the cross-process write lock. "
             f"LMDB: one write txn per put (`sync=False, metasync=False`: no fsync, like "
             f"shared memory). Redis: `SET` of the msgpack bytes. Manager: `d[k] = row`.")
    L.append("")
    L.extend(latency_table([
        ("dictdb_shm `t.insert(row)`", ins.get("dictdb")),
        ("plain dict `d[k] = row`", ins.get("dict")),
        ("`Manager().dict()` `d[k] = row`", ins.get("manager")),
        ("LMDB write txn + put (packb)", ins.get("lmdb")),
        ("Redis SET (packb)", ins.get("redis")),
    ]))
    L.append("")
    di = ins["dictdb"]
    rl = ratio(ins.get("lmdb"), di)
    rr = ratio(ins.get("redis"), di)
    rm = ratio(ins.get("manager"), di)
    L.append(f"dictdb_shm inserts {di['ops_s']:,.0f} rows/s: "
             f"{rl:.2f}x LMDB's speed, " + (f"{rr:.1f}x Redis's, " if rr else "")
             + f"{rm:.1f}x a Manager dict's.")
    L.append("")
    target("single-row insert", ">= 150,000 inserts/s", f"{di['ops_s']:,.0f}/s",
           di["ops_s"] >= TARGETS["insert_per_s"])

    # 3. bulk
    b = r["bulk"]
    L.append(f"### 3. Bulk insert of {n:,} rows")
    L.append("")
    L.append("| what | seconds | rows/s | vs dictdb_shm |")
    L.append("|---|---:|---:|---:|")
    for label, key in (("dictdb_shm `t.insert(rows)` (one atomic write)", "dictdb"),
                       ("LMDB, one write txn, put of packb", "lmdb"),
                       ("sqlite3 `executemany`, in-memory, one txn", "sqlite"),
                       ("plain dict comprehension", "dict"),
                       ("Redis `MSET` 10,000 keys a call (packb)", "redis")):
        if key not in b:
            L.append(f"| {label} | skipped | | |")
            continue
        rel = b[key] / b["dictdb"]
        L.append(f"| {label} | {b[key]:.2f} | {n / b[key]:,.0f} | {rel:.2f}x the time |")
    L.append("")
    if n == 1_000_000:
        target("bulk insert of 1,000,000 rows", "< 5 s", f"{b['dictdb']:.2f} s",
               b["dictdb"] < TARGETS["bulk_1m_s"])
    else:
        target("bulk insert of 1,000,000 rows", "< 5 s",
               f"{b['dictdb']:.2f} s for {n:,} rows (not judged)", None)

    # 4. scaling
    sc = r["scaling"]
    L.append("### 4. Read scaling: 1 vs 2 processes reading at once")
    L.append("")
    L.append(f"Each reader is a spawned process that attaches (or opens the LMDB env), "
             f"warms up with 100,000 reads, waits at a barrier, then reads along its own "
             f"sequence of {cfg['scale_keys']:,} random keys (not the warm-up's) for "
             f"{cfg['duration']:.0f} s. "
             + ("Reader i is pinned to CPU i (`sched_setaffinity`), which removes "
                "scheduler migrations from the figures. " if not cfg["no_pin"] else
                "Readers are not pinned to CPUs (`--no-pin`). ")
             + f"Aggregate = sum of each reader's ops/s. "
             f"1 and 2 readers alternate for {cfg['scale_rounds']} round(s); medians shown. "
             f"\"CPUs busy\" is the whole machine's busy CPUs during the window (from "
             f"/proc/stat, {os.cpu_count()} CPUs): about 1 and 2 when nothing else ran; "
             f"\"readers' CPU share\" is the lowest CPU time / wall time of a reader "
             f"(about 100% when nothing took its CPU). A run where a reader got under 90% "
             f"or the machine was busier than the readers is discarded and run again "
             f"(up to {cfg['scale_retries']} times).")
    L.append("")
    L.append("| what | 1 process ops/s | 2 processes ops/s | 2-proc / 1-proc | "
             "CPUs busy, 1 / 2 readers | readers' CPU share, 1 / 2 |")
    L.append("|---|---:|---:|---:|---:|---:|")
    ratios = {}
    for label, key in (("dictdb_shm `t.get`", "dictdb"), ("LMDB txn + get + unpackb", "lmdb")):
        one = statistics.median(x["ops_s"] for x in sc[key][1])
        two = statistics.median(x["ops_s"] for x in sc[key][2])
        b1 = statistics.median(x["busy"] for x in sc[key][1])
        b2 = statistics.median(x["busy"] for x in sc[key][2])
        ratios[key] = two / one
        c1 = statistics.median(x["cpu_share"] for x in sc[key][1])
        c2 = statistics.median(x["cpu_share"] for x in sc[key][2])
        L.append(f"| {label} | {one:,.0f} | {two:,.0f} | {two / one:.2f}x | "
                 f"{b1:.2f} / {b2:.2f} | {c1:.0%} / {c2:.0%} |")
    L.append("")
    noisy = [f"{key} {k}p ({x['busy']:.2f} CPUs busy, a reader got "
             f"{x['cpu_share']:.0%} of a CPU)" for key in ("dictdb", "lmdb")
             for k in (1, 2) for x in sc[key][k] if _disturbed(x, k)]
    if noisy:
        L.append(f"**Disturbed:** other processes used CPU during some runs "
                 f"({'; '.join(noisy)}); the ratios are unreliable.")
        L.append("")
    if sc["discarded"]:
        L.append(f"{len(sc['discarded'])} run(s) were discarded and run again because "
                 f"other processes used CPU meanwhile: "
                 + "; ".join(f"{kind} {k}p {x['ops_s']:,.0f} ops/s ({x['busy']:.2f} CPUs "
                             f"busy, a reader got {x['cpu_share']:.0%} of a CPU)"
                             for kind, k, x in sc["discarded"]) + ".")
        L.append("")
    rounds = len(sc["dictdb"][1])
    if rounds > 1:
        L.append("Each run (ops/s, in the order run):")
        L.append("")
        for label, key in (("dictdb_shm", "dictdb"), ("LMDB", "lmdb")):
            each = "; ".join(f"1p {a['ops_s']:,.0f}, 2p {b['ops_s']:,.0f}"
                             for a, b in zip(sc[key][1], sc[key][2]))
            L.append(f"* {label}: {each}")
        L.append("")
    target("read scaling, 2 processes", ">= 1.8x one process", f"{ratios['dictdb']:.2f}x",
           ratios["dictdb"] >= TARGETS["scale_2p"])

    # 5. attach
    at = r["attach"]
    ms = statistics.median(a["ms"] for a in at)
    mb = statistics.median(a["uss_mb"] for a in at)
    L.append("### 5. Attach cost")
    L.append("")
    L.append(f"A fresh spawned process that has already imported dictdb_shm times "
             f"`DictDB.attach(name)` + `get_table('t')` + the first `get` on the "
             f"{n:,}-row table, and measures the USS "
             f"(`psutil.Process().memory_full_info().uss`) that added. "
             f"{len(at)} fresh process(es); median shown.")
    L.append("")
    rss = statistics.median(a["rss_mb"] for a in at)
    L.append("| what | time ms | added USS MiB | added RSS MiB |")
    L.append("|---|---:|---:|---:|")
    L.append(f"| attach + get_table + first get (median) | {ms:.1f} | {mb:.2f} | "
             f"{rss:.2f} |")
    if len(at) > 1:
        each_ms = ", ".join(f"{a['ms']:.1f}" for a in at)
        each_mb = ", ".join(f"{a['uss_mb']:.2f}" for a in at)
        each_rss = ", ".join(f"{a['rss_mb']:.2f}" for a in at)
        L.append(f"| each run | {each_ms} | {each_mb} | {each_rss} |")
    L.append("")
    L.append("USS counts only this process's private pages; RSS also counts the shared "
             "pages it has touched (the catalog, and the pages of the one record read), "
             "which every attached process shares.")
    L.append("")
    target("attach time", "< 50 ms", f"{ms:.1f} ms", ms < TARGETS["attach_ms"])
    target("attach memory", "< 30 MB added USS", f"{mb:.2f} MiB", mb < TARGETS["attach_mb"])

    L.append("### Targets (goals, not pass/fail)")
    L.append("")
    L.extend(targets)
    L.append("")
    if r.get("profile"):
        L.append(f"### cProfile of {min(100_000, cfg['read_ops']):,} `t.get` calls "
                 f"(attached process)")
        L.append("")
        L.append("```")
        L.append(r["profile"].strip())
        L.append("```")
        L.append("")
    return "\n".join(L), verdicts


def write_docs(section: str) -> None:
    intro = ("# Benchmarks\n\n"
             "Figures of dictdb_shm against its peers, each section from one real run on "
             "the machine it names. How to run them and what each figure means: "
             "[benchmarks/README.md](../benchmarks/README.md).\n\n")
    try:
        with open(DOCS, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        text = intro
    pattern = re.compile(r"^## Core \(issue 2\)\n.*?(?=^## |\Z)", re.S | re.M)
    block = section.rstrip("\n") + "\n\n"
    if pattern.search(text):
        text = pattern.sub(lambda _m: block, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block
    os.makedirs(os.path.dirname(DOCS), exist_ok=True)
    tmp = DOCS + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text.rstrip("\n") + "\n")
    os.replace(tmp, DOCS)


# ---------------------------------------------------------------------- main
def _sigterm(_signum: int, _frame: Any) -> None:
    log("SIGTERM: stopping and cleaning up")
    raise SystemExit(128 + signal.SIGTERM)


def run(cfg: dict) -> dict:
    ctx = mp.get_context("spawn")
    kids = Children(ctx)
    tmp = tempfile.mkdtemp(prefix="bench-core-")
    db_name = f"bench-core-{os.getpid()}"
    redis_srv: RedisServer | None = RedisServer(tmp)
    manager = None
    db = None
    results: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + cfg["wait_quiet"]
        quiet = 0                      # consecutive idle seconds
        while True:
            cpu0 = psutil.cpu_times()
            time.sleep(1.0)
            results["busy_before"] = _busy_cores(cpu0, psutil.cpu_times())
            quiet = quiet + 1 if results["busy_before"] <= 0.2 else 0
            if quiet >= 3 or cfg["wait_quiet"] <= 0 or time.monotonic() >= deadline:
                break
            if not quiet:
                log(f"waiting for a quiet machine: {results['busy_before']:.2f} CPUs busy "
                    f"(busiest process: {busiest_other_process()})")
        if results["busy_before"] > 0.3:
            log(f"warning: {results['busy_before']:.2f} CPUs busy before the run: other "
                f"processes will disturb the figures (busiest: {busiest_other_process()})")
        if not redis_srv.start():
            redis_srv = None
        else:
            results["redis_version"] = redis_srv.version()
        n = cfg["rows"]
        log(f"making {n:,} rows")
        rows = [make_row(i) for i in range(n)]
        log(f"creating database {db_name!r}")
        db = DictDB(db_name)
        db.create_table("t", primary_key="id")
        t = db.get_table("t")
        lmdb_read = os.path.join(tmp, "lmdb-read")
        with CpuWindow() as w:
            results["bulk"] = bench_bulk(cfg, t, rows, lmdb_read, redis_srv)
        results["busy_bulk"] = w.busy

        log("loading the Manager().dict() peer")
        manager = ctx.Manager()
        md = manager.dict()
        for start in range(0, n, 50_000):
            md.update({r["id"]: r for r in rows[start:start + 50_000]})
        if len(md) != n:
            raise BenchError("Manager dict load lost rows")
        del rows
        gc.collect()

        spec = {"db": db_name, "rows": n, "ops": cfg["read_ops"],
                "select_ops": cfg["select_ops"], "slow_ops": cfg["slow_ops"],
                "warm": cfg["warm"], "lmdb_path": lmdb_read,
                "redis_port": redis_srv.port if redis_srv else 0,
                "profile": cfg["profile"], "duration": cfg["duration"],
                "scale_keys": cfg["scale_keys"], "rounds": cfg["read_rounds"],
                "pin": not cfg["no_pin"]}
        with CpuWindow() as w:
            results["reads"] = bench_point_reads(cfg, kids, spec, md)
        results["busy_reads"] = w.busy
        results["profile"] = results["reads"].pop("profile", None)
        md.clear()

        results["scaling"] = bench_scaling_all(cfg, kids, spec)
        results["attach"] = bench_attach(cfg, kids, db_name)
        if redis_srv is not None:
            c = redis_srv.client()
            try:
                c.flushall()
            finally:
                c.close()
        with CpuWindow() as w:
            results["inserts"] = bench_inserts(cfg, db, os.path.join(tmp, "lmdb-ins"),
                                               redis_srv, manager)
        results["busy_inserts"] = w.busy
        return results
    finally:
        # Cleanup must run to the end: a second Ctrl-C or SIGTERM would
        # leave the database or a server behind, so both wait until it is done.
        old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        old_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
        t_clean = time.perf_counter()
        kids.reap_all()
        if manager is not None:
            try:
                manager.shutdown()
            except Exception:
                traceback.print_exc()
        if redis_srv is not None:
            redis_srv.stop()
        if db is not None:
            try:
                db.destroy()
            except Exception:
                traceback.print_exc()
                log(f"could not destroy {db_name!r}; remove it with: "
                    f"python -m dictdb_shm.coordinator stop {db_name}")
        shutil.rmtree(tmp, ignore_errors=True)
        log(f"cleaned up ({time.perf_counter() - t_clean:.1f} s): database {db_name!r} "
            f"destroyed, workers and servers stopped")
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=None,
                    help="rows in the benchmark table (default 1,000,000; 20,000 with --quick)")
    ap.add_argument("--quick", action="store_true", help="small smoke run (seconds)")
    ap.add_argument("--no-docs", action="store_true",
                    help="do not write the section into docs/benchmarks.md")
    ap.add_argument("--profile", action="store_true",
                    help="also cProfile 100,000 t.get calls in the attached reader")
    ap.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                    help="first wait up to SECONDS for the machine to be idle "
                         "(under 0.2 CPUs busy for 3 s in a row)")
    ap.add_argument("--no-pin", action="store_true",
                    help="do not pin each read-scaling reader to its own CPU")
    args = ap.parse_args(argv)
    cfg = config(args)
    signal.signal(signal.SIGTERM, _sigterm)
    t0 = time.perf_counter()
    try:
        results = run(cfg)
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    report, verdicts = render(cfg, results)
    print(report)
    missed = [name for name, ok in verdicts if ok is False]
    print(f"\n{len(verdicts) - len(missed)} of {len(verdicts)} targets met"
          + (f"; missed: {', '.join(missed)}" if missed else "")
          + f" (goals, not pass/fail). Total run time {time.perf_counter() - t0:.0f} s.")
    if cfg["quick"] or args.no_docs:
        log("docs/benchmarks.md not updated (quick run or --no-docs)")
    else:
        write_docs(report)
        log(f"wrote the section {SECTION[3:]!r} into {os.path.relpath(DOCS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
