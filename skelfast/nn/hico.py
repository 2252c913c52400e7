"""HiCo's hierarchical encoder and its five projection heads (HiCo ``hico/hi_encoder.py``).

Module names follow the official ``PretrainingEncoder`` (``hi_encoder.t_embedding``, ...,
``clip_proj``, ``instance_proj``), so a HiCo checkpoint's ``encoder_q.*`` loads key for key.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from skelfast.nn._official import OfficialEncoder, xavier_2d_params
from skelfast.nn.rnn import GRU
from skelfast.nn.transformer import TransformerEncoderLayer

ENCODERS = ("GRU", "LSTM", "Transformer")


def hico_inputs(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two domains of one clip x (N, C, T, V, M): the time-majored xc (N, T, M*V*C), one token per
    frame ordered (body, joint, xyz), and the space-majored xp (N, M*V, T*C), one token per (body,
    joint) holding its trajectory (time-major)."""
    if x.dim() != 5:
        raise ValueError(f"hico_inputs: x must be (N, C, T, V, M), got {tuple(x.shape)}")
    n, c, t, v, m = x.shape
    xc = x.permute(0, 2, 4, 3, 1).reshape(n, t, m * v * c)
    xp = x.permute(0, 4, 3, 2, 1).reshape(n, m * v, t * c)
    return xc, xp


class _DepthWiseConv(nn.Module):
    def __init__(self, channels: int, kernel_size: int, stride: int, padding: int) -> None:
        super().__init__()
        self.dw_conv = nn.Conv1d(
            channels, channels, kernel_size, stride=stride, padding=padding, groups=channels
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, L, D) -> (N, L', D)
        return self.dw_conv(x.transpose(2, 1)).transpose(2, 1)


class UDM(nn.Module):
    """Unified downsampling module: depthwise Conv1d over the sequence -> LayerNorm -> ReLU ->
    MaxPool1d(factor); (N, L, D) -> (N, L' // factor, D)."""

    def __init__(self, channels: int, kernel_size: int, stride: int, padding: int, factor: int) -> None:
        super().__init__()
        self.conv = _DepthWiseConv(channels, kernel_size, stride, padding)
        self.norm = nn.LayerNorm(channels)
        self.maxpooling = nn.MaxPool1d(factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.norm(self.conv(x)))
        return self.maxpooling(x.transpose(2, 1)).transpose(2, 1)


def _embedding(in_size: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_size, hidden), nn.LayerNorm(hidden), nn.ReLU(), nn.Linear(hidden, hidden)
    )


