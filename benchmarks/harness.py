"""The harness every benchmark in this folder shares: timers, latency
percentiles, the machine's CPU-busy meter, the markdown report with its
targets, the common command-line flags, and the writer of a script's own
section of docs/benchmarks.md.

It owns the conventions that make figures comparable between scripts (what a
p99 is, how a busy machine is measured, how a section is replaced).  It must
never know a workload or a peer (those are in the bench_*.py scripts and in
peers.py), and never write docs/benchmarks.md outside the marked section of
the script that calls it.

Writing a benchmark, ``bench_x.py`` (bench_core.py and bench_query.py are full ones)::

    import harness                      # first: it makes the checkout importable
    from harness import Report
    from dictdb_shm import DictDB

    def configure(cfg: dict, args) -> dict:      # the script's own settings
        return {"reads": 1_000 if cfg["quick"] else 100_000}

    def run(cfg: dict) -> dict:                  # measure; return plain results
        with harness.Cleanup() as cleanup:       # teardowns run even on Ctrl-C
            db = DictDB(f"bench-x-{os.getpid()}")
            cleanup.add(db.destroy, "the database")
            db.create_table("t", primary_key="id")
            t = db.get_table("t")
            t.insert([{"id": i} for i in range(cfg["rows"])])
            keys = [i % cfg["rows"] for i in range(cfg["reads"])]
            return {"get": harness.measure_batches(t.get, keys, batch=100)}

    def section_get(rep: Report, cfg: dict, res: dict) -> None:  # one table each
        rep.heading("### Point reads")
        rep.para("What was timed, and how.")
        rep.latency_table([("`t.get`", res["get"])])
        rep.target("get", "under 5 µs", f"{res['get'].mean_ns / 1e3:.1f} µs",
                   res["get"].mean_ns < 5_000)

    BENCH = harness.Benchmark(
        name="bench_x", heading="## X", doc=__doc__, run=run, configure=configure,
        defaults=harness.Defaults(rows=1_000_000, quick_rows=20_000),
        sections=(section_get, harness.targets_section))

    if __name__ == "__main__":
        sys.exit(BENCH.main())

``BENCH.main()`` parses the common flags (see ``Benchmark.parser``) and the
script's own (``add_arguments``), runs, prints the report on stdout (progress
goes to stderr, ``log``), and with ``--write-docs`` on a full run replaces the
lines between ``<!-- begin bench_x ... -->`` and ``<!-- end bench_x -->`` in
docs/benchmarks.md (appended when missing).  Peers are in peers.py, machine
facts and idle waiting in machine.py, spawned workers in workers.py.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import gc
import io
import os
import pstats
import signal
import sys
import time
import traceback
from typing import Any, Callable, Iterable, Sequence

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:   # run from a checkout without installing the package
    sys.path.insert(1, ROOT)
DOCS = os.path.join(ROOT, "docs", "benchmarks.md")


class BenchError(RuntimeError):
    """A benchmark could not measure (a wrong result, a failed worker):
    the script exits 1.  Missed targets are not errors."""


def log(msg: str) -> None:
    """Progress, on stderr, so that stdout stays the markdown report."""
    name = os.path.splitext(os.path.basename(sys.argv[0] or "bench"))[0]
    print(f"[{name} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------- timers
def run_batches(op: Callable[[Any], Any], args: Sequence[Any], batch: int) -> list[float]:
    """Call ``op(a)`` for every a, timing each run of ``batch`` consecutive
    calls with perf_counter_ns: the per-op ns of each batch (a tail shorter
    than a batch is not run)."""
    clock = time.perf_counter_ns
    out = []
    for start in range(0, len(args) - batch + 1, batch):
        chunk = args[start:start + batch]
        t0 = clock()
        for a in chunk:
            op(a)
        out.append((clock() - t0) / batch)
    return out


def measure_batches(op: Callable[[Any], Any], args: Sequence[Any], batch: int,
                    warm: Iterable[Any] = ()) -> "Latency":
    """Call ``op`` over ``warm`` untimed, then time it over ``args`` in batches."""
    for a in warm:
        op(a)
    return summarize(run_batches(op, args, batch), batch)


def time_each(op: Callable[[Any], Any], args: Iterable[Any], into_ns: list[float]) -> list[Any]:
    """Call ``op(a)`` for every a, timing every call on its own; appends each
    call's ns to ``into_ns`` and returns the results."""
    clock = time.perf_counter_ns
    out = []
    for a in args:
        t0 = clock()
        r = op(a)
        into_ns.append(clock() - t0)
        out.append(r)
    return out


