"""Processes for tests/test_django_cache.py's cross-process test: each
configures Django in-process with the same CACHES as the test and uses
``django.core.cache.caches["default"]``.

    python tests/django_workers.py SCENARIO DB_NAME ARGS...
"""

from __future__ import annotations

import sys

import django
from django.conf import settings


def configure(db: str) -> None:
    settings.configure(CACHES={"default": {
        "BACKEND": "dictdb_shm.contrib.django.DictDBCache", "LOCATION": db,
        "OPTIONS": {"cache": "django"}}})
    django.setup()


def incr(n: str, name: str) -> None:
    from django.core.cache import cache
    print("READY", flush=True)
    sys.stdin.readline()                     # start together
    for _ in range(int(n)):
        cache.incr("counter")
    print("won" if cache.add("winner", name) else "lost", flush=True)


def read(key: str) -> None:
    from django.core.cache import cache
    print("GOT", repr(cache.get(key)), flush=True)


if __name__ == "__main__":
    configure(sys.argv[2])
    {"incr": incr, "read": read}[sys.argv[1]](*sys.argv[3:])
