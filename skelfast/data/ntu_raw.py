"""Streaming parser for NTU RGB+D ``.skeleton`` files (format: spec/isc_crrl.md §0.1).

::

    <numFrame>
    per frame:  <numBody>                       (0 allowed)
      per body: 10 fields (bodyID is a 64-bit tracking id) / <numJoint> / numJoint lines of 12 fields

Only x, y, z (metres, camera space) are kept. Bodies are slotted by their order within the frame,
as the official code does. A corrupt file raises ``SkeletonFormatError`` naming the file, the line
number and what was expected there. Tolerated: CRLF line ends, blank lines, trailing blank lines.

Two parsers with one result: a fast one splits the whole file into tokens at once and checks the
line structure (fields per line) with numpy, and a careful one reads line by line. The fast one
gives up on anything unexpected and the careful one then re-reads the file, so an error always
comes from the careful parser with its exact line; on valid files both return the same arrays.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path

import numpy as np

NUM_JOINTS = 25
MAX_BODIES_KINECT = 4
BODY_FIELDS = 10
JOINT_FIELDS = 12

_NAME = re.compile(r"S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})")


class SkeletonFormatError(ValueError):
    """A ``.skeleton`` file does not follow the format; the message names the file and line."""

    def __init__(self, path: str | Path, line: int, message: str) -> None:
        self.path, self.line = str(path), line
        super().__init__(f"{path}:{line}: {message}")


@dataclass(frozen=True)
class NtuName:
    """The ids in ``SsssCcccPpppRrrrAaaa`` (all 1-based, as in the file name)."""

    setup: int
    camera: int
    performer: int
    replication: int
    action: int

    @property
    def label(self) -> int:
        """0-based class index (action - 1)."""
        return self.action - 1


def parse_name(name: str) -> NtuName:
    """Parse ``S001C002P003R002A013`` (with or without ``.skeleton``, with or without folders)."""
    m = _NAME.search(Path(name).name)
    if m is None:
        raise ValueError(f"{name!r} is not an NTU RGB+D sample name (expected SsssCcccPpppRrrrAaaa)")
    return NtuName(*(int(g) for g in m.groups()))


class _Lines:
    """Numbered non-blank lines of a text file, with errors that name file and line."""

    def __init__(self, path: Path, f: Iterator[str]) -> None:
        self.path, self._f, self.lineno = path, f, 0

    def next_fields(self, what: str) -> list[str]:
        for raw in self._f:
            self.lineno += 1
            fields = raw.split()
            if fields:
                return fields
        raise SkeletonFormatError(
            self.path, self.lineno + 1, f"file ends early: expected {what} (truncated file?)"
        )

    def next_int(self, what: str) -> int:
        fields = self.next_fields(what)
        if len(fields) != 1:
            raise SkeletonFormatError(
                self.path, self.lineno, f"expected {what} (one integer), got {len(fields)} fields"
            )
        try:
            return int(fields[0])
        except ValueError:
            raise SkeletonFormatError(
                self.path, self.lineno, f"expected {what} (an integer), got {fields[0]!r}"
            ) from None

    def error(self, message: str) -> SkeletonFormatError:
        return SkeletonFormatError(self.path, self.lineno, message)


def read_skeleton(
    path: str | Path, max_bodies: int = MAX_BODIES_KINECT, num_joints: int = NUM_JOINTS
) -> tuple[np.ndarray, np.ndarray]:
    """Read one ``.skeleton`` file.

    Returns ``(xyz, body_count)``: xyz float64 (max_bodies, F, num_joints, 3), zero where a slot has no
    body; body_count int64 (F,), the numBody of each frame (may exceed ``max_bodies``; extra bodies
    are parsed and dropped, as the official reader does).
    """
    path = Path(path)
    parsed = _parse_tokens(path, max_bodies, num_joints)
    xyz, body_count = parsed if parsed is not None else _parse_lines(path, max_bodies, num_joints)
    if not np.isfinite(xyz).all():
        raise SkeletonFormatError(path, 0, "non-finite coordinate (nan or inf)")
    return xyz, body_count


# byte -> separates fields: what str.split() splits on (after universal-newline translation, no \r)
_IS_SPACE = np.zeros(256, dtype=bool)
_IS_SPACE[[ord(c) for c in " \t\n\x0b\x0c\x1c\x1d\x1e\x1f"]] = True


def _parse_tokens(path: Path, max_bodies: int, num_joints: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The fast parser: ``(xyz, body_count)`` as ``_parse_lines``, or None if anything is unexpected."""
    text = path.read_text(encoding="ascii", errors="replace")  # the newline translation of _parse_lines
    tok = text.split()
    per_body = BODY_FIELDS + 1 + num_joints * JOINT_FIELDS
    one_field, body_lines, joint_starts, slots = [0], [], [], []
    try:
        num_frames = int(tok[0])
        if not 0 <= num_frames < len(tok):
            return None
        body_count = np.zeros(num_frames, dtype=np.int64)
        p, line = 1, 1  # token index, index of the non-blank line
        for t in range(num_frames):
            body_count[t] = num_bodies = int(tok[p])
            if num_bodies < 0:
                return None
            one_field.append(line)
            p, line = p + 1, line + 1
            for m in range(num_bodies):
                if int(tok[p + BODY_FIELDS]) != num_joints:
                    return None
                body_lines.append(line)
                one_field.append(line + 1)
                joint_starts.append(p + BODY_FIELDS + 1)
                slots.append((m, t))
                p, line = p + per_body, line + 2 + num_joints
    except (IndexError, ValueError):
        return None
    if p != len(tok):
        return None
    # fields per non-blank line must be exactly 1 | 1, (10, 1, 12 x 25) per body, frame after frame
    raw = np.frombuffer(text.encode(), dtype=np.uint8)
    space = _IS_SPACE[raw]
    field_start = np.flatnonzero(~space & np.concatenate(([True], space[:-1])))
    fields = np.bincount(np.searchsorted(np.flatnonzero(raw == ord("\n")), field_start))  # per line
    expected = np.full(line, JOINT_FIELDS)
    expected[one_field] = 1
    expected[body_lines] = BODY_FIELDS
    if not np.array_equal(fields[fields > 0], expected):
        return None
    xyz = np.zeros((max_bodies, num_frames, num_joints, 3))
    if joint_starts:
        offsets = (np.arange(num_joints)[:, None] * JOINT_FIELDS + np.arange(3)).ravel()
        at = (np.asarray(joint_starts)[:, None] + offsets).ravel().tolist()  # >= 3 items: a tuple below
        try:  # Python's float() on every body's coordinates, the dropped ones too, as _parse_lines does
            values = np.fromiter(map(float, itemgetter(*at)(tok)), dtype=np.float64, count=len(at))
        except ValueError:
            return None
        keep = [k for k, (m, _) in enumerate(slots) if m < max_bodies]
        ms, ts = np.array([slots[k] for k in keep], dtype=np.int64).reshape(-1, 2).T
        xyz[ms, ts] = values.reshape(len(slots), num_joints, 3)[keep]
    return xyz, body_count


