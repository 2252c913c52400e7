"""Pure-PyTorch BatchNorm with the elementwise tail of the GCN units, step by step."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def batch_norm_act(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    training: bool,
    momentum: float,
    eps: float,
    residual: torch.Tensor | None = None,
    keep: torch.Tensor | None = None,
    keep_scale: float = 1.0,
    relu: bool = False,
) -> torch.Tensor:
    """``relu?(F.batch_norm(x, ...) * keep * keep_scale + residual)``, as the official units chain
    nn.BatchNorm2d, nn.Dropout, the residual add and nn.ReLU.

    x (N, C, *); residual like x or None; keep a bool tensor like x or None (a dropout keep mask,
    applied as ``(y * keep) * keep_scale``). Updates the running statistics as ``F.batch_norm`` does.
    """
    y = F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)
    if keep is not None:
        y = (y * keep) * keep_scale
    if residual is not None:
        y = y + residual
    return torch.relu(y) if relu else y
