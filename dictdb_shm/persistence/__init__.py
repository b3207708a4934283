"""Moving a database between shared memory and files.

Owns: file formats and their conversion to and from records (``csv_io``:
CSV; ``formats``: the JSON and pickle saves; ``unpickler``: plain data only),
consistent images of tables (``capture``), whole-or-nothing files
(``atomic``) and the save and load calls (``saveload``).  Must never: reach
shared memory except through the StorageEngine interface (its lock and
``committed_image``) or the public DictDB/Table API, so every write it makes
keeps the table's usual all-or-nothing guarantees.
"""

from dictdb_shm.persistence.csv_io import export_csv, import_csv

__all__ = ["import_csv", "export_csv"]
