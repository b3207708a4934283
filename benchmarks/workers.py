"""Worker processes of a benchmark: starting them with the "spawn" method (a
fresh interpreter, like an unrelated process), collecting what they report,
and stopping every one of them.

It owns the report protocol: a worker body runs inside ``report_to(q, fn)``
and puts ``("ok", result)`` or ``("err", traceback text)`` on its queue.  It
must never leave a worker running after ``Workers.stop_all()``, and never
decide what a worker measures (the bodies are in the scripts' own modules,
such as core_workers.py, which spawned processes can import).
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import time
import traceback
from typing import Any, Callable

from harness import BenchError, CpuMeter

MIN_CPU_SHARE = 0.9            # a timed worker with less lost its CPU to others
EXTRA_BUSY = 0.3               # busy CPUs beyond the workers': another process ran


def report_to(q: Any, fn: Callable[[], Any]) -> None:
    """Run a worker's body and put its result, or its traceback, on ``q``."""
    try:
        q.put(("ok", fn()))
    except BaseException:  # noqa: BLE001 - the parent raises it as BenchError
        q.put(("err", traceback.format_exc()))


class Workers:
    """Every worker process started, so that cleanup can stop them all."""

    def __init__(self) -> None:
        self.ctx = mp.get_context("spawn")
        self.procs: list[Any] = []

    def start(self, target: Callable, args: tuple) -> Any:
        p = self.ctx.Process(target=target, args=args, daemon=True)
        p.start()
        self.procs.append(p)
        return p

    def stop(self, p: Any, timeout: float = 10.0) -> None:
        """Join ``p``; terminate, then kill, one that does not end in time."""
        p.join(timeout)
        if p.is_alive():
            p.terminate()
            p.join(5)
        if p.is_alive():
            p.kill()
            p.join(5)
        if p in self.procs and not p.is_alive():
            self.procs.remove(p)

    def stop_all(self) -> None:
        for p in list(self.procs):
            self.stop(p, timeout=2.0)

    def run_one(self, target: Callable, args: tuple, timeout: float, what: str) -> Any:
        """Start one worker ``target(q, *args)`` and return what it reports."""
        q = self.ctx.Queue()
        p = self.start(target, (q, *args))
        try:
            (res,) = collect(q, 1, timeout, what)
        finally:
            self.stop(p)
        return res


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


def timed_run(workers: Workers, target: Callable, args_of: Callable[[int], tuple],
              nproc: int, duration: float, what: str) -> dict:
    """One run of ``nproc`` workers ``target(q, barrier, *args_of(w))``
    released together, each reporting ``(ops, seconds, cpu seconds)``:
    aggregate ops/s, the machine's busy CPUs meanwhile (about ``nproc`` when
    nothing else ran) and the lowest CPU share of a worker."""
    q = workers.ctx.Queue()
    barrier = workers.ctx.Barrier(nproc + 1)
    procs = [workers.start(target, (q, barrier, *args_of(w))) for w in range(nproc)]
    try:
        try:
            barrier.wait(timeout=180)
        except Exception:  # BrokenBarrierError or timeout: a worker failed to get ready
            barrier.abort()
            collect(q, nproc, timeout=10, what=what)
            raise BenchError(f"{what}: workers never reached the barrier")
        meter = CpuMeter().start()
        time.sleep(duration * 0.9)   # the workers' window, without their exit
        busy = meter.stop()
        results = collect(q, nproc, timeout=duration + 120, what=what)
    finally:
        for p in procs:
            workers.stop(p)
    return {"ops_s": sum(ops / secs for ops, secs, _ in results), "busy": busy,
            "cpu_share": min(cpu_s / secs for _, secs, cpu_s in results)}


def disturbed(run: dict, nproc: int) -> bool:
    """Whether a ``timed_run`` of ``nproc`` workers shared the machine."""
    return run["cpu_share"] < MIN_CPU_SHARE or run["busy"] > nproc + EXTRA_BUSY
