"""Change tracking marks: where in a table's heap "changed since" begins.

Owns: moving a table's tracking mark, the ``track_mark`` of its descriptor
(layout.py), with one descriptor flip under the table's write lock.  Records
appended after the mark are the changes since it (the heap is append-only);
a compaction that moved records not yet reported sets TRACK_LOST
(growth.rebuild), and the next report must then be a full one.  Must never:
decode records (persistence/tracking.py does, from a captured image) or
move the mark without holding the table's write lock.
"""

from __future__ import annotations

from typing import Any

from dictdb_shm.engine.layout import TRACK_LOST

__all__ = ["TRACK_LOST", "move_mark"]


def move_mark(store: Any, to: int | None = None,
              expected: tuple[int, int] | None = None) -> bool:
    """Under the table's write lock: set the mark to ``to`` (default: the
    committed end, "nothing changed since now").  With ``expected`` (the
    mark and heap segment a capture saw), only while both are unchanged: a
    report made from a capture moves the mark to the capture's end unless
    the heap was replaced (its offsets may have moved) or another report
    moved the mark meanwhile.  Returns whether it moved."""
    desc = store.read(lambda s: s.desc)
    if expected is not None and (desc.track_mark, desc.heap_seg) != expected:
        return False
    end = desc.heap_end if to is None else to
    if desc.track_mark != end:
        store.publish(desc._replace(track_mark=end))
    return True
