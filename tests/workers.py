"""Scenarios the tests run in separate, unrelated processes.

``python tests/workers.py SCENARIO ARGS...``.  A scenario prints lines the
test waits for (``READY``, ``RESULT <json>``) and exits 0 when it succeeds.
Each attaches by name like any other program would.
"""

from __future__ import annotations

import json
import sys
import time

from dictdb_shm import DictDB


def out(*parts: object) -> None:
    print(*parts, flush=True)


def insert_one(db: str, table: str, record_json: str) -> None:
    t = DictDB.attach(db).get_table(table)
    out("RESULT", json.dumps(t.insert(json.loads(record_json))))


def read_all(db: str, table: str) -> None:
    t = DictDB.attach(db).get_table(table)
    out("RESULT", json.dumps(sorted(t.all(), key=lambda r: str(r[t.primary_key]))))


def wait_for_key_then_update(db: str, table: str, pk: str) -> None:
    """Poll (bounded) until key ``pk`` appears, then set seen=True on it."""
    t = DictDB.attach(db).get_table(table)
    key = json.loads(pk)
    deadline = time.monotonic() + 30
    while t.get(key) is None:
        if time.monotonic() > deadline:
            sys.exit("the key never appeared")
        time.sleep(0.005)
    t.update({"seen": True}, where=t[t.primary_key] == key)
    out("RESULT", "updated")


def insert_many_auto(db: str, table: str, worker: str, n: str) -> None:
    t = DictDB.attach(db).get_table(table)
    out("READY")
    pks = [t.insert({"worker": int(worker), "i": i}) for i in range(int(n))]
    out("RESULT", json.dumps(pks))


def increment(db: str, table: str, n: str) -> None:
    """Read-modify-write a counter n times, each under write_lock()."""
    t = DictDB.attach(db).get_table(table)
    for _ in range(int(n)):
        with t._lock.write_lock():
            value = t.get("counter")["value"]
            t.update({"value": value + 1}, where=t.key == "counter")
    out("RESULT", "done")


def rewrite_all(db: str, table: str, rounds: str) -> None:
    """Set every row's v to the round number, one update call per round."""
    t = DictDB.attach(db).get_table(table)
    out("READY")
    for i in range(1, int(rounds) + 1):
        t.update({"v": i, "check": f"v{i}"})
    out("RESULT", "done")


def check_isolation(db: str, table: str, seconds: str) -> None:
    """Read the whole table repeatedly: every row must carry the same round."""
    t = DictDB.attach(db).get_table(table)
    out("READY")
    deadline = time.monotonic() + float(seconds)
    reads = 0
    rounds = set()
    while time.monotonic() < deadline:
        rows = t.select()
        vs = {r["v"] for r in rows}
        if len(vs) != 1:
            sys.exit(f"saw half of an update: rounds {sorted(vs)[:5]}")
        for r in rows:
            if r["check"] != f"v{r['v']}":
                sys.exit(f"torn record {r}")
        rounds.update(vs)
        reads += 1
        one = t.get(rows[0]["id"])
        if one["check"] != f"v{one['v']}":
            sys.exit(f"torn point read {one}")
    out("RESULT", json.dumps({"reads": reads, "rounds": len(rounds)}))


def bulk_insert(db: str, table: str, n: str, start: str) -> None:
    t = DictDB.attach(db).get_table(table)
    rows = [{"id": i, "name": f"user{i}", "age": i % 90} for i in range(int(start),
                                                                   int(start) + int(n))]
    out("START")
    t.insert(rows)
    out("RESULT", "inserted")


def hold_lock(db: str, table: str, kind: str) -> None:
    """Take the read or write lock and keep it until killed."""
    t = DictDB.attach(db).get_table(table)
    lock = t._lock.read_lock() if kind == "read" else t._lock.write_lock()
    with lock:
        out("READY")
        time.sleep(3600)


def hold_lock_briefly(db: str, table: str, seconds: str) -> None:
    t = DictDB.attach(db).get_table(table)
    with t._lock.write_lock():
        out("READY")
        time.sleep(float(seconds))
    out("RESULT", "released")


def grow(db: str, table: str, first: str, rows: str, payload: str) -> None:
    """Insert keys first..rows-1 with ``payload``-byte values, 5000 per call."""
    t = DictDB.attach(db).get_table(table)
    blob = "x" * int(payload)
    out("READY")
    n = int(rows)
    for start in range(int(first), n, 5000):
        t.insert([{"id": i, "blob": blob, "n": i} for i in range(start, min(n, start + 5000))])
    out("RESULT", json.dumps(t._store.read(lambda s: s.stats())))


