"""skelfast.nn.TemporalConv2d: an nn.Conv2d by state_dict and output, on either algorithm."""

import pytest
import torch
from torch import nn

from skelfast.nn import TemporalConv2d
from skelfast.ops.temporal_conv import prefers_frequency


@pytest.mark.parametrize("channels,frames,stride", [(128, 25, 1), (16, 12, 2)])
def test_equals_nn_conv2d(channels, frames, stride):
    # 128 channels at T = 25 take the frequency form, 16 the direct one (the auto rule)
    assert prefers_frequency(channels, channels, frames, 9, stride) == (channels == 128)
    torch.manual_seed(channels)
    conv = nn.Conv2d(channels, channels, (9, 1), (stride, 1), (4, 0)).double()
    ours = TemporalConv2d(channels, channels, 9, stride).double()
    assert ours.state_dict().keys() == conv.state_dict().keys()
    ours.load_state_dict(conv.state_dict())
    x = torch.randn(3, channels, frames, 25, dtype=torch.float64, requires_grad=True)
    y, y_ref = ours(x), conv(x)
    # float64: the frequency form's DFT sums agree with the direct sum to ~1e-13 at these scales
    torch.testing.assert_close(y, y_ref, atol=1e-10, rtol=1e-10)
    grad = torch.randn_like(y)
    got = torch.autograd.grad(y, (x, ours.weight, ours.bias), grad)
    want = torch.autograd.grad(y_ref, (x, conv.weight, conv.bias), grad)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=1e-9, rtol=1e-9)


def test_even_kernel_is_refused():
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        TemporalConv2d(4, 4, 8)


def test_official_initialiser_reaches_it():
    # HiCLR's weights_init matches class names containing "Conv2d": N(0, 0.02) weights, zero bias
    # (PyTorch's default bias is uniform and non-zero)
    from skelfast.nn import stgcn_hiclr

    convs = [m for m in stgcn_hiclr().modules() if isinstance(m, TemporalConv2d)]
    assert len(convs) == 10
    assert all(torch.equal(c.bias, torch.zeros_like(c.bias)) for c in convs)


def test_encoders_use_it_for_every_temporal_kernel():
    # ST-GCN and AGCN (9 x 1) and DSTA-Net (7 x 1): no plain nn.Conv2d with a (k > 1, 1) kernel left
    from skelfast.nn import AGCN, DSTANet, stgcn_standard

    for model in (stgcn_standard(), AGCN(), DSTANet()):
        temporal = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1]
        assert temporal and all(isinstance(m, TemporalConv2d) and m.kernel_size[1] == 1 for m in temporal)
