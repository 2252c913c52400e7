"""Pure-PyTorch graph convolution: ST-GCN's ``ConvTemporalGraphical`` with a 1x1 kernel."""

from __future__ import annotations

import torch


def graph_conv(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, A: torch.Tensor
) -> torch.Tensor:
    """y[n, o, t, w] = sum_k sum_v (W_k x + b_k)[n, o, t, v] * A[k, v, w], the official einsum form.

    x (N, C_in, T, V), weight (K*C_out, C_in), bias (K*C_out,) or None, A (K, V, V) -> (N, C_out, T, V);
    or a per-sample A (N, K, V, V): A[n, k, v, w] in place of A[k, v, w].
    """
    n, c_in, t, v = x.shape
    k = A.shape[-3]
    if A.dim() == 4:  # 2s-AGCN's order: x A_k per sample and subset, then the 1x1 convolutions
        if bias is not None:
            raise ValueError("graph_conv: a per-sample A (N, K, V, V) takes no bias (add it to the output)")
        aggregated = torch.einsum("nctv,nkvw->nkctw", x, A)
        return torch.einsum("koc,nkctw->notw", weight.view(k, -1, c_in), aggregated).contiguous()
    z = torch.einsum("oc,nctv->notv", weight, x)
    if bias is not None:
        z = z + bias.view(1, -1, 1, 1)
    z = z.view(n, k, weight.shape[0] // k, t, v)
    return torch.einsum("nkctv,kvw->nctw", z, A).contiguous()
