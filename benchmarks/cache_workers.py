"""The cache benchmark's workload and what the processes bench_cache.py
spawns run (spawned processes need an importable module): each system's
cache operations as closures over one opened handle, the latency pass over
every system, and the throughput reader of the 1-vs-2-process runs.

Every body reports through workers.report_to and detaches (``close()``,
never ``destroy()``) from the database before it exits; only the parent
destroys it and stops the servers.  It must never start a server or fill a
peer: bench_cache.py and peers.py do.
"""

from __future__ import annotations

import contextlib
import gc
import random
import time
from typing import Any, Callable

import msgpack

import harness
import peers
from workers import report_to

BATCH = 100                 # ops per timed batch; latencies are batch time / BATCH
COUNTERS = 100              # incr spreads over this many counter keys
BARRIER_S = 120             # a reader's wait for the others at the start line
OPS = ("get_hit", "get_miss", "set", "set_resized", "incr", "memo_hit")
SYSTEMS = ("dictdb", "dictdb_bounded", "redis", "memcached", "diskcache", "fanout", "manager")


def key(i: int) -> str:
    return f"key:{i}"


def make_value(i: int, variant: int = 0) -> dict:
    """A small record; ``variant`` changes its bytes, not its length."""
    return {"user": f"user{i:07d}", "n": i, "tags": ["a", "b"], "v": variant % 10}


def resized_value(i: int, variant: int) -> dict:
    """Like make_value, but every other variant is 8 bytes longer."""
    return dict(make_value(i), pad="x" * (8 * (variant % 2)))


def memo_square(x: int) -> dict:
    return {"x": x, "square": x * x}


def random_ints(n: int, count: int, seed: int) -> list[int]:
    rnd = random.Random(seed)
    return [rnd.randrange(n) for _ in range(count)]


# ----------------------------------------------------------- the systems
def op_args(op: str, spec: dict, count: int, seed: int) -> list[Any]:
    """The arguments of ``count`` calls of ``op``, made before any timing,
    so a timed call is the system's own call (bound, where it can be):
    keys for gets, (key, value) for sets, counter keys for incr, ints for
    a memoized function."""
    n = spec["memo_keys"] if op == "memo_hit" else spec["keys"]
    ints = random_ints(n, count, seed)
    if op == "get_hit":
        return [key(i) for i in ints]
    if op == "get_miss":
        return [f"miss:{i}" for i in ints]
    if op == "set":
        return [(key(i), make_value(i, j)) for j, i in enumerate(ints)]
    if op == "set_resized":
        return [(key(i), resized_value(i, j)) for j, i in enumerate(ints)]
    if op == "incr":
        return [f"ctr:{i % COUNTERS}" for i in ints]
    return ints


def open_system(system: str, spec: dict, stack: contextlib.ExitStack,
                manager_dict: Any = None) -> dict[str, Callable[[Any], Any]]:
    """``{op: fn(arg)}`` for ``system``, opened in this process, over the
    arguments of ``op_args``: ``get_hit`` / ``get_miss`` read a key
    (present / absent), ``set`` and ``set_resized`` overwrite one, ``incr``
    adds 1 to a counter, ``memo_hit`` calls a memoized function on an
    argument already computed.  An op the system lacks is missing."""
    if system in ("dictdb", "dictdb_bounded"):
        from dictdb_shm import DictDB
        db = DictDB.attach(spec["db"])
        stack.callback(db.close)
        c = db.cache(spec["cache"] if system == "dictdb" else spec["bounded_cache"])
        cset = c.set

        def put(kv: tuple) -> None:
            cset(kv[0], kv[1])
        return {"get_hit": c.get, "get_miss": c.get, "set": put, "set_resized": put,
                "incr": c.incr, "memo_hit": c.memoize(name="bench_square")(memo_square)}
    if system in ("redis", "memcached"):
        if system == "redis":
            client = peers.redis_client(spec["redis_port"])
        else:
            client = peers.memcached_client(spec["memcached_port"])
        stack.callback(client.close)
        rget, rset, rincr = client.get, client.set, client.incr
        packb, unpackb = msgpack.packb, msgpack.unpackb

        def get(k: str) -> Any:
            raw = rget(k)
            return None if raw is None else unpackb(raw)

        def rput(kv: tuple) -> None:
            rset(kv[0], packb(kv[1]))
        return {"get_hit": get, "get_miss": get, "set": rput, "set_resized": rput,
                "incr": rincr if system == "redis" else (lambda k: rincr(k, 1))}
    if system in ("diskcache", "fanout"):
        import diskcache
        if system == "diskcache":
            dc = diskcache.Cache(spec["disk_dir"])
        else:
            dc = diskcache.FanoutCache(spec["fanout_dir"], shards=spec["fanout_shards"])
        stack.callback(dc.close)
        dset = dc.set

        def dput(kv: tuple) -> None:
            dset(kv[0], kv[1])
        ops = {"get_hit": dc.get, "get_miss": dc.get, "set": dput, "set_resized": dput,
               "incr": dc.incr}
        if system == "diskcache":
            ops["memo_hit"] = dc.memoize(name="bench_square")(memo_square)
        return ops
    if system == "manager":
        d = manager_dict

        def mput(kv: tuple) -> None:
            d[kv[0]] = kv[1]
        return {"get_hit": d.get, "get_miss": d.get, "set": mput, "set_resized": mput}
    raise ValueError(system)


