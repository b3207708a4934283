"""The ``dictdb-shm`` command (also ``python -m dictdb_shm``).

Owns: parsing ``ls``, ``stat NAME``, ``serve NAME``, ``dump NAME FILE``,
``load FILE NAME``, ``backup NAME DIR`` and ``destroy NAME``, printing their
results, progress bars (tqdm, on stderr, only when it is a terminal), and
exit codes: 0 on success, 1 with a one-line message on stderr for an error a
user can fix, 130 on Ctrl-C.  Must never: print a traceback for such an
error, or do the work itself (introspect.py, persistence/ and the
coordinator do).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any, Callable, Iterator

PROG = "dictdb-shm"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Inspect, serve, dump, load and back "
                                "up dictdb_shm databases of this user on this machine.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("ls", help="list the databases: name, kind, coordinator, tables, bytes")
    s = sub.add_parser("stat", help="per table: rows, bytes, indexes, lock holders; "
                                    "attached processes")
    s.add_argument("name")
    s = sub.add_parser("serve", help="run the coordinator in the foreground (systemd, "
                                     "supervisor), logging to stderr")
    s.add_argument("name")
    s.add_argument("--path", help="directory of a durable database (restored at start)")
    s.add_argument("--durability", default="everysec", choices=("always", "everysec", "no"))
    for cmd, first, second, text in (("dump", "name", "file", "save a database to a file"),
                                     ("load", "file", "name", "make a database from a file")):
        s = sub.add_parser(cmd, help=text)
        s.add_argument(first)
        s.add_argument(second)
        s.add_argument("--format", default="json", choices=("json", "pickle"))
    s = sub.add_parser("backup", help="write a full backup into a directory now")
    s.add_argument("name")
    s.add_argument("dir")
    s.add_argument("--format", default="json", choices=("json", "pickle"))
    s = sub.add_parser("destroy", help="remove a database (a durable one keeps its directory)")
    s.add_argument("name")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from dictdb_shm.errors import DictDBError
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        return 130
    except (DictDBError, OSError) as exc:
        print(f"{PROG}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1


# ------------------------------------------------------------------ output
def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _table(rows: list[list[Any]], header: list[str]) -> None:
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


@contextlib.contextmanager
def _progress(what: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A tqdm bar on stderr when stderr is a terminal, else nothing."""
    from tqdm import tqdm
    bar = tqdm(total=total, desc=what, unit=" rows", unit_scale=True, file=sys.stderr,
               disable=not sys.stderr.isatty(), leave=False)
    try:
        yield bar.update
    finally:
        bar.close()


# ---------------------------------------------------------------- commands
def cmd_ls(args: argparse.Namespace) -> int:
    from dictdb_shm import introspect
    rows = []
    for db in introspect.database_names():
        i = introspect.summary(db)
        kind = "?" if i["private"] is None else "private" if i["private"] else "named"
        if i.get("path"):
            kind += " durable"
        rows.append([db, kind, i["coordinator"] or "-", "?" if i["tables"] is None
                     else i["tables"], _size(i["bytes"])])
    _table(rows, ["NAME", "KIND", "COORDINATOR", "TABLES", "BYTES"])
    return 0


def cmd_stat(args: argparse.Namespace) -> int:
    from dictdb_shm import DictDB, introspect
    db = DictDB.attach(args.name)
    try:
        info = introspect.summary(args.name)
        print(f"database {args.name}: {'private' if info['private'] else 'named'}, "
              f"coordinator pid {info['coordinator'] or '-'}, "
              f"{_size(info['bytes'])} in /dev/shm"
              + (f", durable in {info['path']}" if info.get("path") else ""))
        rows = []
        for t in introspect.table_stats(db):
            holders = [f"writer {p} ({introspect.process_name(p)})" for p in [t["writer"]] if p]
            holders += [f"reader {p} ({introspect.process_name(p)})" for p in t["readers"]]
            rows.append([t["table"], t["rows"], _size(t["bytes_used"]), _size(t["bytes_free"]),
                         t["indexes"] if isinstance(t["indexes"], str) else
                         ",".join(f"{f}:{k}" for f, k in t["indexes"].items()) or "-",
                         "; ".join(holders) or "-"])
        _table(rows, ["TABLE", "ROWS", "USED", "FREE", "INDEXES", "LOCK HOLDERS"])
        print("attached processes:")
        for p in introspect.attached_processes(args.name):
            print(f"  {p['pid']}  {p['name']}")
    finally:
        db.close()
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from dictdb_shm import names
    from dictdb_shm.coordinator import client, service
    names.check_db_name(args.name)
    if client.coordinator_running(args.name):
        print(f"{PROG}: error: database {args.name!r} already has a coordinator",
              file=sys.stderr)
        return 1
    return service.run(args.name, False, (0, 0), path=args.path, durability=args.durability)


def cmd_dump(args: argparse.Namespace) -> int:
    from dictdb_shm import DictDB
    from dictdb_shm.persistence import saveload
    db = DictDB.attach(args.name)
    try:
        total = sum(db.get_table(t).count() for t in db.list_tables())
        with _progress(f"dump {args.name}", total) as step:
            saveload.save(db, args.file, args.format, progress=step)
    finally:
        db.close()
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    from dictdb_shm import DictDB
    from dictdb_shm.persistence import saveload
    with _progress(f"load {args.name}", None) as step:
        db = saveload.load(DictDB, args.file, args.format, name=args.name, progress=step)
    db.close()
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    import os

    from dictdb_shm import DictDB
    from dictdb_shm.persistence import backup_service, backups, saveload
    db = DictDB.attach(args.name)
    try:
        os.makedirs(args.dir, exist_ok=True)
        path = backup_service.new_name(args.dir, backups.FULL_PREFIX, args.format)
        total = sum(db.get_table(t).count() for t in db.list_tables())
        with _progress(f"backup {args.name}", total) as step:
            saveload.save(db, path, args.format, progress=step)
    finally:
        db.close()
    print(path)
    return 0


def cmd_destroy(args: argparse.Namespace) -> int:
    from dictdb_shm import introspect, names
    from dictdb_shm.coordinator import client
    from dictdb_shm.errors import DatabaseNotFoundError
    names.check_db_name(args.name)
    if not client.catalog_exists(args.name):
        raise DatabaseNotFoundError(f"no database named {args.name!r} on this machine")
    print(introspect.what_destroy_removes(args.name), file=sys.stderr)
    client.destroy(args.name)
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "ls": cmd_ls, "stat": cmd_stat, "serve": cmd_serve, "dump": cmd_dump, "load": cmd_load,
    "backup": cmd_backup, "destroy": cmd_destroy}
