"""The same DictDB scenario gives identical results on a private database in
one process and on a named database used from two processes.

In the two-process run the steps alternate between this process and a worker
that attached by name; queries travel to it as pickled query trees.
"""

from __future__ import annotations

import base64
import pickle

from dictdb_shm import DictDB
from scenario import STEPS, run_step


def test_one_process_private_equals_two_processes_named(db_name, spawn):
    private = DictDB()
    alone = [run_step(private, step) for step in STEPS]
    private.close()

    named = DictDB(db_name)
    worker = spawn("serve_steps", db_name)
    worker.expect("READY")
    shared = []
    for n, step in enumerate(STEPS):
        if n % 2:
            worker.send(base64.b64encode(pickle.dumps(step)).decode())
            shared.append(pickle.loads(base64.b64decode(worker.expect("RESULT"))))
        else:
            shared.append(run_step(named, step))
    worker.send("")
    worker.finish()
    named.close()

    for step, a, b in zip(STEPS, alone, shared):
        assert a == b, f"step {step[:2]} differs: {a!r} vs {b!r}"
    errors = [s[1] for s, r in zip(STEPS, alone) if r[0] == "error"]
    assert errors == ["update", "upsert", "insert", "insert", "get_table"]
