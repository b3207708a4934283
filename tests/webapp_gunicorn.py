"""The gunicorn config tests/test_web.py runs tests/webapp.py with: the
recipe of docs/workers.md, the database named by $WEBAPP_DB, kept or
destroyed at exit per $WEBAPP_ON_EXIT."""

import os

from dictdb_shm.contrib.gunicorn import DatabaseHooks


def setup(db):
    db.create_table("counts", exist_ok=True)


DatabaseHooks(os.environ["WEBAPP_DB"], setup=setup,
              on_exit=os.environ.get("WEBAPP_ON_EXIT", "destroy")).install(globals())

workers = 4
worker_class = "sync"
timeout = 120
graceful_timeout = 10
