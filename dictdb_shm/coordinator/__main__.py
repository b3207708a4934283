"""Command line: ``python -m dictdb_shm.coordinator serve|stop|status NAME``."""

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
    stop = sub.add_parser("stop", help="destroy a database and stop its coordinator")
    stop.add_argument("name")
    status = sub.add_parser("status", help="say whether a database exists and who serves it")
    status.add_argument("name")
    args = parser.parse_args(argv)

    if args.command == "serve":
        from dictdb_shm.coordinator.service import run
        return run(args.name, args.private, tuple(args.owner))
    from dictdb_shm.coordinator import client
    if args.command == "stop":
        client.destroy(args.name)
        return 0
    info = client.status(args.name)
    print(info)
    return 0 if info.get("exists") else 1


if __name__ == "__main__":
    sys.exit(main())