def _s2s(encoder: str, d_model: int, num_head: int, num_layer: int) -> nn.Module:
    if encoder == "GRU":
        return GRU(d_model, d_model // 2, num_layers=num_layer, batch_first=True, bidirectional=True)
    if encoder == "LSTM":
        return nn.LSTM(d_model, d_model // 2, num_layers=num_layer, batch_first=True, bidirectional=True)
    if encoder == "Transformer":
        # d_model, nhead, dim_feedforward = d_model (the official positional arguments), dropout 0.1,
        # post-norm; no positional encoding anywhere. nn's layer with skelfast's dropouts, same keys.
        layer = TransformerEncoderLayer(d_model, num_head, d_model, batch_first=True)
        return nn.TransformerEncoder(layer, num_layer, enable_nested_tensor=False)
    raise ValueError(f"HiCo: unknown encoder {encoder!r}; expected one of {ENCODERS}")


class HiEncoder(nn.Module):
    """Two-domain hierarchical encoder: per-domain embedding, one S2S encoder per domain shared by all
    granularities, one UDM per domain reused at every level (applied to the embeddings,
    cumulatively), max over the tokens. xc (N, Lc, t_in), xp (N, Lp, s_in) -> vc, vp (N, G, D)."""

    def __init__(
        self,
        t_input_size: int,
        s_input_size: int,
        kernel_size: int,
        stride: int,
        padding: int,
        factor: int,
        hidden_size: int,
        num_head: int,
        num_layer: int,
        granularity: int,
        encoder: str,
    ) -> None:
        super().__init__()
        self.granularity = granularity
        self.encoder = encoder
        self.t_embedding = _embedding(t_input_size, hidden_size)
        self.s_embedding = _embedding(s_input_size, hidden_size)
        self.t_downsample = UDM(hidden_size, kernel_size, stride, padding, factor)
        self.s_downsample = UDM(hidden_size, kernel_size, stride, padding, factor)
        self.t_encoder = _s2s(encoder, hidden_size, num_head, num_layer)
        self.s_encoder = _s2s(encoder, hidden_size, num_head, num_layer)

    def _encode(self, encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
        out = encoder(x)
        out = out[0] if isinstance(out, tuple) else out
        return out.amax(dim=1)

    def forward(self, xc: torch.Tensor, xp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xc = self.t_embedding(xc)
        xp = self.s_embedding(xp)
        vc = [self._encode(self.t_encoder, xc)]
        vp = [self._encode(self.s_encoder, xp)]
        for _ in range(1, self.granularity):
            xc = self.t_downsample(xc)
            xp = self.s_downsample(xp)
            vc.append(self._encode(self.t_encoder, xc))
            vp.append(self._encode(self.s_encoder, xp))
        return torch.stack(vc, dim=1), torch.stack(vp, dim=1)


class HiCoProjections(NamedTuple):
    """The five pretraining outputs: clip zc (N, G, P), part zp (N, G, P), temporal-domain zt (N, P),
    spatial-domain zs (N, P), instance zi (N, P)."""

    zc: torch.Tensor
    zp: torch.Tensor
    zt: torch.Tensor
    zs: torch.Tensor
    zi: torch.Tensor


def _head(in_size: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_size, hidden), nn.ReLU(), nn.Linear(hidden, out))


class HiCoEncoder(OfficialEncoder):
    """HiCo's ``PretrainingEncoder``: ``HiEncoder`` plus the clip, part, temporal-domain,
    spatial-domain and instance projection heads (2-layer MLPs, no BatchNorm).

    ``representation(xc, xp)`` -> vi (N, 2 * G * D) = (N, 4096) with the defaults: concat(flatten(vc),
    flatten(vp)), the feature of linear evaluation and KNN. ``project(vi)`` -> ``HiCoProjections``
    (vc and vp are recovered from vi). ``forward = project o representation``.

    Defaults are the official ``encoder_arguments``: t_input 150, s_input 192, hidden 512, UDM kernel
    5 / stride 1 / padding 2 / factor 2, 4 heads, 1 layer, G = 4, projection 128; ``encoder`` is the
    options' default, the Transformer. Init: xavier_uniform on every 2-D parameter (HiCo's
    ``weights_init``); LayerNorms, biases and the depthwise convs keep PyTorch's defaults.

    Official keys load unchanged: ``load_official_state_dict(sd, prefix="encoder_q.")``
    (a ``DownstreamEncoder`` checkpoint loads its ``hi_encoder.*`` with ``strict=False``).
    """

    def __init__(
        self,
        encoder: str = "Transformer",
        t_input_size: int = 150,
        s_input_size: int = 192,
        kernel_size: int = 5,
        stride: int = 1,
        padding: int = 2,
        factor: int = 2,
        hidden_size: int = 512,
        num_head: int = 4,
        num_layer: int = 1,
        granularity: int = 4,
        num_class: int = 128,
    ) -> None:
        super().__init__()
        self.d_model = hidden_size
        self.granularity = granularity
        self.hi_encoder = HiEncoder(
            t_input_size, s_input_size, kernel_size, stride, padding, factor, hidden_size, num_head, num_layer,
            granularity, encoder,
        )  # fmt: skip
        d, g = hidden_size, granularity
        self.clip_proj = _head(d, d, num_class)
        self.part_proj = _head(d, d, num_class)
        self.td_proj = _head(g * d, d, num_class)
        self.sd_proj = _head(g * d, d, num_class)
        self.instance_proj = _head(2 * g * d, d, num_class)
        xavier_2d_params(list(self.children()))

    def features(self, xc: torch.Tensor, xp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """xc (N, Lc, t_in), xp (N, Lp, s_in) -> clip features vc and part features vp, (N, G, D)."""
        t_in = self.hi_encoder.t_embedding[0].in_features
        s_in = self.hi_encoder.s_embedding[0].in_features
        if xc.dim() != 3 or xc.shape[2] != t_in or xp.dim() != 3 or xp.shape[2] != s_in:
            raise ValueError(
                f"HiCoEncoder: xc must be (N, Lc, {t_in}) and xp (N, Lp, {s_in}); got {tuple(xc.shape)} and "
                f"{tuple(xp.shape)} (see hico_inputs)"
            )
        if xc.shape[0] != xp.shape[0]:
            raise ValueError(
                f"HiCoEncoder: xc and xp have different batch sizes {xc.shape[0]} and {xp.shape[0]}"
            )
        return self.hi_encoder(xc, xp)

    def representation(self, xc: torch.Tensor, xp: torch.Tensor) -> torch.Tensor:
        vc, vp = self.features(xc, xp)
        return torch.cat([vc.flatten(1), vp.flatten(1)], dim=1)

    def project(self, vi: torch.Tensor) -> HiCoProjections:
        half = self.granularity * self.d_model
        vt, vs = vi[:, :half], vi[:, half:]
        vc = vt.reshape(vi.shape[0], self.granularity, self.d_model)
        vp = vs.reshape(vi.shape[0], self.granularity, self.d_model)
        return HiCoProjections(
            self.clip_proj(vc), self.part_proj(vp), self.td_proj(vt), self.sd_proj(vs), self.instance_proj(vi)
        )
