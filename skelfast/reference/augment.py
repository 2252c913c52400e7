"""Pure-PyTorch batched skeleton augmentation: the obvious step-by-step composition.

Each step makes a full intermediate tensor, in the order documented in
``skelfast.augment.params``. It is the oracle of ``skelfast.ops.augment`` and its fallback.
"""

from __future__ import annotations

import math

import torch

from skelfast.augment.params import AugmentParams
from skelfast.reference import philox


def noise(seed: torch.Tensor, noise_std: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Standard normal noise of ``shape`` = (N, 3, T, V, M), zero for samples with ``noise_std == 0``:
    sample n holds normals 0 .. 3*T*V*M - 1 of the stream keyed by ``seed + n``
    (``skelfast.reference.philox``), in (c, t, v, m) order: what every backend adds."""
    z = torch.zeros(shape, dtype=torch.float32, device=noise_std.device)
    noisy = (noise_std != 0).nonzero().flatten()
    if len(noisy):
        keys = seed.to(device=noise_std.device, dtype=torch.int64) + noisy
        z[noisy] = philox.normal_fill(keys, math.prod(shape[1:])).view(len(noisy), *shape[1:])
    return z


def source_positions(
    params: AugmentParams, valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Temporal taps of each output frame: (i0, i1, w), each (N, t_out); i0/i1 index x's frames.

    F.interpolate's linear rule with align_corners=False inside the window [start, start+length):
    src = max((t + 0.5) * length / t_out - 0.5, 0); out = (1 - w) x[start + i0] + w x[start + i1],
    then indices outside [0, valid) are reflected ("symmetric": -1 -> 0, valid -> valid - 1).
    """
    t_out = params.t_out
    device = params.start.device
    t = torch.arange(t_out, device=device, dtype=torch.float32)[None, :]
    t = torch.where(params.reverse[:, None], (t_out - 1) - t, t)
    length = params.length[:, None]
    scale = length.to(torch.float32) / t_out  # float32 scale, as ATen's area_pixel_compute_scale
    src = torch.clamp(scale * (t + 0.5) - 0.5, min=0.0)
    i0 = src.to(torch.int64)
    w = src - i0.to(torch.float32)
    i1 = torch.minimum(i0 + 1, length - 1)
    i0 = torch.minimum(i0, length - 1)
    start = params.start[:, None]
    valid = valid.to(torch.int64)[:, None]
    return reflect(start + i0, valid), reflect(start + i1, valid), w


def reflect(p: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Symmetric reflection into [0, valid): -1 -> 0, valid -> valid - 1; clamped beyond one fold."""
    p = torch.where(p < 0, -1 - p, p)
    p = torch.where(p >= valid, 2 * valid - 1 - p, p)
    return torch.minimum(torch.clamp(p, min=0), valid - 1)


def bone_parents(num_joints: int) -> torch.Tensor:
    """(V,) parent of each joint for the bone stream: the NTU table (joint 21 is its own parent)."""
    from skelfast.skeleton import NTU

    if num_joints != NTU.num_joints:
        raise ValueError(
            f"augment: the bone stream knows the NTU layout ({NTU.num_joints} joints) only; "
            f"got V={num_joints}: pass parents="
        )
    parents = torch.arange(num_joints)
    for child, parent in NTU.bones:
        parents[child] = parent
    return parents


def augment(
    x: torch.Tensor,
    valid: torch.Tensor,
    params: AugmentParams,
    fill: torch.Tensor | None = None,
    parents: torch.Tensor | None = None,
) -> torch.Tensor:
    """x (N, 3, T_in, V, M), valid (N,) frames -> (N, 3, t_out, V, M), step by step."""
    n, c, _, v, m = x.shape
    t_out = params.t_out
    dtype = x.dtype
    cdt = torch.float64 if dtype == torch.float64 else torch.float32
    xf = x.to(cdt)
    # 1. time: gather two taps per output frame and interpolate
    i0, i1, w = source_positions(params, valid)
    batch = torch.arange(n, device=x.device)[:, None]
    x_t = xf.permute(0, 2, 1, 3, 4)  # (N, T_in, C, V, M)
    a = x_t[batch, i0]  # (N, t_out, C, V, M)
    b = x_t[batch, i1]
    w = w.to(cdt)[:, :, None, None, None]
    y = (a * (1 - w) + b * w).permute(0, 2, 1, 3, 4)  # F.interpolate's lambda0 * x0 + lambda1 * x1
    # 2. space: joint index map (flip), then one 3x3 matrix per joint
    src = params.joint_source[:, None, None, :, None].expand(n, c, t_out, v, m)
    y = torch.gather(y, 3, src)
    per_joint = torch.where(
        params.joint_select[:, :, None, None], params.joint_matrix[:, None], params.matrix[:, None]
    )  # (N, V, 3, 3)
    y = torch.einsum("nvcd,ndtvm->nctvm", per_joint.to(cdt), y)
    # 3. noise, drawn per pre-blur frame
    z = noise(params.noise_seed, params.noise_std, tuple(y.shape)).to(dtype=cdt)
    y = y + params.noise_std.to(cdt)[:, None, None, None, None] * z
    # 4. temporal blur: zero padded correlation with the per-sample taps
    weights = params.blur_weights(cdt)
    r = params.blur_size // 2
    padded = torch.nn.functional.pad(y, (0, 0, 0, 0, r, r))
    y = sum(weights[:, k, None, None, None, None] * padded[:, :, k : k + t_out] for k in range(2 * r + 1))
    # 5. axis mask
    y = y * params.axis_keep.to(cdt)[:, :, None, None, None]
    # 6. stream
    if params.stream == "bone":
        parents = bone_parents(v) if parents is None else parents
        y = y - y[:, :, :, parents.to(x.device)]
    elif params.stream == "motion":
        y = torch.cat([y[:, :, 1:] - y[:, :, :-1], torch.zeros_like(y[:, :, :1])], dim=2)
    # 7. joint mask shared by the batch, filled with a (learnable) value
    if params.frame_joint_mask is not None:
        fill_value = torch.zeros((), device=x.device) if fill is None else fill.reshape(())
        mask = params.frame_joint_mask[None, None, :, :, None]
        y = torch.where(mask, fill_value.to(cdt), y)
    return y.to(dtype)
