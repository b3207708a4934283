"""The cross-process reader-writer lock of a table (rwlock.py).

Owns: mutual exclusion between processes and threads, and repair after a
holder dies.  Must never: read or write records; after repairing it calls
back into the store's ``recover``.
"""
