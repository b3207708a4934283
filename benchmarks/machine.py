"""The machine a benchmark runs on: the facts a report states about it (CPU,
memory, Python, commit), whether other benchmarks or other load are running,
waiting for them to end, and measuring a phase again when they disturbed it.

It owns judging and reporting the machine's state; it must never decide what
a benchmark measures, and never stop or signal a process it did not start
(other load is waited for, not ended).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import platform
import subprocess
import time
from typing import Any, Callable

import psutil

from harness import ROOT, CpuMeter, Report, log

IDLE_BUSY = 0.5          # other load under half a CPU counts as an idle machine
QUIET_WAIT_S = 60.0      # the longest wait for other load, once no benchmark runs


# ------------------------------------------------------------------- facts
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def commit() -> str:
    """Short HEAD of the checkout, marked when dictdb_shm/ has changes not committed."""
    def git(*words: str) -> str:
        return subprocess.run(["git", "-C", ROOT, *words], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "dictdb_shm")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if head and dirty:
        head += " (dictdb_shm/ has uncommitted changes)"
    return head or "unknown"


def facts() -> dict[str, Any]:
    return {"date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "cpus": os.cpu_count(), "nproc": len(os.sched_getaffinity(0)),
            "cpu": cpu_model(), "ram_gib": psutil.virtual_memory().total / 2**30,
            "os": f"{platform.system()} {platform.release()}", "platform": platform.platform(),
            "python": platform.python_version(), "impl": platform.python_implementation(),
            "commit": commit()}


# -------------------------------------------------------------- other load
def busy_cpus(sample_s: float = 1.0) -> float:
    """Busy CPUs of the machine over the next ``sample_s`` seconds."""
    m = CpuMeter().start()
    time.sleep(sample_s)
    return m.stop()


def _own_family() -> set[int]:
    """This process, its children and its ancestors (a shell that started it
    names the script in its command line too)."""
    me = psutil.Process()
    return ({me.pid} | {c.pid for c in me.children(recursive=True)}
            | {p.pid for p in me.parents()})


def other_benchmarks() -> list[str]:
    """pids of other bench_*.py scripts running (not this one, nor its family)."""
    mine = _own_family()
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = p.info.get("cmdline") or []
        if p.pid not in mine and any(os.path.basename(w).startswith("bench_")
                                     and w.endswith(".py") for w in cmd[:3]):
            found.append(str(p.pid))
    return found


def busiest_other_process() -> str:
    """The process outside this benchmark using the most CPU now (for logs)."""
    mine = _own_family()
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


@dataclasses.dataclass
class Phase:
    """One measured phase and the machine's state around it."""

    name: str
    seen: list[str]            # other benchmarks running when it was to start
    still: list[str]           # ... and still running when the wait ran out
    waited_s: float
    busy_before: float         # busy CPUs just before it started
    busy: float = float("nan")           # busy CPUs while it ran
    seen_end: list[str] = dataclasses.field(default_factory=list)
    disturbed: bool = False
    kept: bool = True
    limit: float = float("nan")          # the busy CPUs above which it counts as disturbed


def wait_idle(limit_s: float, name: str) -> Phase:
    """Wait (at most ``limit_s``) until no other benchmark runs, then (at most
    QUIET_WAIT_S more, and never past ``limit_s``) until the machine's other
    load is under IDLE_BUSY CPUs.  Returns what was seen."""
    t0 = time.monotonic()
    pids = other_benchmarks()
    first = list(pids)
    while pids and time.monotonic() - t0 < limit_s:
        log(f"{name}: another benchmark is running (pid {', '.join(pids)}); waiting "
            f"({time.monotonic() - t0:.0f}/{limit_s:.0f} s)")
        time.sleep(min(10.0, max(0.5, limit_s - (time.monotonic() - t0))))
        pids = other_benchmarks()
    t1 = time.monotonic()
    busy = busy_cpus(1.0)
    while busy > IDLE_BUSY and time.monotonic() - t1 < min(QUIET_WAIT_S, limit_s):
        log(f"{name}: {busy:.2f} CPUs busy with other work ({busiest_other_process()}); "
            f"waiting")
        time.sleep(4.0)
        busy = busy_cpus(1.0)
    return Phase(name, first, pids, time.monotonic() - t0, busy)


