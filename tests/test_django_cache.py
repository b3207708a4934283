"""dictdb_shm.contrib.django.DictDBCache through Django's own cache API and
the behaviours Django's cache test suite expects of every backend (written
anew here from those semantics): keys with prefix, version and KEY_FUNCTION,
timeouts (default, None, 0, floats), add/touch/incr rules, the *_many
calls, data types kept exactly by pickle, eviction bounds, async wrappers;
and one test across processes (each configuring Django itself)."""

from __future__ import annotations

import asyncio
import datetime
import os
import pickle
import time
import warnings

import django  # a test extra: pip install -e '.[test]'
import pytest
from django.conf import settings
from django.core.cache.backends.base import CacheKeyWarning

from conftest import ROOT, new_db_name, spawner
from dictdb_shm import names
from dictdb_shm.coordinator import client
from dictdb_shm.errors import InvalidArgumentError, InvalidNameError

DB = new_db_name()
BACKEND = "dictdb_shm.contrib.django.DictDBCache"


def reverse_key(key, key_prefix, version):
    return f"{version}/{key_prefix}/{key}"


def _alias(**extra):
    conf = {"BACKEND": BACKEND, "LOCATION": DB, "OPTIONS": {"cache": "django"}}
    conf.update(extra)
    return conf


settings.configure(CACHES={
    "default": _alias(),
    "prefixed": _alias(KEY_PREFIX="cacheprefix"),
    "v2": _alias(VERSION=2),
    "custom_key": _alias(KEY_FUNCTION=reverse_key),
    "custom_key_path": _alias(KEY_FUNCTION=f"{__name__}.reverse_key"),
    "forever": _alias(TIMEOUT=None),
    "instant": _alias(TIMEOUT=0),
    "bounded": _alias(OPTIONS={"cache": "bounded", "max_items": 10}),
})
django.setup()
from django.core.cache import cache, caches  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def database():
    yield
    client.destroy(DB)
    assert names.shm_entries(DB) == []


@pytest.fixture(autouse=True)
def empty():
    cache.clear()
    caches["bounded"].clear()


class Plain:
    def __init__(self, v):
        self.v = v

    def __eq__(self, other):
        return isinstance(other, Plain) and other.v == self.v


class Unpicklable:
    def __getstate__(self):
        raise pickle.PickleError("not today")


def answer():
    return 42


def test_set_get_and_defaults():
    cache.set("k", "v")
    assert cache.get("k") == "v"
    assert cache.get("missing") is None and cache.get("missing", "dflt") == "dflt"
    cache.set("none", None)
    assert cache.get("none", "dflt") is None          # a stored None is a hit
    assert cache.has_key("none") and "none" in cache


def test_add_only_when_absent():
    assert cache.add("k", "first") is True
    assert cache.add("k", "second") is False
    assert cache.get("k") == "first"


def test_prefixes_and_versions_keep_keys_apart():
    cache.set("k", "plain")
    assert not caches["prefixed"].has_key("k")
    caches["prefixed"].set("k", "prefixed")
    assert cache.get("k") == "plain" and caches["prefixed"].get("k") == "prefixed"
    cache.set("vk", "two", version=2)
    assert cache.get("vk") is None and cache.get("vk", version=2) == "two"
    assert caches["v2"].get("vk") == "two" and caches["v2"].get("vk", version=1) is None
    assert cache.add("vk", "one") and cache.get("vk") == "one"
    cache.delete("vk", version=2)
    assert caches["v2"].get("vk") is None and cache.get("vk") == "one"


def test_version_moves():
    cache.set("m", "value", version=1)
    assert cache.incr_version("m") == 2
    assert cache.get("m") is None and cache.get("m", version=2) == "value"
    assert cache.decr_version("m", version=2) == 1 and cache.get("m") == "value"
    with pytest.raises(ValueError):
        cache.incr_version("does_not_exist")


def test_custom_key_functions():
    for alias in ("custom_key", "custom_key_path"):
        c = caches[alias]
        c.set("k", alias)
        assert c.get("k") == alias
        assert c.make_key("k") == "1//k"
        assert cache.get("k") is None                  # another key entirely
        c.delete("k")


