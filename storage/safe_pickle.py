"""Load the dataset's pickled numpy arrays without letting the pickle run code.

The published FaceTalk layout ships `<seq>/audio/wave2vec_audio_feats.pkl`. A pickle can name any
importable callable (`os.system`, `builtins.exec`, ...) and the stock unpickler calls it, so a file
from the internet must never reach `pickle.load`. `SafeArrayUnpickler` resolves only the handful of
globals that numpy arrays (NumPy 1.x and 2.x, pickle protocols 0-5), numpy scalars and plain
containers need; anything else raises `UnsafePickleError` before it is even looked up.
"""

from __future__ import annotations

import codecs
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

# (module, name) as written in the pickle -> the object it may resolve to. NumPy 1.x pickles say
# `numpy.core.*`; NumPy 2 renamed the package to `numpy._core` (`numpy.core` is a deprecated shim),
# so both spellings map straight to the NumPy 2 objects without importing the shim.
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # protocol 0-2 encode bytes as _codecs.encode(str, "latin1")
    ("builtins", "bytearray"): bytearray,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("builtins", "slice"): slice,
}
for _core in ("numpy.core", "numpy._core"):
    _ALLOWED_GLOBALS[(f"{_core}.multiarray", "_reconstruct")] = np._core.multiarray._reconstruct
    _ALLOWED_GLOBALS[(f"{_core}.multiarray", "scalar")] = np._core.multiarray.scalar
    # protocol 5 pickles arrays as _frombuffer(bytearray, dtype, shape, order)
    _ALLOWED_GLOBALS[(f"{_core}.numeric", "_frombuffer")] = np._core.numeric._frombuffer


class UnsafePickleError(ValueError):
    """The pickle references a global outside the numpy-array allow-list."""


class PickleFormatError(ValueError):
    """The file is missing, empty, truncated or not a pickle, or holds the wrong kind of object."""


class SafeArrayUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild numpy arrays, numpy scalars and builtin containers, nothing else."""

    def __init__(self, file: io.BufferedIOBase, source: str = "<bytes>") -> None:
        super().__init__(file)
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._source}: refusing to unpickle: it references the global {module}.{name}, "
                "which is not needed for numpy arrays (only arrays, numpy scalars and "
                "dict/list/tuple containers of them are accepted)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self._source}: refusing to unpickle: it uses persistent ids ({pid!r})")


def load_pickled_arrays(path: str | Path) -> Any:
    """Unpickle `path` with the allow-list: arrays, numpy scalars, and dict/list/tuple/str/number
    containers of them. Raises `UnsafePickleError` (nothing executed) for anything else."""
    path = Path(path)
    if not path.is_file():
        raise PickleFormatError(f"{path}: pickle file not found")
    if path.stat().st_size == 0:
        raise PickleFormatError(f"{path}: pickle file is empty (0 bytes)")
    with path.open("rb") as file:
        try:
            return SafeArrayUnpickler(file, source=str(path)).load()
        except UnsafePickleError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, AttributeError) as error:
            # the stock unpickler reports truncation and garbage with several exception types
            # from None: the message already holds the cause, and reports show the innermost error
            raise PickleFormatError(f"{path}: not a readable pickle (truncated or corrupt): {error}") from None


def load_numpy_pickle(path: str | Path) -> np.ndarray:
    """Unpickle a single numeric numpy array from an untrusted file, e.g. wave2vec_audio_feats.pkl."""
    value = load_pickled_arrays(path)
    if not isinstance(value, np.ndarray):
        raise PickleFormatError(f"{path}: expected a pickled numpy array, found {type(value).__name__}")
    if value.dtype.hasobject:
        raise PickleFormatError(f"{path}: expected a numeric numpy array, found dtype {value.dtype}")
    return value
