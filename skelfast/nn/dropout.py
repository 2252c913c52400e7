"""Dropout with nn.Dropout's distribution at a fraction of its CPU cost.

``nn.Dropout`` draws its keep mask with ``bernoulli_``, which on the CPU runs at ~30 M elements/s
(39 ms for one 16-channel ST-GCN activation of batch 64: 10% of the encoder's step). Drawing uniform
floats and comparing, ``torch.rand(...) >= p``, gives every element the same keep probability 1 - p
at ~5x the speed, and the mask autograd saves is 1 byte per element instead of a 4-byte float mask.
The draws come from the same generator, so runs stay reproducible under ``torch.manual_seed``, but the
masks differ from ``nn.Dropout``'s for the same seed.
"""

from __future__ import annotations

import torch
from torch import nn


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``F.dropout(x, p, training)`` in distribution: each element is kept with probability 1 - p and
    scaled by 1 / (1 - p), else zeroed. x: any shape; returns the same shape and dtype."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    keep = torch.rand(x.shape, device=x.device) >= p  # bool: what autograd saves for backward
    return (x * keep).mul_(1.0 / (1.0 - p))


class Dropout(nn.Module):
    """Drop-in ``nn.Dropout(p)`` (no parameters, the same state_dict) drawing its mask with
    ``dropout`` above. Train mode: (*) -> (*) with elements zeroed with probability p and the rest
    scaled by 1 / (1 - p); eval mode: the identity."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
