"""The official skeleton normalisations, each a named option (``normalize(data, num_frame, name)``).

* ``"agcn"``: 2s-AGCN ``pre_normalization`` as ISC and HiCo's papers use it (spec/isc_crrl.md §0.3):
  pad null frames by looping, centre on body 0's joint 1 per frame, then one rotation per sample
  taking body 0's hip->spine vector (joint 1 - joint 0, frame 0) onto +z and then its shoulder
  vector (joint 8 - joint 4, right minus left shoulder) onto +x.
* ``"agcn-noz"``: the same without the +z rotation, which HiCo's released ``data_gen/preprocess.py``
  has commented out.
* ``"frame50"``: CrosSCLR/AimCLR/HiCLR ``NTUMotionProcessor`` (spec/hico_hiclr.md §2.1): per body
  centre on its own joint 20, resize the valid frames to 50 (cv2 INTER_LINEAR), per-frame y rotation.
* ``"pyskl"``: pyskl ``PreNormalize3D``: drop empty frames, centre on joint 1 of body 0 at frame 0,
  the same two rotations. Frame counts change (returned).
* ``"none"``: unchanged.

All take and return (N, 3, T, V, M) float32 arrays (the NTU ``.npy`` layout) and work sample by
sample so a memory-mapped input is never loaded whole.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NORMALIZATIONS = ("none", "agcn", "agcn-noz", "frame50", "pyskl")


def _angle_between(v1: np.ndarray, v2: np.ndarray) -> float:
    if np.abs(v1).sum() < 1e-6 or np.abs(v2).sum() < 1e-6:
        return 0.0
    u1, u2 = v1 / np.linalg.norm(v1), v2 / np.linalg.norm(v2)
    return float(np.arccos(np.clip(np.dot(u1, u2), -1.0, 1.0)))


def rotation_matrix(axis: np.ndarray, theta: float) -> np.ndarray:
    """2s-AGCN's Euler-Rodrigues matrix (3, 3); identity for a (near-)zero axis or angle."""
    axis = np.asarray(axis, dtype=np.float64)
    if np.abs(axis).sum() < 1e-6 or abs(theta) < 1e-6:
        return np.eye(3)
    axis = axis / np.sqrt(np.dot(axis, axis))
    a = np.cos(theta / 2.0)
    b, c, d = -axis * np.sin(theta / 2.0)
    aa, bb, cc, dd = a * a, b * b, c * c, d * d
    bc, ad, ac, ab, bd, cd = b * c, a * d, a * c, a * b, b * d, c * d
    return np.array(
        [
            [aa + bb - cc - dd, 2 * (bc + ad), 2 * (bd - ac)],
            [2 * (bc - ad), aa + cc - bb - dd, 2 * (cd + ab)],
            [2 * (bd + ac), 2 * (cd - ab), aa + dd - bb - cc],
        ]
    )


