"""The parameters of one batched augmentation call: every random draw of a batch, as tensors.

``skelfast.ops.augment`` applies them; the recipes in ``skelfast.augment`` draw them. Passing the
same ``AugmentParams`` again replays the augmentation bit for bit (on the same device and backend).

The op composes, per sample n, in this order (the order of HiCLR's strong chain; HiCo and ISC
use a subset of it):

1. time: frames ``[start, start + length)`` of the sample, resized linearly onto ``t_out`` frames
   (``F.interpolate(mode="linear", align_corners=False)``); source indices outside
   ``[0, valid)`` are reflected symmetrically (HiCLR's padded shift); ``reverse`` flips the clip;
2. space: output joint v takes source joint ``joint_source[n, v]`` (the left/right flip is an
   index swap, as in the originals), then ``p' = E @ p`` with ``E = joint_matrix[n]`` where
   ``joint_select[n, v]`` (HiCo/ISC's joint corruption; a zero matrix masks) else ``matrix[n]``;
3. Gaussian noise ``noise_std[n] * z`` (z: normals 0.. of the stream keyed by ``noise_seed + n``,
   ``skelfast.reference.philox``, one per pre-blur element (c, t, v, m) in that order);
4. temporal Gaussian blur with ``blur_size`` taps and ``blur_sigma[n]`` where ``blur_on[n]``,
   zero padded; HiCLR's kernel is unnormalised (``blur_normalized=False``);
5. axis mask: channel c multiplied by ``axis_keep[n, c]``;
6. stream: ``joint``, ``bone`` (x[v] - x[parent v]) or ``motion`` (x[t+1] - x[t], last frame 0);
7. joint mask: entries where ``frame_joint_mask[t, v]`` (shared by the batch) take the fill value.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

STREAMS = ("joint", "bone", "motion")


@dataclass
class AugmentParams:
    """Per-sample parameters of ``skelfast.ops.augment`` for a batch of N samples with V joints."""

    t_out: int
    start: torch.Tensor  # (N,) int64: first source frame of the window (may be < 0: reflected)
    length: torch.Tensor  # (N,) int64 >= 1: frames of the window, resized onto t_out
    reverse: torch.Tensor  # (N,) bool: time reversal of the output clip
    matrix: torch.Tensor  # (N, 3, 3) float32: p' = matrix @ p (shear, rotation, scale composed)
    joint_matrix: torch.Tensor  # (N, 3, 3) float32: used instead of matrix on selected joints
    joint_select: torch.Tensor  # (N, V) bool
    joint_source: torch.Tensor  # (N, V) int64: output joint v reads source joint joint_source[n, v]
    noise_std: torch.Tensor  # (N,) float32, 0 = no noise
    noise_seed: torch.Tensor  # () int64
    blur_sigma: torch.Tensor  # (N,) float32 (drawn even where blur_on is False, as HiCLR does)
    blur_on: torch.Tensor  # (N,) bool
    axis_keep: torch.Tensor  # (N, 3) float32, 1 keeps and 0 zeroes a coordinate axis
    frame_joint_mask: torch.Tensor | None = None  # (t_out, V) bool, shared by the whole batch
    stream: str = "joint"
    blur_size: int = 15
    blur_normalized: bool = False

    @property
    def batch_size(self) -> int:
        return int(self.start.shape[0])

    @property
    def num_joints(self) -> int:
        return int(self.joint_source.shape[1])

    def tensors(self) -> dict[str, torch.Tensor]:
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }

    def to(self, device: torch.device | str) -> AugmentParams:
        """The same parameters on another device (the recipes draw on the CPU)."""
        moved = {name: t.to(device) for name, t in self.tensors().items()}
        return dataclasses.replace(self, **moved)

    def replace(self, **changes: object) -> AugmentParams:
        return dataclasses.replace(self, **changes)

    def blur_weights(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(N, blur_size) taps exp(-k^2 / 2 sigma^2), k = -r..r; identity where blur is off."""
        r = self.blur_size // 2
        k = torch.arange(-r, r + 1, dtype=torch.float64, device=self.blur_sigma.device)
        sigma = self.blur_sigma.to(torch.float64)[:, None]
        w = torch.exp(-(k**2) / (2.0 * sigma**2))
        if self.blur_normalized:
            w = w / w.sum(dim=1, keepdim=True)
        identity = (k == 0).to(torch.float64).expand_as(w)
        return torch.where(self.blur_on[:, None], w, identity).to(dtype)

    def validate(self, n: int, v: int, values: bool = True) -> None:
        """Raise ValueError naming the first field inconsistent with a batch of n samples, v joints
        (shapes; with ``values`` also the lengths and joint indices, which reads the tensors)."""
        if self.stream not in STREAMS:
            raise ValueError(f"augment: stream must be one of {STREAMS}, got {self.stream!r}")
        if self.t_out < 1:
            raise ValueError(f"augment: t_out must be >= 1, got {self.t_out}")
        if self.blur_size < 1 or self.blur_size % 2 == 0:
            raise ValueError(f"augment: blur_size must be odd and >= 1, got {self.blur_size}")
        shapes = {
            "start": (n,),
            "length": (n,),
            "reverse": (n,),
            "matrix": (n, 3, 3),
            "joint_matrix": (n, 3, 3),
            "joint_select": (n, v),
            "joint_source": (n, v),
            "noise_std": (n,),
            "noise_seed": (),
            "blur_sigma": (n,),
            "blur_on": (n,),
            "axis_keep": (n, 3),
        }
        for name, shape in shapes.items():
            t = getattr(self, name)
            if tuple(t.shape) != shape:
                raise ValueError(
                    f"augment: params.{name} has shape {tuple(t.shape)}, expected {shape} "
                    f"for a batch of {n} samples with {v} joints"
                )
        if self.frame_joint_mask is not None and tuple(self.frame_joint_mask.shape) != (self.t_out, v):
            raise ValueError(
                f"augment: params.frame_joint_mask has shape {tuple(self.frame_joint_mask.shape)}, "
                f"expected (t_out, V) = {(self.t_out, v)}"
            )
        if not (n and values):
            return
        if int(self.length.min()) < 1:
            raise ValueError("augment: params.length must be >= 1 for every sample")
        if int(self.joint_source.min()) < 0 or int(self.joint_source.max()) >= v:
            raise ValueError(f"augment: params.joint_source must index joints in [0, {v})")
        # sigma 0 makes NaN taps (0 / 0); the recipes draw positive sigmas, so one min() usually decides
        sigma = self.blur_sigma.cpu()
        if not float(sigma.min()) > 0 and bool((self.blur_on.cpu() & ~(sigma > 0)).any()):
            raise ValueError("augment: params.blur_sigma must be > 0 where blur_on")
        seed = int(self.noise_seed)
        if not 0 <= seed <= 2**63 - 1 - n:  # sample n's noise stream is keyed by seed + n
            raise ValueError(
                f"augment: params.noise_seed must be in [0, 2^63 - N) = [0, {2**63 - 1 - n}], got {seed}"
            )

    @staticmethod
    def identity(
        valid: torch.Tensor, num_joints: int, t_out: int | None = None, stream: str = "joint"
    ) -> AugmentParams:
        """No augmentation: each sample's valid frames resized onto t_out (default: its own length,
        which needs equal lengths), identity matrix, no noise, blur or masks."""
        n = int(valid.shape[0])
        valid = valid.to(torch.int64)
        if t_out is None:
            t_out = int(valid.max()) if n else 1
        eye = torch.eye(3).expand(n, 3, 3).clone()
        return AugmentParams(
            t_out=t_out,
            start=torch.zeros(n, dtype=torch.int64),
            length=valid.clone(),
            reverse=torch.zeros(n, dtype=torch.bool),
            matrix=eye,
            joint_matrix=eye.clone(),
            joint_select=torch.zeros(n, num_joints, dtype=torch.bool),
            joint_source=torch.arange(num_joints).expand(n, num_joints).clone(),
            noise_std=torch.zeros(n),
            noise_seed=torch.tensor(0, dtype=torch.int64),
            blur_sigma=torch.ones(n),
            blur_on=torch.zeros(n, dtype=torch.bool),
            axis_keep=torch.ones(n, 3),
            stream=stream,
        )


def rotation_matrix(axis: int, angle: float) -> torch.Tensor:
    """HiCLR's per-axis rotation (the transposed convention of ``random_rotate``), as p' = R @ p."""
    c, s = math.cos(angle), math.sin(angle)
    if axis == 0:
        rows = [[1, 0, 0], [0, c, s], [0, -s, c]]
    elif axis == 1:
        rows = [[c, 0, -s], [0, 1, 0], [s, 0, c]]
    else:
        rows = [[c, s, 0], [-s, c, 0], [0, 0, 1]]
    return torch.tensor(rows, dtype=torch.float64)
