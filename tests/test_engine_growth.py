"""Growth and compaction (engine/growth.py): a table grows by what /dev/shm can
hold, compacts when it is mostly dead weight, and when even a tight rebuild
does not fit says how much it needed and how much was free."""

from __future__ import annotations

from conftest import needs_private_shm, run_with_small_shm
from dictdb_shm import DictDB

# A small /dev/shm of its own (a private mount namespace), as in a container.
SMALL_SHM = r'''
import json, os
from dictdb_shm import DictDB, DatabaseFullError
db = DictDB("small")
t = db.create_table("t")
blob = "x" * 1000
done, error = 0, None
try:
    for start in range(0, 300_000, 2_000):
        t.insert([{"id": i, "blob": blob} for i in range(start, start + 2_000)])
        done = start + 2_000
except DatabaseFullError as exc:
    error = str(exc)
stats = t._store.read(lambda s: s.stats())
print(json.dumps({"rows": done, "count": t.count(), "error": error,
                  "live_mib": stats["live_bytes"] / 2**20}))
db.destroy()
'''


@needs_private_shm
def test_a_table_grows_by_less_when_dev_shm_is_short():
    """With 100 MiB of /dev/shm, a heap that always doubles stops at 30 MiB
    of rows (its next copy would be 64 MiB beside the old 32); growing by
    what fits holds more, and the error at the end names what was needed
    and what was free."""
    result = run_with_small_shm(SMALL_SHM, "100m")
    assert result["count"] == result["rows"]              # every failed insert left nothing
    assert result["live_mib"] > 35, result
    assert result["error"] is not None and "MiB are free" in result["error"], result
    assert "needs" in result["error"]


def test_a_table_rewritten_forever_stays_bounded(db_name):
    db = DictDB(db_name)
    t = db.create_table("t")
    t.insert([{"id": i, "v": 0} for i in range(1000)])
    caps = set()
    for round_ in range(60):
        t.update({"v": round_})
        caps.add(t._store.read(lambda s: s.stats())["heap_capacity"])
    assert len(caps) <= 2 and t.count() == 1000
    assert {r["v"] for r in t.all()} == {59}
    db.close()
