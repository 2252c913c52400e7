"""The recipes: drawn parameters replayed through the per-sample numpy oracle (the official code's
steps) equal the batched op; distributions match the official ranges and probabilities; replay."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import skelfast
from skelfast.augment import CRRL, ISC, HiCLR, HiCo
from skelfast.reference import augment_numpy
from skelfast.reference.augment import noise as reference_noise

RECIPES = {
    "hico": (HiCo(), "crop"),
    "isc": (ISC(stream="bone"), "crop"),
    "hiclr-basic": (HiCLR(), "shift"),
    "hiclr-strong": (HiCLR(strong=True, stream="motion"), "shift"),
    "hiclr-strong-mask": (HiCLR(strong=True, mask=True), "shift"),
    "crrl": (CRRL(t_out=40, stream="motion"), "crop"),
}


def _batch(name: str, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    if name.startswith("hiclr"):
        return torch.randn(n, 3, 50, 25, 2, generator=g), torch.full((n,), 50)
    x = torch.randn(n, 3, 120, 25, 2, generator=g)
    low = 40 if name == "crrl" else 30  # CRRL copies t_out=40 frames; past valid the op reflects
    return x, torch.randint(low, 121, (n,), generator=g)


@pytest.mark.parametrize("name", list(RECIPES))
def test_recipe_equals_numpy_oracle_sample_by_sample(name):
    recipe, temporal = RECIPES[name]
    g = torch.Generator().manual_seed(3)
    x, valid = _batch(name, 12, g)
    params = recipe.sample(valid, 25, g)
    fill = 0.7
    out = skelfast.ops.augment(x, valid, params, torch.tensor(fill))
    noise = reference_noise(params.noise_seed, params.noise_std, tuple(out.shape)).numpy()
    expected = augment_numpy.apply_params(x.numpy(), valid.numpy(), params, temporal, noise, fill)
    # float32 op against the float64 oracle; values up to ~5x (unnormalised blur) of N(0, 1) data
    np.testing.assert_allclose(out.numpy(), expected, atol=5e-5, rtol=1e-5)


def test_replay_gives_identical_output_and_same_seed_same_params():
    recipe = HiCLR(strong=True, mask=True)
    x, valid = _batch("hiclr", 6, torch.Generator().manual_seed(0))
    a = recipe.sample(valid, 25, torch.Generator().manual_seed(11))
    b = recipe.sample(valid, 25, torch.Generator().manual_seed(11))
    for field, value in a.tensors().items():
        assert torch.equal(value, b.tensors()[field]), field
    assert torch.equal(skelfast.ops.augment(x, valid, a), skelfast.ops.augment(x, valid, a))
    c = recipe.sample(valid, 25, torch.Generator().manual_seed(12))
    assert not torch.equal(a.matrix, c.matrix)


def test_hico_isc_distribution():
    n = 4000
    g = torch.Generator().manual_seed(0)
    valid = torch.randint(20, 301, (n,), generator=g)
    p = HiCo().sample(valid, 25, g)
    # crop: length = clamp(floor(valid * U(0.1, 1)), 64, valid), window inside the valid frames
    assert bool((p.length <= valid).all()) and bool((p.length >= torch.clamp(valid, max=64)).all())
    assert bool((p.start >= 0).all()) and bool((p.start + p.length <= valid).all())
    long = valid >= 250
    assert float((p.length[long] == 64).float().mean()) > 0.1  # the 64-frame floor is hit often
    assert bool((p.length[valid <= 64] == valid[valid <= 64]).all())
    # one spatial augmentation: corruption (15 joints; half zeroing) or shear, p = 0.5 each
    corrupt = p.joint_select.any(1)
    assert abs(float(corrupt.float().mean()) - 0.5) < 0.04
    assert bool((p.joint_select[corrupt].sum(1) == 15).all())
    zeroed = (p.joint_matrix[corrupt] == 0).flatten(1).all(1)
    assert abs(float(zeroed.float().mean()) - 0.5) < 0.05
    assert float(p.joint_matrix[corrupt][~zeroed].abs().max()) <= 1.0
    sheared = p.matrix[~corrupt]
    assert bool((torch.diagonal(sheared, dim1=1, dim2=2) == 1).all())
    off = sheared[:, ~torch.eye(3, dtype=torch.bool)]
    assert float(off.abs().max()) <= 1.0 and float(off.abs().max()) > 0.95  # amplitude 1.0
    assert bool((p.matrix[corrupt] == torch.eye(3)).all())
    assert p.t_out == 64 and not bool(p.blur_on.any()) and not bool(p.noise_std.any())


def test_hiclr_distribution():
    n = 4000
    g = torch.Generator().manual_seed(0)
    valid = torch.full((n,), 50)
    basic = HiCLR().sample(valid, 25, g)
    assert set(basic.start.tolist()) == set(range(-8, 9))  # randint[0, 16] - pad 8
    off = basic.matrix[:, ~torch.eye(3, dtype=torch.bool)]
    assert float(off.abs().max()) <= 0.5 and float(off.abs().max()) > 0.48
    p = HiCLR(strong=True, mask=True).sample(valid, 25, g)
    flipped = (p.joint_source != torch.arange(25)).any(1)
    for rate in (flipped, p.noise_std != 0, p.blur_on, (p.axis_keep == 0).any(1)):
        assert abs(float(rate.float().mean()) - 0.5) < 0.04
    assert bool(((p.axis_keep == 0).sum(1) <= 1).all())
    assert torch.equal(p.noise_std.unique(), torch.tensor([0.0, 0.01]))
    assert float(p.blur_sigma.min()) >= 0.1 and float(p.blur_sigma.max()) <= 2.0
    assert not p.blur_normalized and p.blur_size == 15
    # the joint mask: int(25 * 0.1) = 2 joints per frame, shared by the batch
    assert p.frame_joint_mask.shape == (50, 25)
    assert bool((p.frame_joint_mask.sum(1) == 2).all())


def test_hiclr_rotation_angles_are_non_negative_and_bounded():
    from skelfast.augment.recipes import hiclr_rotations

    r = hiclr_rotations(2000, torch.Generator().manual_seed(0))
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(r @ r.transpose(1, 2), eye.expand_as(r), atol=1e-12)
    angle = torch.rad2deg(torch.arccos(((torch.diagonal(r, dim1=1, dim2=2).sum(1) - 1) / 2).clamp(-1, 1)))
    assert float(angle.max()) < 30.0 + 2.0 and float(angle.max()) > 25.0
    # non-negative per-axis angles: with the clockwise convention Rx has +sin at [1, 2]
    x_main = r[:, 1, 2] > 0.05
    assert float(x_main.float().mean()) > 0.25 and bool((r[:, 1, 2] > -0.03).all())


def test_hiclr_symmetric_rotation_mirrors_the_official_draws():
    """rotation_symmetric maps each uniform u to 2u - 1 (same draws): the angles about the x axis
    take both signs, each about half the time, within the same bounds; the default is unchanged."""
    from skelfast.augment.recipes import hiclr_rotations

    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    sym = hiclr_rotations(2000, g(), symmetric=True)
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(sym @ sym.transpose(1, 2), eye.expand_as(sym), atol=1e-12)
    angle = torch.rad2deg(torch.arccos(((torch.diagonal(sym, dim1=1, dim2=2).sum(1) - 1) / 2).clamp(-1, 1)))
    assert float(angle.max()) < 30.0 + 2.0 and float(angle.max()) > 25.0
    x_main = sym[:, 1, 2].abs() > 0.05  # x is the main axis (|sin| > 0.05: past the 1-degree others)
    positive = float((sym[x_main, 1, 2] > 0).float().mean())
    assert 0.4 < positive < 0.6  # 2000 draws, ~660 with x main: 4 standard errors is 0.08
    assert torch.equal(hiclr_rotations(50, g(), symmetric=False), hiclr_rotations(50, g()))
    valid = torch.full((64,), 50)
    official, corrected = (
        HiCLR(strong=True, rotation_symmetric=s).sample(valid, 25, g()) for s in (False, True)
    )
    assert torch.equal(official.blur_sigma, corrected.blur_sigma)  # the same draws ...
    assert not torch.allclose(official.matrix, corrected.matrix)  # ... other rotations


def test_hiclr_rejects_ragged_lengths_and_crrl_is_identity():
    with pytest.raises(ValueError, match="all valid lengths must be equal"):
        HiCLR().sample(torch.tensor([50, 40]), 25, torch.Generator())
    x = torch.randn(2, 3, 40, 25, 2)
    valid = torch.tensor([40, 40])
    p = dataclasses.replace(CRRL(), t_out=None).sample(valid, 25, torch.Generator())
    assert torch.equal(skelfast.ops.augment(x, valid, p), x)


def test_uniform_axis_rotations_are_rotations_with_uniform_axes():
    from skelfast.augment.recipes import uniform_axis_rotations

    g = torch.Generator().manual_seed(3)
    r = uniform_axis_rotations(4000, g, max_angle_deg=90.0)
    eye = torch.eye(3, dtype=torch.float64).expand_as(r)
    torch.testing.assert_close(r @ r.transpose(1, 2), eye)  # orthogonal
    torch.testing.assert_close(torch.linalg.det(r), torch.ones(4000, dtype=torch.float64))  # proper
    # angle from the trace: |angle| <= 90 deg, and U(-90, 90) makes |angle| ~ U(0, 90): mean 45 deg
    angle = torch.rad2deg(torch.arccos(((r.diagonal(dim1=1, dim2=2).sum(1) - 1) / 2).clamp(-1, 1)))
    assert float(angle.max()) <= 90.0 + 1e-6
    assert abs(float(angle.mean()) - 45.0) < 2.0  # std of the mean: 26/sqrt(4000) = 0.4 deg
    # axes uniform on the sphere: each coordinate of the axis has mean 0 and mean square 1/3
    axis = torch.stack([r[:, 2, 1] - r[:, 1, 2], r[:, 0, 2] - r[:, 2, 0], r[:, 1, 0] - r[:, 0, 1]], 1)
    axis = torch.nn.functional.normalize(axis, dim=1)
    assert float(axis.square().mean(0).sub(1 / 3).abs().max()) < 0.03  # std ~0.3/sqrt(4000) = 0.005


def test_random_affine_scales_then_rotates_and_replays():
    from skelfast.augment import RandomAffine
    from skelfast.ops import augment

    valid = torch.full((64,), 20)
    recipe = RandomAffine(max_angle_deg=0.0, scale=(0.5, 2.0))
    params = recipe.sample(valid, 25, torch.Generator().manual_seed(1))
    diag = params.matrix.diagonal(dim1=1, dim2=2)
    assert torch.equal(diag[:, 0], diag[:, 1]) and torch.equal(diag[:, 1], diag[:, 2])  # isotropic
    assert float(diag.min()) >= 0.5 and float(diag.max()) <= 2.0
    x = torch.randn(64, 3, 20, 25, 2)
    out = augment(x, valid, params)
    torch.testing.assert_close(out, x * diag[:, 0].view(64, 1, 1, 1, 1))  # pure scaling, no rotation
    per_axis = RandomAffine(scale=(0.5, 2.0), isotropic=False).sample(
        valid, 25, torch.Generator().manual_seed(1)
    )
    assert torch.equal(augment(x, valid, per_axis), augment(x, valid, per_axis))
