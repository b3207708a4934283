"""Gunicorn hooks: the database's life follows the server's.

Owns: the hooks a gunicorn config installs (``on_starting``, ``post_fork``,
``on_exit``) and what each does to the database.  Must never: import
gunicorn (the hooks are plain functions gunicorn calls), or touch the
application's own handles.

In a gunicorn config file (``gunicorn -c gunicorn.conf.py app:app``)::

    from dictdb_shm.contrib.gunicorn import DatabaseHooks

    def setup(db):
        db.create_table("sessions", exist_ok=True, ttl=3600)

    DatabaseHooks("webapp", setup=setup, on_exit="destroy").install(globals())

* ``on_starting`` (the master, before any worker): create the database or
  attach to it (``DictDB(name)``), so its coordinator is the master's
  doing, then run ``setup(db)``.
* ``post_fork`` (each worker, after the fork): check the master's handle
  still works in the worker, so a database destroyed from outside fails
  the worker's boot with a clear error instead of its first request.
* ``on_exit`` (the master, after the last worker stopped): ``"destroy"``
  removes the database for everyone (a durable one keeps its directory);
  ``"keep"`` only detaches, and the data waits for the next start.

``--preload`` imports the application in the master *before*
``on_starting``, so the application opens the database itself with
``DictDB(name)`` (create or attach), never ``DictDB.attach``; its handles
are then inherited by every worker and keep working there (see
core/database.py, "Fork").  ``--max-requests`` forks new workers from the
master at any time: nothing to do, for the same reason.  A worker killed
mid-request (SIGKILL, the arbiter's timeout) leaves no lock held: the next
process to need it repairs it (lock/rwlock.py).
"""

from __future__ import annotations

import os
from typing import Any, Callable

from dictdb_shm.core.database import DictDB
from dictdb_shm.errors import DatabaseNotFoundError, InvalidArgumentError

ON_EXIT = ("destroy", "keep")
HOOKS = ("on_starting", "post_fork", "on_exit")


class DatabaseHooks:
    """Gunicorn server hooks for the database ``name``.

    ``setup(db)``, if given, runs once in the master after the database is
    open (create tables with ``exist_ok=True`` there: it also runs when the
    database already existed).  ``on_exit`` is ``"destroy"`` or ``"keep"``.
    ``path`` and ``durability`` make it durable (``DictDB``'s arguments).
    """

    def __init__(self, name: str, *, on_exit: str = "destroy",
                 setup: Callable[[DictDB], Any] | None = None,
                 path: str | os.PathLike | None = None, durability: str = "everysec",
                 lock_timeout: float | None = None) -> None:
        if on_exit not in ON_EXIT:
            raise InvalidArgumentError(f"on_exit must be one of {ON_EXIT}, not {on_exit!r}")
        if setup is not None and not callable(setup):
            raise InvalidArgumentError("setup must be a callable taking the database")
        self.name = name
        self.on_exit_action = on_exit
        self._setup = setup
        self._open_args = {"path": path, "durability": durability, "lock_timeout": lock_timeout}
        self._db: DictDB | None = None

    def database(self) -> DictDB:
        """This process's handle: the master's (inherited by workers), or a
        new create-or-attach when none is open yet."""
        if self._db is None:
            self._db = DictDB(self.name, **self._open_args)
        return self._db

    # ----------------------------------------------------------------- hooks
    def on_starting(self, server: Any) -> None:
        db = self.database()
        if self._setup is not None:
            self._setup(db)

    def post_fork(self, server: Any, worker: Any) -> None:
        self.database().list_tables()       # raises if the database is gone

    def on_exit(self, server: Any) -> None:
        db, self._db = self._db, None
        if self.on_exit_action == "keep":
            if db is not None:
                db.close()
            return
        if db is None:
            try:
                db = DictDB.attach(self.name)
            except DatabaseNotFoundError:
                return                      # destroyed already
        db.destroy()

    def install(self, namespace: dict[str, Any]) -> None:
        """Set the hooks in a gunicorn config's namespace (``globals()``);
        a hook the config defines already runs too, after ours (before ours
        for ``on_exit``)."""
        for hook in HOOKS:
            mine = getattr(self, hook)
            theirs = namespace.get(hook)
            namespace[hook] = mine if theirs is None else _chain(hook, mine, theirs)


def _chain(hook: str, mine: Callable, theirs: Callable) -> Callable:
    first, second = (theirs, mine) if hook == "on_exit" else (mine, theirs)

    def both(*args: Any) -> None:
        first(*args)
        second(*args)
    both.__name__ = hook
    return both