def seconds(fn: Callable[[], Any], collect_first: bool = False) -> float:
    """Seconds for one call of ``fn``; ``collect_first`` starts it from a clean
    garbage-collector state (the collector stays on, as in real use)."""
    if collect_first:
        gc.collect()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def batch_overhead_ns(batch: int, rounds: int = 2000) -> float:
    """Per-op cost of ``run_batches`` itself (timer pair plus an empty loop
    over a batch), in ns, median of ``rounds``: every batched figure holds it."""
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


def call_overhead_ns(rounds: int = 20_000) -> float:
    """Cost of one perf_counter_ns pair, in ns (median): in every per-call figure."""
    clock = time.perf_counter_ns
    samples = []
    for _ in range(rounds):
        t0 = clock()
        samples.append(clock() - t0)
    samples.sort()
    return samples[len(samples) // 2]


def profile_calls(fn: Callable[[Any], Any], args: Iterable[Any], top: int = 12) -> str:
    """cProfile of ``fn(a)`` over ``args``: the ``top`` frames by own time."""
    prof = cProfile.Profile()
    prof.enable()
    for a in args:
        fn(a)
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    return "\n".join(ln for ln in out.getvalue().splitlines() if ln.strip())


# -------------------------------------------------------------- percentiles
@dataclasses.dataclass(frozen=True)
class Latency:
    """Percentiles of per-op times; every figure is in nanoseconds (``_ns``).
    A sample is one timed call, or one batch's mean per op."""

    samples: int
    ops: int
    p50_ns: float
    p90_ns: float
    p99_ns: float
    max_ns: float
    mean_ns: float          # total timed ns / ops: the gaps between samples not counted

    @property
    def ops_per_s(self) -> float:
        return 1e9 / self.mean_ns if self.mean_ns else 0.0


def percentile(ascending: Sequence[float], p: int) -> float:
    """Nearest-rank percentile (``p`` in whole percent) of an ascending list."""
    if not ascending:
        return float("nan")
    rank = -(-p * len(ascending) // 100)          # ceil, in integers
    return ascending[max(0, min(len(ascending), rank) - 1)]


def summarize(per_op_ns: Sequence[float], ops_per_sample: int = 1) -> Latency:
    vals = sorted(per_op_ns)
    nan = float("nan")
    return Latency(samples=len(vals), ops=len(vals) * ops_per_sample,
                   p50_ns=percentile(vals, 50), p90_ns=percentile(vals, 90),
                   p99_ns=percentile(vals, 99), max_ns=vals[-1] if vals else nan,
                   mean_ns=sum(vals) / len(vals) if vals else nan)


def fmt_duration(ns: float) -> str:
    """A time with its unit: ``33.1 µs``, ``41.94 ms``, ``2.19 s``."""
    if ns != ns:
        return "n/a"
    if ns < 1e6:
        return f"{ns / 1e3:.1f} µs"
    if ns < 1e9:
        return f"{ns / 1e6:.2f} ms"
    return f"{ns / 1e9:.2f} s"


def fmt_us(ns: float) -> str:
    """A time in µs, for a column whose heading states the unit."""
    us = ns / 1e3
    return f"{us:.2f}" if us < 100 else f"{us:.0f}"


def fmt_ratio(a: float, b: float) -> str:
    if not (a == a and b == b) or b == 0:
        return "n/a"
    r = a / b
    return f"{r:.2f}x" if r < 10 else f"{r:.0f}x" if r >= 100 else f"{r:.1f}x"


# ------------------------------------------------------------ CPU-busy meter
class CpuMeter:
    """How many CPUs of the whole machine (any process) were busy, on
    average, between ``start()`` and ``stop()``, from /proc/stat via psutil.
    Also ``with CpuMeter() as m: ...`` then ``m.busy``."""

    busy = float("nan")

    def __init__(self) -> None:
        self._t0: tuple[float, float] | None = None

    @staticmethod
    def _read() -> tuple[float, float]:
        t = psutil.cpu_times()
        # guest time is already counted in user time on Linux
        total = sum(t) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
        return total - t.idle - getattr(t, "iowait", 0.0), total

    def start(self) -> "CpuMeter":
        self._t0 = self._read()
        return self

    def stop(self) -> float:
        busy1, total1 = self._read()
        if self._t0 is None or total1 <= self._t0[1]:
            return float("nan")
        busy0, total0 = self._t0
        self.busy = max(0.0, (busy1 - busy0) / (total1 - total0) * (os.cpu_count() or 1))
        return self.busy

    def __enter__(self) -> "CpuMeter":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# ------------------------------------------------------------------ report
class Report:
    """The markdown of one docs section, a paragraph or table at a time, and
    the targets judged along the way (rendered by ``targets_section``)."""

    def __init__(self, heading: str) -> None:
        self.lines: list[str] = [heading, ""]
        self.targets: list[tuple[str, str, str, bool | None]] = []

    def heading(self, text: str) -> None:
        self.lines += [text, ""]

    def para(self, *parts: str) -> None:
        self.lines += ["".join(parts), ""]

    def bullets(self, items: Iterable[str]) -> None:
        self.lines += [f"* {x}" for x in items] + [""]

    def table(self, header: Sequence[str], rows: Iterable[Sequence[Any]],
              align: str = "") -> None:
        """``align``: one letter a column, l or r; by default the first column
        left and the others right."""
        align = align or "l" + "r" * (len(header) - 1)
        self.lines.append("| " + " | ".join(header) + " |")
        self.lines.append("|" + "|".join("---:" if a == "r" else "---" for a in align) + "|")
        self.lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
        self.lines.append("")

    def latency_table(self, rows: Sequence[tuple[str, Latency | None]]) -> None:
        """Batched latencies, µs per op (a skipped peer has None)."""
        self.table(["what", "ops timed", "p50 µs/op", "p90 µs/op", "p99 µs/op",
                    "mean µs/op", "ops/s"],
                   [[label, "skipped", "", "", "", "", ""] if s is None else
                    [label, f"{s.ops:,}", fmt_us(s.p50_ns), fmt_us(s.p90_ns),
                     fmt_us(s.p99_ns), fmt_us(s.mean_ns), f"{s.ops_per_s:,.0f}"]
                    for label, s in rows])

    def code(self, title: str, text: str) -> None:
        self.lines += [title, "", "```", text.strip("\n"), "```", ""]

    def target(self, name: str, goal: str, measured: str, ok: bool | None) -> None:
        """A goal, not a pass/fail: ``ok`` None when it could not be judged."""
        self.targets.append((name, goal, measured, ok))

    def text(self) -> str:
        return "\n".join(self.lines).rstrip("\n") + "\n"

    def verdict(self) -> str:
        missed = [name for name, _g, _m, ok in self.targets if ok is False]
        return (f"{len(self.targets) - len(missed)} of {len(self.targets)} targets met"
                + (f"; missed: {', '.join(missed)}" if missed else "") + " (goals, not pass/fail)")


def targets_section(rep: Report, _cfg: dict, _res: dict) -> None:
    """The table of every target the sections before it judged."""
    rep.heading("### Targets (goals, not pass/fail)")
    rep.table(["target", "goal", "measured", "status"],
              [(n, g, m, "n/a" if ok is None else "MET" if ok else "MISSED")
               for n, g, m, ok in rep.targets], align="llll")


# ---------------------------------------------------------------- the docs
def section_markers(name: str) -> tuple[str, str]:
    return (f"<!-- begin {name}: written by benchmarks/{name}.py --write-docs; "
            f"edit the script, not this section -->", f"<!-- end {name} -->")


def write_section(name: str, text: str, path: str = DOCS) -> None:
    """Replace the lines between ``name``'s markers in ``path`` with ``text``
    (append markers and text when missing); the rest of the page is kept.
    Written to a temporary file, synced, then renamed over the page."""
    begin, end = section_markers(name)
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    block = [begin, *text.rstrip("\n").splitlines(), end]
    if begin in lines and end in lines[lines.index(begin):]:
        i = lines.index(begin)
        j = lines.index(end, i)
        lines[i:j + 1] = block
    else:
        lines += ["", *block]
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ----------------------------------------------------------------- cleanup
class Cleanup:
    """Teardowns registered as resources are made, run newest first when the
    ``with`` block ends, however it ends.  Ctrl-C and SIGTERM are held off
    meanwhile (a second one would leave a database or a server behind); a
    teardown that fails is printed and the others still run."""

    def __init__(self) -> None:
        self._undo: list[tuple[Callable[[], Any], str]] = []

    def add(self, fn: Callable[[], Any], what: str) -> None:
        self._undo.append((fn, what))

    def __enter__(self) -> "Cleanup":
        return self

    def __exit__(self, *exc: Any) -> None:
        old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        old_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            while self._undo:
                fn, what = self._undo.pop()
                try:
                    fn()
                except Exception:  # noqa: BLE001 - report it, keep cleaning
                    log(f"cleanup of {what} failed:\n{traceback.format_exc()}")
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)


# ---------------------------------------------------- flags and the main run
@dataclasses.dataclass(frozen=True)
class Defaults:
    """A script's values of the common flags (``quick_*`` with ``--quick``)."""

    rows: int
    quick_rows: int
    min_rows: int = 1000
    rounds: int = 5            # how many times the systems take turns
    quick_rounds: int = 2
    retries: int = 2           # reruns of a measurement that something disturbed
    quick_retries: int = 1
    wait_idle: float = 0.0     # seconds to wait for other load before measuring


Section = Callable[[Report, dict, dict], None]


@dataclasses.dataclass
class Benchmark:
    """One script: its section of the docs, its flags, its run, its tables."""

    name: str                  # the script's stem; names its docs section
    heading: str               # the section's markdown heading
    doc: str                   # the script's docstring; line 1 is --help's
    defaults: Defaults
    run: Callable[[dict], dict]
    sections: Sequence[Section]
    configure: Callable[[dict, argparse.Namespace], dict] = lambda cfg, args: {}
    add_arguments: Callable[[argparse.ArgumentParser], None] = lambda p: None

    def parser(self) -> argparse.ArgumentParser:
        d = self.defaults
        p = argparse.ArgumentParser(description=self.doc.split("\n")[0])
        p.add_argument("--rows", type=int, default=None,
                       help=f"rows in the table (default {d.rows:,}; {d.quick_rows:,} "
                            f"with --quick)")
        p.add_argument("--quick", action="store_true",
                       help="small smoke run: fewer rows, rounds and reps")
        p.add_argument("--rounds", type=int, default=None,
                       help=f"rounds in which the systems take turns (default {d.rounds}; "
                            f"{d.quick_rounds} with --quick)")
        p.add_argument("--retries", type=int, default=None,
                       help=f"measure a disturbed run again, up to this many times "
                            f"(default {d.retries}; {d.quick_retries} with --quick)")
        p.add_argument("--wait-idle", type=float, default=d.wait_idle, metavar="SECONDS",
                       help=f"before measuring, wait up to SECONDS for other benchmarks "
                            f"and load to end (default {d.wait_idle:g})")
        p.add_argument("--profile", action="store_true",
                       help="add cProfile output of dictdb_shm's calls (untimed)")
        p.add_argument("--write-docs", action="store_true",
                       help=f"replace the section {self.name} of docs/benchmarks.md "
                            f"with the report (refused with --quick)")
        self.add_arguments(p)
        return p

    def config(self, args: argparse.Namespace) -> dict:
        d, quick = self.defaults, args.quick
        cfg = {"name": self.name, "quick": quick,
               "rows": args.rows if args.rows is not None else
               (d.quick_rows if quick else d.rows),
               "rounds": max(1, args.rounds if args.rounds is not None else
                             (d.quick_rounds if quick else d.rounds)),
               "retries": max(0, args.retries if args.retries is not None else
                              (d.quick_retries if quick else d.retries)),
               "wait_idle": max(0.0, args.wait_idle), "profile": args.profile,
               "write_docs": args.write_docs}
        if cfg["rows"] < d.min_rows:
            raise SystemExit(f"--rows must be at least {d.min_rows}")
        cfg["invocation"] = invocation(self.name, cfg, d)
        cfg.update(self.configure(cfg, args))
        return cfg

    def main(self, argv: list[str] | None = None) -> int:
        cfg = self.config(self.parser().parse_args(argv))
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        t0 = time.perf_counter()
        log(f"{cfg['rows']:,} rows{' (quick)' if cfg['quick'] else ''}")
        try:
            res = self.run(cfg)
        except BenchError as exc:
            log(f"benchmark failed: {exc}")
            return 1
        except KeyboardInterrupt:
            log("interrupted")
            return 130
        rep = Report(self.heading)
        for section in self.sections:
            section(rep, cfg, res)
        print(rep.text(), end="", flush=True)
        print(f"\n{rep.verdict()}. Total run time {time.perf_counter() - t0:.0f} s.")
        if not cfg["write_docs"]:
            log("docs/benchmarks.md not updated (pass --write-docs on a run you trust)")
        elif cfg["quick"]:
            log("docs/benchmarks.md not updated: a --quick run's figures are not comparable")
        else:
            write_section(self.name, rep.text())
            log(f"wrote the section {self.name} of {os.path.relpath(DOCS)}")
        return 0


def invocation(name: str, cfg: dict, d: Defaults) -> str:
    """The command that reproduces this run, for the report."""
    words = [f"benchmarks/{name}.py"] + (["--quick"] if cfg["quick"] else [])
    if cfg["rows"] != (d.quick_rows if cfg["quick"] else d.rows):
        words.append(f"--rows {cfg['rows']}")
    return " ".join(words)


def _exit_on_sigterm(_signum: int, _frame: Any) -> None:
    log("SIGTERM: stopping and cleaning up")
    raise SystemExit(128 + signal.SIGTERM)
