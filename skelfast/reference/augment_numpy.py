"""Per-sample numpy augmentations written step by step after the official code (spec/hico_hiclr.md
§1.2 and §2.2, spec/isc_crrl.md §1.2), with every random draw passed in instead of drawn.

Each works on one sample (C, T, V, M) as the official feeders do (HiCo/ISC ``feeder/augmentations``,
AimCLR/HiCLR ``feeder/tools.py``). They are the oracle of the recipes: a recipe's drawn parameters,
replayed through these functions one sample at a time, must give what ``skelfast.ops.augment``
gives for the whole batch. ``apply_params`` does that replay.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from skelfast.skeleton import NTU


def crop_resize(x: np.ndarray, num_frames: int, start: int, length: int, t_out: int) -> np.ndarray:
    """HiCo/ISC ``crop_subsequence``: frames [start, start+length), resized to t_out with
    ``F.interpolate(mode='bilinear', align_corners=False)`` on a (1, C*V*M, L, 1) tensor."""
    c, _, v, m = x.shape
    clip = x[:, start : start + length]
    t = torch.tensor(clip, dtype=torch.float32).permute(0, 2, 3, 1).contiguous().view(1, c * v * m, length, 1)
    t = F.interpolate(t, size=(t_out, 1), mode="bilinear", align_corners=False)
    return t.squeeze(3).squeeze(0).view(c, v, m, t_out).permute(0, 3, 1, 2).contiguous().numpy()


def temporal_shift(x: np.ndarray, frame_start: int, padding_ratio: int = 6) -> np.ndarray:
    """AimCLR/HiCLR ``temperal_crop``: reflect-pad T // padding_ratio frames each side, take T
    frames from ``frame_start`` in [0, 2 * pad]."""
    t = x.shape[1]
    pad = t // padding_ratio
    padded = np.concatenate((x[:, :pad][:, ::-1], x, x[:, -pad:][:, ::-1]), axis=1) if pad else x
    return padded[:, frame_start : frame_start + t]


def shear(x: np.ndarray, s: np.ndarray) -> np.ndarray:
    """``shear``/``pose_augmentation``: R = [[1, s1[0], s2[0]], [s1[1], 1, s2[1]], [s1[2], s2[2], 1]],
    applied as np.dot(x (T, V, M, C), R.T); ``s`` is the full matrix R."""
    r = np.asarray(s, dtype=np.float64).transpose()
    return np.dot(x.transpose([1, 2, 3, 0]), r).transpose(3, 0, 1, 2)


def joint_corruption(x: np.ndarray, joints: np.ndarray, corruption: np.ndarray | None) -> np.ndarray:
    """HiCo/ISC ``joint_courruption``: zero the chosen joints (corruption None), or replace them by
    np.dot(p (T, J, M, C), Corruption) with a full random 3x3 ``corruption``."""
    out = x.copy()
    if corruption is None:
        out[:, :, joints, :] = 0
        return out
    temp = out[:, :, joints, :].transpose(1, 2, 3, 0)
    out[:, :, joints, :] = np.dot(temp, corruption).transpose(3, 0, 1, 2)
    return out


def spatial_flip(x: np.ndarray, order: tuple[int, ...] = NTU.flip) -> np.ndarray:
    """``random_spatial_flip`` when it fires: seq[:, :, transform_order['ntu'], :] (no mirroring)."""
    return x[:, :, list(order), :]


def rotate(x: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``random_rotate``'s composed effect: each per-axis R is applied as np.matmul(seq, R.T)."""
    seq = x.transpose(1, 2, 3, 0)
    return np.matmul(seq, np.asarray(matrix, dtype=np.float64).T).transpose(3, 0, 1, 2)


