"""``skelfast.nn.Dropout``: a drop-in ``nn.Dropout`` on ``skelfast.ops.dropout``, and the keep masks
that ``skelfast.ops.batch_norm_act`` takes.

``nn.Dropout`` draws its keep mask with ``bernoulli_``, which on the CPU runs at ~30-130 M elements/s
(16 ms for one (64, 64, 512) activation of HiCo's Transformer; a quarter of HiCo's step) and saves a
float mask as large as x. ``skelfast.ops.dropout`` keys a Philox mask by one seed: ~11x faster here,
and the backward regenerates the mask instead of saving it.

``keep_mask`` draws the bool masks the fused BatchNorm tails take (ST-GCN, AGCN): ``torch.rand(...) >=
p`` gives every element the same keep probability 1 - p; when p is a multiple of 1/256 (ST-GCN's 0.5,
0.25, ...), ``byte >= 256 p`` over uniform bytes keeps each element with probability exactly 1 - p.
On the CPU the bytes are a seed's Philox words, four elements a word, from the C++ kernel
(``keep_mask_cpp``: ~5x faster than ``random_``, whose single-threaded draws took 2-3% of the
quarter-width ST-GCN's step); elsewhere one 64-bit ``random_`` draw gives eight bytes. Every path
draws from torch's global generator (the seed included), so runs repeat under
``torch.manual_seed``; the masks differ from ``nn.Dropout``'s for the same seed.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from skelfast.ops.dropout import draw_seed, keep_mask_cpp
from skelfast.ops.dropout import dropout as dropout_op


def keep_mask(shape: torch.Size, p: float, device: torch.device) -> torch.Tensor:
    """A bool tensor of ``shape`` whose elements are independently True with probability 1 - p."""
    byte_threshold = p * 256
    numel = math.prod(shape)
    if device.type == "cpu" and byte_threshold.is_integer():
        mask = keep_mask_cpp(numel, p, draw_seed())
        if mask is not None:
            return mask.view(shape)
    if byte_threshold.is_integer():
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
