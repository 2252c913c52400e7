"""Dropout as ``nn.Dropout`` computes it on the CPU (ATen's ``_dropout_impl``): a ``bernoulli_`` keep
mask divided by 1 - p, times x. The baseline of ``skelfast.ops.dropout``; the exact oracle of its
seeded kernels is ``skelfast.reference.philox.dropout_keep``."""

from __future__ import annotations

import torch


def dropout(x: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """x (any shape) -> x * keep / (1 - p), keep ~ Bernoulli(1 - p) per element (train mode, p < 1)."""
    noise = torch.empty_like(x).bernoulli_(1.0 - p, generator=generator)
    return x * noise.div_(1.0 - p)
