"""Cache benchmark: dictdb_shm's shared cache against Redis, Memcached,
diskcache and a Manager dict, every figure from one run.

    .venv/bin/python benchmarks/bench_cache.py                # 10,000 keys
    .venv/bin/python benchmarks/bench_cache.py --quick        # smoke run, seconds
    .venv/bin/python benchmarks/bench_cache.py --write-docs   # also rewrite its docs section

Measures, from processes that attach by name (or connect):

1. latency of one process: get (hit and miss), set (a value of the same
   length, and one whose length changes), incr and a memoize hit, for
   ``db.cache`` (unbounded, and bounded by ``max_items``), Redis (redis-py,
   127.0.0.1), Memcached (pymemcache, 127.0.0.1), diskcache ``Cache`` and
   ``FanoutCache``, and ``multiprocessing.Manager().dict()``;
2. throughput from 1 and 2 processes at once, of each dictdb_shm op and of
   the peers' get hits.

Servers are started here on 127.0.0.1 and stopped at the end (installed
with apt-get first when missing: peers.ensure_apt).  This script owns the
cache workload's report; the worker bodies are in cache_workers.py, the
peers in peers.py, the conventions in harness.py.  It must never leave
anything behind: the database is destroyed, workers and servers are stopped
and the temporary directory goes, also on Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

import harness  # noqa: I001 - first: it makes the checkout importable
import cache_workers as W
import machine
import peers
from harness import BenchError, CpuMeter, Latency, Report, fmt_us, log, summarize
from workers import Workers, disturbed, timed_run
from dictdb_shm import DictDB

TARGETS = {
    "get_us": 2.0,             # a get hit at or below 2 µs
    "get_vs_redis": 50.0,      # ... and at least 50x faster than Redis
    "set_vs_diskcache": 5.0,   # set at least 5x faster than diskcache's
    "incr_vs_diskcache": 3.0,  # incr at least 3x faster than diskcache's
    "vs_redis": 10.0,          # set and incr at least 10x faster than Redis's
    "scale_2p": 1.8,           # 2 processes reach >= 1.8x one on gets
}
LABELS = {
    "dictdb": "dictdb_shm `db.cache`",
    "dictdb_bounded": "dictdb_shm `db.cache(max_items=)`",
    "redis": "Redis (redis-py)",
    "memcached": "Memcached (pymemcache)",
    "diskcache": "diskcache `Cache`",
    "fanout": "diskcache `FanoutCache`",
    "manager": "`Manager().dict()`",
}
OP_LABELS = {
    "get_hit": "get, hit", "get_miss": "get, miss", "set": "set, same length",
    "set_resized": "set, new length", "incr": "incr", "memo_hit": "memoize hit",
}
SLOW = ("redis", "memcached", "manager")     # fewer ops: 100x slower per op
FANOUT_SHARDS = 4
BUSY_BEFORE_LIMIT = 0.3        # busy CPUs before the run above this: a disturbed run


def configure(cfg: dict, args: Any) -> dict:
    quick = cfg["quick"]
    return {"ops": 20_000 if quick else 200_000, "slow_ops": 2_000 if quick else 20_000,
            "duration": 0.5 if quick else 2.0, "memo_keys": 1_000}


def fill(spec: dict, manager_dict: Any) -> None:
    """Every system holds the same keys, counters and memoized results."""
    n = spec["keys"]
    with contextlib.ExitStack() as stack:
        for system in spec["systems"]:
            ops = W.open_system(system, spec, stack, manager_dict)
            if system == "manager":
                manager_dict.update({W.key(i): W.make_value(i) for i in range(n)})
            else:
                put = ops["set"]
                for i in range(n):
                    put((W.key(i), W.make_value(i)))
            if system == "memcached":
                c = stack.enter_context(contextlib.closing(
                    peers.memcached_client(spec["memcached_port"])))
                for i in range(W.COUNTERS):
                    c.set(f"ctr:{i}", b"0")        # its incr needs a decimal value
            if "memo_hit" in ops:
                for x in range(spec["memo_keys"]):
                    ops["memo_hit"](x)
            W.check(system, ops, spec)


def bench_throughput(workers: Workers, spec: dict, system: str, op: str, nproc: int) -> dict:
    return timed_run(workers, W.throughput, lambda w: (system, op, spec, w), nproc,
                     spec["duration"], f"throughput of {system} {op}")


def bench_scaling(cfg: dict, workers: Workers, spec: dict) -> dict:
    """1 and 2 processes, alternated; a disturbed run is run again (up to
    ``retries`` times); dictdb_shm's get hit takes ``rounds`` rounds, the
    rest one (medians reported)."""
    pairs = [("dictdb", op) for op in W.OPS if op != "set_resized"] + \
        [(s, "get_hit") for s in ("redis", "memcached", "diskcache") if s in spec["systems"]]
    out: dict[str, Any] = {"discarded": 0, "runs": {}}
    for system, op in pairs:
        runs: dict[int, list[dict]] = {1: [], 2: []}
        for _ in range(cfg["rounds"] if (system, op) == ("dictdb", "get_hit") else 1):
            for k in (1, 2):
                for attempt in range(cfg["retries"] + 1):
                    log(f"2. {system} {op}: {k} process(es), {spec['duration']:.1f} s")
                    res = bench_throughput(workers, spec, system, op, k)
                    if not disturbed(res, k) or attempt == cfg["retries"]:
                        break
                    out["discarded"] += 1
                    log(f"   discarded: {res['busy']:.2f} CPUs busy, a worker got "
                        f"{res['cpu_share']:.0%} of a CPU (busiest other process: "
                        f"{machine.busiest_other_process()})")
                    time.sleep(1.0)
                runs[k].append(res)
        out["runs"][f"{system}/{op}"] = runs
    return out


def run(cfg: dict) -> dict:
    res: dict[str, Any] = {"facts": machine.facts(), "versions": peers.versions()}
    db_name = f"bench-cache-{os.getpid()}"
    with harness.Cleanup() as cleanup:
        cleanup.add(lambda: log(f"cleaned up: database {db_name!r} destroyed, workers and "
                                "servers stopped"), "the last log line")
        tmp = tempfile.mkdtemp(prefix="bench-cache-")
        cleanup.add(lambda: shutil.rmtree(tmp, ignore_errors=True), tmp)
        res["busy_before"] = machine.wait_idle(cfg["wait_idle"], "the run").busy_before
        if res["busy_before"] > BUSY_BEFORE_LIMIT:
            log(f"warning: {res['busy_before']:.2f} CPUs busy before the run: other processes "
                f"will disturb the figures (busiest: {machine.busiest_other_process()})")
        redis_srv = peers.start_redis(cleanup, tmp)
        mc_srv = peers.start_memcached(cleanup, tmp)
        res["server_versions"] = {"redis": redis_srv.version() if redis_srv else None,
                                  "memcached": mc_srv.version() if mc_srv else None}
        systems = [s for s in W.SYSTEMS if not (s == "redis" and redis_srv is None)
                   and not (s == "memcached" and mc_srv is None)]
        try:
            import diskcache
            res["versions"]["diskcache"] = diskcache.__version__
        except ImportError:
            log("skipped diskcache: pip install diskcache")
            systems = [s for s in systems if s not in ("diskcache", "fanout")]
        db = DictDB(db_name)
        cleanup.add(db.destroy, f"database {db_name!r}")
        n = cfg["rows"]
        db.cache("bench")
        db.cache("bench_bounded", max_items=2 * n)
        workers = Workers()
        manager = peers.start_manager(cleanup, workers.ctx)
        cleanup.add(workers.stop_all, "the worker processes")
        md = manager.dict()
        spec = {"db": db_name, "cache": "bench", "bounded_cache": "bench_bounded",
                "keys": n, "ops": cfg["ops"], "slow_ops": cfg["slow_ops"],
                "memo_keys": cfg["memo_keys"], "rounds": cfg["rounds"],
                "duration": cfg["duration"], "systems": systems, "slow": SLOW,
                "redis_port": redis_srv.port if redis_srv else 0,
                "memcached_port": mc_srv.port if mc_srv else 0,
                "disk_dir": os.path.join(tmp, "diskcache"),
                "fanout_dir": os.path.join(tmp, "fanout"), "fanout_shards": FANOUT_SHARDS}
        log(f"filling {len(systems)} systems with {n:,} keys")
        fill(spec, md)
        log(f"1. latency, one process ({cfg['ops']:,} ops; Redis, Memcached, Manager "
            f"{cfg['slow_ops']:,})")
        with CpuMeter() as meter:
            lat = workers.run_one(W.latencies, (spec, md), timeout=1800, what="latencies")
        res["busy_latency"] = meter.busy
        res["timer_overhead_ns"] = lat["timer_overhead_ns"]
        res["latency"] = {s: {op: summarize(v, W.BATCH) for op, v in ops.items()}
                          for s, ops in lat["samples"].items()}
        res["scaling"] = bench_scaling(cfg, workers, spec)
        if cfg["profile"]:
            res["profile"] = profile(spec)
        return res


def profile(spec: dict) -> str:
    """cProfile of dictdb_shm's get, set and incr (the main process, untimed)."""
    out = []
    with contextlib.ExitStack() as stack:
        ops = W.open_system("dictdb", spec, stack)
        for op in ("get_hit", "set", "incr"):
            out.append(f"--- {op}\n" + harness.profile_calls(
                ops[op], W.op_args(op, spec, 20_000, seed=7)))
    return "\n".join(out)


