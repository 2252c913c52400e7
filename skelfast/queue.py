"""Memory queues of negatives for MoCo-style methods: ring buffers of past keys, several levels in
one bank so that ``skelfast.ops.info_nce`` reads every level of a method without a copy.

Rows are keys: level l occupies ``bank[start:start+size]`` with ``(start, size) = ranges[l]``
(MoCo code stores (D, K) columns; this stores (K, D) rows, the layout the kernels read). The bank
and the write pointers are buffers, so they are saved in ``state_dict`` checkpoints; ``enqueue``
reads the pointers from a host-side mirror, so it never waits for the GPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def gather_across_ranks(keys: torch.Tensor) -> torch.Tensor:
    """Keys of every rank concatenated in rank order (no gradient), or ``keys`` outside
    torch.distributed; every rank must pass the same shape, as MoCo's ``concat_all_gather``."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return keys.detach()
    parts = [torch.empty_like(keys) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, keys.detach().contiguous())
    return torch.cat(parts)


class MemoryQueue(nn.Module):
    """Ring buffers of L2-normalised keys, one per level, in one (sum(sizes), dim) bank.

    Args:
        sizes: rows of each level's queue, e.g. HiCo's ``[8192, 8192, 2048, 2048, 2048]``.
        dim: feature dimension.
        wrap_at: per level, the value modulo which the write pointer wraps (default: the level's
            size). HiCo's clip and part queues hold G*K = 8192 rows but wrap at K = 2048 (spec
            hico_hiclr.md §1.6 quirk): pass ``wrap_at=[2048, 2048, None, None, None]`` to reproduce
            it; then only the first 2048 rows are ever refreshed.
        generator: for the random initial keys (randn rows, L2-normalised, as MoCo).
    """

    def __init__(
        self,
        sizes: Sequence[int],
        dim: int,
        *,
        wrap_at: Sequence[int | None] | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        sizes = [int(s) for s in sizes]
        if not sizes or min(sizes) < 1 or dim < 1:
            raise ValueError(f"MemoryQueue: sizes must be >= 1 and dim >= 1, got sizes={sizes} dim={dim}")
        wrap = [None] * len(sizes) if wrap_at is None else list(wrap_at)
        if len(wrap) != len(sizes):
            raise ValueError(f"MemoryQueue: wrap_at has {len(wrap)} entries for {len(sizes)} levels")
        self.sizes = sizes
        self.wrap_at = [s if w is None else int(w) for s, w in zip(sizes, wrap, strict=True)]
        for s, w in zip(sizes, self.wrap_at, strict=True):
            if not 1 <= w <= s:
                raise ValueError(f"MemoryQueue: wrap_at={w} must be in [1, size={s}]")
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        self.ranges = list(zip(starts, sizes, strict=True))
        bank = F.normalize(torch.randn(sum(sizes), dim, generator=generator), dim=1)
        self.register_buffer("bank", bank)
        self.register_buffer("ptr", torch.zeros(len(sizes), dtype=torch.long))
        # Host copy of ``ptr``: reading the buffer on a GPU would wait for the device on every enqueue.
        # The buffer stays the checkpointed truth; the mirror is refreshed whenever the buffer changed
        # behind enqueue's back (load_state_dict, a direct write, a buffer broadcast), seen from the
        # tensor's identity and version counter.
        self._host_ptr = [0] * len(sizes)
        self._synced = self._buffer_state()

    def _buffer_state(self) -> tuple[int, int | None]:
        try:
            version = self.ptr._version
        except RuntimeError:  # an inference-mode tensor has no version counter
            version = None
        return id(self.ptr), version

    def pointers(self) -> list[int]:
        """Each level's next write row (host ints; reads the device only after an outside write)."""
        if self._buffer_state() != self._synced:
            self._host_ptr = [int(p) for p in self.ptr.tolist()]
            self._synced = self._buffer_state()
        return list(self._host_ptr)

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super()._load_from_state_dict(*args, **kwargs)
        self._host_ptr = [int(p) for p in self.ptr.tolist()]
        self._synced = self._buffer_state()

    def __len__(self) -> int:
        return len(self.sizes)

    def level(self, lvl: int) -> torch.Tensor:
        """(size, dim) view of one level's queue."""
        start, size = self.ranges[lvl]
        return self.bank[start : start + size]

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, level: int = 0, gather: bool = True) -> None:
        """Write keys (B, dim) at the level's pointer, wrapping around the ring; under
        torch.distributed (and ``gather``) the keys of all ranks are written, in rank order."""
        if keys.dim() != 2 or keys.shape[1] != self.bank.shape[1]:
            raise ValueError(
                f"MemoryQueue.enqueue: keys must be (B, {self.bank.shape[1]}), got {tuple(keys.shape)}"
            )
        if gather:
            keys = gather_across_ranks(keys)
        keys = keys.detach().to(self.bank.dtype)
        queue = self.level(level)
        size, wrap = self.sizes[level], self.wrap_at[level]
        ptr = self.pointers()[level]
        if keys.shape[0] > size:  # more keys than slots: the last ones win, as a ring would leave them
            skipped = keys.shape[0] - size
            keys = keys[skipped:]
            ptr = (ptr + skipped) % wrap
        n = keys.shape[0]
        first = min(n, size - ptr)
        queue[ptr : ptr + first] = keys[:first]
        queue[: n - first] = keys[first:]
        self._host_ptr[level] = (ptr + n) % wrap
        self.ptr[level] = self._host_ptr[level]  # a fill from a host int: no device read
        self._synced = self._buffer_state()

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}, dim={self.bank.shape[1]}, wrap_at={self.wrap_at}"