def test_get_many_set_many_delete_many():
    assert cache.set_many({"a": 1, "b": 2, "c": 3}) == []
    assert cache.get_many(["a", "c", "missing"]) == {"a": 1, "c": 3}
    assert cache.get_many(iter(["b", "a"])) == {"b": 2, "a": 1}
    assert cache.get_many(["a"], version=2) == {}
    cache.set_many({"a": "v2"}, version=2)
    assert cache.get_many(["a"], version=2) == {"a": "v2"}
    cache.delete_many(["a", "b", "missing"])
    assert cache.get_many(["a", "b", "c"]) == {"c": 3}
    assert cache.delete_many([]) is None


def test_delete_says_whether_there_was_a_value():
    cache.set("k", 1)
    assert cache.delete("k") is True
    assert cache.delete("k") is False and not cache.has_key("k")


def test_incr_and_decr():
    cache.set("n", 1)
    assert cache.incr("n") == 2 and cache.incr("n", 10) == 12
    assert cache.decr("n") == 11 and cache.decr("n", 10) == 1 and cache.incr("n", -1) == 0
    assert cache.get("n") == 0
    with pytest.raises(ValueError):
        cache.incr("missing")
    with pytest.raises(ValueError):
        cache.decr("missing")
    cache.set("null", None)
    with pytest.raises(TypeError):
        cache.incr("null")
    cache.set("n2", 5, version=2)
    assert cache.incr("n2", version=2) == 6 and cache.get("n2") is None


def test_values_come_back_as_they_went_in():
    values = {"str": "text", "int": 42, "big": 2**80, "float": 1.5, "bool": True,
              "list": [1, [2, 3]], "tuple": (1, 2, (3,)), "set": {1, 2},
              "dict": {"A": 1, 2: "b"}, "bytes": b"\x00\xffraw", "function": answer,
              "class": Plain, "object": Plain([1, 2]),
              "datetime": datetime.datetime(2026, 12, 2, 18, 0, tzinfo=datetime.timezone.utc),
              "unicode": "Ąčęėįšųūž 中文 ✓"}
    cache.set_many(values)
    got = cache.get_many(values)
    assert got == values
    assert type(got["tuple"]) is tuple and type(got["bool"]) is bool
    assert got["function"]() == 42
    cache.set("ключ-中文", "value")
    assert cache.get("ключ-中文") == "value"


def test_unpicklable_values_raise_a_pickle_error():
    with pytest.raises(pickle.PickleError):
        cache.set("bad", Unpicklable())
    with pytest.raises(pickle.PickleError):
        cache.add("bad", Unpicklable())
    assert not cache.has_key("bad")


def test_expiry():
    cache.set("short", "gone soon", 0.3)
    cache.set_many({"m1": 1, "m2": 2}, timeout=0.3)
    cache.add("added", "gone soon", 0.3)
    cache.set("long", "stays", 60 * 60 * 24 * 365)   # a year
    cache.set("float", "stays", 100.2)
    time.sleep(0.6)
    assert cache.get("short") is None and not cache.has_key("short")
    assert cache.get_many(["m1", "m2"]) == {}
    assert cache.add("added", "again") is True and cache.get("added") == "again"
    assert cache.get("long") == "stays" and cache.get("float") == "stays"


def test_zero_and_negative_timeouts_expire_at_once():
    cache.set("k", "old")
    cache.set("k", "new", 0)
    assert cache.get("k") is None
    assert cache.add("k2", "v", 0) is True and cache.get("k2") is None
    cache.set_many({"k3": 1, "k4": 2}, 0)
    assert cache.get_many(["k3", "k4"]) == {}
    cache.set("k5", "v", -1)
    assert not cache.has_key("k5")
    instant = caches["instant"]                       # TIMEOUT: 0
    instant.set("k6", "v")
    assert instant.get("k6") is None


