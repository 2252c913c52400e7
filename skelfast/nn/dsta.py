"""DSTA-Net as HiCLR's Transformer backbone uses it (HiCLR ``net/dsta.py``, release config: spatial
attention on, temporal attention off, attentiondrop 0.5).

Module, parameter and buffer names follow the official code (``proj``, ``input_map``,
``graph_layers.i.in_nets`` ...), so the official state_dict loads key for key. The 1x1 convolutions run
as batched GEMMs (``skelfast.nn.pointwise.pointwise_conv``) and the (7 x 1) ones in the frequency form
(``TemporalConv2d``) where that is faster; the modules stay ``nn.Conv2d`` for the state_dict. The
spatial attention runs as 2s-AGCN's does here: its scores as ``SubsetScores`` on each subset's q/k pair
side by side, and ``out_nets(x att)`` as ``graph_conv`` with one adjacency per sample.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from skelfast.nn._official import OfficialEncoder, init_normal_002
from skelfast.nn.batch_norm import bn_act
from skelfast.nn.dropout import Dropout
from skelfast.nn.pointwise import pointwise_conv
from skelfast.nn.subset_scores import SubsetScores
from skelfast.nn.temporal_conv import TemporalConv2d
from skelfast.ops import graph_conv

# (in_channels, out_channels, inter_channels, stride) of HiCLR's release config
HICLR_CONFIG = (
    (32, 32, 16, 1), (32, 32, 16, 1), (32, 64, 16, 2), (64, 64, 16, 1),
    (64, 128, 32, 2), (128, 128, 32, 1), (128, 128, 32, 1), (128, 256, 32, 1),
)  # fmt: skip


class SpatialPositionalEncoding(nn.Module):
    """Sinusoidal encoding of the joint index, buffer ``pe`` (1, C, num_frame, V), added to x."""

    def __init__(self, channels: int, num_joints: int, num_frames: int) -> None:
        super().__init__()
        position = torch.arange(num_joints, dtype=torch.float32).repeat(num_frames).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, channels, 2).float() * -(math.log(10000.0) / channels))
        pe = torch.zeros(num_frames * num_joints, channels)
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term)
        self.register_buffer("pe", pe.view(num_frames, num_joints, channels).permute(2, 0, 1).unsqueeze(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pe[:, :, : x.shape[2]]


def _conv_bn(cin: int, cout: int, kernel: tuple[int, int] = (1, 1), stride: int = 1) -> nn.Sequential:
    if kernel[0] > 1 and kernel[1] == 1:  # the (7 x 1) temporal one: the frequency form where faster
        return nn.Sequential(TemporalConv2d(cin, cout, kernel[0], stride), nn.BatchNorm2d(cout))
    pad = ((kernel[0] - 1) // 2, (kernel[1] - 1) // 2)
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, (stride, 1), pad), nn.BatchNorm2d(cout))


def _conv_then_bn(
    conv_bn: nn.Sequential, x: torch.Tensor, residual: torch.Tensor | None = None
) -> torch.Tensor:
    """``conv_bn(x) + residual`` for a ``_conv_bn`` pair: its 1x1 convolution as one batched GEMM
    (``pointwise_conv``; oneDNN's NCHW 1x1 convolution ran these at a fraction of the sgemm rate and
    they were 40% of a DSTA-Net step), the (7 x 1) one as its module, and the BatchNorm with the
    residual added in one ``bn_act`` call (PyTorch's BatchNorm and add: four passes, this two)."""
    conv, bn = conv_bn
    bias = conv.bias  # to bn_act, where training-mode BatchNorm cancels it
    if conv.kernel_size == (1, 1):
        y = pointwise_conv(x, conv.weight, None, conv.stride[0])
    elif isinstance(conv, TemporalConv2d):
        y = conv(x, with_bias=False)
    else:
        y, bias = conv(x), None
    return bn_act(bn, y, residual, bias=bias)


class STAttentionBlock(nn.Module):
    """Spatial self-attention over joints (with learnable global attention ``attention0s``) followed
    by a (7x1) temporal convolution; (N, C_in, T, V) -> (N, C_out, ceil(T / stride), V).

    ``att = atts + tanh(sum_{c,t} q k / (inter * T)) * alphas + attention0s`` per subset;
    ``y = LReLU(downs2(x) + ff_nets(LReLU(downs1(x) + out_nets(x att))))``;
    ``z = LReLU(Dropout(downt2(y)) + out_nett(y))``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        inter_channels: int,
        stride: int = 1,
        num_subset: int = 3,
        num_node: int = 25,
        num_frame: int = 50,
        attentiondrop: float = 0.0,
    ) -> None:
        super().__init__()
        self.inter_channels = inter_channels
        self.in_channels = in_channels
        self.num_subset = num_subset
        self.register_buffer("atts", torch.zeros(1, num_subset, num_node, num_node))
        self.pes = SpatialPositionalEncoding(in_channels, num_node, num_frame)
        self.ff_nets = _conv_bn(out_channels, out_channels)
        self.in_nets = nn.Conv2d(in_channels, 2 * num_subset * inter_channels, 1)
        self.alphas = nn.Parameter(torch.ones(1, num_subset, 1, 1))
        self.attention0s = nn.Parameter(torch.ones(1, num_subset, num_node, num_node) / num_node)
        self.out_nets = _conv_bn(in_channels * num_subset, out_channels)
        self.out_nett = _conv_bn(out_channels, out_channels, (7, 1), stride)
        self.has_down = in_channels != out_channels or stride != 1
        if self.has_down:
            self.downs1 = _conv_bn(in_channels, out_channels)
            self.downs2 = _conv_bn(in_channels, out_channels)
            self.downt2 = _conv_bn(out_channels, out_channels, (1, 1), stride)
        self.relu = nn.LeakyReLU(0.1)
        self.drop = Dropout(attentiondrop)  # nn.Dropout's distribution, cheaper mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, t, v = x.shape
        s, ci = self.num_subset, self.inter_channels
        # q and k of all subsets in one 1x1 convolution whose output channels are reordered so that each
        # subset's pair sits side by side (q_0, k_0, q_1, ...; officially q_0 ... q_S-1, k_0 ...):
        # SubsetScores then reads the pairs in place (the official split and einsum copied both, and
        # the split's backward concatenated their gradients)
        qk_weight = self.in_nets.weight.view(2, s, ci, c).transpose(0, 1).reshape(2 * s * ci, c)
        qk_bias = self.in_nets.bias.view(2, s, ci).transpose(0, 1).reshape(2 * s * ci)
        pairs = pointwise_conv(self.pes(x), qk_weight, qk_bias).view(n * s, 2, ci * t, v)
        scores = SubsetScores.apply(pairs).view(n, s, v, v)  # sum_{c,t} q k, "nsctu,nsctv->nsuv"
        att = self.atts + torch.tanh(scores / (ci * t)) * self.alphas
        att = att + self.attention0s
        # out_nets(x att) = sum_s W_s (x @ att_s) + b: graph_conv with one adjacency per sample (no
        # (N, S*C, T, V) tensor from the einsum); out_nets' input channels are ordered (s, c)
        conv, bn = self.out_nets
        out_weight = conv.weight.view(-1, s, c).transpose(0, 1).reshape(-1, c)  # (S*C_out, C_in), rows (s, o)
        y = graph_conv(x, out_weight, None, att)
        y = self.relu(bn_act(bn, y, _conv_then_bn(self.downs1, x) if self.has_down else x, bias=conv.bias))
        # relu(shortcut + BN(conv(.))) twice more, each BN with its shortcut added in one call
        y = self.relu(_conv_then_bn(self.ff_nets, y, _conv_then_bn(self.downs2, x) if self.has_down else x))
        # attention dropout on the temporal shortcut, as HiCLR's net/dsta.py has it (its dropout of the
        # spatial attention matrix, which DSTA-Net's own code applies, is commented out there)
        shortcut = self.drop(_conv_then_bn(self.downt2, y) if self.has_down else y)
        return self.relu(_conv_then_bn(self.out_nett, y, shortcut))


class DSTANet(OfficialEncoder):
    """HiCLR's DSTA-Net encoder with its projection head.

    Input (N, C, T <= num_frame, V, M). ``representation``: stem Conv1x1 C->32 -> BN -> LReLU(0.1),
    eight ``STAttentionBlock``s, mean over (T, V) and the M bodies -> (N, 256). ``project``: with
    ``mlp=True`` Linear(256, 256) -> ReLU -> Linear(256, num_class). ``init="normal"`` applies HiCLR's
    pretraining init (Conv/Linear N(0, 0.02), BN N(1, 0.02)), which overwrites DSTA's own;
    ``init="dsta"`` keeps DSTA's (kaiming fan_out convs, BN 1/0, xavier_normal Linear).

    Official keys (``pe`` and ``atts`` buffers included) load unchanged:
    ``load_official_state_dict(sd, prefix="encoder_q.")``.
    """

    def __init__(
        self,
        num_class: int = 128,
        num_point: int = 25,
        num_frame: int = 50,
        num_subset: int = 3,
        num_channel: int = 3,
        config: Sequence[tuple[int, int, int, int]] = HICLR_CONFIG,
        attentiondrop: float = 0.5,
        mlp: bool = True,
        init: str = "normal",
    ) -> None:
        super().__init__()
        self.num_frame = num_frame
        self.out_channels = config[-1][1]
        self.proj = nn.Conv2d(num_channel, config[0][0], 1)
        self.input_map = nn.Sequential(nn.BatchNorm2d(config[0][0]), nn.LeakyReLU(0.1))
        layers = []
        for cin, cout, inter, stride in config:
            layers.append(
                STAttentionBlock(cin, cout, inter, stride, num_subset, num_point, num_frame, attentiondrop)
            )
            num_frame = int(num_frame / stride + 0.5)
        self.graph_layers = nn.ModuleList(layers)
        fc = nn.Linear(self.out_channels, num_class)
        self.fc = nn.Sequential(nn.Linear(self.out_channels, self.out_channels), nn.ReLU(), fc) if mlp else fc
        for m in self.modules():  # DSTA's own init
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                nn.init.constant_(m.bias, 0)
        if init == "normal":
            self.apply(init_normal_002)
        elif init != "dsta":
            raise ValueError(f"DSTANet: unknown init {init!r}; expected 'normal' or 'dsta'")

    def representation(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, C, T, V, M) -> (N, 256)."""
        if x.dim() != 5 or x.shape[1] != self.proj.in_channels or x.shape[2] > self.num_frame:
            raise ValueError(
                f"DSTANet: x must be (N, {self.proj.in_channels}, T <= {self.num_frame}, V, M), got {tuple(x.shape)}"
            )
        n, c, t, v, m = x.shape
        x = x.permute(0, 4, 1, 2, 3).reshape(n * m, c, t, v)
        x = self.input_map(pointwise_conv(x, self.proj.weight, self.proj.bias))
        for layer in self.graph_layers:
            x = layer(x)
        return x.view(n, m, self.out_channels, -1).mean(dim=(1, 3))
