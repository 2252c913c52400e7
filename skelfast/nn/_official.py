"""Loading checkpoints written by the official code into skelfast encoders.

The encoders keep the official module and parameter names wherever they can, so most keys load as
they are; each encoder passes a ``key_map`` for the few that moved and for those it drops.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn


class OfficialEncoder(nn.Module):
    """Base of the method encoders: ``representation(*inputs)`` gives the evaluation feature,
    ``project(h)`` the pretraining projection (``self.fc`` unless overridden), ``forward`` is their
    composition, and ``load_official_state_dict`` loads an official checkpoint through
    ``official_key`` (a key renaming; ``None`` when the official keys load unchanged)."""

    official_key: Callable[[str], str | None] | None = None

    def representation(self, *inputs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def project(self, h: torch.Tensor) -> torch.Tensor:
        return self.fc(h)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.project(self.representation(*inputs))

    def load_official_state_dict(
        self, state_dict: Mapping[str, torch.Tensor], prefix: str = "", strict: bool = True
    ) -> nn.modules.module._IncompatibleKeys:
        """Load official weights: keys under ``prefix`` (e.g. ``"module.encoder_q."`` for a MoCo
        query encoder) are renamed by ``official_key`` and loaded with ``strict``."""
        return load_official(self, state_dict, prefix, self.official_key, strict)


def residual_kind(residual: bool, in_channels: int, out_channels: int, stride: int) -> str:
    """The residual rule of ST-GCN and 2s-AGCN units: none when disabled (the first unit),
    identity when shapes match, else a strided 1x1 convolution with BatchNorm."""
    if not residual:
        return "none"
    return "identity" if in_channels == out_channels and stride == 1 else "conv"


def init_normal_002(module: nn.Module) -> None:
    """AimCLR/HiCLR ``weights_init`` (``PT_Processor``, applied with ``model.apply``): Conv1d, Conv2d
    and Linear weights ~ N(0, 0.02) with zero bias; BatchNorm weights ~ N(1, 0.02) with zero bias."""
    name = type(module).__name__
    if "Conv1d" in name or "Conv2d" in name or "Linear" in name:
        module.weight.data.normal_(0.0, 0.02)
        if module.bias is not None:
            module.bias.data.fill_(0)
    elif "BatchNorm" in name:
        module.weight.data.normal_(1.0, 0.02)
        module.bias.data.fill_(0)


def xavier_2d_params(modules: list[nn.Module]) -> None:
    """HiCo's and ISC's ``weights_init``: ``xavier_uniform_`` on every 2-D parameter of each module."""
    with torch.no_grad():
        for module in modules:
            for param in module.parameters():
                if param.dim() == 2:
                    nn.init.xavier_uniform_(param)


def load_official(
    module: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    prefix: str = "",
    key_map: Callable[[str], str | None] | None = None,
    strict: bool = True,
) -> nn.modules.module._IncompatibleKeys:
    """Load an official state_dict into ``module``.

    Only keys starting with ``prefix`` are taken (``"module.encoder_q."`` picks the query encoder out
    of a whole MoCo checkpoint) and the prefix is removed; ``key_map`` then renames each key or
    returns ``None`` to drop it. ``strict`` is passed to ``load_state_dict``.
    """
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if not key.startswith(prefix):
            continue
        new_key = key[len(prefix) :]
        if key_map is not None:
            new_key = key_map(new_key)
        if new_key is not None:
            mapped[new_key] = value
    if not mapped:
        raise KeyError(f"no key of the checkpoint starts with prefix {prefix!r}")
    return module.load_state_dict(mapped, strict=strict)
