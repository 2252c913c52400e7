"""1x1 convolutions over (N, C, T, V) as batched GEMMs.

``nn.Conv2d(kernel_size=1)`` on a contiguous NCHW tensor runs through oneDNN, which reorders the
input and output to its blocked layout on every call: at the GCN encoders' shapes it reaches 20-60%
of the machine's sgemm rate, forward and backward (``benchmarks/bench_encoders.py`` reports the
encoders). The same product is one ``bmm`` per batch, ``y[n] = W @ x[n] + b``, which reads the
NCHW tensor as it is: 1.5-4x faster forward+backward at those shapes on a 2-core CPU.
"""

from __future__ import annotations

import torch


def pointwise_conv(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride: int = 1
) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, stride=(stride, 1))`` for a 1x1 kernel.

    x (N, C_in, T, V), weight (C_out, C_in, 1, 1) or (C_out, C_in), bias (C_out,) or None
    -> (N, C_out, ceil(T / stride), V). Differentiable in all three (autograd of ``bmm`` and ``add_``).
    """
    if x.dim() != 4:
        raise ValueError(f"pointwise_conv: x must be (N, C, T, V), got shape {tuple(x.shape)}")
    out_channels = weight.shape[0]
    w = weight.reshape(out_channels, -1)
    if w.shape[1] != x.shape[1]:
        raise ValueError(
            f"pointwise_conv: weight {tuple(weight.shape)} expects {w.shape[1]} input channels, "
            f"x has {x.shape[1]} (x {tuple(x.shape)})"
        )
    if stride != 1:
        x = x[:, :, ::stride]
    n, c, t, v = x.shape
    x = x.reshape(n, c, t * v)
    y = torch.bmm(w.expand(n, out_channels, c), x)
    if bias is not None:
        # added in place after the product: baddbmm first copies the broadcast bias into the output
        # (a slow broadcast copy) and then accumulates into it, 5-25% slower forward at the AGCN's shapes
        y.add_(bias.view(1, out_channels, 1))
    return y.view(n, out_channels, t, v)