def _parse_lines(path: Path, max_bodies: int, num_joints: int) -> tuple[np.ndarray, np.ndarray]:
    """The careful parser: line by line, raising ``SkeletonFormatError`` at the first problem."""
    path = Path(path)
    with open(path, encoding="ascii", errors="replace") as f:
        lines = _Lines(path, f)
        num_frames = lines.next_int("the frame count")
        if num_frames < 0:
            raise lines.error(f"negative frame count {num_frames}")
        xyz = np.zeros((max_bodies, num_frames, num_joints, 3))
        body_count = np.zeros(num_frames, dtype=np.int64)
        for t in range(num_frames):
            num_bodies = lines.next_int(f"the body count of frame {t}")
            if num_bodies < 0:
                raise lines.error(f"negative body count {num_bodies} in frame {t}")
            body_count[t] = num_bodies
            for m in range(num_bodies):
                info = lines.next_fields(f"the {BODY_FIELDS}-field body line of frame {t}, body {m}")
                if len(info) != BODY_FIELDS:
                    raise lines.error(
                        f"expected the {BODY_FIELDS}-field body line of frame {t}, body {m}, got {len(info)} fields"
                    )
                n_joint = lines.next_int(f"the joint count of frame {t}, body {m}")
                if n_joint != num_joints:
                    raise lines.error(f"frame {t}, body {m} has {n_joint} joints, expected {num_joints}")
                for v in range(n_joint):
                    fields = lines.next_fields(f"joint {v} of frame {t}, body {m}")
                    if len(fields) != JOINT_FIELDS:
                        raise lines.error(
                            f"joint {v} of frame {t}, body {m}: expected {JOINT_FIELDS} fields, got {len(fields)}"
                        )
                    try:
                        x, y, z = float(fields[0]), float(fields[1]), float(fields[2])
                    except ValueError:
                        raise lines.error(
                            f"joint {v} of frame {t}, body {m}: non-numeric coordinate in {fields[:3]}"
                        ) from None
                    if m < max_bodies:
                        xyz[m, t, v] = (x, y, z)
        for raw in f:
            lines.lineno += 1
            if raw.strip():
                raise lines.error(f"unexpected data after the {num_frames} frames the file declares")
    return xyz, body_count