def test_none_timeout_never_expires():
    cache.set("forever", "v", None)
    assert cache.add("forever_add", "v", None)
    caches["forever"].set("default_forever", "v")     # TIMEOUT: None
    cache.set("short", "v", 0.3)
    assert cache.touch("short", None)
    time.sleep(0.6)
    assert cache.get_many(["forever", "forever_add", "default_forever", "short"]) == {
        "forever": "v", "forever_add": "v", "default_forever": "v", "short": "v"}


def test_touch():
    cache.set("k", "v", 0.3)
    assert cache.touch("k", 60) is True
    assert cache.touch("missing") is False
    time.sleep(0.6)
    assert cache.get("k") == "v"
    assert cache.touch("k", 0) is True and cache.get("k") is None
    assert cache.touch("k") is False


def test_get_or_set():
    assert cache.get_or_set("k", "computed") == "computed"
    assert cache.get_or_set("k", "other") == "computed"
    assert cache.get_or_set("f", answer) == 42
    assert cache.get_or_set("n", None) is None
    assert cache.get("n", "default") is None           # the None was stored
    assert cache.get_or_set("k", "v2", version=2) == "v2" and cache.get("k") == "computed"


def test_keys_memcached_would_refuse_warn_but_work():
    for key in ("key with spaces", "x" * 300, "ctl\x07char"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cache.set(key, "v")
            assert cache.get(key) == "v"
        assert any(issubclass(w.category, CacheKeyWarning) for w in caught)


def test_clear_empties_every_prefix():
    cache.set("a", 1)
    caches["prefixed"].set("b", 2)
    cache.clear()
    assert cache.get("a") is None and caches["prefixed"].get("b") is None


def test_max_items_bounds_the_cache():
    bounded = caches["bounded"]
    for i in range(50):
        bounded.set(f"k{i}", i)
    kept = [i for i in range(50) if bounded.has_key(f"k{i}")]
    assert 0 < len(kept) <= 10                        # approximate LRU: which ones varies
    assert cache.get("k49") is None                   # another cache


def test_close_keeps_the_cache_usable():
    cache.set("k", "v")
    cache.close()
    assert cache.get("k") == "v"


def test_async_calls():
    async def run():
        await cache.aset("ak", "av")
        assert await cache.aget("ak") == "av"
        assert await cache.aadd("ak", "other") is False
        await cache.aset("an", 1)
        assert await cache.aincr("an") == 2
        assert await cache.adelete("ak") is True
        return await cache.aget_many(["ak", "an"])
    assert asyncio.run(run()) == {"an": 2}


def test_unknown_options_are_refused():
    from dictdb_shm.contrib.django import DictDBCache
    with pytest.raises(InvalidArgumentError, match="unknown OPTIONS"):
        DictDBCache(DB, {"OPTIONS": {"max_item": 3}})
    with pytest.raises(InvalidArgumentError):
        DictDBCache("", {})
    with pytest.raises(InvalidNameError):
        DictDBCache("no/slashes", {})
    with pytest.raises(InvalidNameError):
        DictDBCache(DB, {"OPTIONS": {"cache": "a/b"}})


@pytest.fixture
def spawn():
    yield from spawner(os.path.join(ROOT, "tests", "django_workers.py"))


def test_processes_share_the_cache(spawn):
    """Each process configures Django with the same CACHES: increments from
    three at once are exact, add has one winner, a set is seen elsewhere."""
    cache.set("counter", 0, None)
    cache.set("greeting", ("hello", datetime.date(2026, 12, 2)))
    workers = [spawn("incr", DB, 200, f"w{i}") for i in range(3)]
    for w in workers:
        w.expect("READY", timeout=60)
    for w in workers:
        w.send("go")
    outcomes = sorted(w.read_line(timeout=120) for w in workers)
    assert outcomes == ["lost", "lost", "won"]
    assert cache.get("counter") == 600
    assert cache.get("winner") in ("w0", "w1", "w2")
    reader = spawn("read", DB, "greeting")
    assert reader.expect("GOT") == "('hello', datetime.date(2026, 12, 2))"
