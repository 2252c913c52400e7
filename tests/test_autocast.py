"""One training step of every method under ``torch.autocast("cpu", dtype=torch.bfloat16)`` (what
``skelfast pretrain --amp bf16`` runs) against the same step in float32, plus the augmentation op,
which must keep computing in float32 under autocast."""

from __future__ import annotations

import copy

import pytest
import torch

from skelfast import use_backend
from skelfast.augment.recipes import HiCLR as HiCLRRecipe
from skelfast.methods import METHODS, build_method
from skelfast.ops import augment

# Tiny models (the options tests/methods/test_*.py use), each with a clip of the shape it reads.
TINY = {
    "hico": dict(hidden_size=16, num_head=2, feature_dim=8, frames=16, min_crop_length=16, queue_size=16),
    "hiclr": dict(hidden_channels=4, hidden_dim=8, feature_dim=8, queue_size=32),
    "isc": dict(queue_size=12, dim=8, frames=16, gru_hidden=8, gru_layers=2, hcn_channels=8, momentum=0.9),
    "crrl": dict(input_size=15, hidden_size=4, num_layers=2, dropout=0.0, queue_size=64),
}
CLIP = {"hico": (2, 40, 25, 2), "hiclr": (4, 12, 25, 2), "isc": (4, 40, 25, 2), "crrl": (4, 9, 5, 1)}
CASES = [
    ("hico", {}, None),
    ("hiclr", {}, None),
    ("hiclr", {"mining_epoch": 0}, None),  # the mined-positive InfoNCE from the first epoch
    ("isc", {}, None),
    ("crrl", {}, "contrast"),
    ("crrl", {}, "reconstruct"),
]

# bf16 keeps 8 significant bits: each rounding of an activation or weight is off by at most 2^-9
# relative, and a few layers of them leave the features (and through q . k / tau the loss) a few
# units of 2^-8 away from float32. 2^-6 (four such units) of the loss bounds that (the steps here
# differ by 2e-4 to 2e-3 relative) and still fails on a dropped or wrong term of a loss.
LOSS_RTOL = 2.0**-6


def test_every_method_is_covered():
    assert set(METHODS) == set(TINY) == set(CLIP) == {name for name, _, _ in CASES}


def clip(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    n, t, v, m = CLIP[name]
    g = torch.Generator().manual_seed(0)
    # smooth motion of O(1) coordinates, full-length clips
    x = 0.3 * torch.randn(n, 3, 1, v, m, generator=g) + 0.05 * torch.randn(n, 3, t, v, m, generator=g).cumsum(
        2
    )
    return x, torch.full((n,), t)


def step(method: torch.nn.Module, x: torch.Tensor, lengths: torch.Tensor, amp: bool):
    torch.manual_seed(123)  # the dropout draws
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        out = method(x, lengths, torch.Generator().manual_seed(7))
    out.loss.backward()
    return out


@pytest.mark.parametrize("name, options, stage", CASES, ids=lambda v: str(v) if v else "")
def test_one_bf16_step_matches_float32(name, options, stage):
    torch.manual_seed(0)
    fp32 = build_method(name, {**TINY[name], **options}).train()
    if stage is not None:
        fp32.set_stage(stage)
    amp = copy.deepcopy(fp32)  # the same weights, queue and momentum state
    x, lengths = clip(name)

    want, got = step(fp32, x, lengths, amp=False), step(amp, x, lengths, amp=True)

    assert got.loss.dtype == torch.float32  # the losses run in float32 under autocast
    assert torch.isfinite(got.loss)
    torch.testing.assert_close(got.loss, want.loss, atol=0.0, rtol=LOSS_RTOL)
    grads = [p.grad for p in amp.parameters() if p.grad is not None]
    assert grads and all(bool(torch.isfinite(g).all()) for g in grads)
    # the queue stays a float32 buffer holding the (float32-normalised) keys
    for buffer_name, buffer in amp.named_buffers():
        if buffer_name.endswith("bank"):
            assert buffer.dtype == torch.float32, buffer_name


@pytest.mark.parametrize("backend", ["cpp", "torch", "reference"])
def test_augment_computes_in_float32_under_autocast(backend):
    """The views are data: under autocast the op runs in float32 (its autocast rule), bit-equal to
    the float32 call; before the rule the torch path failed on mixed dtypes and the reference path
    rotated in bf16."""
    x, lengths = clip("hiclr")
    params = HiCLRRecipe(strong=True, mask=True).sample(lengths, x.shape[3], torch.Generator().manual_seed(1))
    fill = torch.zeros(1, requires_grad=True)
    with use_backend(f"augment={backend}"):
        want = augment(x, lengths, params, fill=fill)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = augment(x, lengths, params, fill=fill)
    assert got.dtype == torch.float32
    assert torch.equal(got, want)
