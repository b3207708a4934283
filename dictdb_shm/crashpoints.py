"""Crash points: named steps where a test can freeze a process, to kill it there.

Owns: ``reach(point)``, called at the steps of multi-step edits whose every
interruption must be repairable (catalog edits, semaphore creation, coordinator
start-up).  Must never: do anything in normal use.

When the environment variable ``DICTDB_SHM_TEST_PAUSE`` names a point, the
process stops itself (SIGSTOP) on reaching it, before the next step; the test then SIGKILLs it (to
prove the repair) or SIGCONTs it.  The variable is read once at import; when
it is unset ``reach`` is a function that does nothing, so the points cost one
call each on rare paths.  On a data path (engine/inplace.py) the caller
tests ``ARMED`` first, so an unset variable costs one global load there.
"""

from __future__ import annotations

import os
import signal
import threading

ENV = "DICTDB_SHM_TEST_PAUSE"
_ARMED = os.environ.get(ENV, "")
ARMED = bool(_ARMED)


def _stop_at(point: str) -> None:
    if point == _ARMED:
        # Sent to this thread, not the process: a process-directed SIGSTOP may
        # be taken by another thread while this one runs on past the point.
        signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)


def _ignore(point: str) -> None:
    return None


reach = _stop_at if _ARMED else _ignore
