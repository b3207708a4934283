"""Command line: ``python -m dictdb_shm.coordinator serve|stop|status NAME``.

Owns: parsing these three commands and turning errors into exit codes.  Must
never: do the work itself (service.py and client.py do) or print a
traceback for an error a user can fix.  Exit status 0 on success, 1 with a one-line message on stderr for an error a
user can fix (a bad or missing name, a database of another user).
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dictdb_shm.coordinator")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the coordinator of a database in the foreground")
    serve.add_argument("name")
    serve.add_argument("--private", action="store_true")
    serve.add_argument("--owner", nargs=2, type=int, default=(0, 0), metavar=("PID", "TICKS"))
    serve.add_argument("--existing", action="store_true",
                       help="adopt an existing database only; never create one")
    serve.add_argument("--path", default=None,
                       help="the directory of a durable database: restored at start, "
                            "journaled while it runs")
    serve.add_argument("--durability", default="everysec",
                       choices=("always", "everysec", "no"))
    serve.add_argument("--report-fd", type=int, default=None,
                       help="pipe to report the start-up outcome to (used by DictDB())")
    stop = sub.add_parser("stop", help="destroy a database and stop its coordinator")
    stop.add_argument("name")
    status = sub.add_parser("status", help="say whether a database exists and who serves it")
    status.add_argument("name")
    args = parser.parse_args(argv)

    from dictdb_shm import names
    from dictdb_shm.errors import DictDBError
    try:
        names.check_db_name(args.name)
    except DictDBError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.command == "serve":
        from dictdb_shm.coordinator.service import run
        return run(args.name, args.private, tuple(args.owner), report_fd=args.report_fd,
                   existing_only=args.existing, path=args.path, durability=args.durability)
    from dictdb_shm.coordinator import client
    try:
        if args.command == "stop":
            if client.catalog_exists(args.name):
                from dictdb_shm.introspect import what_destroy_removes
                print(what_destroy_removes(args.name), file=sys.stderr)
            client.destroy(args.name)
            return 0
        info = client.status(args.name)
    except DictDBError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(info)
    return 0 if info.get("exists") else 1


if __name__ == "__main__":
    sys.exit(main())
