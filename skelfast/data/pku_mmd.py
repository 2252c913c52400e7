"""PKU-MMD Part I and II readers (spec/isc_crrl.md §0.4), producing the NTU arrays.

* ``skeleton/<id>.txt``: one line per frame, 150 floats = body 1 (25 joints x xyz, joint-major) then
  body 2 (zeros when absent).
* ``label/<id>.txt``: one action per line, ``class,start,end,confidence`` (class 1-based). The field
  reads the frame window two ways, both kept as ``window``: 'half-open' (default) takes 0-based frames
  ``[start, end)``, as CMD's ``pku_gendata.py`` (the ISC lineage) slices ``start:end``; 'inclusive'
  takes 1-based frames ``start..end``, as the AimCLR-lineage ``pku_part{1,2}_skeleton.py`` slices
  ``start - 1:end`` (the PKU files HiCo and HiCLR train on). They differ by one frame at each end.
* split files (``cross_subject.txt``, ``cross_view.txt``, ``*_v2.txt``): line 2 holds the training video
  ids separated by ", " and line 4 the test ids; every video not on line 2 is test (what CMD reads).

Class ids. Both parts number actions in one 1..51 list; Part II uses 41 of those ids. Both public
converters keep ``label = class id - 1`` for Part II and train a 51-way classifier on it (CMD's
``opts_pku_v2_cross_subject``: ``num_class 51``; the AimCLR-lineage tools: ``action_class - 1``), so
that is ``classes="raw"``, the default. CRRL alone reports a ``Linear(512, 41)`` head, and how it maps
the 51 ids onto 0..40 is not published (spec/isc_crrl.md §0.4), so no official table is built in;
``classes="compact"`` renumbers the ids that occur to 0..C-1 in
increasing order (C = 41 on the full Part II) and saves the table as ``class_map.json``, which a later
conversion can reuse so that every split shares one numbering. For the protocols (a fresh classifier
with i.i.d. initial weights, kNN) any one-to-one numbering of the 41 classes gives the same accuracy,
so the unknown official order matters only when comparing per-class outputs with CRRL's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from skelfast.data import normalize, storage

CLASS_MODES = ("raw", "compact")
WINDOWS = ("half-open", "inclusive")
CLASS_MAP_FORMAT = "skelfast-class-map-1"
CLASS_MAP_FILE = "class_map.json"


class PkuFormatError(ValueError):
    """A PKU-MMD file does not follow the format; the message names the file and line."""


@dataclass(frozen=True)
class PkuAction:
    label: int  # 0-based (class - 1)
    start: int
    end: int
    confidence: int


def read_skeleton(path: str | Path) -> np.ndarray:
    """``skeleton/<id>.txt`` -> float32 (3, F, 25, 2)."""
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 150:
                raise PkuFormatError(
                    f"{path}:{n}: expected 150 values (2 bodies x 25 joints x xyz), got {len(fields)}"
                )
            try:
                rows.append([float(v) for v in fields])
            except ValueError:
                raise PkuFormatError(f"{path}:{n}: non-numeric value in frame line") from None
    x = np.asarray(rows, dtype=np.float32).reshape(len(rows), 2, 25, 3)
    return x.transpose(3, 0, 2, 1)


def write_skeleton(path: str | Path, x: np.ndarray) -> None:
    """Inverse of ``read_skeleton``: (3, F, 25, 2) -> 150 values a line."""
    flat = np.asarray(x).transpose(1, 3, 2, 0).reshape(x.shape[1], 150)
    Path(path).write_text("".join(" ".join(f"{v:.6g}" for v in row) + "\n" for row in flat))


def read_labels(path: str | Path) -> list[PkuAction]:
    """``label/<id>.txt`` -> actions (label 0-based)."""
    out = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(",")]
        try:
            cls, start, end, conf = (int(float(p)) for p in parts)
        except ValueError:
            raise PkuFormatError(f"{path}:{n}: expected 'class,start,end,confidence', got {line!r}") from None
        if not (cls >= 1 and 0 <= start < end):
            raise PkuFormatError(
                f"{path}:{n}: bad action {line!r} (class >= 1 and 0 <= start < end required)"
            )
        out.append(PkuAction(cls - 1, start, end, conf))
    return out


def write_labels(path: str | Path, actions: list[PkuAction]) -> None:
    """Inverse of ``read_labels``: one ``class,start,end,confidence`` line per action (class 1-based)."""
    Path(path).write_text("".join(f"{a.label + 1},{a.start},{a.end},{a.confidence}\n" for a in actions))


def read_split(path: str | Path) -> set[str]:
    """Training video ids from line 2 of a split file."""
    lines = Path(path).read_text().splitlines()
    if len(lines) < 2:
        raise PkuFormatError(
            f"{path}: expected the training ids on line 2, the file has {len(lines)} line(s)"
        )
    return {v.strip() for v in lines[1].split(",") if v.strip()}


def frame_window(action: PkuAction, window: str, where: str) -> slice:
    """The video frames of one action: 'half-open' ``[start, end)`` (CMD) or 'inclusive' 1-based
    ``start..end`` (AimCLR-lineage tools); see the module docstring."""
    if window == "half-open":
        return slice(action.start, action.end)
    if window == "inclusive":
        if action.start < 1:
            raise PkuFormatError(
                f"{where}: start frame {action.start} with window='inclusive' (1-based frames)"
            )
        return slice(action.start - 1, action.end)
    raise ValueError(f"unknown window {window!r}; expected one of {WINDOWS}")


def clips(
    skeleton_dir: str | Path, label_dir: str | Path, max_frames: int = 300, window: str = "half-open"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], list[str]]:
    """All labelled clips -> (data (N, 3, max_frames, 25, 2), num_frame (N,) untruncated, labels (N,) raw
    0-based, names, video ids). ``window`` reads each action's frames (``frame_window``)."""
    if window not in WINDOWS:
        raise ValueError(f"unknown window {window!r}; expected one of {WINDOWS}")
    datas, frames, labels, names, videos = [], [], [], [], []
    for lp in sorted(Path(label_dir).glob("*.txt")):
        sp = Path(skeleton_dir) / lp.name
        if not sp.exists():
            raise FileNotFoundError(f"{lp} has no skeleton file {sp}")
        x = read_skeleton(sp)
        for n, a in enumerate(read_labels(lp), 1):
            clip = x[:, frame_window(a, window, f"{lp} action {n}")]
            out = np.zeros((3, max_frames, 25, 2), dtype=np.float32)
            out[:, : min(clip.shape[1], max_frames)] = clip[:, :max_frames]
            datas.append(out)
            frames.append(clip.shape[1])
            labels.append(a.label)
            names.append(f"{lp.stem}_{a.start}_{a.end}")
            videos.append(lp.stem)
    if not datas:
        raise FileNotFoundError(f"no labelled clips under {label_dir}")
    return np.stack(datas), np.array(frames, dtype=np.int64), np.array(labels, dtype=np.int64), names, videos


