"""Input validation shared by the public ops: one clear error per problem, raised before dispatch."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def check_rank(name: str, t: torch.Tensor, rank: int, layout: str) -> None:
    if t.dim() != rank:
        raise ValueError(f"{name} must have {rank} dimensions {layout}, got shape {tuple(t.shape)}")


def check_floating(name: str, t: torch.Tensor) -> None:
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")


def check_same(op: str, tensors: Sequence[tuple[str, torch.Tensor | None]], dtype: bool = True) -> None:
    """All given tensors share one device and (unless ``dtype`` is False) one dtype."""
    present = [(n, t) for n, t in tensors if t is not None]
    name0, t0 = present[0]
    for name, t in present[1:]:
        if t.device != t0.device:
            raise ValueError(f"{op}: {name} is on {t.device} but {name0} is on {t0.device}")
        if dtype and t.dtype != t0.dtype:
            raise TypeError(f"{op}: {name} has dtype {t.dtype} but {name0} has dtype {t0.dtype}")
