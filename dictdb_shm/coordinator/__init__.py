"""The coordinator: one process per database that owns the lifecycle of its
shared objects.  ``service`` is the process itself, ``client`` what other
processes use to reach it.  Workers never talk to it on the data path."""
