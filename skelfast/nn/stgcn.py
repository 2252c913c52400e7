"""ST-GCN encoder as AimCLR/HiCLR build it (``net/st_gcn.py``), on ``skelfast.ops.graph_conv``.

Two widths are used: the standard ST-GCN (``hidden_channels=64``: 64, 64, 64, 64, 128/2, 128, 128,
256/2, 256, 256) and HiCLR's quarter width (``hidden_channels=16``: 16, 16, 16, 16, 32/2, 32, 32,
64/2, 64, 256). Module and parameter names follow the official code, so an official state_dict loads
key for key (``load_official_state_dict``).
"""

from __future__ import annotations

import torch
from torch import nn

from skelfast.nn._official import OfficialEncoder, init_normal_002, residual_kind
from skelfast.nn.batch_norm import bn_act, dropout_keep
from skelfast.nn.dropout import Dropout
from skelfast.nn.graph import stgcn_graph
from skelfast.nn.graph_conv import GraphConv
from skelfast.nn.pointwise import pointwise_conv
from skelfast.nn.temporal_conv import TemporalConv2d

TEMPORAL_KERNEL = 9


class STGCNBlock(nn.Module):
    """One ``st_gcn`` unit: ``ReLU(tcn(gcn(x, A)) + residual(x))`` with
    ``tcn = BN -> ReLU -> Conv(9x1, stride s) -> BN -> Dropout``.

    Residual: none (``residual=False``), identity when ``in == out`` and stride 1, else
    Conv 1x1 (stride s) -> BN. x (N, C_in, T, V), A (K, V, V) -> (N, C_out, ceil(T / s), V).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_subsets: int,
        stride: int = 1,
        dropout: float = 0.0,
        residual: bool = True,
    ) -> None:
        super().__init__()
        self.gcn = GraphConv(in_channels, out_channels, num_subsets)
        self.tcn = nn.Sequential(
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
            # nn.Conv2d((9, 1), (s, 1), (4, 0)), in the frequency form where that is faster
            TemporalConv2d(out_channels, out_channels, TEMPORAL_KERNEL, stride),
            nn.BatchNorm2d(out_channels),
            Dropout(dropout),  # nn.Dropout's distribution, ~5x cheaper mask (skelfast.nn.dropout)
        )
        self.residual_kind = residual_kind(residual, in_channels, out_channels, stride)
        if self.residual_kind == "conv":
            self.residual = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=(stride, 1)),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
        # The official chain, with each BatchNorm and the elementwise ops after it fused (bn_act):
        # BN -> ReLU, conv, then BN -> Dropout -> + residual -> ReLU.
        bn_in, _, conv, bn_out, drop = self.tcn
        y = conv(bn_act(bn_in, self.gcn(x, A)[0], relu=True), with_bias=False)  # bias: to bn_out
        residual = None
        if self.residual_kind == "identity":
            residual = x
        elif self.residual_kind == "conv":  # the strided 1x1 conv as a batched GEMM (pointwise_conv)
            res_conv, res_bn = self.residual
            y_res = pointwise_conv(x, res_conv.weight, None, res_conv.stride[0])
            residual = bn_act(res_bn, y_res, bias=res_conv.bias)
        keep, scale = dropout_keep(drop.p, drop.training, y)
        # the convolutions' biases go to bn_act, where training-mode BatchNorm cancels them
        return bn_act(bn_out, y, residual, keep, scale, relu=True, bias=conv.bias)


def stgcn_widths(hidden_channels: int, hidden_dim: int) -> list[tuple[int, int, int]]:
    """(out_channels, stride, dropout_enabled) of the ten units of the official ``Model``."""
    h = hidden_channels
    return [
        (h, 1, 0), (h, 1, 1), (h, 1, 1), (h, 1, 1), (2 * h, 2, 1),
        (2 * h, 1, 1), (2 * h, 1, 1), (4 * h, 2, 1), (4 * h, 1, 1), (hidden_dim, 1, 1),
    ]  # fmt: skip


class STGCN(OfficialEncoder):
    """ST-GCN encoder of AimCLR/HiCLR with its projection head.

    Input (N, C, T, V, M). ``representation`` gives the (N, hidden_dim) feature used for evaluation:
    input BatchNorm1d over (V*C) channels with bodies folded into the batch (the official
    ``data_bn``), ten units with learnable edge importance (one (K, V, V) mask per unit, initialised
    to 1), average pooling over (T, V), then the mean over the M bodies (a zero second body is
    averaged in). ``project`` is the pretraining head: Linear(hd, hd) -> ReLU -> Linear(hd, num_class)
    with ``mlp=True`` (HiCLR), else Linear(hd, num_class). ``forward(x) = project(representation(x))``.

    The first unit has no residual and no dropout (the official ``kwargs0``). ``init="normal"``
    applies HiCLR's ``weights_init`` (Conv/Linear N(0, 0.02), BatchNorm N(1, 0.02)); ``"pytorch"``
    keeps PyTorch's defaults.

    Official checkpoints (AimCLR/HiCLR, or the original ST-GCN) load with
    ``load_official_state_dict(sd, prefix="encoder_q.")``.
    """

    def __init__(
        self,
        in_channels: int = 3,
        hidden_channels: int = 64,
        hidden_dim: int = 256,
        num_class: int = 128,
        dropout: float = 0.5,
        edge_importance_weighting: bool = True,
        mlp: bool = True,
        A: torch.Tensor | None = None,
        init: str = "normal",
    ) -> None:
        super().__init__()
        A = stgcn_graph("ntu", "spatial") if A is None else A.detach().clone().float()
        self.register_buffer("A", A)
        num_subsets, num_joints = A.shape[0], A.shape[1]
        self.hidden_dim = hidden_dim
        self.data_bn = nn.BatchNorm1d(in_channels * num_joints)
        blocks = []
        channels = in_channels
        for index, (out, stride, with_dropout) in enumerate(stgcn_widths(hidden_channels, hidden_dim)):
            blocks.append(
                STGCNBlock(
                    channels, out, num_subsets, stride, dropout if with_dropout else 0.0, residual=index > 0
                )
            )
            channels = out
        self.st_gcn_networks = nn.ModuleList(blocks)
        self.edge_importance_weighting = edge_importance_weighting
        if edge_importance_weighting:
            for i in range(1, len(blocks) + 1):
                self.register_parameter(f"edge_importance{i}", nn.Parameter(torch.ones_like(A)))
        if mlp:
            self.fc = nn.Sequential(
                nn.Linear(hidden_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, num_class)
            )
        else:
            self.fc = nn.Linear(hidden_dim, num_class)
        if init == "normal":
            self.apply(init_normal_002)
        elif init != "pytorch":
            raise ValueError(f"STGCN: unknown init {init!r}; expected 'normal' or 'pytorch'")

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 5:
            raise ValueError(f"STGCN: x must be (N, C, T, V, M), got shape {tuple(x.shape)}")
        if x.shape[1] * x.shape[3] != self.data_bn.num_features:
            raise ValueError(
                f"STGCN: x has C={x.shape[1]}, V={x.shape[3]} but the model expects "
                f"C*V={self.data_bn.num_features} (x {tuple(x.shape)})"
            )

    def representation(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, C, T, V, M) -> (N, hidden_dim): pooled over T and V, then averaged over bodies."""
        self._check_input(x)
        n, c, t, v, m = x.shape
        x = x.permute(0, 4, 3, 1, 2).reshape(n * m, v * c, t)
        x = self.data_bn(x)
        x = x.view(n, m, v, c, t).permute(0, 1, 3, 4, 2).reshape(n * m, c, t, v)
        for i, block in enumerate(self.st_gcn_networks, start=1):
            A = self.A * getattr(self, f"edge_importance{i}") if self.edge_importance_weighting else self.A
            x = block(x, A)
        return x.mean(dim=(2, 3)).view(n, m, -1).mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, C, T, V, M) -> (N, num_class), as the official ``Model.forward``."""
        return self.project(self.representation(x))

    @staticmethod
    def official_key(key: str) -> str | None:
        """Rename one key of an official ST-GCN state_dict: the original ST-GCN's
        ``edge_importance.{i}`` (a ParameterList) becomes HiCLR's ``edge_importance{i+1}``; the
        original's 1x1-conv classifier ``fcn.*`` has no counterpart and is dropped."""
        if key.startswith("edge_importance."):
            return f"edge_importance{int(key.split('.')[1]) + 1}"
        if key.startswith("fcn."):
            return None
        return key


def stgcn_standard(num_class: int = 128, **kwargs: object) -> STGCN:
    """The standard-width ST-GCN (64 ... 256) with AimCLR's MLP head."""
    return STGCN(hidden_channels=64, hidden_dim=256, num_class=num_class, **kwargs)


def stgcn_hiclr(num_class: int = 128, **kwargs: object) -> STGCN:
    """HiCLR's quarter-width ST-GCN (16, 16, 16, 16, 32/2, 32, 32, 64/2, 64, 256) with its MLP head."""
    return STGCN(hidden_channels=16, hidden_dim=256, num_class=num_class, **kwargs)