def read_while_growing(db: str, table: str, seconds: str) -> None:
    t = DictDB.attach(db).get_table(table)
    out("READY")
    deadline = time.monotonic() + float(seconds)
    reads = misses = 0
    while time.monotonic() < deadline:
        r = t.get(reads % 1000)
        if r is None:
            misses += 1
        elif r["n"] != reads % 1000:
            sys.exit(f"wrong record {r['id']} for key {reads % 1000}")
        reads += 1
        if reads % 500 == 0:
            c = t.count()
            if (c - 1000) % 5000:
                sys.exit(f"saw a partial batch: count {c}")
    out("RESULT", json.dumps({"reads": reads, "misses": misses}))


def create_and_leave(db: str) -> None:
    """Create a named database with data, then exit normally."""
    d = DictDB(db)
    d.create_table("notes")
    d.get_table("notes").insert({"id": 1, "text": "from the creator"})
    d.close()
    out("RESULT", "left")


def create_private(mode: str) -> None:
    d = DictDB()
    d.create_table("t")
    d.get_table("t").insert({"x": 1})
    out("RESULT", d.name)
    if mode == "sleep":
        time.sleep(3600)
    sys.stdin.readline()          # exit normally once the test has attached


def attach_read_exit(db: str, table: str, how: str) -> None:
    t = DictDB.attach(db).get_table(table)
    out("RESULT", json.dumps(t.count()))
    if how == "kill":
        time.sleep(3600)


def try_insert_with_timeout(db: str, table: str, timeout: str) -> None:
    t = DictDB.attach(db, lock_timeout=float(timeout)).get_table(table)
    from dictdb_shm import LockTimeoutError
    try:
        t.insert({"x": 1})
    except LockTimeoutError as exc:
        out("RESULT", json.dumps({"error": str(exc), "holder": exc.holder_pid,
                                  "table": exc.table}))
        return
    out("RESULT", json.dumps({"error": None}))



def churn_indexed(db: str, table: str, seed: str) -> None:
    """Small writes on indexed fields, forever (until killed): updates, deletes,
    re-inserts, so a kill lands inside in-place index maintenance."""
    import random
    t = DictDB.attach(db).get_table(table)
    rng = random.Random(int(seed))
    out("READY")
    n = 0
    while True:
        k = rng.randrange(2000)
        r = rng.random()
        if r < 0.6:
            t.update({"v": rng.randrange(50), "name": f"n{rng.randrange(300)}"},
                     where=t.id.is_in([k, k + 1, k + 2]))
        elif r < 0.8:
            if t.get(k) is not None:
                t.delete(where=t.id == k)
        else:
            t.upsert({"id": k, "v": rng.randrange(50), "name": f"n{rng.randrange(300)}"})
        n += 1


def index_queries(db: str, table: str) -> None:
    """Answer some indexed queries from another process, and report whether it
    sees the indexes and the index segment it used."""
    t = DictDB.attach(db).get_table(table)
    res = {
        "indexed": t.indexed_fields(),
        "eq": sorted(r["id"] for r in t.select(where=t.v == 7)),
        "range": sorted(r["id"] for r in t.select(where=t.v.between(3, 5))),
        "segment": t._store.read(lambda s: s.stats())["index_segment"],
    }
    out("RESULT", json.dumps(res))


def column_queries(db: str, table: str) -> None:
    """Answer queries from column indexes in another process (attached by name)."""
    from dictdb_shm import Count
    t = DictDB.attach(db).get_table(table)
    groups = t.aggregate(group_by="s", n=Count())
    res = {
        "kinds": t._store.read(lambda s: s.indexes()),
        "and": [r["id"] for r in t.select(where=(t.a > 10) & (t.s == "k7"))],
        "count": t.aggregate(n=Count(), where=t.a >= 20)["n"],
        "groups": [[g["s"], g["n"]] for g in groups if isinstance(g["s"], str)],
        "numpy": t.to_numpy("a", where=t.s == "k3")["a"].tolist(),
        "segment": t._store.read(lambda s: s.stats())["index_segment"],
    }
    out("RESULT", json.dumps(res))


def serve_steps(db: str) -> None:
    """Run scenario steps sent on stdin (base64 pickles), one reply per step."""
    import base64
    import pickle
    from scenario import run_step
    d = DictDB.attach(db)
    out("READY")
    for line in sys.stdin:
        if not line.strip():
            break
        step = pickle.loads(base64.b64decode(line))
        out("RESULT", base64.b64encode(pickle.dumps(run_step(d, step))).decode())


def attempt(db: str, action: str, table: str = "") -> None:
    """Do one thing and report how it went: ``RESULT ok`` or ``ERROR <class> <message>``.
    ``open`` is DictDB(db) (starting a coordinator with this process's
    environment when none runs); the others attach first."""
    from dictdb_shm import DictDBError
    try:
        if action == "open":
            DictDB(db)
        else:
            d = DictDB.attach(db)
            out("READY")
            if action == "create_table":
                d.create_table(table)
            elif action == "drop_table":
                d.drop_table(table)
            elif action == "read":
                d.get_table(table).all()
    except DictDBError as exc:
        out("ERROR", type(exc).__name__, str(exc).replace("\n", " "))
        return
    out("RESULT", "ok")