def gaussian_noise(x: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """``gaus_noise`` when it fires: x + N(0, std^2) drawn for (C, T, V, M); ``noise`` is that draw."""
    return x + noise


def gaussian_blur(x: np.ndarray, sigma: float, kernel: int = 15, normalized: bool = False) -> np.ndarray:
    """``GaussianBlurConv`` when it fires: taps exp(-k^2 / 2 sigma^2), k = -7..7, **not normalised**,
    applied with F.conv2d per channel on (M, C, V, T), zero padded; the result is float64."""
    radius = kernel // 2
    index = np.arange(-radius, radius + 1)
    taps = np.exp(-np.power(index, 2.0) / (2.0 * np.power(sigma, 2.0)))
    if normalized:
        taps = taps / taps.sum()
    weight = torch.from_numpy(taps).double().view(1, 1, 1, kernel).repeat(3, 1, 1, 1)
    t = torch.from_numpy(np.ascontiguousarray(x)).double().permute(3, 0, 2, 1)  # M, C, V, T
    t = F.conv2d(t, weight, padding=(0, radius), groups=3)
    return t.permute(1, -1, -2, 0).numpy()


def axis_mask(x: np.ndarray, axis: int) -> np.ndarray:
    """``axis_mask`` when it fires: one coordinate axis set to 0 for the whole sequence."""
    out = x.copy()
    out[axis] = 0
    return out


def time_flip(x: np.ndarray) -> np.ndarray:
    """``random_time_flip`` when it fires: frames in reverse order."""
    return x[:, ::-1]


def bone(x: np.ndarray, bones: tuple[tuple[int, int], ...] = NTU.bones) -> np.ndarray:
    """Bone stream: x[:, :, v1] - x[:, :, v2] for each 0-based (v1, v2) pair; other joints 0."""
    out = np.zeros_like(x)
    for v1, v2 in bones:
        out[:, :, v1] = x[:, :, v1] - x[:, :, v2]
    return out


def motion(x: np.ndarray) -> np.ndarray:
    """Motion stream: x[:, t+1] - x[:, t], last frame 0."""
    out = np.zeros_like(x)
    out[:, :-1] = x[:, 1:] - x[:, :-1]
    return out


def joint_mask(x: np.ndarray, mask: np.ndarray, fill: float) -> np.ndarray:
    """HiCLR's ``Jointmask`` for one sample: entries where mask (T, V) is set become ``fill``."""
    out = x.copy()
    out[:, mask] = fill
    return out


def apply_params(
    x: np.ndarray,
    valid: np.ndarray,
    params: object,
    temporal: str,
    noise: np.ndarray | None = None,
    fill: float = 0.0,
) -> np.ndarray:
    """Replay an ``AugmentParams`` sample by sample through the functions above, in the official
    order. ``temporal`` is the recipe's time step: ``"crop"`` (HiCo/ISC crop-resize) or ``"shift"``
    (HiCLR's padded shift, frame_start = start + T // 6). ``noise`` (N, C, t_out, V, M) is the
    standard normal draw, scaled here by params.noise_std.

    The params hold HiCLR's shear and rotation as one product matrix, applied here after the
    flip; the official shear -> flip -> rotate gives the same result because the flip only
    permutes joints and both matrices act on every joint alike.
    """
    out = []
    for i in range(x.shape[0]):
        s = x[i].astype(np.float64)
        n_valid, start, length = int(valid[i]), int(params.start[i]), int(params.length[i])
        if temporal == "shift":
            s = temporal_shift(s[:, :n_valid], start + n_valid // 6)
        else:
            s = crop_resize(s, n_valid, start, length, params.t_out).astype(np.float64)
        if bool(params.reverse[i]):
            s = time_flip(s)
        if bool(params.joint_select[i].any()):  # HiCo/ISC: corruption instead of shear
            joints = np.nonzero(params.joint_select[i].numpy())[0]
            jm = params.joint_matrix[i].double().numpy()
            s = joint_corruption(s, joints, jm.T if jm.any() else None)  # stored as R^T (p @ R)
        src = params.joint_source[i].numpy()
        if (src != np.arange(len(src))).any():
            s = spatial_flip(s, tuple(int(j) for j in src))
        s = shear(s, params.matrix[i].double().numpy())
        if float(params.noise_std[i]) != 0 and noise is not None:
            s = gaussian_noise(s, float(params.noise_std[i]) * noise[i])
        if bool(params.blur_on[i]):
            s = gaussian_blur(s, float(params.blur_sigma[i]), params.blur_size, params.blur_normalized)
        for axis in np.nonzero(params.axis_keep[i].numpy() == 0)[0]:
            s = axis_mask(s, int(axis))
        if params.stream == "bone":
            s = bone(s)
        elif params.stream == "motion":
            s = motion(s)
        if params.frame_joint_mask is not None:
            s = joint_mask(s, params.frame_joint_mask.numpy(), fill)
        out.append(s)
    return np.stack(out)
