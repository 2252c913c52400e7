"""The GRU encoders of ISC (skeleton-contrast ``moco/GRU.py``) and CRRL (``src/models.py``).

ISC's "BiGRU" is an ``nn.GRU(150, 1024, 3, bidirectional=True)`` that the official code calls once
per frame with a length-1 input and the previous call's hidden state. With length-1 inputs the
"backward" direction also reads the frames forwards and carries its state forwards, so the model is
a causal 3-layer stack in which each layer has two independent GRU cells (separate weights) reading
the same input; layer l+1 at frame t reads both cells' layer-l outputs at frame t. ``ISCSeqEncoder``
runs each cell over the whole sequence in one ``skelfast.ops.gru`` call (6 calls instead of 64 x 3 x 2
cell steps driven from Python); the tests prove it equal, in float64, to the frame-by-frame loop.

CRRL's encoders are genuine bidirectional GRUs over packed variable-length sequences, with temporal
average pooling over the valid frames only; its decoder is a unidirectional GRU whose hidden state is
the reconstruction. Their GRUs are ``skelfast.nn.GRU`` (an ``nn.GRU`` on the fused op, same
state_dict) fed padded batches with their lengths, which is what packing gave the official code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from skelfast.nn._official import OfficialEncoder, load_official, xavier_2d_params
from skelfast.nn.rnn import GRU
from skelfast.ops.gru import gru


class _ISCGRUHolder(nn.Module):
    """Holds the official ``nn.GRU`` under the official name ``encoder.gru``."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int) -> None:
        super().__init__()
        self.gru = nn.GRU(
            input_size, hidden_size, num_layers=num_layers, bidirectional=True, batch_first=True
        )


class ISCSeqEncoder(OfficialEncoder):
    """ISC's sequence-based encoder (``BIGRU``) with its projection head.

    Input (N, T, 150): one 150-d frame vector per step (joint-major, then coordinate, then body).
    ``representation`` -> (N, 2 * hidden_size): the top layer's two cell outputs at the last frame,
    as the official stepped loop computes them. ``project``: with ``mlp=True`` (ISC's ``--mlp``)
    Linear(2048, 2048) -> ReLU -> Linear(2048, num_class), else Linear(2048, num_class).

    Init as ``builder_inter.weights_init_gru``: xavier_uniform on every 2-D parameter of the GRU and
    of the original fc; the MLP's first Linear is added afterwards and keeps PyTorch's default.

    Official keys (``encoder.gru.*``, ``fc.*``) load unchanged:
    ``load_official_state_dict(sd, prefix="module.encoder_q.")``.
    """

    def __init__(
        self,
        input_size: int = 150,
        hidden_size: int = 1024,
        num_layers: int = 3,
        num_class: int = 128,
        mlp: bool = True,
    ) -> None:
        super().__init__()
        self.num_layers = num_layers
        self.hidden_size = hidden_size
        self.encoder = _ISCGRUHolder(input_size, hidden_size, num_layers)
        fc = nn.Linear(2 * hidden_size, num_class)
        xavier_2d_params([self.encoder, fc])
        self.fc = nn.Sequential(nn.Linear(2 * hidden_size, 2 * hidden_size), nn.ReLU(), fc) if mlp else fc

    def _cell_weights(self, layer: int, suffix: str) -> list[torch.Tensor]:
        gru = self.encoder.gru
        return [
            getattr(gru, f"{name}_l{layer}{suffix}")
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        ]

    def sequence(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, T, input_size) -> (N, T, 2 * hidden_size): top-layer outputs of both forward-reading
        cells at every frame (frame t depends on frames <= t only)."""
        if x.dim() != 3 or x.shape[2] != self.encoder.gru.input_size:
            raise ValueError(
                f"ISCSeqEncoder: x must be (N, T, {self.encoder.gru.input_size}), got {tuple(x.shape)}"
            )
        for layer in range(self.num_layers):
            outs = []
            for suffix in ("", "_reverse"):  # the "_reverse" cell reads forwards too (see module doc)
                out, _ = gru(x, None, self._cell_weights(layer, suffix), num_layers=1, bidirectional=False)
                outs.append(out)
            x = torch.cat(outs, dim=2)
        return x

    def representation(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, T, input_size) -> (N, 2 * hidden_size) at the last frame."""
        return self.sequence(x)[:, -1]


def _lengths_tensor(lengths: Sequence[int] | torch.Tensor, batch: int, max_len: int) -> torch.Tensor:
    lengths = torch.as_tensor(lengths, dtype=torch.int64, device="cpu")
    if lengths.shape != (batch,):
        raise ValueError(
            f"lengths must have one entry per sequence ({batch}), got shape {tuple(lengths.shape)}"
        )
    if batch and (lengths.min() < 1 or lengths.max() > max_len):
        raise ValueError(f"lengths must be in [1, {max_len}] (the padded length), got {lengths.tolist()}")
    return lengths


