"""Per-subset attention scores ``q^T k`` of the attention graph convolutions (2s-AGCN's theta/phi,
DSTA-Net's q/k), as one autograd.Function on a tensor that holds each subset's pair side by side."""

from __future__ import annotations

import torch


class SubsetScores(torch.autograd.Function):
    """``theta^T phi`` for every (sample, subset): pairs (N*K, 2, C'*T, V), theta at [:, 0] and phi
    at [:, 1] -> (N*K, V, V), as strided batched GEMMs on the pairs' memory. Autograd of the plain
    form copied theta and phi to fold their batch dimensions, and the backward of splitting one
    tensor into the two stacked their gradients again; this backward writes both into one tensor
    of the pairs' shape (forward+backward 33 -> 21 ms at 64 channels, T = 64, N = 128, measured)."""

    @staticmethod
    def forward(ctx, pairs: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        ctx.save_for_backward(pairs)
        return torch.bmm(pairs[:, 0].transpose(1, 2), pairs[:, 1])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        (pairs,) = ctx.saved_tensors
        if torch.compiler.is_compiling():  # Dynamo takes no strided out=; the compiler plans the copy
            return torch.stack(
                (torch.bmm(pairs[:, 1], grad.transpose(1, 2)), torch.bmm(pairs[:, 0], grad)), 1
            )
        d_pairs = torch.empty_like(pairs)
        torch.bmm(pairs[:, 1], grad.transpose(1, 2), out=d_pairs[:, 0])  # d theta = phi grad^T
        torch.bmm(pairs[:, 0], grad, out=d_pairs[:, 1])  # d phi = theta grad
        return d_pairs
