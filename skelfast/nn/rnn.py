"""``skelfast.nn.GRU``: a drop-in ``nn.GRU`` that runs on ``skelfast.ops.gru``.

It is ``nn.GRU`` in all but its class and forward: an ``nn.RNNBase`` in mode "GRU", as ``nn.GRU`` is,
so the constructor, parameters, state_dict, initialisation and cuDNN weight flattening are the same
(an ``nn.GRU``'s state_dict loads unchanged), and the forward goes through the fused op. Not being an
``nn.GRU`` instance keeps it compilable: Dynamo refuses every nn.RNN/GRU/LSTM instance
(``torch._dynamo.config.allow_rnn``) but traces this forward like any module's. Besides nn.GRU's inputs
(padded tensors, batch_first or not, unbatched, ``PackedSequence``) it takes ``lengths=`` with a
zero-padded batch, which skips packing altogether: the kernel reads padded sequences directly.
"""

from __future__ import annotations

import torch
import torch.nn.utils.rnn as rnn_utils
from torch import nn

from skelfast.ops.gru import gru


class GRU(nn.RNNBase):
    """``nn.GRU`` on ``skelfast.ops.gru``: ``GRU(input_size, hidden_size, num_layers=1, bias=True,
    batch_first=False, dropout=0.0, bidirectional=False)`` as nn.GRU.

    ``forward(input, hx=None, lengths=None)``: input (B, T, I) with ``batch_first`` (else (T, B, I)),
    or (T, I) unbatched, or a ``PackedSequence``; hx (num_layers * D, B, H) or None; lengths (B,)
    valid lengths of a padded batch (frames past them are ignored and their outputs are zero).
    Returns (output, h_n) as ``nn.GRU`` does (a ``PackedSequence`` output for a packed input).
    Training dropout between layers has nn.GRU's distribution but not its random stream.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__("GRU", *args, **kwargs)  # what nn.GRU.__init__ does

    def forward(  # type: ignore[override]
        self,
        input: torch.Tensor | rnn_utils.PackedSequence,  # noqa: A002 (nn.GRU's name)
        hx: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | rnn_utils.PackedSequence, torch.Tensor]:
        if isinstance(input, rnn_utils.PackedSequence):
            if lengths is not None:
                raise ValueError("GRU: lengths= goes with a padded tensor, not with a PackedSequence")
            return self._forward_packed(input, hx)
        if input.dim() == 2:  # unbatched (T, I)
            if hx is not None and hx.dim() != 2:
                raise ValueError(f"GRU: an unbatched input needs a 2-D hx, got {tuple(hx.shape)}")
            out, h_n = self._run(input.unsqueeze(0), None if hx is None else hx.unsqueeze(1), lengths)
            return out.squeeze(0), h_n.squeeze(1)
        if input.dim() != 3:
            raise ValueError(f"GRU: input must be 2-D or 3-D (or a PackedSequence), got {tuple(input.shape)}")
        x = input if self.batch_first else input.transpose(0, 1)
        out, h_n = self._run(x, hx, lengths)
        return (out if self.batch_first else out.transpose(0, 1)), h_n

    def _run(
        self, x: torch.Tensor, hx: torch.Tensor | None, lengths: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[2] != self.input_size:
            raise ValueError(
                f"GRU: expected input size {self.input_size}, got {x.shape[2]} ({tuple(x.shape)})"
            )
        dropout = self.dropout if self.num_layers > 1 else 0.0
        return gru(
            x, lengths, self._flat_weights, self.num_layers, self.bidirectional, hx, dropout, self.training
        )

    def _forward_packed(
        self, packed: rnn_utils.PackedSequence, hx: torch.Tensor | None
    ) -> tuple[rnn_utils.PackedSequence, torch.Tensor]:
        # As nn.GRU: hx and h_n are in the caller's batch order; the packed rows in the sorted one.
        padded, lengths = rnn_utils.pad_packed_sequence(packed, batch_first=True)
        out, h_n = self._run(padded, hx, lengths)
        sorted_indices = packed.sorted_indices
        if sorted_indices is not None:
            out, lengths = out.index_select(0, sorted_indices), lengths[sorted_indices.cpu()]
        repacked = rnn_utils.pack_padded_sequence(out, lengths, batch_first=True, enforce_sorted=True)
        return (
            rnn_utils.PackedSequence(
                repacked.data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices
            ),
            h_n,
        )
