"""Reference temporal convolution: the official ``nn.Conv2d((K, 1), stride=(s, 1), padding=((K - 1) / 2, 0))``."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def temporal_conv(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride: int = 1
) -> torch.Tensor:
    """x (N, C_in, T, V), weight (C_out, C_in, K, 1), K odd -> (N, C_out, (T - 1) // stride + 1, V)."""
    return F.conv2d(x, weight, bias, stride=(stride, 1), padding=((weight.shape[2] - 1) // 2, 0))
