"""``skelfast.nn.Dropout``: a drop-in ``nn.Dropout`` on ``skelfast.ops.dropout``, and the keep masks
that ``skelfast.ops.batch_norm_act`` takes.

``nn.Dropout`` draws its keep mask with ``bernoulli_``, which on the CPU runs at ~30-130 M elements/s
(16 ms for one (64, 64, 512) activation of HiCo's Transformer; a quarter of HiCo's step) and saves a
float mask as large as x. ``skelfast.ops.dropout`` keys a Philox mask by one seed: ~11x faster here,
and the backward regenerates the mask instead of saving it.

``keep_mask`` draws the bool masks the fused BatchNorm tails take (ST-GCN, AGCN): ``torch.rand(...) >=
p`` gives every element the same keep probability 1 - p; when p is a multiple of 1/256 (ST-GCN's 0.5,
0.25, ...), one 64-bit draw (``random_`` over the whole int64 range) gives eight uniform bytes and
``byte >= 256 p`` keeps each element with probability exactly 1 - p, for an eighth of the generator
calls. Both draw from torch's global generator, so runs repeat under ``torch.manual_seed``; the masks
differ from ``nn.Dropout``'s for the same seed.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from skelfast.ops.dropout import dropout as dropout_op


def keep_mask(shape: torch.Size, p: float, device: torch.device) -> torch.Tensor:
    """A bool tensor of ``shape`` whose elements are independently True with probability 1 - p."""
    byte_threshold = p * 256
    if byte_threshold.is_integer():
        numel = math.prod(shape)
        words = torch.empty((numel + 7) // 8, dtype=torch.int64, device=device)
        random_bytes = words.random_(-(2**63), None).view(torch.uint8)[:numel]  # 8 uniform bytes a draw
        return (random_bytes >= int(byte_threshold)).view(shape)
    return torch.rand(shape, device=device) >= p


def _check_p(p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``F.dropout(x, p, training)`` in distribution (``skelfast.ops.dropout``): each element kept with
    probability 1 - p and scaled by 1 / (1 - p), else zeroed. x: any shape; same shape and dtype."""
    _check_p(p)
    return dropout_op(x, p, training)


class Dropout(nn.Dropout):
    """Drop-in ``nn.Dropout(p)`` on ``skelfast.ops.dropout``: an ``nn.Dropout`` (so code that finds
    dropout layers with ``isinstance`` and sets ``p`` still does), with the same state_dict. Train
    mode: (*) -> (*) with elements zeroed with probability p and the rest scaled by 1 / (1 - p),
    into a new tensor (``inplace`` is not honoured); eval mode: the identity."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout_op(x, self.p, self.training)
