"""Joint layouts of the skeleton datasets: joint names, bones, left/right pairs (0-based indices).

Numbers follow the official code (spec/isc_crrl.md §0.1, spec/hico_hiclr.md §2.2-2.3).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Layout:
    """A skeleton layout: joint count, bone list (child, parent), centre joint, flip permutation."""

    name: str
    num_joints: int
    bones: tuple[tuple[int, int], ...]  # 0-based (child, parent) pairs, as the official graphs list them
    center: int  # 0-based centre joint of ST-GCN's spatial partition
    flip: tuple[int, ...]  # joint j of the flipped skeleton takes joint flip[j] of the original


# NTU RGB+D (Kinect v2), 25 joints; bones 1-based in the spec: (1,2) (2,21) (3,21) (4,3) (5,21) ...
_NTU_BONES_1BASED = (
    (1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9), (11, 10), (12, 11),
    (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18), (20, 19), (22, 23), (23, 8), (24, 25),
    (25, 12),
)  # fmt: skip

NTU_JOINT_NAMES = (
    "spine_base", "spine_mid", "neck", "head", "l_shoulder", "l_elbow", "l_wrist", "l_hand",
    "r_shoulder", "r_elbow", "r_wrist", "r_hand", "l_hip", "l_knee", "l_ankle", "l_foot",
    "r_hip", "r_knee", "r_ankle", "r_foot", "spine_shoulder", "l_hand_tip", "l_thumb", "r_hand_tip", "r_thumb",
)  # fmt: skip

# Left/right swap used by the spatial flip of AimCLR/HiCLR (`transform_order['ntu']`, 0-based).
_NTU_FLIP = (
    0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 16, 17, 18, 19, 12, 13, 14, 15, 20, 23, 24, 21, 22,
)  # fmt: skip

NTU = Layout(
    name="ntu-rgb+d",
    num_joints=25,
    bones=tuple((a - 1, b - 1) for a, b in _NTU_BONES_1BASED),
    center=20,
    flip=_NTU_FLIP,
)

LAYOUTS = {"ntu": NTU, "ntu-rgb+d": NTU}


def get_layout(name: str) -> Layout:
    """Look a layout up by name (``"ntu"``)."""
    try:
        return LAYOUTS[name]
    except KeyError:
        raise ValueError(f"unknown skeleton layout {name!r}; known: {sorted(LAYOUTS)}") from None