def write_paused_at(db: str, table: str, point: str) -> None:
    """Insert one record, stopping itself (SIGSTOP) once at lock hook ``point``
    on the way: the test decides how long the live writer stays paused."""
    import os
    import signal
    from dictdb_shm.lock import rwlock
    t = DictDB.attach(db).get_table(table)

    def pause() -> None:
        rwlock.hooks.pop(point, None)
        os.kill(os.getpid(), signal.SIGSTOP)

    rwlock.hooks[point] = pause
    out("READY")
    t.insert({"id": "paused"})
    out("RESULT", "inserted")


def slow_increments(db: str, table: str, n: str, hold_ms: str) -> None:
    """Read-modify-write a counter n times, each holding write_lock() for
    hold_ms, so a pause sent at a random moment likely lands inside."""
    t = DictDB.attach(db).get_table(table)
    out("READY")
    for _ in range(int(n)):
        with t.lock.write_lock():
            value = t.get("counter")["value"]
            time.sleep(float(hold_ms) / 1000)
            t.update({"value": value + 1}, where=t.key == "counter")
    out("RESULT", "done")


def destroy_database(db: str) -> None:
    DictDB.attach(db).destroy()
    out("RESULT", "destroyed")


def storm_launcher(db: str, table: str) -> None:
    """Fork storm writers on demand (a fork costs milliseconds, a new
    interpreter a third of a second): each ``go SEED`` line forks a child
    that runs ``storm_writes`` until the test SIGKILLs it, and prints
    ``PID <pid>``; ``reap <pid>`` collects it."""
    import os
    t = DictDB.attach(db).get_table(table)
    out("READY")
    for line in sys.stdin:
        command, _, arg = line.strip().partition(" ")
        if command == "go":
            pid = os.fork()
            if pid == 0:
                try:
                    storm_writes(t, int(arg))
                finally:
                    os._exit(1)
            out("PID", pid)
        elif command == "reap":
            os.waitpid(int(arg), 0)
            out("REAPED")
        else:
            return


def storm_writes(t, seed: int) -> None:
    """Random write calls until killed: whole batches inserted and deleted,
    groups of rows updated together, single upserts.  Every row carries
    ``check`` = "<grp>:<n>", written with its fields in the same call, and
    its batch's size, so a reader can tell a torn record or a half batch."""
    import random
    rng = random.Random(seed)
    while True:
        r = rng.random()
        if r < 0.35:
            batch, size = rng.getrandbits(48), rng.randint(20, 400)
            rows = []
            for _ in range(size):
                g, n = rng.randrange(20), rng.randrange(1000)
                rows.append({"batch": batch, "size": size, "grp": g, "n": n,
                             "check": f"{g}:{n}"})
            t.insert(rows)
        elif r < 0.65:
            g, n = rng.randrange(20), rng.randrange(1000)
            try:
                t.update({"n": n, "check": f"{g}:{n}"}, where=t.grp == g)
            except Exception:
                pass                      # an empty group: RecordNotFoundError
        elif r < 0.8:
            found = t.select(where=t.id == rng.randrange(1, 1 + 100_000), limit=1)
            if found:
                t.delete(where=t.batch == found[0]["batch"])
        else:
            g, n = rng.randrange(20), rng.randrange(1000)
            t.upsert({"id": f"u{rng.randrange(5000)}", "batch": 0, "size": 0, "grp": g,
                      "n": n, "check": f"{g}:{n}"})


def storm_reader(db: str, table: str, seconds: str) -> None:
    """Check the table over and over while a writer is killed again and
    again: count equals the scan, no torn record, no half batch."""
    t = DictDB.attach(db).get_table(table)
    out("READY")
    deadline = time.monotonic() + float(seconds)
    reads = 0
    while time.monotonic() < deadline:
        problem = storm_problem(t)
        if problem:
            sys.exit(problem)
        reads += 1
    out("RESULT", json.dumps({"reads": reads}))


def storm_problem(t) -> str | None:
    """What is wrong with a storm table, as one consistent state, or None."""
    def check(s):
        rows = list(s.scan())
        lost = [r["id"] for r in rows if s.lookup(r["id"]) != r]
        return rows, s.live_count(), lost
    rows, count, lost = t._store.read(check)
    if count != len(rows):
        return f"count {count} but the scan found {len(rows)}"
    if lost:
        return f"the scan finds keys {lost[:5]} that a lookup by key does not"
    batches: dict = {}
    for r in rows:
        if r["check"] != f"{r['grp']}:{r['n']}":
            return f"torn record {r}"
        if r["batch"]:
            batches.setdefault(r["batch"], [0, r["size"]])[0] += 1
    for b, (n, size) in batches.items():
        if n != size:
            return f"batch {b} has {n} of its {size} rows"
    return None
