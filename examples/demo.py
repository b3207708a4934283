"""The main job in one screen: one shared database, several processes at once.

The parent creates database "demo-<pid>" with a table of page-view counters,
then starts four unrelated worker processes (fresh interpreters, not forks)
that attach by name.  Each worker records page views with a read-modify-write
under the cross-process write lock, and reads the others' rows without any
lock.  The parent checks that no update was lost, runs a query and an aggregate, and destroys
the database, leaving nothing under /dev/shm.

Run it with ``make demo``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from dictdb_shm import Count, DictDB

WORKERS = 4
VIEWS_PER_WORKER = 500
PAGES = ["/", "/shop", "/cart", "/about"]


def worker(db_name: str, worker_id: int) -> None:
    db = DictDB.attach(db_name)
    pages = db.get_table("pages")
    visits = db.get_table("visits")
    for i in range(VIEWS_PER_WORKER):
        path = PAGES[(worker_id + i) % len(PAGES)]
        with pages.lock.write_lock():            # cross-process critical section
            row = pages.select(where=pages.path == path)[0]
            pages.update({"views": row["views"] + 1}, where=pages.path == path)
        visits.insert({"worker": worker_id, "path": path})
    seen = pages.get(path)                       # lock-free point read
    print(f"worker {worker_id} (pid {os.getpid()}): done; {path} has {seen['views']} views",
          flush=True)
    db.close()


def main() -> None:
    name = f"demo-{os.getpid()}"
    started = time.perf_counter()
    with DictDB(name) as db:
        try:
            db.create_table("pages", primary_key="path")
            db.create_table("visits")
            pages = db.get_table("pages")
            pages.insert([{"path": p, "views": 0} for p in PAGES])
            print(f"created database {db.name!r}; starting {WORKERS} worker processes")
            procs = [subprocess.Popen([sys.executable, __file__, "worker", name, str(i)])
                     for i in range(WORKERS)]
            for p in procs:
                if p.wait(timeout=120) != 0:
                    raise SystemExit(f"worker pid {p.pid} failed")
            visits = db.get_table("visits")
            total = sum(r["views"] for r in pages.all())
            expected = WORKERS * VIEWS_PER_WORKER
            print(f"views counted: {total} (expected {expected}); visit rows: {len(visits)}")
            busiest = pages.select(order_by="-views", limit=2)
            print("busiest pages:", [(r["path"], r["views"]) for r in busiest])
            per_worker = visits.aggregate(group_by="worker", n=Count())
            print("visits per worker:", {g["worker"]: g["n"] for g in per_worker})
            assert total == expected == len(visits), "an update was lost"
        finally:
            db.destroy()
    leftovers = [n for n in os.listdir("/dev/shm") if name in n]
    print(f"destroyed; left under /dev/shm: {leftovers or 'nothing'}; "
          f"{time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "worker":
        worker(sys.argv[2], int(sys.argv[3]))
    else:
        main()
