"""Pure-PyTorch GRUs over zero-padded variable-length sequences: PyTorch's own ``nn.GRU`` path (the
official code's, and the benchmark baseline) and the literal step-by-step definition (the oracle the
tests hold both the reference and the C++ kernel to)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.utils.rnn as rnn_utils


def gru(
    x: torch.Tensor,
    lengths: torch.Tensor | None,
    h0: torch.Tensor,
    weights: Sequence[torch.Tensor],
    num_layers: int,
    bidirectional: bool,
    dropout: float = 0.0,
    training: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``nn.GRU(batch_first=True)`` on ``pack_padded_sequence(x, lengths)``, as the official code
    calls it: x (B, T, I), lengths (B,) or None (every sequence T long), h0 (L*D, B, H), weights in
    ``nn.GRU._flat_weights`` order -> (output (B, T, D*H) zero past each length, h_n (L*D, B, H))."""
    has_bias = len(weights) == 4 * num_layers * (2 if bidirectional else 1)
    if lengths is None:
        out, h_n = torch._VF.gru(
            x, h0, list(weights), has_bias, num_layers, dropout, training, bidirectional, True
        )
        return out, h_n
    packed = rnn_utils.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    h0_sorted = h0.index_select(1, packed.sorted_indices)
    data, h_n = torch._VF.gru(
        packed.data,
        packed.batch_sizes,
        h0_sorted,
        list(weights),
        has_bias,
        num_layers,
        dropout,
        training,
        bidirectional,
    )
    out_packed = rnn_utils.PackedSequence(
        data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices
    )
    out = rnn_utils.pad_packed_sequence(out_packed, batch_first=True, total_length=x.shape[1])[0]
    return out, h_n.index_select(1, packed.unsorted_indices)


def gru_layer_steps(
    x: torch.Tensor,
    lengths: torch.Tensor,
    h0: torch.Tensor,
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    b_ih: torch.Tensor | None,
    b_hh: torch.Tensor | None,
    reverse: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One direction of one GRU layer, one frame at a time (PyTorch's equations, gate order r, z, n):
    sample b reads frames 0 .. len_b - 1 (backwards if ``reverse``). x (B, T, I), lengths (B,),
    h0 (B, H) -> (output (B, T, H) zero past each length, h_n (B, H)). Slow; for tests."""
    hidden = w_hh.shape[1]
    out = x.new_zeros(x.shape[0], x.shape[1], hidden)
    h_n = []
    for b in range(x.shape[0]):
        h = h0[b]
        length = int(lengths[b])
        for t in range(length - 1, -1, -1) if reverse else range(length):
            gi = x[b, t] @ w_ih.T + (0 if b_ih is None else b_ih)
            gh = h @ w_hh.T + (0 if b_hh is None else b_hh)
            r = torch.sigmoid(gi[:hidden] + gh[:hidden])
            z = torch.sigmoid(gi[hidden : 2 * hidden] + gh[hidden : 2 * hidden])
            n = torch.tanh(gi[2 * hidden :] + r * gh[2 * hidden :])
            h = (1 - z) * n + z * h
            out[b, t] = h
        h_n.append(h)
    return out, torch.stack(h_n) if h_n else h0.clone()
