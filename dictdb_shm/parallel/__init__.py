"""Parallel queries: ``t.select(..., workers=N)`` and ``t.aggregate(...,
workers=N)`` split over processes that read the shared memory directly.

Owns nothing itself (only this docstring).  Must never: be imported by the
engine, the lock or the query layer; it sits beside core/, above them.

Modules, each importing only those listed before it:

* :mod:`.plan` -- whether to split (the ``workers`` argument, the size
  threshold of ``workers=None``) and which access paths can be split.
* :mod:`.part` -- one part of a query, as it travels (``PartTask``) and as
  it runs, in the calling process or in a worker.
* :mod:`.merge` -- the parts' answers put back together in heap order.
* :mod:`.worker` -- the worker process: attach by name, answer tasks.
* :mod:`.pool` -- the worker processes of one database in this process.
* :mod:`.query` -- a parallel select or aggregate, start to end.
"""