# ---------------------------------------------------------------- sections
def lat(r: dict, system: str, op: str) -> Latency | None:
    return r["latency"].get(system, {}).get(op)


def faster(r: dict, peer: str, op: str, system: str = "dictdb") -> float | None:
    """How many times faster ``system`` is than ``peer`` at ``op``, by mean time per op."""
    a, b = lat(r, peer, op), lat(r, system, op)
    return a.mean_ns / b.mean_ns if a and b else None


def fmt_x(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1f}x" if x < 100 else f"{x:.0f}x"


def section_intro(rep: Report, cfg: dict, r: dict) -> None:
    f, v, sv = r["facts"], r["versions"], r["server_versions"]
    rep.para(f"Produced by `{cfg['invocation']}`; every figure below is from the same run.")
    rep.bullets([
        f"date: {f['date']}",
        f"machine: {f['cpus']} CPUs (nproc {f['nproc']}), {f['cpu']}, {f['ram_gib']:.0f} GiB "
        f"RAM, {f['os']}",
        f"Python {f['python']} ({f['impl']}); msgpack {v['msgpack']}; diskcache "
        f"{v.get('diskcache', 'not run')}; redis-server {sv['redis'] or 'not run'}; memcached "
        f"{sv['memcached'] or 'not run'}; dictdb_shm at `{f['commit']}`",
        f"{cfg['rows']:,} keys like `{W.key(7)!r}` holding `{W.make_value(7)}`; "
        f"{W.COUNTERS} counters; a memoized function over {cfg['memo_keys']:,} arguments",
        f"machine-wide busy CPUs (from /proc/stat): before the run {r['busy_before']:.2f}, "
        f"latency phase {r['busy_latency']:.2f} (a quiet machine shows about 1)",
        *(["**Disturbed:** other processes were using CPU during this run; the figures are "
           "pessimistic. Rerun on a quiet machine."]
          if r["busy_before"] > BUSY_BEFORE_LIMIT or r["busy_latency"] > 1.3 else []),
        f"latencies: batches of {W.BATCH} consecutive ops timed with `perf_counter_ns`, "
        f"divided by {W.BATCH}; p50/p99 are over those batch means. The timer and loop cost "
        f"{r['timer_overhead_ns']:.0f} ns/op, included. Values go through msgpack for Redis "
        "and Memcached (bytes servers), pickle inside diskcache and the Manager.",
    ])


