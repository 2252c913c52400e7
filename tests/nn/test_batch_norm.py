"""``skelfast.nn.batch_norm.bn_act``'s ``bias``: the bias of the convolution before a BatchNorm, which
a BatchNorm normalising with batch statistics cancels, so it is not added there."""

import pytest
import torch
from torch import nn

from skelfast import use_backend
from skelfast.nn.batch_norm import bn_act
from tests.utils import assert_close


def chain(bn: nn.BatchNorm2d, x: torch.Tensor, bias: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """The official order: the convolution's bias added, then the module, the residual and ReLU."""
    return torch.relu(bn(x + bias.view(1, -1, 1, 1)) + residual)


@pytest.mark.parametrize("backend", ["cpp", "reference"])
@pytest.mark.parametrize("momentum", [0.1, None])  # None: nn.BatchNorm2d's cumulative average
@pytest.mark.parametrize("training", [True, False])
def test_bias_equals_adding_it_before_the_module_float64(momentum, training, backend):
    """Output, every gradient and the running statistics after two steps equal the module chain with
    the bias added first, in float64, with either backend of the op (the reference saves the running
    statistics it is given for its backward, so they must not change in place after it). In training mode the bias's gradient is the sum over each channel
    of the BatchNorm's input gradient, zero up to rounding in the chain (compared with atol 1e-12 on
    outputs of scale 1) and exactly zero here; in eval mode it is a real gradient."""
    torch.manual_seed(0)
    fused, module = (nn.BatchNorm2d(6, momentum=momentum).double() for _ in range(2))
    with torch.no_grad():
        fused.weight.uniform_(0.5, 1.5)
        fused.bias.uniform_(-0.5, 0.5)
        fused.running_mean.uniform_(-1, 1)
        fused.running_var.uniform_(0.5, 2)
    module.load_state_dict(fused.state_dict())
    fused.train(training)
    module.train(training)
    bias = (torch.randn(6, dtype=torch.float64) * 3).requires_grad_()
    bias_module = bias.detach().clone().requires_grad_()
    for step in range(2):
        x = (torch.randn(4, 6, 5, 7, dtype=torch.float64) + 2).requires_grad_()
        residual = torch.randn(4, 6, 5, 7, dtype=torch.float64)
        x_module = x.detach().clone().requires_grad_()
        with use_backend(f"batch_norm_act={backend}"):
            y = bn_act(fused, x, residual, relu=True, bias=bias)
        y_module = chain(module, x_module, bias_module, residual)
        assert_close(y, y_module, 1e-12, 1e-10, f"output, step {step}")
        weights = torch.randn_like(y)
        with use_backend(f"batch_norm_act={backend}"):
            got = torch.autograd.grad((y * weights).sum(), [x, bias, fused.weight, fused.bias])
        want = torch.autograd.grad(
            (y_module * weights).sum(), [x_module, bias_module, module.weight, module.bias]
        )
        for what, g, w in zip(("x", "bias", "weight", "bn bias"), got, want, strict=True):
            assert_close(g, w, 1e-10, 1e-9, f"grad {what}, step {step}")
        if training:
            assert torch.equal(got[1], torch.zeros_like(bias))
        else:
            assert got[1].abs().min() > 1e-3  # eval: the bias shifts the output, a real gradient
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            assert_close(getattr(fused, name), getattr(module, name), 1e-12, 1e-12, f"{name}, step {step}")


def test_bias_without_autograd_updates_the_running_mean():
    # no_grad (a momentum encoder's key pass): no graph, the running mean still takes the bias
    bn, module = nn.BatchNorm2d(3).train(), nn.BatchNorm2d(3).train()
    x, bias = torch.randn(8, 3, 4, 5), torch.randn(3)
    with torch.no_grad():
        y = bn_act(bn, x, bias=bias)
        y_module = module(x + bias.view(1, -1, 1, 1))
    assert_close(y, y_module, 1e-5, 1e-5, "output")
    assert_close(bn.running_mean, module.running_mean, 1e-6, 1e-6, "running mean")
