"""pyskl annotation pickles in and out, without mmcv and without executing pickled code.

Format (pyskl ``tools/data/README.md``)::

    {"split": {name: [frame_dir, ...]},
     "annotations": [{"frame_dir": str, "total_frames": int, "label": int,
                      "keypoint": float (M, T, V, C), ...}, ...]}
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from skelfast.data import storage
from skelfast.data.safe_pickle import safe_load


def load_pyskl(path: str | Path) -> dict[str, Any]:
    """Read a pyskl annotation pickle (restricted unpickler: plain containers and numpy arrays only)."""
    obj = safe_load(path)
    if not isinstance(obj, dict) or "annotations" not in obj:
        raise ValueError(
            f"{path}: not a pyskl annotation file (expected a dict with 'annotations' and 'split')"
        )
    return obj


def save_pyskl(path: str | Path, anno: dict[str, Any]) -> None:
    """Write ``anno`` as a pickle (atomically). It holds only dicts, lists, str, int and numpy arrays."""
    with storage.atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            pickle.dump(anno, f, protocol=4)


def pyskl_to_arrays(
    anno: dict[str, Any], split: str | None = None, max_frames: int = 300, num_bodies: int = 2
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Annotations (of ``split`` if given) -> (data float32 (N, 3, max_frames, V, num_bodies), num_frame, labels, names).

    Frames past ``max_frames`` and bodies past ``num_bodies`` are dropped; ``num_frame`` is pyskl's
    ``total_frames`` (untruncated).
    """
    items = anno["annotations"]
    if split is not None:
        if split not in anno.get("split", {}):
            raise KeyError(
                f"split {split!r} not in the annotation file; it has {sorted(anno.get('split', {}))}"
            )
        keep = set(anno["split"][split])
        items = [a for a in items if a["frame_dir"] in keep]
    if not items:
        raise ValueError("no annotations to convert")
    v, c = np.asarray(items[0]["keypoint"]).shape[2:]
    if c != 3:
        raise ValueError(f"expected 3D keypoints (C = 3), got C = {c}")
    data = np.zeros((len(items), 3, max_frames, v, num_bodies), dtype=np.float32)
    num_frame = np.zeros(len(items), dtype=np.int64)
    labels = np.zeros(len(items), dtype=np.int64)
    for i, a in enumerate(items):
        kp = np.asarray(a["keypoint"], dtype=np.float32)[:num_bodies, :max_frames]  # M, T, V, C
        data[i, :, : kp.shape[1], :, : kp.shape[0]] = kp.transpose(3, 1, 2, 0)
        num_frame[i] = int(a.get("total_frames", np.asarray(a["keypoint"]).shape[1]))
        labels[i] = int(a["label"])
    return data, num_frame, labels, [str(a["frame_dir"]) for a in items]


def arrays_to_pyskl(
    data: np.ndarray,
    num_frame: np.ndarray,
    labels: np.ndarray,
    names: Sequence[str],
    split: dict[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """(N, 3, T, V, M) arrays -> pyskl annotations; each keypoint is (M', num_frame, V, 3) with the empty
    bodies dropped (at least one kept)."""
    annotations = []
    for i in range(data.shape[0]):
        t = int(min(num_frame[i], data.shape[2]))
        kp = np.asarray(data[i, :, :t], dtype=np.float32).transpose(3, 1, 2, 0)  # M, T, V, C
        present = [m for m in range(kp.shape[0]) if kp[m].any()] or [0]
        annotations.append(
            {"frame_dir": str(names[i]), "label": int(labels[i]), "total_frames": t,
             "keypoint": np.ascontiguousarray(kp[present])}
        )  # fmt: skip
    return {"split": {k: list(v) for k, v in (split or {}).items()}, "annotations": annotations}