def section_latency(rep: Report, cfg: dict, r: dict) -> None:
    rep.heading("### 1. Latency, one process")
    rep.para("Every system is opened in one spawned process, and they take turns over "
             f"{cfg['rounds']} slices of random keys (warmed up first). `set, same length` "
             "overwrites a key with a value of the length it holds (dictdb_shm overwrites it "
             "in place); `set, new length` alternates two lengths (dictdb_shm appends a "
             "record). Memcached's client waits for every reply (`noreply` off). "
             "The ratio is the peer's mean time over dictdb_shm's (`db.cache`).")
    for op in W.OPS:
        rows = []
        for system in W.SYSTEMS:
            s = lat(r, system, op)
            if s is None:
                continue
            ratio = "" if system.startswith("dictdb") else fmt_x(faster(r, system, op))
            rows.append([LABELS[system], f"{s.ops:,}", fmt_us(s.p50_ns), fmt_us(s.p99_ns),
                         fmt_us(s.mean_ns), f"{s.ops_per_s:,.0f}", ratio])
        rep.para(f"**{OP_LABELS[op]}**")
        rep.table(["system", "ops timed", "p50 µs", "p99 µs", "mean µs", "ops/s",
                   "dictdb_shm is faster by"], rows)
    g = lat(r, "dictdb", "get_hit")
    rep.target("get hit", f"<= {TARGETS['get_us']:.0f} µs", f"{g.mean_ns / 1e3:.2f} µs",
               g.mean_ns <= TARGETS["get_us"] * 1e3)
    for name, op, peer, goal in (
            ("get hit vs Redis", "get_hit", "redis", TARGETS["get_vs_redis"]),
            ("set vs diskcache", "set", "diskcache", TARGETS["set_vs_diskcache"]),
            ("set vs Redis", "set", "redis", TARGETS["vs_redis"]),
            ("incr vs diskcache", "incr", "diskcache", TARGETS["incr_vs_diskcache"]),
            ("incr vs Redis", "incr", "redis", TARGETS["vs_redis"])):
        x = faster(r, peer, op)
        rep.target(name, f">= {goal:.0f}x faster", fmt_x(x), None if x is None else x >= goal)


