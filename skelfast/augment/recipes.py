"""Each method's augmentation recipe as a sampler: it draws every random parameter of a batch from
a ``torch.Generator`` and returns an ``AugmentParams``, which ``skelfast.ops.augment`` applies
(and replays bit for bit when given the same object again).

Numbers, orders and probabilities follow the official code (spec/hico_hiclr.md §1.2, §2.2;
spec/isc_crrl.md §1.2, §2.1). Draws happen on the CPU (a few hundred numbers per batch); call
``params.to(device)`` to apply them on a GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from skelfast.augment.params import AugmentParams, rotation_matrix
from skelfast.skeleton import NTU


def _uniform(shape: tuple[int, ...], lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=g, dtype=torch.float64)


def _choose_joints(n: int, v: int, k: int, g: torch.Generator) -> torch.Tensor:
    """(n, v) bool with k distinct joints per row (np.random.choice(v, k, replace=False))."""
    order = torch.rand((n, v), generator=g).argsort(dim=1)[:, :k]
    return torch.zeros(n, v, dtype=torch.bool).scatter_(1, order, True)


def shear_matrices(n: int, amplitude: float, g: torch.Generator) -> torch.Tensor:
    """(n, 3, 3) float64 [[1, a, b], [c, 1, d], [e, f, 1]], off-diagonals U(-amplitude, amplitude)."""
    s = torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)
    off = ~torch.eye(3, dtype=torch.bool)
    s[:, off] = _uniform((n, 6), -amplitude, amplitude, g)
    return s


def hiclr_rotations(
    n: int, g: torch.Generator, max_main: float = 30.0, max_other: float = 1.0, symmetric: bool = False
) -> torch.Tensor:
    """(n, 3, 3) float64 Rz @ Ry @ Rx: a main axis uniform in {x, y, z} with an angle U(0, max_main)
    degrees, the two others U(0, max_other) degrees (non-negative only, as the official code);
    ``symmetric``: U(-max, max) instead, from the same draws."""
    main = torch.randint(0, 3, (n,), generator=g)
    frac = torch.rand((n, 3), generator=g, dtype=torch.float64)
    if symmetric:
        frac = 2 * frac - 1
    out = torch.empty(n, 3, 3, dtype=torch.float64)
    for i in range(n):
        r = torch.eye(3, dtype=torch.float64)
        for axis in range(3):
            limit = max_main if axis == int(main[i]) else max_other
            r = rotation_matrix(axis, math.radians(float(frac[i, axis]) * limit)) @ r
        out[i] = r
    return out


def uniform_axis_rotations(n: int, g: torch.Generator, max_angle_deg: float = 180.0) -> torch.Tensor:
    """(n, 3, 3) float64 rotations about axes uniform on the sphere, angles U(-max, max) degrees
    (Rodrigues' formula), for the general spatial recipe; HiCLR's scheme is ``hiclr_rotations``."""
    axis = torch.nn.functional.normalize(torch.randn((n, 3), generator=g, dtype=torch.float64), dim=1)
    angle = torch.deg2rad(_uniform((n,), -max_angle_deg, max_angle_deg, g))
    k = torch.zeros(n, 3, 3, dtype=torch.float64)  # cross-product matrices [axis]_x
    k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -axis[:, 2], axis[:, 1], -axis[:, 0]
    k = k - k.transpose(1, 2)
    s, c = torch.sin(angle)[:, None, None], torch.cos(angle)[:, None, None]
    return torch.eye(3, dtype=torch.float64) + s * k + (1 - c) * (k @ k)


def scale_matrices(
    n: int, g: torch.Generator, low: float, high: float, isotropic: bool = True
) -> torch.Tensor:
    """(n, 3, 3) float64 diagonal scalings, factors U(low, high): one per sample, or one per axis."""
    factors = _uniform((n, 1 if isotropic else 3), low, high, g).expand(n, 3)
    return torch.diag_embed(factors)


def crop_resize_window(
    valid: torch.Tensor, ratio: tuple[float, float], min_length: int, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """HiCo/ISC's crop: scale ~ U(ratio), L = min(max(floor(valid * scale), min_length), valid),
    start ~ randint[0, valid - L]. Returns (start, length), each (N,) int64."""
    valid = valid.to(torch.int64).cpu()
    scale = _uniform(tuple(valid.shape), ratio[0], ratio[1], g)
    length = torch.clamp(torch.floor(valid * scale).to(torch.int64), min=min_length)
    length = torch.minimum(length, valid)
    start = (torch.rand(tuple(valid.shape), generator=g, dtype=torch.float64) * (valid - length + 1)).long()
    return torch.minimum(start, valid - length), length


def _coin(n: int, p: float, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=g, dtype=torch.float64) < p


@dataclass(frozen=True)
class CropResizeSpatial:
    """HiCo and ISC: temporal crop-resize to ``t_out`` frames, then exactly one spatial augmentation:
    shear (p = 1 - p_corrupt) or joint corruption (p_corrupt; itself half zeroing, half a random
    3x3 map applied as p @ R) on ``corrupt_joints`` joints, the same for both bodies."""

    t_out: int = 64
    min_length: int = 64
    ratio: tuple[float, float] = (0.1, 1.0)
    shear_amplitude: float = 1.0
    p_corrupt: float = 0.5
    corrupt_joints: int = 15
    stream: str = "joint"

    def sample(self, valid: torch.Tensor, num_joints: int, generator: torch.Generator) -> AugmentParams:
        """Draw the parameters of a batch: valid (N,) frame counts -> AugmentParams."""
        n, g = int(valid.shape[0]), generator
        p = AugmentParams.identity(valid.cpu(), num_joints, self.t_out, self.stream)
        start, length = crop_resize_window(valid, self.ratio, self.min_length, g)
        corrupt = _coin(n, self.p_corrupt, g)
        zero = _coin(n, 0.5, g) & corrupt
        shear = shear_matrices(n, self.shear_amplitude, g)
        joints = _choose_joints(n, num_joints, self.corrupt_joints, g)
        random_map = _uniform((n, 3, 3), -1.0, 1.0, g).transpose(1, 2)  # p @ R == R^T @ p
        eye = torch.eye(3, dtype=torch.float64).expand(n, 3, 3)
        matrix = torch.where(corrupt[:, None, None], eye, shear)
        joint_matrix = torch.where(zero[:, None, None], torch.zeros_like(random_map), random_map)
        return p.replace(
            start=start,
            length=length,
            matrix=matrix.float(),
            joint_matrix=joint_matrix.float(),
            joint_select=joints & corrupt[:, None],
        )


HiCo = CropResizeSpatial
ISC = CropResizeSpatial  # the same distribution; ISC's feeder only draws in another order


@dataclass(frozen=True)
class HiCLR:
    """HiCLR's views. ``basic``: reflect-padded shift of +-T//6 frames, shear U(-0.5, 0.5).
    ``strong``: basic, then flip (p 0.5), rotation, noise N(0, 0.01^2) (p 0.5), unnormalised blur
    with 15 taps and sigma ~ U(0.1, 2) (p 0.5), axis mask (p 0.5). ``mask=True`` adds the batch-shared
    joint mask: ``int(V * mask_ratio)`` joints per frame, filled with the op's ``fill`` token.
    ``rotation_symmetric=True`` draws the rotation angles in U(-max, max) instead of the official
    non-negative U(0, max)."""

    strong: bool = False
    mask: bool = False
    padding_ratio: int = 6
    shear_amplitude: float = 0.5
    noise_std: float = 0.01
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_normalized: bool = False
    mask_ratio: float = 0.1
    stream: str = "joint"
    rotation_symmetric: bool = False

    def sample(self, valid: torch.Tensor, num_joints: int, generator: torch.Generator) -> AugmentParams:
        """Draw the parameters of a batch: valid (N,) frame counts (all equal: HiCLR's data is
        pre-resized to 50 frames; the shift keeps the length) -> AugmentParams."""
        n, g = int(valid.shape[0]), generator
        valid = valid.to(torch.int64).cpu()
        if n and int(valid.min()) != int(valid.max()):
            raise ValueError(
                "HiCLR recipe: the shift keeps the clip length, so all valid lengths must be equal"
            )
        t = int(valid[0]) if n else 1
        pad = t // self.padding_ratio
        p = AugmentParams.identity(valid, num_joints, t, self.stream)
        start = torch.randint(0, 2 * pad + 1, (n,), generator=g) - pad
        matrix = shear_matrices(n, self.shear_amplitude, g)
        p = p.replace(start=start, length=torch.full((n,), t, dtype=torch.int64))
        if self.strong:
            flip = _coin(n, 0.5, g)
            matrix = hiclr_rotations(n, g, symmetric=self.rotation_symmetric) @ matrix
            noise = _coin(n, 0.5, g)
            sigma = _uniform((n,), *self.blur_sigma, g)
            blur = _coin(n, 0.5, g)
            axis_on = _coin(n, 0.5, g)
            axis = torch.randint(0, 3, (n,), generator=g)
            flipped = torch.tensor(NTU.flip) if num_joints == NTU.num_joints else None
            if flipped is None and bool(flip.any()):
                raise ValueError(
                    f"HiCLR recipe: the spatial flip knows the NTU layout only, got V={num_joints}"
                )
            source = p.joint_source
            if flipped is not None:
                source = torch.where(flip[:, None], flipped.expand(n, num_joints), source)
            keep = torch.ones(n, 3)
            keep[axis_on, axis[axis_on]] = 0.0
            p = p.replace(
                joint_source=source,
                noise_std=torch.where(noise, self.noise_std, 0.0).float(),
                noise_seed=torch.randint(0, 2**62, (), generator=g),
                blur_sigma=sigma.float(),
                blur_on=blur,
                blur_normalized=self.blur_normalized,
                axis_keep=keep,
            )
        p = p.replace(matrix=matrix.float())
        if self.mask:
            k = int(num_joints * self.mask_ratio)
            p = p.replace(frame_joint_mask=_choose_joints(t, num_joints, k, g))
        return p


@dataclass(frozen=True)
class NoAugmentation:
    """CRRL: no augmentation; the valid frames as they are (``t_out`` = T_in by default), as the
    coordinate stream or the velocity (``stream="motion"``) its key encoder reads. Frames at or past
    a sample's valid length are reflections of its valid frames, not its zero padding (CRRL packs
    sequences, so its encoders never read them)."""

    t_out: int | None = None
    stream: str = "joint"

    def sample(self, valid: torch.Tensor, num_joints: int, generator: torch.Generator) -> AugmentParams:
        """Identity parameters; ``generator`` is accepted for a uniform interface and not used."""
        valid = valid.to(torch.int64).cpu()
        t_out = self.t_out if self.t_out is not None else (int(valid.max()) if len(valid) else 1)
        p = AugmentParams.identity(valid, num_joints, t_out, self.stream)
        # frames are copied one to one, from frame 0: a window as long as the output
        return p.replace(length=torch.full_like(valid, t_out))


CRRL = NoAugmentation


@dataclass(frozen=True)
class RandomAffine:
    """A general spatial recipe (none of the four methods uses it): per sample, scaling by
    U(``scale``) (isotropic or per axis), then a rotation about a uniformly random axis by
    U(-``max_angle_deg``, ``max_angle_deg``); frames resized onto ``t_out`` (default: unchanged,
    which needs equal lengths). Applied as p' = R @ S @ p."""

    max_angle_deg: float = 30.0
    scale: tuple[float, float] = (0.9, 1.1)
    isotropic: bool = True
    t_out: int | None = None
    stream: str = "joint"

    def sample(self, valid: torch.Tensor, num_joints: int, generator: torch.Generator) -> AugmentParams:
        """Draw the parameters of a batch: valid (N,) frame counts -> AugmentParams."""
        n, g = int(valid.shape[0]), generator
        p = AugmentParams.identity(valid.cpu(), num_joints, self.t_out, self.stream)
        scaling = scale_matrices(n, g, self.scale[0], self.scale[1], self.isotropic)
        rotation = uniform_axis_rotations(n, g, self.max_angle_deg)
        return p.replace(matrix=(rotation @ scaling).float())


RECIPES = {
    "hico": HiCo(),
    "isc": ISC(),
    "hiclr-basic": HiCLR(),
    "hiclr-strong": HiCLR(strong=True),
    "hiclr-strong-mask": HiCLR(strong=True, mask=True),
    "crrl": NoAugmentation(),
    "affine": RandomAffine(),
}


class RecipeAugment:
    """A recipe as the batch transform of ``SkeletonLoader`` (``augment(x, lengths, generator)``):
    draws the batch's parameters from the (CPU) generator and applies ``skelfast.ops.augment`` on
    x's device, with ``fill`` for recipes that mask joints."""

    def __init__(self, recipe: object, fill: torch.Tensor | None = None) -> None:
        self.recipe, self.fill = recipe, fill

    def __call__(self, x: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        from skelfast.ops import augment

        params = self.recipe.sample(lengths.cpu(), x.shape[3], generator).to(x.device)
        return augment(x, lengths, params, fill=self.fill)
