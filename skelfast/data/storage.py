"""The on-disk form of a converted split, shared by every reader, converter and the synthetic data.

A benchmark folder (``<root>/xsub``, ``<root>/xview``, ...) holds per part (``train``, ``val``):

* ``{part}_data_joint.npy``: float32 (N, 3, T, 25, 2) = (N, C, T, V, M), as ISC / 2s-AGCN write it;
* ``{part}_num_frame.npy``: int64 (N,), the raw frame count of each sample;
* ``{part}_label.json``: ``{"sample_names": [...], "labels": [...]}`` (0-based ints). Not a pickle, so
  loading it cannot execute code; the official ``{part}_label.pkl`` is read too (``load_labels``).

Every file is written to a temporary name in the same folder and then ``os.replace``d onto its final
name, so a killed writer leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from skelfast.data.safe_pickle import safe_load

PARTS = ("train", "val")


def data_path(root: str | Path, part: str) -> Path:
    return Path(root) / f"{part}_data_joint.npy"


def num_frame_path(root: str | Path, part: str) -> Path:
    return Path(root) / f"{part}_num_frame.npy"


def label_path(root: str | Path, part: str) -> Path:
    return Path(root) / f"{part}_label.json"


@contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; on success move it onto ``final``, on error delete it."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def save_npy_atomic(final: str | Path, array: np.ndarray) -> None:
    """``np.save`` through a temporary file and ``os.replace``."""
    with atomic_path(final) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array)


def save_labels(final: str | Path, sample_names: Sequence[str], labels: Sequence[int] | np.ndarray) -> None:
    """Write ``{"sample_names": [...], "labels": [...]}`` atomically."""
    labels = [int(v) for v in np.asarray(labels).reshape(-1)]
    if len(labels) != len(sample_names):
        raise ValueError(f"{len(sample_names)} sample names but {len(labels)} labels")
    with atomic_path(final) as tmp:
        tmp.write_text(json.dumps({"sample_names": list(sample_names), "labels": labels}))


def load_labels(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Read ``(sample_names, labels int64 (N,))`` from ``.json`` (ours), ``.npy`` (labels only, AimCLR's
    ``(N, 1)`` form too) or ``.pkl`` (the official ``(names, labels)`` tuple, read without executing code)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"label file not found: {path}")
    if path.suffix == ".json":
        obj = json.loads(path.read_text())
        if not isinstance(obj, dict) or "labels" not in obj:
            raise ValueError(f"{path}: expected a JSON object with 'labels' (and 'sample_names')")
        labels = np.asarray(obj["labels"], dtype=np.int64)
        names = list(obj.get("sample_names") or [f"{i:06d}" for i in range(len(labels))])
    elif path.suffix == ".npy":
        labels = np.load(path, allow_pickle=False).astype(np.int64).reshape(-1)
        names = [f"{i:06d}" for i in range(len(labels))]
    elif path.suffix == ".pkl":
        obj = safe_load(path)
        if not (isinstance(obj, (tuple, list)) and len(obj) == 2):
            raise ValueError(
                f"{path}: expected the official (sample_names, labels) pair, got {type(obj).__name__}"
            )
        names = [str(n) for n in obj[0]]
        labels = np.asarray(obj[1], dtype=np.int64).reshape(-1)
    else:
        raise ValueError(f"{path}: unknown label file type {path.suffix!r} (expected .json, .npy or .pkl)")
    if len(names) != len(labels):
        raise ValueError(f"{path}: {len(names)} sample names but {len(labels)} labels")
    return names, labels


def save_split(
    root: str | Path,
    part: str,
    data: np.ndarray,
    num_frame: np.ndarray,
    labels: np.ndarray,
    sample_names: Sequence[str],
) -> None:
    """Write the three files of one part (each atomically)."""
    if data.ndim != 5 or data.shape[1] != 3:
        raise ValueError(f"data must be (N, 3, T, V, M), got {tuple(data.shape)}")
    n = data.shape[0]
    if len(num_frame) != n or len(labels) != n or len(sample_names) != n:
        raise ValueError(
            f"data has {n} samples but num_frame {len(num_frame)}, labels {len(labels)}, names {len(sample_names)}"
        )
    save_npy_atomic(data_path(root, part), np.ascontiguousarray(data, dtype=np.float32))
    save_npy_atomic(num_frame_path(root, part), np.asarray(num_frame, dtype=np.int64))
    save_labels(label_path(root, part), sample_names, labels)
