"""Helpers for benchmarks/bench_core.py: row shape, timing, and the bodies of
the worker processes it starts (with the "spawn" start method, so they must
live in an importable module).

Every worker reports through a queue as ``("ok", result)`` or
``("err", traceback_text)`` and detaches (``close()``, never ``destroy()``)
from the database before it exits; only the parent destroys it.
"""

from __future__ import annotations

import gc
import os
import random
import struct
import time
import traceback
from typing import Any, Callable, Sequence

import msgpack

CITIES = ("Paris", "Lyon", "Berlin", "Madrid", "Rome", "Oslo", "Vienna", "Prague")
BATCH = 100                     # ops per timed batch; latencies are batch time / BATCH

_KEY = struct.Struct(">Q")      # LMDB keys: 8-byte big-endian unsigned ints
lmdb_key = _KEY.pack


def make_row(i: int) -> dict:
    return {"id": i, "name": f"user{i}", "age": i % 100, "city": CITIES[i % len(CITIES)]}


def random_keys(n_rows: int, count: int, seed: int) -> list[int]:
    rnd = random.Random(seed)
    return [rnd.randrange(n_rows) for _ in range(count)]


# ----------------------------------------------------------------- timing
def timer_overhead_ns(batch: int = BATCH, rounds: int = 2000) -> float:
    """Per-op cost of the timing harness itself (perf_counter_ns pair plus an
    empty ``for`` over a batch), in ns: every figure includes it."""
    keys = list(range(batch))
    clock = time.perf_counter_ns
    samples = []
    for _ in range(rounds):
        t0 = clock()
        for _k in keys:
            pass
        samples.append(clock() - t0)
    samples.sort()
    return samples[len(samples) // 2] / batch


def run_batches(op: Callable[[Any], Any], args: Sequence[Any], batch: int = BATCH) -> list[float]:
    """Call ``op(a)`` for every a, timing each run of ``batch`` consecutive
    calls with perf_counter_ns.  Returns the per-op time of each batch (ns)."""
    clock = time.perf_counter_ns
    out = []
    for start in range(0, len(args) - batch + 1, batch):
        chunk = args[start:start + batch]
        t0 = clock()
        for a in chunk:
            op(a)
        out.append((clock() - t0) / batch)
    return out


def pct(sorted_vals: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_vals:
        return float("nan")
    k = max(0, min(len(sorted_vals) - 1, int(-(-p * len(sorted_vals) // 100)) - 1))
    return sorted_vals[k]


def summarize(per_op_ns: list[float], batch: int = BATCH) -> dict:
    vals = sorted(per_op_ns)
    total_ns = sum(per_op_ns) * batch
    ops = len(per_op_ns) * batch
    return {"ops": ops, "p50_us": pct(vals, 50) / 1e3, "p90_us": pct(vals, 90) / 1e3,
            "p99_us": pct(vals, 99) / 1e3, "mean_us": total_ns / ops / 1e3 if ops else 0.0,
            "ops_s": ops / (total_ns / 1e9) if total_ns else 0.0}


def measure(op: Callable[[Any], Any], args: Sequence[Any], warm: Sequence[Any] = ()) -> dict:
    for a in warm:
        op(a)
    return summarize(run_batches(op, args))


def _report(q: Any, fn: Callable[[], Any]) -> None:
    try:
        q.put(("ok", fn()))
    except BaseException:  # noqa: BLE001 - the parent prints it
        q.put(("err", traceback.format_exc()))


# --------------------------------------------------- 1. point reads, attached
def point_reads(q: Any, spec: dict, manager_dict: Any = None) -> None:
    """Worker: attach to the database by name and time point reads of every
    peer in this one process (a plain dict is built here, last)."""
    _report(q, lambda: _point_reads(spec, manager_dict))


def _point_reads(spec: dict, manager_dict: Any) -> dict:
    from dictdb_shm import DictDB

    n, ops, slow_ops = spec["rows"], spec["ops"], spec["slow_ops"]
    keys = random_keys(n, ops, seed=1)
    warm = random_keys(n, spec["warm"], seed=2)
    slow_keys, slow_warm = keys[:slow_ops], warm[:max(100, slow_ops // 20)]
    unpackb = msgpack.unpackb
    res: dict[str, Any] = {"timer_overhead_ns": timer_overhead_ns(), "pid": os.getpid()}

    # dictdb_shm get and select and LMDB take turns over ``rounds`` slices of
    # the key sequence, so that a slow spell of the machine hits all three.
    import lmdb
    rounds = spec["rounds"]
    db = DictDB.attach(spec["db"])
    env = lmdb.open(spec["lmdb_path"], readonly=True, lock=True, max_readers=64,
                    readahead=False, subdir=True)
    try:
        t = db.get_table("t")
        get = t.get
        begin = env.begin

        def select(k: int) -> Any:
            return t.select(where=t.id == k)

        def lmdb_get(k: int) -> Any:
            with begin() as txn:
                return unpackb(txn.get(lmdb_key(k)))

        for k in keys[:3]:
            want = make_row(k)
            assert get(k) == want, "dictdb_shm get returned a wrong row"
            assert select(k) == [want], "dictdb_shm select returned a wrong result"
            assert lmdb_get(k) == want, "LMDB returned a wrong row"
        for k in warm:
            get(k)
            lmdb_get(k)
        for k in warm[:10_000]:
            select(k)
        samples: dict[str, list[float]] = {"dictdb_get": [], "dictdb_select": [], "lmdb": []}
        per = len(keys) // rounds
        sel_per = spec["select_ops"] // rounds
        for r in range(rounds):
            part = keys[r * per:(r + 1) * per]
            samples["dictdb_get"] += run_batches(get, part)
            samples["lmdb"] += run_batches(lmdb_get, part)
            samples["dictdb_select"] += run_batches(select, part[:sel_per])
        for name, vals in samples.items():
            res[name] = summarize(vals)
        if spec.get("profile"):
            res["profile"] = _profile_get(get, keys)
    finally:
        env.close()
        db.close()

    if spec.get("redis_port"):
        import redis
        r = redis.Redis(host="127.0.0.1", port=spec["redis_port"], socket_timeout=30)
        try:
            rget = r.get

            def redis_get(k: int) -> Any:
                return unpackb(rget(k))

            assert redis_get(keys[0]) == make_row(keys[0])
            res["redis"] = measure(redis_get, slow_keys, slow_warm)
        finally:
            r.close()

    if manager_dict is not None:
        mget = manager_dict.get
        assert mget(keys[0]) == make_row(keys[0])
        res["manager"] = measure(mget, slow_keys, slow_warm)

    plain = {i: make_row(i) for i in range(n)}
    res["dict"] = measure(plain.get, keys, warm)
    del plain
    return res


def _profile_get(get: Callable[[Any], Any], keys: Sequence[int]) -> str:
    import cProfile
    import io
    import pstats
    prof = cProfile.Profile()
    prof.enable()
    for k in keys[:100_000]:
        get(k)
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(12)
    return out.getvalue()


# ------------------------------------------------------------ 4. read scaling
def scaling_reader(q: Any, barrier: Any, kind: str, spec: dict, worker: int) -> None:
    """Worker: open ``kind`` ("dictdb" or "lmdb"), warm up, wait at the
    barrier with the other readers and the parent, then do random point reads
    for ``spec["duration"]`` seconds and report (ops, seconds, CPU seconds it
    got: less than the seconds means something else had its CPU)."""
    _report(q, lambda: _scaling_reader(barrier, kind, spec, worker))


def _scaling_reader(barrier: Any, kind: str, spec: dict,
                    worker: int) -> tuple[int, float, float]:
    n, duration = spec["rows"], spec["duration"]
    # A long random key sequence, so the working set is the whole table (a
    # short list read over and over would be served from the CPU caches), and
    # a different one to warm up.
    keys = random_keys(n, spec["scale_keys"], seed=100 + worker)
    warm = random_keys(n, 100_000, seed=200 + worker)
    if spec.get("pin") and hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[worker % len(cpus)]})
    closers: list[Callable[[], None]] = []
    try:
        if kind == "dictdb":
            from dictdb_shm import DictDB
            db = DictDB.attach(spec["db"])
            closers.append(db.close)
            op = db.get_table("t").get
        else:
            import lmdb
            env = lmdb.open(spec["lmdb_path"], readonly=True, lock=True, max_readers=64,
                            readahead=False)
            closers.append(env.close)
            begin, unpackb = env.begin, msgpack.unpackb

            def op(k: int) -> Any:
                with begin() as txn:
                    return unpackb(txn.get(lmdb_key(k)))
        for k in warm:
            op(k)
        del warm
        gc.collect()
        barrier.wait(timeout=120)
        chunks = [keys[i:i + 1000] for i in range(0, len(keys), 1000)]
        clock, cpu = time.perf_counter, time.process_time
        done = 0
        c0 = cpu()
        t0 = clock()
        deadline = t0 + duration
        while True:
            for chunk in chunks:
                for k in chunk:
                    op(k)
                done += len(chunk)
                now = clock()
                if now >= deadline:
                    return done, now - t0, cpu() - c0
    finally:
        for close in closers:
            close()


# --------------------------------------------------------------- 5. attach
def attach_probe(q: Any, db_name: str, pk: int) -> None:
    """Worker: a fresh process that has imported dictdb_shm times attach +
    get_table + first get, and the USS that added."""
    _report(q, lambda: _attach_probe(db_name, pk))


def _attach_probe(db_name: str, pk: int) -> dict:
    import psutil

    from dictdb_shm import DictDB
    me = psutil.Process()
    gc.collect()
    mem0 = me.memory_full_info()
    t0 = time.perf_counter()
    db = DictDB.attach(db_name)
    try:
        t = db.get_table("t")
        row = t.get(pk)
        elapsed = time.perf_counter() - t0
        mem1 = me.memory_full_info()
        assert row == make_row(pk), "attach probe read a wrong row"
    finally:
        db.close()
    return {"ms": elapsed * 1e3, "uss_mb": (mem1.uss - mem0.uss) / 2**20,
            "rss_mb": (mem1.rss - mem0.rss) / 2**20}
