"""Pure-PyTorch graph convolution: ST-GCN's ``ConvTemporalGraphical`` with a 1x1 kernel."""

from __future__ import annotations

import torch


def graph_conv(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, A: torch.Tensor
) -> torch.Tensor:
    """y[n, o, t, w] = sum_k sum_v (W_k x + b_k)[n, o, t, v] * A[k, v, w], the official einsum form.

    x (N, C_in, T, V), weight (K*C_out, C_in), bias (K*C_out,) or None, A (K, V, V) -> (N, C_out, T, V).
    """
    n, _, t, v = x.shape
    k = A.shape[0]
    z = torch.einsum("oc,nctv->notv", weight, x)
    if bias is not None:
        z = z + bias.view(1, -1, 1, 1)
    z = z.view(n, k, weight.shape[0] // k, t, v)
    return torch.einsum("nkctv,kvw->nctw", z, A).contiguous()
