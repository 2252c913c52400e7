"""torch.distributed for pretraining: process-group set-up from torchrun's environment, DDP
wrapping, collective helpers, and a loader that shards each global batch across ranks.

``torchrun --nproc_per_node=2 -m skelfast pretrain ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; ``init_distributed`` joins the group with
gloo on the CPU and NCCL on CUDA. Only rank 0 writes files. Keys reach every rank's queue through
``MemoryQueue.enqueue``'s all-gather, so the queues stay identical across ranks.

Sharding: ``[train] batch_size`` is the global batch (as MoCo's DDP code divides it by the number of
GPUs). ``ShardedLoader`` draws the same per-epoch order as ``SkeletonLoader`` (from ``(seed,
epoch)``), cuts it into global batches, and rank r reads the r-th contiguous slice of each; one
process therefore sees exactly the concatenation of the ranks' batches, and a resumed epoch can
start at any batch without reading the earlier ones.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from skelfast.data.datasets import SkeletonLoader, _seed_of, _WorkerInit


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job (``world_size == 1`` outside torch.distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError as err:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from err


def init_distributed(device: str | torch.device) -> DistInfo:
    """Join the process group torchrun describes (``WORLD_SIZE > 1``), or stay single-process.

    The backend is NCCL for a CUDA ``device`` (each rank then uses ``cuda:LOCAL_RANK``) and gloo
    otherwise. A group someone else already initialised is used as it is.
    """
    device = torch.device(device)
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0), False)
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistInfo()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing:
        raise RuntimeError(f"WORLD_SIZE={world} but {missing} unset: launch with torchrun")
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world)
    return DistInfo(rank, world, local_rank, True)


def process_device(device: str | torch.device, info: DistInfo) -> torch.device:
    """``cuda`` becomes ``cuda:LOCAL_RANK`` under torch.distributed; other devices are kept."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", info.local_rank if info.distributed else torch.cuda.current_device())
    return device


def shutdown(info: DistInfo, clean: bool = True) -> None:
    """Leave the process group if ``init_distributed`` created it.

    On a clean exit every rank first meets at a barrier, so that no rank tears its gloo pairs down
    while another still uses them, and collects the objects that still hold the group (a DDP
    wrapper in a reference cycle), so that the group really dies here and not at interpreter
    finalisation, where gloo's worker threads releasing tensors abort the process (pytorch PR
    #179291 describes it). Rank 1 of a two-process CI run once aborted at exit ("terminate called
    without an active exception"). After an error there is no barrier: the other ranks may never
    reach it.
    """
    if not (info.initialized_here and dist.is_initialized()):
        return
    if clean:
        gc.collect()
        dist.barrier()
    dist.destroy_process_group()


def wrap_ddp(module: nn.Module, info: DistInfo, device: torch.device, find_unused: bool = False) -> nn.Module:
    """``DistributedDataParallel(module)`` under torch.distributed, ``module`` itself otherwise.

    Wrap after choosing what trains (``set_stage``): DDP registers its gradient hooks on the
    parameters that require grad when it is built.
    """
    if not info.distributed:
        return module
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused)


def all_reduce_mean(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The mean of ``t`` over ranks (``t`` itself in one process). A NaN on any rank reaches all."""
    if not info.distributed:
        return t
    t = t.clone()
    dist.all_reduce(t)
    return t / info.world_size


def all_gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` (``[obj]`` in one process)."""
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def epoch_order(num_samples: int, seed: int, epoch: int, shuffle: bool = True) -> torch.Tensor:
    """The sample order ``SkeletonLoader`` uses in ``epoch``: its DataLoader draws the workers' base
    seed from the order generator first, then ``RandomSampler`` draws ``randperm``."""
    if not shuffle:
        return torch.arange(num_samples)
    gen = torch.Generator().manual_seed(_seed_of(seed, epoch, 0x0DE5))
    torch.empty((), dtype=torch.int64).random_(generator=gen)
    return torch.randperm(num_samples, generator=gen)


class ShardedLoader(SkeletonLoader):
    """``SkeletonLoader`` over this rank's slice of each global batch, from any batch of the epoch.

    ``batch_size`` is the global batch; each of ``world_size`` ranks reads ``batch_size //
    world_size`` samples of it (rank r the r-th slice). ``set_epoch(e, start_batch=b)`` makes the
    next iteration start at global batch b of epoch e. ``augment`` works as in ``SkeletonLoader``
    (the generator of global batch b is the same on every rank).
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(dataset, batch_size, **kwargs)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        if batch_size % world_size:
            raise ValueError(f"the global batch size {batch_size} is not divisible by {world_size} ranks")
        last = len(dataset) % batch_size
        if world_size > 1 and not self.drop_last and last % world_size:
            raise ValueError(
                f"the last batch of {last} samples cannot be split over {world_size} ranks: "
                "set [train] drop_last = true or choose a batch size that divides the dataset"
            )
        self.rank, self.world_size, self.start_batch = rank, world_size, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        if start_batch < 0:
            raise ValueError(f"start_batch must be >= 0, got {start_batch}")
        self.epoch, self.start_batch = epoch, start_batch

    def rank_batches(self) -> list[list[int]]:
        """The dataset indices this rank reads in each remaining batch of the epoch."""
        order = epoch_order(len(self.dataset), self.seed, self.epoch, self.shuffle).tolist()
        out = []
        for b in range(self.start_batch, len(self)):
            batch = order[b * self.batch_size : (b + 1) * self.batch_size]
            share = len(batch) // self.world_size
            out.append(batch[self.rank * share : (self.rank + 1) * share])
        return out

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        batches = self.rank_batches()
        if not batches:
            return
        loader = DataLoader(
            self.dataset,
            batch_sampler=batches,
            # its own generator for the workers' base seed, so iterating never draws from (and shifts)
            # the global torch RNG that dropout uses: a resumed epoch replays the same masks
            generator=torch.Generator().manual_seed(_seed_of(self.seed, self.epoch, 0xBA5E)),
            num_workers=self.num_workers,
            worker_init_fn=_WorkerInit(self.seed, self.epoch),
            pin_memory=self.pin_memory,
        )
        for b, (x, lengths, labels, idx) in enumerate(loader, start=self.start_batch):
            x = x.to(self.device, non_blocking=True)
            lengths = lengths.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            if self.augment is not None:
                gen = torch.Generator().manual_seed(_seed_of(self.seed, self.epoch, b, 0xA06))
                x = self.augment(x, lengths, gen)
            yield x, lengths, labels, idx