def align_rotation(vector: np.ndarray, target: Sequence[float]) -> np.ndarray:
    """The rotation (3, 3) about ``vector x target`` by their angle: maps ``vector``'s direction onto ``target``."""
    vector = np.asarray(vector, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    return rotation_matrix(np.cross(vector, target), _angle_between(vector, target))


def agcn_sample(
    s: np.ndarray, zaxis: Sequence[int] = (0, 1), xaxis: Sequence[int] = (8, 4), align_z: bool = True
) -> None:
    """2s-AGCN ``pre_normalization`` of one sample ``s`` (M, T, V, C), in place (float32 arithmetic kept)."""
    m_bodies, t_len = s.shape[0], s.shape[1]
    # 1. pad: a body whose first frame is empty is compacted to the front (all empty frames removed),
    #    then the empty tail is filled by looping the frames before it
    for p in range(m_bodies):
        person = s[p]
        if person.sum() == 0:
            continue
        if person[0].sum() == 0:
            keep = person.sum(-1).sum(-1) != 0
            tmp = person[keep].copy()
            person[:] = 0
            person[: len(tmp)] = tmp
        frame_sum = person.sum(-1).sum(-1)
        for i_f in np.nonzero(frame_sum == 0)[0]:
            if person[i_f:].sum() == 0:
                if i_f > 0:
                    rest = t_len - i_f
                    person[i_f:] = np.concatenate([person[:i_f]] * int(np.ceil(rest / i_f)), 0)[:rest]
                break
    if s.sum() == 0:
        return
    # 2. centre on body 0's joint 1 per frame; joints that are exactly zero stay zero
    center = s[0][:, 1:2, :].copy()
    for p in range(m_bodies):
        if s[p].sum() == 0:
            continue
        mask = (s[p].sum(-1) != 0)[..., None]
        s[p] = (s[p] - center) * mask
    # 3./4. one rotation each, from body 0 at frame 0, applied to every non-empty frame of every body
    targets = ([(zaxis, (0.0, 0.0, 1.0))] if align_z else []) + [((xaxis[1], xaxis[0]), (1.0, 0.0, 0.0))]
    for (j_from, j_to), target in targets:
        if s.sum() == 0:
            return
        rot = align_rotation(s[0, 0, j_to].astype(np.float64) - s[0, 0, j_from], target)
        for p in range(m_bodies):
            if s[p].sum() == 0:
                continue
            nonempty = s[p].sum(-1).sum(-1) != 0
            s[p, nonempty] = s[p, nonempty].astype(np.float64) @ rot.T


def pre_normalization(
    data: np.ndarray, zaxis: Sequence[int] = (0, 1), xaxis: Sequence[int] = (8, 4), align_z: bool = True
) -> np.ndarray:
    """2s-AGCN ``pre_normalization``: (N, 3, T, V, M) -> a new float32 array of the same shape."""
    _check(data)
    out = np.empty(data.shape, dtype=np.float32)
    for i in range(data.shape[0]):
        s = np.ascontiguousarray(np.asarray(data[i], dtype=np.float32).transpose(3, 1, 2, 0))  # M, T, V, C
        agcn_sample(s, zaxis, xaxis, align_z)
        out[i] = s.transpose(3, 1, 2, 0)
    return out


def cv2_linear_resize_time(x: np.ndarray, size: int) -> np.ndarray:
    """Resize axis 0 of ``x`` (L, ...) to ``size`` like ``cv2.resize(..., INTER_LINEAR)`` (half-pixel centres,
    edges clamped, no antialiasing)."""
    length = x.shape[0]
    fy = (np.arange(size, dtype=np.float64) + 0.5) * (length / size) - 0.5
    sy = np.floor(fy).astype(np.int64)
    w = fy - sy
    low = sy < 0
    w[low], sy[low] = 0.0, 0
    high = sy >= length - 1
    w[high], sy[high] = 0.0, length - 1
    nxt = np.minimum(sy + 1, length - 1)
    shape = (size,) + (1,) * (x.ndim - 1)
    return x[sy] * (1 - w).reshape(shape) + x[nxt] * w.reshape(shape)


def _y_rotation_per_frame(body: np.ndarray) -> np.ndarray:
    """AimCLR ``parallel_skeleton``: body (C, T, V) -> per-frame rotation about y making the shoulders parallel to x."""
    vec = body[:, :, 8] - body[:, :, 4]
    vec[1, :] = 0
    l2 = np.sqrt(np.sum(np.square(vec), axis=0))
    theta = np.arccos(vec[0, :] / (l2 + 0.0001)) * (180 / np.pi)
    if np.sum(vec[2, :]) >= 0:
        theta = -theta
    theta = theta * np.pi / 180
    c, s = np.cos(theta), np.sin(theta)
    z = np.zeros_like(c)
    tm = np.stack(
        [np.stack([c, z, -s], -1), np.stack([z, z + 1, z], -1), np.stack([s, z, c], -1)], -2
    )  # T, 3, 3
    return np.einsum("tij,jtv->itv", tm, body)


def frame50_sample(x: np.ndarray, t_length: int = 50) -> tuple[np.ndarray, int]:
    """AimCLR ``NTUMotionProcessor`` (relative, resize, y_rotation) of one (C, T, V, M) sample.

    Returns ((C, t_length, V, M) float32, the valid length it counted).
    """
    x = np.asarray(x, dtype=np.float32)
    c, _, v, m = x.shape
    length = int((np.abs(x[:, :, 0, 0]).sum(axis=0) != 0).sum())
    out = np.zeros((c, t_length, v, m), dtype=np.float32)
    if length == 0:
        return out, 0
    rel = x - x[:, :, 20:21, :]  # every body on its own spine-shoulder joint (no mask, as the original)
    for n in range(m):
        out[:, :, :, n] = cv2_linear_resize_time(
            rel[:, :length, :, n].transpose(1, 0, 2), t_length
        ).transpose(1, 0, 2)
    for n in range(m):
        out[:, :, :, n] = _y_rotation_per_frame(out[:, :, :, n].astype(np.float64))
    return out, length


def frame50(data: np.ndarray, t_length: int = 50) -> np.ndarray:
    """The HiCLR/AimCLR ``frame50`` form: (N, 3, T, V, M) -> (N, 3, t_length, V, M) float32."""
    _check(data)
    n, c, _, v, m = data.shape
    out = np.empty((n, c, t_length, v, m), dtype=np.float32)
    for i in range(n):
        out[i], _ = frame50_sample(data[i], t_length)
    return out


def pre_normalize_3d(
    keypoint: np.ndarray,
    zaxis: Sequence[int] = (0, 1),
    xaxis: Sequence[int] = (8, 4),
    align_spine: bool = True,
    align_center: bool = True,
) -> tuple[np.ndarray, int]:
    """pyskl ``PreNormalize3D`` of one keypoint array (M, T, V, C) with M in {1, 2}.

    Drops the frames where the body with more valid frames is empty (it becomes body 0), centres on
    joint 1 (last joint if V != 25) of body 0 at frame 0, rotates hip->spine onto +z and the shoulder
    vector onto +x. Returns (keypoint (M, T', V, C), T').
    """
    skeleton = np.asarray(keypoint)
    m_bodies, t_len, v, _ = skeleton.shape
    if skeleton.sum() == 0:
        return skeleton, t_len
    if m_bodies not in (1, 2):
        raise ValueError(f"pyskl PreNormalize3D takes 1 or 2 bodies, got {m_bodies}")
    index0 = np.nonzero(~np.all(np.isclose(skeleton[0], 0), axis=(1, 2)))[0]
    if m_bodies == 2:
        index1 = np.nonzero(~np.all(np.isclose(skeleton[1], 0), axis=(1, 2)))[0]
        if len(index0) < len(index1):
            skeleton = skeleton[:, index1][[1, 0]]
        else:
            skeleton = skeleton[:, index0]
    else:
        skeleton = skeleton[:, index0]
    t_new = skeleton.shape[1]
    if align_center:
        center = skeleton[0, 0, 1 if v == 25 else -1].copy()
        mask = ((skeleton != 0).sum(-1) > 0)[..., None]
        skeleton = (skeleton - center) * mask
    if align_spine:
        rz = align_rotation(skeleton[0, 0, zaxis[1]] - skeleton[0, 0, zaxis[0]], (0.0, 0.0, 1.0))
        skeleton = np.einsum("abcd,kd->abck", skeleton, rz)
        rx = align_rotation(skeleton[0, 0, xaxis[0]] - skeleton[0, 0, xaxis[1]], (1.0, 0.0, 0.0))
        skeleton = np.einsum("abcd,kd->abck", skeleton, rx)
    return skeleton, t_new


def pyskl_prenormalize(data: np.ndarray, num_frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``pre_normalize_3d`` over (N, 3, T, V, M) (first ``num_frame`` frames of each sample): returns the
    result zero-padded to T and the new frame counts."""
    _check(data)
    out = np.zeros(data.shape, dtype=np.float32)
    new_len = np.zeros(data.shape[0], dtype=np.int64)
    for i in range(data.shape[0]):
        t = int(min(num_frame[i], data.shape[2]))
        kp = np.asarray(data[i, :, :t], dtype=np.float32).transpose(3, 1, 2, 0)  # M, T, V, C
        kp, new_len[i] = pre_normalize_3d(kp)
        out[i, :, : kp.shape[1]] = kp.transpose(3, 1, 2, 0)
    return out, new_len


def normalize(data: np.ndarray, num_frame: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Apply the normalisation called ``name`` (one of ``NORMALIZATIONS``) to (N, 3, T, V, M) data.

    Returns (data float32, num_frame int64). ``num_frame`` changes only for ``"pyskl"`` (empty frames
    dropped) and ``"frame50"`` (every non-empty sample becomes 50 frames long).
    """
    num_frame = np.asarray(num_frame, dtype=np.int64)
    if name == "none":
        return np.asarray(data, dtype=np.float32), num_frame
    if name in ("agcn", "agcn-noz"):
        return pre_normalization(data, align_z=name == "agcn"), num_frame
    if name == "frame50":
        out = frame50(data)
        return out, np.where(num_frame > 0, out.shape[2], 0).astype(np.int64)
    if name == "pyskl":
        return pyskl_prenormalize(data, num_frame)
    raise ValueError(f"unknown normalization {name!r}; choose one of {NORMALIZATIONS}")


def _check(data: np.ndarray) -> None:
    if data.ndim != 5 or data.shape[1] != 3:
        raise ValueError(f"expected (N, 3, T, V, M) skeleton data, got shape {tuple(data.shape)}")