def compact_class_ids(labels: np.ndarray, class_ids: list[int] | None = None) -> tuple[np.ndarray, list[int]]:
    """Renumber 0-based raw labels (class id - 1) to 0..C-1.

    ``class_ids`` (1-based dataset ids, label j = ``class_ids[j]``) defaults to the sorted ids that occur
    in ``labels``. Returns ``(compact labels int64 (N,), class_ids)``; a label whose id is not in a given
    ``class_ids`` is an error.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if class_ids is None:
        class_ids = sorted(int(v) + 1 for v in np.unique(labels))
    if len(set(class_ids)) != len(class_ids):
        raise ValueError(f"class map lists an id twice: {class_ids}")
    index = {cid: j for j, cid in enumerate(class_ids)}
    unknown = sorted({int(v) + 1 for v in np.unique(labels)} - index.keys())
    if unknown:
        raise ValueError(f"class id(s) {unknown} occur in the labels but not in the class map {class_ids}")
    return np.array([index[int(v) + 1] for v in labels], dtype=np.int64), list(class_ids)


def save_class_map(path: str | Path, class_ids: list[int]) -> None:
    """Write ``{"format", "class_ids": [1-based dataset ids], "note"}`` atomically; label j is the
    dataset's class ``class_ids[j]``."""
    doc = {
        "format": CLASS_MAP_FORMAT,
        "class_ids": [int(c) for c in class_ids],
        "note": "label j of the converted arrays is PKU-MMD class class_ids[j] (1-based, as in label files)",
    }
    with storage.atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=1))


def load_class_map(path: str | Path) -> list[int]:
    """The 1-based class ids of a ``class_map.json`` written by ``save_class_map``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"class map not found: {path}")
    doc = json.loads(path.read_text())
    if not isinstance(doc, dict) or doc.get("format") != CLASS_MAP_FORMAT or "class_ids" not in doc:
        raise ValueError(f"{path}: not a skelfast class map (expected format {CLASS_MAP_FORMAT!r})")
    return [int(c) for c in doc["class_ids"]]


@dataclass
class PkuConvertResult:
    """Part sizes, and the 1-based class ids behind labels 0..C-1 (None for raw labels)."""

    sizes: dict[str, int] = field(default_factory=dict)
    class_ids: list[int] | None = None


def convert_pku(
    skeleton_dir: str | Path,
    label_dir: str | Path,
    split_file: str | Path,
    out_dir: str | Path,
    normalization: str = "agcn",
    max_frames: int = 300,
    classes: str = "raw",
    class_map: str | Path | None = None,
    window: str = "half-open",
) -> PkuConvertResult:
    """Write ``out_dir/{train,val}_*`` for one split file.

    ``classes``: 'raw' (label = class id - 1) or 'compact' (the ids occurring in ``label_dir``, both
    parts, renumbered 0..C-1, or the ids of an existing ``class_map`` file; the table is written to
    ``out_dir/class_map.json``). See the module docstring for why no official 51 -> 41 table is used.
    ``window``: 'half-open' (CMD, default) or 'inclusive' (AimCLR-lineage) frame ranges.
    """
    if classes not in CLASS_MODES:
        raise ValueError(f"unknown classes mode {classes!r}; expected one of {CLASS_MODES}")
    if class_map is not None and classes != "compact":
        raise ValueError("a class map applies only to classes='compact'")
    data, num_frame, labels, names, videos = clips(skeleton_dir, label_dir, max_frames, window)
    class_ids = None
    if classes == "compact":
        labels, class_ids = compact_class_ids(labels, load_class_map(class_map) if class_map else None)
    data, num_frame_n = normalize.normalize(data, num_frame, normalization)
    if normalization in ("none", "agcn", "agcn-noz"):
        num_frame_n = num_frame  # CMD records the untruncated clip length
    train_ids = read_split(split_file)
    train = np.array([v in train_ids for v in videos])
    result = PkuConvertResult(class_ids=class_ids)
    for part, mask in (("train", train), ("val", ~train)):
        idx = np.nonzero(mask)[0]
        storage.save_split(out_dir, part, data[idx], num_frame_n[idx], labels[idx], [names[i] for i in idx])
        result.sizes[part] = len(idx)
    if class_ids is not None:
        save_class_map(Path(out_dir) / CLASS_MAP_FILE, class_ids)
    else:  # a map left by an earlier compact conversion would now describe the wrong labels
        (Path(out_dir) / CLASS_MAP_FILE).unlink(missing_ok=True)
    return result