class Phases:
    """Measured phases, each after ``wait_idle`` and under a CpuMeter; a phase
    that was disturbed (another benchmark ran at its end, or more than
    ``busy_limit`` CPUs were busy) is measured again, up to ``retries`` times."""

    def __init__(self, wait_s: float, retries: int, busy_limit: float) -> None:
        self.wait_s, self.retries, self.busy_limit = wait_s, retries, busy_limit
        self.done: list[Phase] = []

    def run(self, name: str, body: Callable[[int], Any], own_cpus: float = 1.0) -> Any:
        """``body(attempt)`` until it is not disturbed or the retries are used up.
        ``own_cpus``: the CPUs the phase keeps busy itself (more than 1 when it
        runs parallel work), which raises its busy limit by as much."""
        limit = self.busy_limit if own_cpus == 1.0 else self.busy_limit + own_cpus - 1.0
        for attempt in range(self.retries + 1):
            ph = wait_idle(self.wait_s, name if not attempt else f"{name} (retry {attempt})")
            self.done.append(ph)
            log(f"phase: {ph.name}")
            meter = CpuMeter().start()
            out = body(attempt)
            ph.busy = meter.stop()
            ph.seen_end = other_benchmarks()
            ph.limit = limit
            ph.disturbed = bool(ph.seen_end) or (ph.busy == ph.busy and ph.busy > limit)
            if not ph.disturbed or attempt == self.retries:
                return out
            ph.kept = False
            log(f"{name} was disturbed (busy CPUs {ph.busy:.2f}, another benchmark "
                f"{'running' if ph.seen_end else 'not running'} at its end): measuring again")
        raise AssertionError("unreachable")

    def section(self, rep: Report) -> None:
        """The table of every phase and the load around it."""
        def running(pids: list[str]) -> str:
            return f"running (pid {', '.join(pids)})" if pids else "not running"
        rep.para("**Machine state.** Before each phase the script looked for other "
                 "benchmark scripts (`bench_*.py`) and waited for them to finish, then "
                 f"waited (at most {QUIET_WAIT_S:.0f} s) for any other load to drop under "
                 f"half a CPU. A phase that was disturbed (busy CPUs above "
                 f"{self.busy_limit}, more for a phase that runs parallel work itself "
                 "(its limit is in the table), or another benchmark running at its end) "
                 "is measured "
                 f"again, up to {self.retries} times. \"Busy CPUs\" are for the whole "
                 "machine, from /proc/stat: just before the phase (should be ~0) and during "
                 "it (this benchmark alone keeps ~1 busy; more means other work ran "
                 "alongside).")
        rep.table(["phase", "other benchmark at start", "waited", "busy CPUs just before",
                   "busy CPUs during", "other benchmark at end", "figures"],
                  [(ph.name, running(ph.seen) + ("; still running when the wait ran out"
                                                 if ph.still else ""),
                    f"{ph.waited_s:.0f} s", f"{ph.busy_before:.2f}",
                    f"{ph.busy:.2f}" + (f" (limit {ph.limit:.2f})"
                                        if ph.limit != self.busy_limit else ""),
                    running(ph.seen_end),
                    ("kept" if ph.kept else "dropped, measured again")
                    + (" (disturbed)" if ph.disturbed else ""))
                   for ph in self.done], align="lllrrll")
        disturbed = any(ph.kept and ph.disturbed for ph in self.done)
        rep.para("Machine idle apart from this benchmark during the kept phases: ",
                 "**no**: some kept phases ran alongside other load (see above), their "
                 "figures are pessimistic." if disturbed else "**yes**.")
