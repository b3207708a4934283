"""``python -m dictdb_shm``: the ``dictdb-shm`` command (cli.py)."""

import sys

from dictdb_shm.cli import main

sys.exit(main())
