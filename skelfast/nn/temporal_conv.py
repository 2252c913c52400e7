"""``TemporalConv2d``: the (K x 1) temporal convolution of the GCN units as an ``nn.Conv2d``.

A subclass, so it keeps the official state_dict keys and hooks on convolution modules, and its name
contains ``Conv2d``, which the official initialisers match on (HiCLR's ``weights_init`` tests
``classname.find('Conv2d')``); its forward runs ``skelfast.ops.temporal_conv``, which takes the
frequency form where that is faster (32 channels and more, clips up to a few times the channel count,
on the 2-core CPU of the README: ``prefers_frequency``).
"""

from __future__ import annotations

import torch
from torch import nn

from skelfast.ops.temporal_conv import temporal_conv


class TemporalConv2d(nn.Conv2d):
    """``nn.Conv2d(C_in, C_out, (K, 1), (stride, 1), ((K - 1) // 2, 0))``, K odd;
    (N, C_in, T, V) -> (N, C_out, (T - 1) // stride + 1, V)."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 9, stride: int = 1, bias: bool = True
    ) -> None:
        if kernel_size % 2 == 0:
            raise ValueError(
                f"TemporalConv2d: kernel_size must be odd (padding (K - 1) / 2), got {kernel_size}"
            )
        pad = (kernel_size - 1) // 2
        super().__init__(in_channels, out_channels, (kernel_size, 1), (stride, 1), (pad, 0), bias=bias)

    def forward(self, x: torch.Tensor, with_bias: bool = True) -> torch.Tensor:
        """``with_bias=False`` leaves the bias out, for a following BatchNorm that takes it
        (``skelfast.nn.batch_norm.bn_act``'s ``bias``)."""
        return temporal_conv(x, self.weight, self.bias if with_bias else None, self.stride[0])
