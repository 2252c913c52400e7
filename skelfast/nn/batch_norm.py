"""BatchNorm modules run through ``skelfast.ops.batch_norm_act`` with the tail that follows them.

The encoders keep their ``nn.BatchNorm2d`` / ``nn.Dropout`` modules (official state_dict keys,
init, ``.eval()``), and call :func:`bn_act` where the official code chains BN -> Dropout ->
residual add -> ReLU, so the chain runs as one fused op.
"""

from __future__ import annotations

import torch
from torch import nn

from skelfast.nn.dropout import keep_mask
from skelfast.ops import batch_norm_act
from skelfast.ops.dropout import runs_reference


def dropout_keep(p: float, training: bool, x: torch.Tensor) -> tuple[torch.Tensor | None, float]:
    """The (keep mask, scale) of a dropout before a fused BatchNorm tail: (None, 1.0) when it is the
    identity (eval or p = 0); each element kept with probability 1 - p and scaled by 1 / (1 - p).

    The mask is ``keep_mask``'s, unless the dropout op runs its reference (``use_backend("reference")``,
    the methods benchmark's reference column): then it is nn.Dropout's own ``bernoulli_`` draw, as
    every other reference op runs PyTorch's own computation."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return None, 1.0
    if p == 1.0:
        return torch.zeros(x.shape, dtype=torch.bool, device=x.device), 0.0
    if runs_reference(x):
        return torch.empty_like(x).bernoulli_(1.0 - p).bool(), 1.0 / (1.0 - p)
    return keep_mask(x.shape, p, x.device), 1.0 / (1.0 - p)


class _CancelledBias(torch.autograd.Function):
    """x unchanged, with ``bias`` attached to the graph with its exact gradient, zero."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        ctx.bias_shape = bias.shape
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: ANN001
        return grad, grad.new_zeros(ctx.bias_shape)


def cancelled_bias(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``x``, with ``bias`` (any shape) attached to autograd: for a bias that what follows cancels
    exactly, so it is never added (a BatchNorm with batch statistics subtracts every channel's mean;
    the AGCN's attention softmax cancels theta's bias). Its gradient is exactly zero (the official
    chain gets rounding noise there) and is returned as zeros rather than None, so the optimizer
    treats the parameter as the official run does (weight decay, momentum buffers)."""
    if bias.requires_grad and torch.is_grad_enabled():
        return _CancelledBias.apply(x, bias)
    return x


def bn_act(
    bn: nn.modules.batchnorm._BatchNorm,
    x: torch.Tensor,
    residual: torch.Tensor | None = None,
    keep: torch.Tensor | None = None,
    keep_scale: float = 1.0,
    relu: bool = False,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``relu?(bn(x + bias) * keep * keep_scale + residual)`` with ``bn``'s parameters, buffers and
    mode, as ``bn.forward`` would use and update them (momentum, or the cumulative average when
    ``bn.momentum`` is None). x (N, C, *) -> same shape; bias (C,) or None.

    ``bias`` is the bias of the convolution before the BatchNorm, not yet added to x. With batch
    statistics the BatchNorm cancels it, so it is never added (one pass over x forward and its sum
    over the gradient backward saved); only the running mean, which the official chain updates with
    the mean of x + bias, takes it. With running statistics (eval) it is added to x."""
    bn._check_input_dim(x)
    factor = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    batch_stats = bn.training or (bn.running_mean is None and bn.running_var is None)
    use_running = not bn.training or bn.track_running_stats
    running_mean = bn.running_mean if use_running else None
    if bias is not None:
        if not batch_stats:
            x = x + bias.view((1, -1) + (1,) * (x.dim() - 2))
        else:
            x = cancelled_bias(x, bias)
    # the op moves the running mean it is given towards mean(x); the official chain, towards
    # mean(x) + bias. So the op gets zeros (-> factor mean(x)) and the running mean is updated after
    # it: not in place before, since the reference backend saves the running mean it is given
    mean_step = (
        torch.zeros_like(running_mean)
        if bias is not None and bn.training and running_mean is not None
        else None
    )
    out = batch_norm_act(
        x,
        bn.weight,
        bn.bias,
        running_mean if mean_step is None else mean_step,
        bn.running_var if use_running else None,
        batch_stats,
        factor,
        bn.eps,
        residual,
        keep,
        keep_scale,
        relu,
    )
    if mean_step is not None:
        with torch.no_grad():
            running_mean.mul_(1.0 - factor).add_(mean_step).add_(bias, alpha=factor)
    return out
