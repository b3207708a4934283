"""Change tracking as DictDB offers it, database-wide, and the deltas built on it.

Owns: ``has_changes``, ``get_dirty_records``, ``get_deleted_pks`` and
``clear_dirty_tracking`` of a table (every process's writes count: the
changes are the records appended to the shared heap after the table's
tracking mark, engine/tracking.py), and a delta of a whole database from one
consistent capture.  Must never: move a mark past changes it did not report,
or hold a lock while decoding.

When a compaction had to move records that were not reported yet, the
table's changes are unknown (TRACK_LOST): ``has_changes()`` is True,
``get_dirty_records()`` returns every record, ``get_deleted_pks()`` the
deletes made since that compaction, and a BackupManager writes a full backup
instead of a delta.
"""

from __future__ import annotations

from typing import Any

from dictdb_shm.engine import tracking
from dictdb_shm.persistence.capture import TableImage, capture


def _image(table: Any) -> TableImage:
    store = table._store
    meta = {"pk": table.primary_key}
    return capture([(table.table_name, meta, store)], table._db._attachment().lock_timeout)[0]


def has_changes(table: Any) -> bool:
    desc = table._store.read(lambda s: s.desc)
    return desc.track_mark == tracking.TRACK_LOST or desc.heap_end > desc.track_mark


def dirty_records(table: Any) -> list[dict]:
    """The records inserted or updated since the mark (all of them when lost)."""
    img = _image(table)
    start = 0 if img.track_mark == tracking.TRACK_LOST else img.track_mark
    return [r for chunk in img.records(start=start) for r in chunk]


def deleted_pks(table: Any) -> list[Any]:
    img = _image(table)
    start = 0 if img.track_mark == tracking.TRACK_LOST else img.track_mark
    return img.deleted_keys(start)


def clear(table: Any) -> None:
    with table.lock.write_lock():
        tracking.move_mark(table._store)


# ------------------------------------------------------------------ deltas
def delta_of(images: list[TableImage], known_tables: set[str] | None) -> dict | None:
    """The delta document of a capture: ``{"type": "delta", "tables": {name:
    {"upserts", "deletes", "primary_key", "schema"}}, "dropped": [...]}``
    (``primary_key``/``schema`` let ``apply_delta`` create a table made since
    the last backup; ``dropped`` names tables gone since, when
    ``known_tables`` says which there were).  None when a table's changes
    are lost: a full backup is needed."""
    tables = {}
    for img in images:
        if img.track_mark == tracking.TRACK_LOST:
            return None
        upserts = [r for chunk in img.records(start=img.track_mark) for r in chunk]
        deletes = img.deleted_keys(img.track_mark)
        if upserts or deletes or (known_tables is not None and img.name not in known_tables):
            tables[img.name] = {"upserts": upserts, "deletes": deletes,
                                "primary_key": img.primary_key, "schema": img.schema}
    dropped = sorted(known_tables - {i.name for i in images}) if known_tables else []
    return {"type": "delta", "tables": tables, "dropped": dropped}


def mark_reported(att: Any, images: list[TableImage]) -> None:
    """After a delta or full backup of ``images`` is safely written: each
    table's changes now begin at the end of what was captured."""
    for img in images:
        entry = att.catalog.find(img.name)
        if entry is None:
            continue
        lock, store = att.table(entry)
        with lock.write_lock():
            tracking.move_mark(store, to=len(img.heap), expected=(img.track_mark, img.heap_seg))
