"""Process identity that survives pid reuse.

Owns: ``(pid, start_ticks)`` identities and the question "is that process
still running?".  Must never: signal or otherwise touch another process.

A pid alone is not an identity: Linux reuses pids.  Every holder we record in
shared memory is a pid plus the process's start time in clock ticks since boot
(field 22 of /proc/<pid>/stat).  A zombie (killed, not yet reaped) counts as
dead: it can never release anything.
"""

from __future__ import annotations

import os

_own: tuple[int, int] | None = None


def start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks, or None when it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    rest = data[data.rfind(b")") + 2:].split()
    if rest[0] in (b"Z", b"X"):
        return None
    return int(rest[19])


def own_identity() -> tuple[int, int]:
    global _own
    pid = os.getpid()
    if _own is None or _own[0] != pid:
        ticks = start_ticks(pid)
        _own = (pid, ticks if ticks is not None else 0)
    return _own


def is_alive(pid: int, ticks: int) -> bool:
    if pid <= 0:
        return False
    now = start_ticks(pid)
    return now is not None and (ticks == 0 or now == ticks)
