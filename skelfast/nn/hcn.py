"""HCN, ISC's image-based encoder (skeleton-contrast ``moco/HCN.py``).

Module names follow the official code, so its state_dict loads key for key. The official forward
loops over the two bodies; here both bodies go through the per-body layers as one batch of 2N
(every layer before the body max is per sample), which equals the loop in eval mode and draws the
same Dropout2d distribution in train mode.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from skelfast.nn._official import OfficialEncoder


def _glorot_uniform(module: nn.Module) -> None:
    """HCN's ``weights_init``: uniform(+-sqrt(6 / (fan_in + fan_out))) weights and zero biases, with
    fan_in = prod(shape[1:4]) and fan_out = prod(shape[2:4]) * shape[0] for convolutions."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            shape = list(m.weight.shape)
            fan_in, fan_out = np.prod(shape[1:4]), np.prod(shape[2:4]) * shape[0]
        elif isinstance(m, nn.Linear):
            fan_in, fan_out = m.weight.shape[1], m.weight.shape[0]
        else:
            continue
        bound = float(np.sqrt(6.0 / (fan_in + fan_out)))
        m.weight.data.uniform_(-bound, bound)
        if m.bias is not None:
            m.bias.data.fill_(0)


class HCN(OfficialEncoder):
    """Hierarchical co-occurrence network with ISC's projection head.

    Input (N, C, T, V, M) with M = 2. Per body, separately for the position and the motion stream
    (motion = frame differences bilinearly resized back to T frames): conv1 1x1 C->64 + ReLU,
    conv2 (3x1) 64->window_size, joints become channels (the co-occurrence permute), conv3 3x3 V->32 +
    MaxPool2, conv4 3x3 32->64 + Dropout2d + MaxPool2; streams concatenated, conv5 3x3 128->128 +
    ReLU + Dropout2d + MaxPool2, conv6 3x3 128->256 + ReLU + Dropout2d + MaxPool2; element-wise max over
    the two bodies, flattened: ``representation`` (N, 256 * T/16 * window_size/16) = (N, 4096) for
    T = 64. ``project``: with ``mlp=True`` Linear(4096, 4096) -> ReLU -> Linear(4096, num_class).
    ``dropout`` is the rate of the three Dropout2d (official 0.5).

    Official keys load unchanged: ``load_official_state_dict(sd, prefix="module.encoder_r.")``
    for ISC's image query encoder.
    """

    def __init__(
        self,
        in_channel: int = 3,
        num_joint: int = 25,
        num_person: int = 2,
        out_channel: int = 64,
        window_size: int = 64,
        num_class: int = 128,
        mlp: bool = True,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if num_person != 2:
            raise ValueError("HCN: the official model takes the max over exactly 2 bodies")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"HCN: dropout must be in [0, 1), got {dropout}")
        self.num_person = num_person
        self.window_size = window_size

        def stream() -> tuple[nn.Module, nn.Module, nn.Module, nn.Module]:
            conv1 = nn.Sequential(nn.Conv2d(in_channel, out_channel, kernel_size=1), nn.ReLU())
            conv2 = nn.Conv2d(out_channel, window_size, kernel_size=(3, 1), padding=(1, 0))
            conv3 = nn.Sequential(nn.Conv2d(num_joint, out_channel // 2, 3, padding=1), nn.MaxPool2d(2))
            conv4 = nn.Sequential(
                nn.Conv2d(out_channel // 2, out_channel, 3, padding=1),
                nn.Dropout2d(p=dropout),
                nn.MaxPool2d(2),
            )
            return conv1, conv2, conv3, conv4

        self.conv1, self.conv2, self.conv3, self.conv4 = stream()
        self.conv1m, self.conv2m, self.conv3m, self.conv4m = stream()
        self.conv5 = nn.Sequential(
            nn.Conv2d(out_channel * 2, out_channel * 2, 3, padding=1),
            nn.ReLU(),
            nn.Dropout2d(p=dropout),
            nn.MaxPool2d(2),
        )
        self.conv6 = nn.Sequential(
            nn.Conv2d(out_channel * 2, out_channel * 4, 3, padding=1),
            nn.ReLU(),
            nn.Dropout2d(p=dropout),
            nn.MaxPool2d(2),
        )
        feat = out_channel * 4 * (window_size // 16) * (window_size // 16)
        fc = nn.Linear(feat, num_class)
        _glorot_uniform(self)
        _glorot_uniform(fc)
        # the MLP's first Linear is added after the init (ISC's brute-force head replacement)
        self.fc = nn.Sequential(nn.Linear(feat, feat), nn.ReLU(), fc) if mlp else fc

    @staticmethod
    def motion(x: torch.Tensor) -> torch.Tensor:
        """x (N, C, T, V, M) -> frame differences resized back to T frames (bilinear, align_corners
        False), (N, C, T, V, M)."""
        n, c, t, v, m = x.shape
        diff = (x[:, :, 1:] - x[:, :, :-1]).permute(0, 1, 4, 2, 3).reshape(n, c * m, t - 1, v)
        diff = F.interpolate(diff, size=(t, v), mode="bilinear", align_corners=False)
        return diff.view(n, c, m, t, v).permute(0, 1, 3, 4, 2)

    def representation(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, C, T, V, M=2) -> (N, 256 * (T // 16) * (window_size // 16))."""
        if x.dim() != 5 or x.shape[4] != self.num_person or x.shape[2] < 2:
            raise ValueError(f"HCN: x must be (N, C, T >= 2, V, M=2), got {tuple(x.shape)}")
        if x.shape[3] != self.conv3[0].in_channels:
            raise ValueError(f"HCN: x has V={x.shape[3]} joints, the model {self.conv3[0].in_channels}")
        n = x.shape[0]
        # bodies folded into the batch: (M*N, C, T, V), body-major
        pos = x.permute(4, 0, 1, 2, 3).flatten(0, 1)
        mot = self.motion(x).permute(4, 0, 1, 2, 3).flatten(0, 1)
        out_p = self.conv4(self.conv3(self.conv2(self.conv1(pos)).permute(0, 3, 2, 1)))
        out_m = self.conv4m(self.conv3m(self.conv2m(self.conv1m(mot)).permute(0, 3, 2, 1)))
        out = self.conv6(self.conv5(torch.cat((out_p, out_m), dim=1)))
        return torch.max(out[:n], out[n:]).flatten(1)
