"""PKU-MMD Part I and II readers (spec/isc_crrl.md §0.4), producing the NTU arrays.

* ``skeleton/<id>.txt``: one line per frame, 150 floats = body 1 (25 joints x xyz, joint-major) then
  body 2 (zeros when absent).
* ``label/<id>.txt``: one action per line, ``class,start,end,confidence`` (class 1-based); a clip is
  frames ``[start, end)`` (CMD slices ``start:end``).
* split files (``cross_subject.txt``, ``cross_view.txt``, ``*_v2.txt``): line 2 holds the training video
  ids separated by ", "; every other video is test (what CMD reads).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from skelfast.data import normalize, storage


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
    Path(path).write_text("".join(f"{a.label + 1},{a.start},{a.end},{a.confidence}\n" for a in actions))


def read_split(path: str | Path) -> set[str]:
    """Training video ids from line 2 of a split file."""
    lines = Path(path).read_text().splitlines()
    if len(lines) < 2:
        raise PkuFormatError(
            f"{path}: expected the training ids on line 2, the file has {len(lines)} line(s)"
        )
    return {v.strip() for v in lines[1].split(",") if v.strip()}


def clips(
    skeleton_dir: str | Path, label_dir: str | Path, max_frames: int = 300
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], list[str]]:
    """All labelled clips -> (data (N, 3, max_frames, 25, 2), num_frame (untruncated), labels, names, video ids)."""
    datas, frames, labels, names, videos = [], [], [], [], []
    for lp in sorted(Path(label_dir).glob("*.txt")):
        sp = Path(skeleton_dir) / lp.name
        if not sp.exists():
            raise FileNotFoundError(f"{lp} has no skeleton file {sp}")
        x = read_skeleton(sp)
        for a in read_labels(lp):
            clip = x[:, a.start : a.end]
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


def convert_pku(
    skeleton_dir: str | Path,
    label_dir: str | Path,
    split_file: str | Path,
    out_dir: str | Path,
    normalization: str = "agcn",
    max_frames: int = 300,
) -> dict[str, int]:
    """Write ``out_dir/{train,val}_*`` for one split file; returns the part sizes."""
    data, num_frame, labels, names, videos = clips(skeleton_dir, label_dir, max_frames)
    data, num_frame_n = normalize.normalize(data, num_frame, normalization)
    if normalization in ("none", "agcn", "agcn-noz"):
        num_frame_n = num_frame  # CMD records the untruncated clip length
    train_ids = read_split(split_file)
    train = np.array([v in train_ids for v in videos])
    sizes = {}
    for part, mask in (("train", train), ("val", ~train)):
        idx = np.nonzero(mask)[0]
        storage.save_split(out_dir, part, data[idx], num_frame_n[idx], labels[idx], [names[i] for i in idx])
        sizes[part] = len(idx)
    return sizes