def temporal_average(features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Masked temporal average pooling: features (N, T, D) with zeros past each length -> (N, D)."""
    return features.sum(dim=1) / lengths.to(features).unsqueeze(1)


def crrl_mlp(dim: int = 512, out_dim: int = 512) -> nn.Sequential:
    """CRRL's projection / distillation MLP: Linear(dim, dim) -> ReLU -> Linear(dim, out_dim)."""
    return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, out_dim))


class CRRLEncoder(OfficialEncoder):
    """CRRL's ``Bi_GRU_packpad``: a 2-layer bidirectional GRU (hidden 256, dropout 0.2 between layers)
    over packed variable-length sequences, with its MLP head ``fc`` (512 -> 512 -> 512).

    ``sequence(x, lengths)``: x (N, T, D) zero-padded, lengths (N,) -> (N, T_max, 512) per-frame
    features, zero past each length. ``representation``: their temporal average over the valid frames
    (N, 512). ``project``: the MLP. PyTorch default initialisation, as the official code.

    ``load_official_state_dict(sd, prefix="encoder_fc_q.")`` loads the query encoder of a MoCo
    state_dict; a saved ``encoder`` (``gru.*`` only) loads with ``strict=False``.
    """

    def __init__(
        self, input_size: int = 150, hidden_size: int = 256, num_layers: int = 2, dropout: float = 0.2
    ):
        super().__init__()
        self.gru = GRU(
            input_size,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
            bidirectional=True,
        )
        self.fc = crrl_mlp(2 * hidden_size, 2 * hidden_size)

    def sequence(self, x: torch.Tensor, lengths: Sequence[int] | torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[2] != self.gru.input_size:
            raise ValueError(f"CRRLEncoder: x must be (N, T, {self.gru.input_size}), got {tuple(x.shape)}")
        lengths = _lengths_tensor(lengths, x.shape[0], x.shape[1])
        max_len = int(lengths.max()) if x.shape[0] else 0
        out, _ = self.gru(x[:, :max_len], lengths=lengths)  # what pad_packed_sequence returned
        return out

    def representation(self, x: torch.Tensor, lengths: Sequence[int] | torch.Tensor) -> torch.Tensor:
        lengths = _lengths_tensor(lengths, x.shape[0], x.shape[1])
        return temporal_average(self.sequence(x, lengths), lengths)

    @staticmethod
    def official_key(key: str) -> str | None:
        """``Nonlinear_2layer``'s ``classifier_.*`` (CRRL's student MLP) maps onto ``fc.*``."""
        return "fc." + key[len("classifier_.") :] if key.startswith("classifier_.") else key


class CRRLDecoder(nn.Module):
    """CRRL's decoder ``GRU_model(512, D, 2, 0.2)``: a unidirectional 2-layer GRU whose hidden state is
    the reconstruction (no output layer), fed the same code vector at every valid frame.

    ``forward(code, lengths)``: code (N, 512), lengths (N,) -> (N, max(lengths), D), zero past each
    length.
    """

    def __init__(
        self, code_size: int = 512, output_size: int = 150, num_layers: int = 2, dropout: float = 0.2
    ):
        super().__init__()
        self.gru = GRU(
            code_size,
            output_size,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )

    def forward(self, code: torch.Tensor, lengths: Sequence[int] | torch.Tensor) -> torch.Tensor:
        if code.dim() != 2 or code.shape[1] != self.gru.input_size:
            raise ValueError(f"CRRLDecoder: code must be (N, {self.gru.input_size}), got {tuple(code.shape)}")
        max_len = int(torch.as_tensor(lengths).max()) if code.shape[0] else 0
        lengths = _lengths_tensor(lengths, code.shape[0], max_len)
        repeated = code.unsqueeze(1).expand(-1, max_len, -1)
        return self.gru(repeated, lengths=lengths)[0]

    def load_official_state_dict(
        self, state_dict: Mapping[str, torch.Tensor], prefix: str = "", strict: bool = True
    ) -> nn.modules.module._IncompatibleKeys:
        return load_official(self, state_dict, prefix, None, strict)


def crrl_first_last(
    features: torch.Tensor, lengths: Sequence[int] | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The codes CRRL's decoder reconstructs from: the encoder output at frame 0 (its backward half
    has read the whole clip) and at frame length-1 (its forward half has). (N, T, D) -> 2 x (N, D)."""
    lengths = _lengths_tensor(lengths, features.shape[0], features.shape[1])
    index = torch.arange(features.shape[0], device=features.device)
    return features[:, 0], features[index, (lengths - 1).to(features.device)]
