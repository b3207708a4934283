"""The shared cache: ``db.cache(name)`` (cache.py), its entries (entry.py),
settings (settings.py), shared counters (counters.py), eviction
(eviction.py) and ``memoize`` (memoize.py).  This file holds only this
docstring; it must never import its submodules (the public name is
``dictdb_shm.Cache``)."""
