"""``skelfast.nn.TransformerEncoderLayer``: ``nn.TransformerEncoderLayer`` with its training dropouts on
``skelfast.ops.dropout``.

In training, ``nn.TransformerEncoderLayer`` draws four ``bernoulli_`` masks per call (the attention
weights, the attention output, the feed-forward hidden layer and its output): a quarter of HiCo's
pretraining step on the CPU. This subclass keeps nn's constructor, parameters and state_dict (an
official checkpoint loads unchanged), routes those four dropouts through the seeded kernel, and
leaves everything else to nn: inference (including its fused fast path), masks, norm_first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from skelfast.nn.dropout import Dropout
from skelfast.ops.dropout import dropout, runs_reference


class TransformerEncoderLayer(nn.TransformerEncoderLayer):
    """``nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, ...)`` whose dropouts
    run on ``skelfast.ops.dropout`` (nn's distribution, not its random stream).

    Self-attention in training without masks, for a batch_first layer with nn.MultiheadAttention's
    default projections, is written out as ``F.multi_head_attention_forward`` computes it (packed
    in-projection, scaled q k^T, softmax, dropout of the weights, weights @ v, out-projection), so the
    weights' dropout can be ours; any other case, and the reference dropout backend, call nn's block.
    x (B, L, d_model) -> same shape.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.dropout = Dropout(self.dropout.p)
        self.dropout1 = Dropout(self.dropout1.p)
        self.dropout2 = Dropout(self.dropout2.p)

    def _own_attention(self, attn_mask: torch.Tensor | None, key_padding_mask: torch.Tensor | None) -> bool:
        attn = self.self_attn
        return (
            self.training
            and attn.dropout > 0.0
            and attn.batch_first
            and attn._qkv_same_embed_dim
            and attn.in_proj_weight is not None
            and attn.bias_k is None
            and not attn.add_zero_attn
            and attn_mask is None
            and key_padding_mask is None
        )

    def _sa_block(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None,
        key_padding_mask: torch.Tensor | None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        # nn's block where ours would not be the kernel's (and so the reference backend runs nn's own)
        if is_causal or not self._own_attention(attn_mask, key_padding_mask) or runs_reference(x):
            return super()._sa_block(x, attn_mask, key_padding_mask, is_causal=is_causal)
        attn = self.self_attn
        batch, length, embed = x.shape
        heads = attn.num_heads
        head_dim = embed // heads
        qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias)  # (B, L, 3E), packed as nn packs it
        q, k, v = qkv.view(batch, length, 3, heads, head_dim).permute(2, 0, 3, 1, 4)  # 3 x (B, H, L, d)
        weights = torch.softmax((q @ k.transpose(-2, -1)) * head_dim**-0.5, dim=-1)
        weights = dropout(weights, attn.dropout, True)
        out = (weights @ v).transpose(1, 2).reshape(batch, length, embed)
        return self.dropout1(F.linear(out, attn.out_proj.weight, attn.out_proj.bias))
