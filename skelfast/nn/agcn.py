"""2s-AGCN joint stream, ISC's graph-based encoder (skeleton-contrast ``moco/AGCN.py``).

Module and parameter names follow the official code (``l1`` ... ``l10``, ``gcn1``, ``tcn1``, ``PA``,
``conv_a/b/d``), so an official state_dict loads key for key.

The adaptive graph convolution computes ``sum_k conv_d[k](x @ (A_k + PA_k + C_k))`` with the
three subsets batched: the three ``conv_a`` and ``conv_b`` run as one 1x1 convolution (a batched
GEMM, as ``pointwise_conv``: several times faster than oneDNN's NCHW convolution at these shapes), and
the aggregation with the three conv_d is ``skelfast.ops.graph_conv`` with one adjacency per sample
(C_k depends on x): per sample x @ M_k, then one GEMM over the K*C_in channels (the official order,
the cheaper one while C_in <= C_out, as in every unit), without the (N, K*C_in, T, V) tensor the
unfused form stacks. Every convolution bias that a BatchNorm follows (conv_d, down, tcn, residual)
goes to ``bn_act``, which in training mode cancels it rather than adding it (``bn_act``'s ``bias``);
conv_a's (theta's) biases are never added, since the attention's softmax cancels them in any mode.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from skelfast.nn._official import OfficialEncoder, residual_kind
from skelfast.nn.batch_norm import bn_act, cancelled_bias
from skelfast.nn.graph import agcn_graph
from skelfast.nn.pointwise import pointwise_conv
from skelfast.nn.subset_scores import SubsetScores
from skelfast.nn.temporal_conv import TemporalConv2d
from skelfast.ops import graph_conv


def _conv_init(conv: nn.Conv2d) -> None:
    nn.init.kaiming_normal_(conv.weight, mode="fan_out")
    nn.init.constant_(conv.bias, 0)


def _bn_init(bn: nn.BatchNorm2d | nn.BatchNorm1d, scale: float) -> None:
    nn.init.constant_(bn.weight, scale)
    nn.init.constant_(bn.bias, 0)


class UnitTCN(nn.Module):
    """Conv2d (k x 1, stride s, pad (k-1)/2) -> BN, no activation; (N, C_in, T, V) -> (N, C_out, T', V)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 9, stride: int = 1) -> None:
        super().__init__()
        # nn.Conv2d((k, 1), stride (s, 1), padding ((k - 1) / 2, 0)); the frequency form where faster
        self.conv = TemporalConv2d(in_channels, out_channels, kernel_size, stride)
        self.bn = nn.BatchNorm2d(out_channels)
        _conv_init(self.conv)
        _bn_init(self.bn, 1)

    def forward(
        self, x: torch.Tensor, residual: torch.Tensor | None = None, relu: bool = False
    ) -> torch.Tensor:
        """``relu?(BN(conv(x)) + residual)``: the unit's own output with the defaults; the enclosing
        unit passes its residual and ReLU so they fuse into the BatchNorm (``bn_act``)."""
        # the convolution's bias goes to bn_act, where training-mode BatchNorm cancels it
        if self.conv.kernel_size[0] == 1:  # the residual's strided 1x1 convolution
            y = pointwise_conv(x, self.conv.weight, None, self.conv.stride[0])
        else:  # the (9 x 1) convolution, in the frequency form where that is faster
            y = self.conv(x, with_bias=False)
        return bn_act(self.bn, y, residual, relu=relu, bias=self.conv.bias)


class _PairProjection(torch.autograd.Function):
    """The attention's theta and phi of all K subsets as one 1x1 convolution, with phi's biases only:
    x (N, C, T, V), weight (K*2*C', C), phi_bias (K, C') -> (N, K*2*C', T*V), channel blocks theta_0,
    phi_0, theta_1, ... (theta's biases: see UnitGCN.forward). A Function, not bmm and an add on the
    phi slice, because autograd's in-place add on a slice copies the whole gradient backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, phi_bias: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        n, c, t, v = x.shape
        k, ci = phi_bias.shape
        xs = x.reshape(n, c, t * v)
        y = torch.bmm(weight.expand(n, -1, c), xs)
        y.view(n, k, 2, ci, t * v)[:, :, 1].add_(phi_bias.view(1, k, ci, 1))
        ctx.save_for_backward(xs, weight)
        ctx.x_shape, ctx.k, ctx.ci, ctx.phi_dtype = x.shape, k, ci, phi_bias.dtype
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # noqa: ANN001
        xs, weight = ctx.saved_tensors
        n, tv = xs.shape[0], xs.shape[2]
        need = ctx.needs_input_grad
        # under autocast the forward's bmm ran in grad's dtype: the products here too, and each
        # gradient goes back in its input's dtype, as autograd through autocast's casts gives them
        w, x = weight.to(grad.dtype), xs.to(grad.dtype)
        dx = torch.bmm(w.t().expand(n, -1, -1), grad).view(ctx.x_shape).to(xs.dtype) if need[0] else None
        dw = torch.bmm(grad, x.transpose(1, 2)).sum(0).to(weight.dtype) if need[1] else None
        d_phi = (
            grad.view(n, ctx.k, 2, ctx.ci, tv)[:, :, 1].sum(-1).sum(0).to(ctx.phi_dtype) if need[2] else None
        )
        return dx, dw, d_phi


class UnitGCN(nn.Module):
    """Adaptive graph convolution: ``ReLU(BN(sum_k W_k x (A_k + B_k + C_k)) + down(x))``.

    A_k fixed (buffer), B_k = ``PA`` learnable (init 1e-6), C_k = softmax over dim -2 of
    ``theta_k(x)^T phi_k(x) / (C' T)`` with theta/phi 1x1 convs to C' = C_out / 4 channels.
    The output BN starts at gamma = 1e-6. (N, C_in, T, V) -> (N, C_out, T, V).
    """

    def __init__(self, in_channels: int, out_channels: int, A: torch.Tensor, coff_embedding: int = 4) -> None:
        super().__init__()
        self.inter_c = out_channels // coff_embedding
        self.num_subset = A.shape[0]
        self.out_channels = out_channels
        # The official code keeps A outside the state_dict (a plain Variable): non-persistent buffer.
        self.register_buffer("A", A.detach().clone().float(), persistent=False)
        self.PA = nn.Parameter(torch.full_like(self.A, 1e-6))
        self.conv_a = nn.ModuleList(nn.Conv2d(in_channels, self.inter_c, 1) for _ in range(self.num_subset))
        self.conv_b = nn.ModuleList(nn.Conv2d(in_channels, self.inter_c, 1) for _ in range(self.num_subset))
        self.conv_d = nn.ModuleList(nn.Conv2d(in_channels, out_channels, 1) for _ in range(self.num_subset))
        self.has_down = in_channels != out_channels
        if self.has_down:
            self.down = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1), nn.BatchNorm2d(out_channels))
        self.bn = nn.BatchNorm2d(out_channels)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                _conv_init(m)
            elif isinstance(m, nn.BatchNorm2d):
                _bn_init(m, 1)
        _bn_init(self.bn, 1e-6)
        for conv in self.conv_d:
            fan = conv.weight.shape[0] * conv.weight.shape[1] * conv.weight.shape[2]
            nn.init.normal_(conv.weight, 0, math.sqrt(2.0 / (fan * self.num_subset)))
            nn.init.constant_(conv.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, t, v = x.shape
        k, ci = self.num_subset, self.inter_c
        # theta and phi of all subsets in one 1x1 convolution, each subset's pair side by side:
        # (N, K * 2 * C', T, V) with channel blocks theta_0, phi_0, theta_1, ...
        pairs = [conv for pair in zip(self.conv_a, self.conv_b, strict=True) for conv in pair]
        ab_weight = torch.cat([conv.weight for conv in pairs]).flatten(1)
        # phi's biases only: theta's term in theta^T phi, sum_c b_c sum_t phi[c, t, w], is the same
        # for every first joint u, so the softmax over u below cancels it exactly (cancelled_bias:
        # its gradient is zero; the official one is rounding)
        phi_bias = torch.stack([conv.bias for conv in self.conv_b])
        ab = _PairProjection.apply(x, ab_weight, phi_bias).view(n * k, 2, ci * t, v)  # C'*T channel-major
        # theta^T phi: the official permute(0, 3, 1, 2).view(N, V, C'*T) @ view(N, C'*T, V)
        scores = SubsetScores.apply(ab).view(n, k, v, v)
        scores = cancelled_bias(scores, torch.stack([conv.bias for conv in self.conv_a]))
        att = torch.softmax(scores / (ci * t), dim=-2)  # (N, K, V, V)
        adjacency = att + (self.A + self.PA)  # (N, K, V, V)
        # sum_k conv_d_k(x @ M_k): the graph convolution with one adjacency per sample (C++ kernel:
        # per sample, x @ M_k then one GEMM over K*C channels, no (N, K*C, T, V) tensor), then the
        # K conv_d biases, which the official code adds after the aggregation: here bn_act takes
        # them, as it takes the down convolution's bias (training-mode BatchNorm cancels both)
        d_weight = torch.cat([m.weight.flatten(1) for m in self.conv_d])  # (K*C_out, C_in), rows (k, o)
        d_bias = torch.stack([m.bias for m in self.conv_d]).sum(0)
        out = graph_conv(x, d_weight, None, adjacency)
        if self.has_down:
            down_conv, down_bn = self.down
            residual = bn_act(down_bn, pointwise_conv(x, down_conv.weight), bias=down_conv.bias)
        else:
            residual = x
        # ReLU(BN(. + conv_d biases) + residual) as one fused op
        return bn_act(self.bn, out, residual, relu=True, bias=d_bias)


class TCNGCNUnit(nn.Module):
    """``ReLU(tcn1(gcn1(x)) + residual(x))``; residual none / identity / UnitTCN(kernel 1, stride s)."""

    def __init__(
        self, in_channels: int, out_channels: int, A: torch.Tensor, stride: int = 1, residual: bool = True
    ) -> None:
        super().__init__()
        self.gcn1 = UnitGCN(in_channels, out_channels, A)
        self.tcn1 = UnitTCN(out_channels, out_channels, stride=stride)
        self.residual_kind = residual_kind(residual, in_channels, out_channels, stride)
        if self.residual_kind == "conv":
            self.residual = UnitTCN(in_channels, out_channels, kernel_size=1, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = None
        if self.residual_kind == "identity":
            residual = x
        elif self.residual_kind == "conv":
            residual = self.residual(x)
        return self.tcn1(self.gcn1(x), residual, relu=True)  # ReLU(tcn1(.) + residual), fused


AGCN_UNITS = ((64, 1), (64, 1), (64, 1), (64, 1), (128, 2), (128, 1), (128, 1), (256, 2), (256, 1), (256, 1))


class AGCN(OfficialEncoder):
    """ISC's graph-based encoder (2s-AGCN joint stream) with its projection head.

    Input (N, C, T, V, M). ``representation``: BatchNorm1d over M*V*C channels (``data_bn``), bodies
    folded into the batch, ten units (3->64 without residual, ..., 128->256 stride 2, 256, 256), mean
    over (T, V) then over the M bodies -> (N, 256). ``project``: with ``mlp=True`` (ISC's ``--mlp``)
    Linear(256, 256) -> ReLU -> Linear(256, num_class), else Linear(256, num_class); the last Linear
    starts at N(0, sqrt(2 / num_class)) as the official ``fc``. ``forward = project o representation``.

    ``base_channels`` scales every width (official 64: units of 64, 128 and 256 channels, a 256-d
    representation); a smaller one is a CPU-sized encoder of the same shape.

    Official checkpoints load unchanged with ``load_official_state_dict(sd,
    prefix="module.encoder_r.")`` (ISC's graph query encoder out of a MoCo checkpoint).
    """

    def __init__(
        self,
        num_class: int = 128,
        num_point: int = 25,
        num_person: int = 2,
        in_channels: int = 3,
        mlp: bool = True,
        A: torch.Tensor | None = None,
        base_channels: int = 64,
    ) -> None:
        super().__init__()
        A = agcn_graph("ntu") if A is None else A
        if A.shape[1] != num_point:
            raise ValueError(f"AGCN: A is {tuple(A.shape)} but num_point={num_point}")
        if base_channels < 4:  # the attention embeddings have a quarter of each unit's channels
            raise ValueError(f"AGCN: base_channels must be >= 4, got {base_channels}")
        self.data_bn = nn.BatchNorm1d(num_person * in_channels * num_point)
        channels = in_channels
        for i, (width, stride) in enumerate(AGCN_UNITS, start=1):
            out = width * base_channels // 64
            self.add_module(f"l{i}", TCNGCNUnit(channels, out, A, stride=stride, residual=i > 1))
            channels = out
        fc = nn.Linear(channels, num_class)
        nn.init.normal_(fc.weight, 0, math.sqrt(2.0 / num_class))
        self.fc = nn.Sequential(nn.Linear(channels, channels), nn.ReLU(), fc) if mlp else fc
        _bn_init(self.data_bn, 1)

    def representation(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, C, T, V, M) -> (N, 4 * base_channels), (N, 256) as official."""
        if x.dim() != 5 or x.shape[1] * x.shape[3] * x.shape[4] != self.data_bn.num_features:
            raise ValueError(
                f"AGCN: x must be (N, C, T, V, M) with C*V*M={self.data_bn.num_features}, got {tuple(x.shape)}"
            )
        n, c, t, v, m = x.shape
        x = x.permute(0, 4, 3, 1, 2).reshape(n, m * v * c, t)
        x = self.data_bn(x)
        x = x.view(n, m, v, c, t).permute(0, 1, 3, 4, 2).reshape(n * m, c, t, v)
        for i in range(1, len(AGCN_UNITS) + 1):
            x = getattr(self, f"l{i}")(x)
        return x.reshape(n, m, x.shape[1], -1).mean(3).mean(1)