def median_ops(runs: list[dict]) -> float:
    return statistics.median(x["ops_s"] for x in runs)


def section_scaling(rep: Report, cfg: dict, r: dict) -> None:
    sc = r["scaling"]
    rep.heading("### 2. Throughput from 1 and 2 processes")
    rep.para(f"Each worker is a spawned process that attaches (or connects), warms up, waits "
             f"at a barrier, then runs the op for {cfg['duration']:.1f} s on random keys; "
             "ops/s is summed over the workers (median of the rounds). Writes from two "
             "processes take turns on the cache's one write lock, so only reads are expected "
             f"to scale. {sc['discarded']} disturbed runs were discarded and run again.")
    rows = []
    for name, runs in sc["runs"].items():
        system, op = name.split("/")
        one, two = median_ops(runs[1]), median_ops(runs[2])
        rows.append([LABELS[system], OP_LABELS[op], f"{one:,.0f}", f"{two:,.0f}",
                     f"{two / one:.2f}x", f"{min(x['cpu_share'] for x in runs[2]):.0%}"])
    rep.table(["system", "op", "1 process ops/s", "2 processes ops/s", "2 vs 1",
               "lowest CPU share (2)"], rows, align="llrrrr")
    runs = sc["runs"]["dictdb/get_hit"]
    x = median_ops(runs[2]) / median_ops(runs[1])
    rep.target("2 processes vs 1 (get hit)", f">= {TARGETS['scale_2p']}x", f"{x:.2f}x",
               x >= TARGETS["scale_2p"])


def section_profile(rep: Report, cfg: dict, r: dict) -> None:
    if r.get("profile"):
        rep.code("### Profile (untimed, cProfile)", r["profile"])


BENCH = harness.Benchmark(
    name="bench_cache", heading="## Shared cache", doc=__doc__, run=run, configure=configure,
    defaults=harness.Defaults(rows=10_000, quick_rows=2_000, rounds=3, quick_rounds=1),
    sections=(section_intro, section_latency, section_scaling, harness.targets_section,
              section_profile))

if __name__ == "__main__":
    sys.exit(BENCH.main())
