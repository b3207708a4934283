"""The core benchmark's rows and key sequences, and what the processes
bench_core.py spawns run (spawned processes need an importable module):
point reads of every peer from an attached process, a read-scaling reader,
and the attach probe.

Every body reports through workers.report_to and detaches (``close()``,
never ``destroy()``) from the database before it exits; only the parent
destroys it.  It must never set up a peer itself: peers.py does.
"""

from __future__ import annotations

import contextlib
import gc
import os
import random
import time
from typing import Any, Callable

import harness
import peers
from workers import report_to

CITIES = ("Paris", "Lyon", "Berlin", "Madrid", "Rome", "Oslo", "Vienna", "Prague")
BATCH = 100                 # ops per timed batch; latencies are batch time / BATCH
SCALING_WARM = 100_000      # untimed reads of each read-scaling reader
BARRIER_S = 120             # a reader's wait for the others at the start line


def make_row(i: int) -> dict:
    return {"id": i, "name": f"user{i}", "age": i % 100, "city": CITIES[i % len(CITIES)]}


def random_keys(n_rows: int, count: int, seed: int) -> list[int]:
    rnd = random.Random(seed)
    return [rnd.randrange(n_rows) for _ in range(count)]


def _attach_table(spec: dict, stack: contextlib.ExitStack) -> Any:
    from dictdb_shm import DictDB
    db = DictDB.attach(spec["db"])
    stack.callback(db.close)
    return db.get_table("t")


def _lmdb_get(spec: dict, stack: contextlib.ExitStack) -> Callable[[int], Any]:
    return peers.lmdb_get(stack.enter_context(peers.open_lmdb_reader(spec["lmdb_path"])))


# --------------------------------------------------- 1. point reads, attached
def point_reads(q: Any, spec: dict, manager_dict: Any = None) -> None:
    """Worker: attach to the database by name and time point reads of every
    peer in this one process (a plain dict is built here, last)."""
    report_to(q, lambda: _point_reads(spec, manager_dict))


def _point_reads(spec: dict, manager_dict: Any) -> dict:
    n = spec["rows"]
    keys = random_keys(n, spec["ops"], seed=1)
    warm = random_keys(n, spec["warm"], seed=2)
    slow_keys, slow_warm = keys[:spec["slow_ops"]], warm[:max(100, spec["slow_ops"] // 20)]
    res: dict[str, Any] = {"timer_overhead_ns": harness.batch_overhead_ns(BATCH)}

    # dictdb_shm get and select and LMDB take turns over ``rounds`` slices of
    # the key sequence, so that a slow spell of the machine hits all three.
    with contextlib.ExitStack() as stack:
        t = _attach_table(spec, stack)
        lmdb_get = _lmdb_get(spec, stack)
        get = t.get

        def select(k: int) -> Any:
            return t.select(where=t.id == k)

        for k in keys[:3]:
            want = make_row(k)
            if get(k) != want or select(k) != [want] or lmdb_get(k) != want:
                raise harness.BenchError(f"a point read of {k} returned a wrong row")
        for k in warm:
            get(k)
            lmdb_get(k)
        for k in warm[:10_000]:
            select(k)
        samples: dict[str, list[float]] = {"dictdb_get": [], "dictdb_select": [], "lmdb": []}
        per = len(keys) // spec["rounds"]
        sel_per = spec["select_ops"] // spec["rounds"]
        for r in range(spec["rounds"]):
            part = keys[r * per:(r + 1) * per]
            samples["dictdb_get"] += harness.run_batches(get, part, BATCH)
            samples["lmdb"] += harness.run_batches(lmdb_get, part, BATCH)
            samples["dictdb_select"] += harness.run_batches(select, part[:sel_per], BATCH)
        for name, vals in samples.items():
            res[name] = harness.summarize(vals, BATCH)
        if spec.get("profile"):
            res["profile"] = harness.profile_calls(get, keys[:100_000])

    if spec.get("redis_port"):
        with contextlib.closing(peers.redis_client(spec["redis_port"])) as client:
            redis_get = peers.redis_get(client)
            if redis_get(keys[0]) != make_row(keys[0]):
                raise harness.BenchError("Redis returned a wrong row")
            res["redis"] = harness.measure_batches(redis_get, slow_keys, BATCH, slow_warm)

    if manager_dict is not None:
        mget = manager_dict.get
        if mget(keys[0]) != make_row(keys[0]):
            raise harness.BenchError("the Manager dict returned a wrong row")
        res["manager"] = harness.measure_batches(mget, slow_keys, BATCH, slow_warm)

    plain = {i: make_row(i) for i in range(n)}
    res["dict"] = harness.measure_batches(plain.get, keys, BATCH, warm)
    del plain
    return res


# ------------------------------------------------------------ 4. read scaling
def scaling_reader(q: Any, barrier: Any, kind: str, spec: dict, worker: int) -> None:
    """Worker: open ``kind`` ("dictdb" or "lmdb"), warm up, wait at the
    barrier with the other readers and the parent, then do random point reads
    for ``spec["duration"]`` seconds and report (ops, seconds, CPU seconds it
    got: less than the seconds means something else had its CPU)."""
    report_to(q, lambda: _scaling_reader(barrier, kind, spec, worker))


def _scaling_reader(barrier: Any, kind: str, spec: dict,
                    worker: int) -> tuple[int, float, float]:
    n, duration = spec["rows"], spec["duration"]
    # A long random key sequence, so the working set is the whole table (a
    # short list read over and over would be served from the CPU caches), and
    # a different one to warm up.
    keys = random_keys(n, spec["scale_keys"], seed=100 + worker)
    warm = random_keys(n, SCALING_WARM, seed=200 + worker)
    if spec.get("pin") and hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[worker % len(cpus)]})
    with contextlib.ExitStack() as stack:
        op = _attach_table(spec, stack).get if kind == "dictdb" else _lmdb_get(spec, stack)
        for k in warm:
            op(k)
        del warm
        gc.collect()
        barrier.wait(timeout=BARRIER_S)
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


# --------------------------------------------------------------- 5. attach
def attach_probe(q: Any, db_name: str, pk: int) -> None:
    """Worker: a fresh process that has imported dictdb_shm times attach +
    get_table + first get, and the USS that added."""
    report_to(q, lambda: _attach_probe(db_name, pk))


def _attach_probe(db_name: str, pk: int) -> dict:
    import psutil

    from dictdb_shm import DictDB
    me = psutil.Process()
    gc.collect()
    mem0 = me.memory_full_info()
    t0 = time.perf_counter()
    db = DictDB.attach(db_name)
    try:
        row = db.get_table("t").get(pk)
        elapsed = time.perf_counter() - t0
        mem1 = me.memory_full_info()
    finally:
        db.close()
    if row != make_row(pk):
        raise harness.BenchError("the attach probe read a wrong row")
    return {"ms": elapsed * 1e3, "uss_mb": (mem1.uss - mem0.uss) / 2**20,
            "rss_mb": (mem1.rss - mem0.rss) / 2**20}
