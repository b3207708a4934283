"""Moving table data between a database and files.

Owns: file formats and their conversion to and from records (``csv_io``:
CSV import/export).  Must never: touch shared memory or locks directly; it
works through the public DictDB/Table API, so every write it makes keeps the
table's usual all-or-nothing guarantees.
"""

from dictdb_shm.persistence.csv_io import export_csv, import_csv

__all__ = ["import_csv", "export_csv"]
