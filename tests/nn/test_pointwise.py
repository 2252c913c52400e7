"""``pointwise_conv`` (1x1 convolution as a batched GEMM) against ``F.conv2d``."""

import pytest
import torch
import torch.nn.functional as F

from skelfast.nn.pointwise import pointwise_conv
from tests.utils import assert_close


@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize(
    ("n", "c_in", "c_out", "t", "v"), [(3, 5, 7, 13, 25), (1, 1, 1, 1, 1), (2, 16, 32, 50, 17)]
)
def test_matches_conv2d_values_and_gradients_float64(stride, with_bias, n, c_in, c_out, t, v):
    x = torch.randn(n, c_in, t, v, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(c_out, c_in, 1, 1, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(c_out, dtype=torch.float64, requires_grad=True) if with_bias else None
    y = pointwise_conv(x, weight, bias, stride)
    expected = F.conv2d(x, weight, bias, stride=(stride, 1))
    assert_close(y, expected, 1e-12, 1e-12, "pointwise_conv forward")
    inputs = [x, weight] + ([bias] if with_bias else [])
    grad_out = torch.randn_like(y)
    grads = torch.autograd.grad(y, inputs, grad_out)
    expected_grads = torch.autograd.grad(expected, inputs, grad_out)
    for name, got, want in zip(["x", "weight", "bias"], grads, expected_grads, strict=False):
        assert_close(got, want, 1e-11, 1e-11, f"pointwise_conv grad {name}")


def test_non_contiguous_input_and_zero_batch():
    x = torch.randn(2, 6, 9, 4).transpose(2, 3)  # (2, 6, 4, 9), not contiguous
    weight = torch.randn(3, 6, 1, 1)
    assert_close(pointwise_conv(x, weight), F.conv2d(x, weight), 1e-5, 1e-5, "non-contiguous")
    assert pointwise_conv(torch.randn(0, 6, 4, 9), weight).shape == (0, 3, 4, 9)


def test_bad_input_names_the_problem():
    with pytest.raises(ValueError, match=r"x must be \(N, C, T, V\)"):
        pointwise_conv(torch.randn(2, 3, 4), torch.randn(5, 3, 1, 1))
    with pytest.raises(ValueError, match="expects 4 input channels, x has 3"):
        pointwise_conv(torch.randn(2, 3, 4, 5), torch.randn(5, 4, 1, 1))
