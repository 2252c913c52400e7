"""The MoCo core every method shares: momentum (EMA) key encoders and shuffled BatchNorm.

The queues themselves are ``skelfast.queue.MemoryQueue`` (keys gathered across ranks on enqueue)
and the losses are ``skelfast.ops.info_nce`` / ``hiclr_loss``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@torch.no_grad()
def momentum_update(
    key: Iterable[torch.Tensor] | nn.Module, query: Iterable[torch.Tensor] | nn.Module, momentum: float
) -> None:
    """theta_k <- theta_k + (1 - m) (theta_q - theta_k) over all parameters at once.

    One ``torch._foreach_lerp_`` (a single fused multi-tensor kernel on CUDA) instead of MoCo's
    Python loop of two kernels per parameter. Parameters only: BN running statistics are not
    copied, as in the official code. Shapes must match pairwise.
    """
    k = list(key.parameters() if isinstance(key, nn.Module) else key)
    q = list(query.parameters() if isinstance(query, nn.Module) else query)
    if len(k) != len(q):
        raise ValueError(f"momentum_update: {len(k)} key parameters but {len(q)} query parameters")
    for i, (a, b) in enumerate(zip(k, q, strict=True)):
        if a.shape != b.shape:
            raise ValueError(
                f"momentum_update: parameter {i} is {tuple(a.shape)} in the key, {tuple(b.shape)} in the query"
            )
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum_update: momentum must be in [0, 1], got {momentum}")
    if k:
        torch._foreach_lerp_(k, [b.detach() for b in q], 1.0 - momentum)


def momentum_copy(query: nn.Module) -> nn.Module:
    """A key encoder: a deep copy of ``query`` whose parameters never receive gradients."""
    key = copy.deepcopy(query)
    for p in key.parameters():
        p.requires_grad_(False)
    return key


@torch.no_grad()
def copy_parameters(key: nn.Module, query: nn.Module) -> None:
    """Overwrite the key's parameters with the query's (MoCo's initial ``param_k.data.copy_``)."""
    for a, b in zip(key.parameters(), query.parameters(), strict=True):
        a.copy_(b)


@torch.no_grad()
def batch_shuffle(
    x: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """MoCo's shuffled BatchNorm, first half: permute the (global) batch before the key encoder.

    Under torch.distributed the batch is gathered, permuted with a permutation broadcast from rank
    0, and each rank keeps its slice (``_batch_shuffle_ddp``); in one process the batch is permuted
    in place of that. Returns ``(x_shuffled, unshuffle_index)`` for ``batch_unshuffle``.
    """
    if not _distributed():
        perm = torch.randperm(x.shape[0], generator=generator).to(x.device)
        return x[perm], torch.argsort(perm)
    world, rank = dist.get_world_size(), dist.get_rank()
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.contiguous())
    full = torch.cat(parts)
    perm = torch.randperm(full.shape[0], generator=generator).to(x.device)
    dist.broadcast(perm, src=0)
    unshuffle = torch.argsort(perm)
    n = x.shape[0]
    return full[perm[rank * n : (rank + 1) * n]], unshuffle


@torch.no_grad()
def batch_unshuffle(y: torch.Tensor, unshuffle: torch.Tensor) -> torch.Tensor:
    """Second half of shuffled BN: put the key encoder's outputs back in the batch's order."""
    if not _distributed():
        return y[unshuffle]
    world, rank = dist.get_world_size(), dist.get_rank()
    parts = [torch.empty_like(y) for _ in range(world)]
    dist.all_gather(parts, y.contiguous())
    full = torch.cat(parts)
    n = y.shape[0]
    return full[unshuffle[rank * n : (rank + 1) * n]]