def body_energy(body: np.ndarray) -> float:
    """The official "energy" of one body slot (F, V, 3): std(x) + std(y) + std(z) over its non-empty frames."""
    valid = body.sum(-1).sum(-1) != 0
    s = body[valid]
    if len(s) == 0:
        return 0.0
    return float(s[:, :, 0].std() + s[:, :, 1].std() + s[:, :, 2].std())


def select_bodies(xyz: np.ndarray, num: int = 2, how: str = "energy") -> np.ndarray:
    """Keep ``num`` body slots of xyz (B, F, V, 3): ``"energy"`` (ISC / 2s-AGCN: the most energetic first;
    ties keep slot order, the stable sort the official small-array argsort gives) or ``"first"``
    (CrosSCLR/AimCLR: the first slots in file order)."""
    if how == "first":
        out = xyz[:num]
    elif how == "energy":
        energy = np.array([body_energy(b) for b in xyz])
        out = xyz[np.argsort(energy, kind="stable")[::-1][:num]]
    else:
        raise ValueError(f"unknown body selection {how!r}; expected 'energy' or 'first'")
    if out.shape[0] < num:
        out = np.concatenate([out, np.zeros((num - out.shape[0],) + out.shape[1:])], 0)
    return out


def read_sample(
    path: str | Path, max_frames: int = 300, num_bodies: int = 2, bodies: str = "energy"
) -> tuple[np.ndarray, int]:
    """One file -> (float32 (3, max_frames, 25, num_bodies) zero-padded, raw frame count F).

    Frames past ``max_frames`` are dropped (NTU's longest clip is 300 frames); F is returned untruncated.
    """
    xyz, _ = read_skeleton(path)
    sel = select_bodies(xyz, num_bodies, bodies)  # (M, F, V, 3)
    f = sel.shape[1]
    out = np.zeros((3, max_frames, sel.shape[2], num_bodies), dtype=np.float32)
    out[:, : min(f, max_frames)] = sel[:, :max_frames].transpose(3, 1, 2, 0)
    return out, f


def format_skeleton(xyz: np.ndarray, body_ids: list[list[int]] | None = None) -> str:
    """Write xyz (F, B_t bodies ragged -> given as (B, F, 25, 3) with all-zero = absent) in the raw format.

    Used to make test fixtures; the non-xyz fields are plausible constants.
    """
    b, f, v, _ = xyz.shape
    out = [str(f)]
    for t in range(f):
        present = [m for m in range(b) if np.any(xyz[m, t] != 0)]
        out.append(str(len(present)))
        for m in present:
            bid = body_ids[t][m] if body_ids else 72057594037931101 + m
            out.append(f"{bid} 0 1 1 1 1 0 -0.0627 0.1567 2")
            out.append(str(v))
            for j in range(v):
                x, y, z = xyz[m, t, j]
                out.append(f"{x:.7g} {y:.7g} {z:.7g} 270.6 188.9 1056.3 518.1 0.2 -0.03 0.97 -0.05 2")
    return "\n".join(out) + "\n"