def catalog_edit(db: str, op: str, table: str) -> None:
    """Edit ``db``'s catalog as a coordinator would (none runs for it):
    ``add`` or ``remove`` table ``table``.  A crash point stops it mid-edit."""
    from dictdb_shm.engine.catalog import Catalog
    catalog = Catalog.attach(db)
    out("READY")
    if op == "add":
        catalog.add_table(table, {"pk": "id", "schema": None})
    else:
        catalog.remove_table(catalog.find(table))
    out("RESULT", "done")


def watch_word(segment: str, first: str, second: str, stop: str) -> None:
    """Read word 0 of shared-memory ``segment`` until word 1 is ``stop``;
    report how many reads saw a value other than ``first`` or ``second``."""
    from dictdb_shm.engine import layout as L
    from dictdb_shm.engine.segment import Segment
    w = L.words(Segment.attach(segment).buf)
    allowed = {int(first), int(second)}
    halt = int(stop)
    reads = torn = 0
    out("READY")
    while w[1] != halt:
        if w[0] not in allowed:
            torn += 1
        reads += 1
    out("RESULT", json.dumps({"reads": reads, "torn": torn}))
# ------------------------------------------------------------- persistence
def write_batches(db: str, table: str, batches: str, size: str) -> None:
    """Once told ``GO`` on stdin, insert ``batches`` lists of ``size`` rows
    (ids j*size .. j*size+size-1), one call each and 2 ms apart, so a test's
    saves overlap them; prints each acknowledged batch: ``ACK j``."""
    t = DictDB.attach(db).get_table(table)
    out("READY")
    sys.stdin.readline()
    n = int(size)
    for j in range(int(batches)):
        t.insert([{"id": j * n + i, "batch": j, "pad": "p" * (i % 7)} for i in range(n)])
        out("ACK", j)
        time.sleep(0.002)
    out("RESULT", "done")


def follow_batches(db: str, source: str, table: str, batches: str, size: str) -> None:
    """For each batch j: wait (bounded) until ``source`` holds its first row,
    then insert the same ids into ``table``: so ``table`` never holds a key
    ``source`` did not hold before."""
    d = DictDB.attach(db)
    src, dst = d.get_table(source), d.get_table(table)
    out("READY")
    n = int(size)
    for j in range(int(batches)):
        deadline = time.monotonic() + 60
        while src.get(j * n) is None:
            if time.monotonic() > deadline:
                sys.exit(f"batch {j} never appeared in {source}")
            time.sleep(0.001)
        dst.insert([{"id": j * n + i, "batch": j} for i in range(n)])
        out("ACK", j)
    out("RESULT", "done")


def durable_writer(db: str, directory: str, durability: str) -> None:
    """Open the durable database and write until killed, printing what each
    call acknowledged: ``ACK one <id>``, ``ACK bulk <first id> <n>``, ``ACK n <k>``
    (the counter row 0 set to k).  Ids go on from the largest restored one."""
    from dictdb_shm import DuplicateTableError
    d = DictDB(db, path=directory, durability=durability)
    try:
        d.create_table("t")
    except DuplicateTableError:
        pass
    t = d.get_table("t")
    rows = t.all()
    next_id = max([r["id"] for r in rows] + [0]) + 1
    k = (t.get(0) or {}).get("n", 0)
    if t.get(0) is None:
        t.insert({"id": 0, "n": 0})
    out("READY")
    step = 0
    while True:
        step += 1
        if step % 3 == 0:
            n = 1 + step % 40
            t.insert([{"id": next_id + i, "bulk": next_id, "size": n} for i in range(n)])
            out("ACK bulk", next_id, n)
            next_id += n
        elif step % 3 == 1:
            t.insert({"id": next_id, "one": True})
            out("ACK one", next_id)
            next_id += 1
        else:
            k += 1
            t.update({"n": k}, where=t.id == 0)
            out("ACK n", k)


def start_backups(db: str, directory: str, interval: str, fmt: str) -> None:
    """Start a BackupManager and exit: the coordinator goes on with it."""
    from dictdb_shm import BackupManager
    BackupManager(DictDB.attach(db), directory, backup_interval=float(interval),
                  file_format=fmt).start()
    out("RESULT", "started")


def parallel_query_then_wait(db: str, table: str) -> None:
    """Run a query with workers=2, report the pool's pids, then wait to be killed."""
    from dictdb_shm.parallel import pool
    t = DictDB.attach(db).get_table(table)
    t.select(where=t.name.contains("1"), workers=2)
    out("RESULT", *pool.running(db).pids())
    time.sleep(120)


if __name__ == "__main__":
    globals()[sys.argv[1]](*sys.argv[2:])
