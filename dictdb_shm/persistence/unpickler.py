"""The restricted unpickler: pickle files may hold plain data and nothing else.

Owns: which globals a pickle file may name (a few builtin containers; dict,
list, str, bytes, numbers, bools and None need none, they are opcodes) and
turning every failure of unpickling into a CorruptionError naming the file.
Must never: import or call anything a file names outside that list: a
pickle that names ``os.system`` must fail before anything runs.
"""

from __future__ import annotations

import io
import pickle
from typing import Any, BinaryIO

from dictdb_shm.errors import CorruptionError

# What protocols 0-5 need to rebuild plain data that has no opcode of its
# own (protocols 0-2 write bytes as a call of _codecs.encode).
# Protocols 0-2 also spell builtins "__builtin__".
ALLOWED_GLOBALS = frozenset({(m, n) for m in ("builtins", "__builtin__")
                             for n in ("set", "frozenset", "bytearray", "complex")}
                            | {("_codecs", "encode")})

PICKLE_HINT = ("a pickle file of dictdb_shm holds plain data only (dict, list, str, bytes, "
               "numbers, bool, None, sets); re-save it with db.save(path, 'pickle'), or use JSON")


class UnsafePickle(pickle.UnpicklingError):
    """A pickle named a global outside plain data."""


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise UnsafePickle(f"it names {module}.{name}, which is not plain data")


def load_one(f: BinaryIO, path: str) -> Any:
    """The next pickle of ``f`` through the restricted unpickler.  EOFError
    at a clean end of the file; CorruptionError for anything else wrong."""
    start = f.tell()
    try:
        return RestrictedUnpickler(f).load()
    except EOFError:
        if f.tell() == start and not f.read(1):
            raise
        raise CorruptionError(f"{path}: the pickle data ends early (truncated)",
                              hint=PICKLE_HINT) from None
    except UnsafePickle as exc:
        raise CorruptionError(f"{path}: refused to load: {exc}", hint=PICKLE_HINT) from None
    except Exception as exc:  # the unpickler raises many kinds on damaged bytes
        raise CorruptionError(f"{path}: not a valid pickle ({type(exc).__name__}: {exc})",
                              hint=PICKLE_HINT) from None


def loads(data: bytes, path: str = "<bytes>") -> Any:
    """One pickle from ``data`` (the whole of it), restricted."""
    f = io.BytesIO(data)
    try:
        value = load_one(f, path)
    except EOFError:
        raise CorruptionError(f"{path}: empty pickle data", hint=PICKLE_HINT) from None
    if f.read(1):
        raise CorruptionError(f"{path}: bytes after the end of the pickle", hint=PICKLE_HINT)
    return value
