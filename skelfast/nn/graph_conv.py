"""``GraphConv``: a drop-in for ST-GCN's ``ConvTemporalGraphical`` running ``skelfast.ops.graph_conv``."""

from __future__ import annotations

import torch
from torch import nn

from skelfast.ops import graph_conv


class GraphConv(nn.Module):
    """Spatial graph convolution with ST-GCN's parameters and state_dict keys (``conv.weight``,
    ``conv.bias``): ``forward(x, A)`` takes x (N, C_in, T, V) and A (K, V, V) and returns
    ``(y, A)`` with y (N, C_out, T, V), as ``ConvTemporalGraphical`` does.

    Only the 1x1 temporal kernel of the released models (``t_kernel_size=1``, stride 1, no
    padding or dilation) is fused; other settings raise.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        t_kernel_size: int = 1,
        t_stride: int = 1,
        t_padding: int = 0,
        t_dilation: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if (t_kernel_size, t_stride, t_padding, t_dilation) != (1, 1, 0, 1):
            raise NotImplementedError(
                "GraphConv fuses the 1x1 temporal kernel of ST-GCN only "
                f"(got t_kernel_size={t_kernel_size}, t_stride={t_stride}, t_padding={t_padding}, "
                f"t_dilation={t_dilation})"
            )
        self.kernel_size = kernel_size
        self.out_channels = out_channels
        # nn.Conv2d keeps the official init and state_dict layout (weight (K*C_out, C_in, 1, 1)).
        self.conv = nn.Conv2d(in_channels, out_channels * kernel_size, kernel_size=(1, 1), bias=bias)

    def forward(self, x: torch.Tensor, A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if A.shape[0] != self.kernel_size:
            raise ValueError(f"GraphConv: A has {A.shape[0]} subsets but kernel_size={self.kernel_size}")
        weight = self.conv.weight.flatten(1)
        return graph_conv(x, weight, self.conv.bias, A), A
