"""The public API objects: DictDB (a database handle) and Table."""
