"""Read pickles without executing pickled code.

The official label files (``train_label.pkl`` = ``(sample_names, labels)``) and pyskl annotation
pickles hold only plain containers, strings, numbers and numpy arrays. ``safe_load`` allows exactly
those: any other global (``os.system``, ``builtins.eval``, a user class) raises
``UnsafePickleError`` before it is looked up, so a malicious file cannot run anything.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

# (module, name) pairs a numpy array or scalar needs to be rebuilt; nothing else is importable.
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),  # protocol 5 out-of-band form
    ("numpy._core.numeric", "_frombuffer"),
    ("collections", "OrderedDict"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "bytearray"),
    ("builtins", "complex"),
    ("builtins", "slice"),
    ("builtins", "range"),
    ("codecs", "encode"),  # numpy arrays pickled under protocol 2 store their bytes through codecs.encode
    ("_codecs", "encode"),
}


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle references a global that is not a plain container, string, number or numpy array."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"refusing to load global {module}.{name}: only plain containers, str, numbers and numpy "
            "arrays are allowed in label/annotation pickles (no pickled code is executed)"
        )


def safe_loads(data: bytes) -> Any:
    """Unpickle ``data`` allowing only plain containers, str, numbers and numpy arrays."""
    return _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()


def safe_load(path: str | Path) -> Any:
    """Unpickle the file at ``path`` with the restrictions of ``safe_loads``; errors name the file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f, encoding="latin1").load()
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{path}: {e}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise pickle.UnpicklingError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from None