def check(system: str, ops: dict, spec: dict) -> None:
    """A wrong answer is a BenchError, not a figure."""
    for i in (0, spec["keys"] - 1):
        got = ops["get_hit"](key(i))
        if got is None or got.get("user") != make_value(i)["user"]:
            raise harness.BenchError(f"{system}: get of key {i} returned {got!r}")
    if ops["get_miss"]("miss:1") is not None:
        raise harness.BenchError(f"{system}: a missing key was found")
    if "memo_hit" in ops and ops["memo_hit"](3) != memo_square(3):
        raise harness.BenchError(f"{system}: memoize returned a wrong result")


# ----------------------------------------------------- 1. latency, one process
def latencies(q: Any, spec: dict, manager_dict: Any = None) -> None:
    """Worker: open every system in this one process and time each op; the
    systems take turns over ``rounds`` slices of the key sequence, so that a
    slow spell of the machine hits them all.  Reports ``{system: {op: [batch
    means, ns per op]}}``."""
    report_to(q, lambda: _latencies(spec, manager_dict))


def _latencies(spec: dict, manager_dict: Any) -> dict:
    rounds = spec["rounds"]
    out: dict[str, Any] = {"timer_overhead_ns": harness.batch_overhead_ns(BATCH)}
    with contextlib.ExitStack() as stack:
        opened = {}
        for system in spec["systems"]:
            opened[system] = open_system(system, spec, stack,
                                         manager_dict if system == "manager" else None)
            check(system, opened[system], spec)
        samples: dict[str, dict[str, list[float]]] = {s: {} for s in opened}
        for r in range(rounds):
            for system, ops in opened.items():
                count = spec["slow_ops"] if system in spec["slow"] else spec["ops"]
                per_round = max(BATCH, count // rounds // BATCH * BATCH)
                for op, fn in ops.items():
                    arg = op_args(op, spec, per_round + per_round // 10, seed=r * 31 + len(op))
                    for a in arg[per_round:]:          # warm, untimed
                        fn(a)
                    gc.collect()
                    samples[system].setdefault(op, []).extend(
                        harness.run_batches(fn, arg[:per_round], BATCH))
        out["samples"] = samples
    return out


# ---------------------------------------------- 2. throughput, 1 vs 2 processes
def throughput(q: Any, barrier: Any, system: str, op: str, spec: dict, worker: int) -> None:
    """Worker: open ``system``, warm ``op`` up, wait at the barrier with the
    other workers and the parent, then run ``op`` for ``spec["duration"]``
    seconds; reports (ops, seconds, CPU seconds it got: less than the
    seconds means something else had its CPU)."""
    report_to(q, lambda: _throughput(barrier, system, op, spec, worker))


def _throughput(barrier: Any, system: str, op: str, spec: dict,
                worker: int) -> tuple[int, float, float]:
    args = op_args(op, spec, 100_000, seed=500 + worker)
    with contextlib.ExitStack() as stack:
        fn = open_system(system, spec, stack)[op]
        for a in args[:20_000]:
            fn(a)
        gc.collect()
        barrier.wait(timeout=BARRIER_S)
        chunks = [args[i:i + 1000] for i in range(0, len(args), 1000)]
        clock, cpu = time.perf_counter, time.process_time
        done = 0
        c0, t0 = cpu(), clock()
        deadline = t0 + spec["duration"]
        while True:
            for chunk in chunks:
                for a in chunk:
                    fn(a)
                done += len(chunk)
                now = clock()
                if now >= deadline:
                    return done, now - t0, cpu() - c0
