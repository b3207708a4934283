"""A small WSGI application that tests/test_web.py serves with gunicorn.

It opens its database at import with ``DictDB(name)`` (create or attach), as
docs/workers.md tells applications to: under ``--preload`` this runs in the
master before ``on_starting``, and the workers inherit the handles.

* ``/hit``: add 1 to the cache counter ``n`` and, under the table's write
  lock, to row 1 of ``counts``; answers ``{"pid", "n"}`` (the counter's new value).
* ``/hold``: take ``counts``' write lock and ``sessions``' read lock, say so
  in the cache (``holder``: the pid), then sleep until killed.
* ``/ping``: ``{"pid"}``.
"""

from __future__ import annotations

import json
import os
import time

from dictdb_shm import DictDB

db = DictDB(os.environ["WEBAPP_DB"])
counts = db.create_table("counts", exist_ok=True)
sessions = db.create_table("sessions", exist_ok=True)
hits = db.cache("hits")
counts.upsert({"id": 1, "n": 0}, on_conflict="ignore")


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/hit":
        n = hits.incr("n")
        with counts.lock.write_lock():
            counts.update({"n": counts.get(1)["n"] + 1}, where=counts.id == 1)
        body = {"pid": os.getpid(), "n": n}
    elif path == "/hold":
        with counts.lock.write_lock(), sessions.lock.read_lock():
            hits.set("holder", os.getpid())
            time.sleep(120)
        body = {"pid": os.getpid()}
    elif path == "/ping":
        body = {"pid": os.getpid()}
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]
    data = json.dumps(body).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(data)))])
    return [data]
