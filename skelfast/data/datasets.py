"""Datasets and loaders over memory-mapped split arrays (``skelfast.data.storage`` layout).

``SkeletonDataset`` opens ``{part}_data_joint.npy`` with ``np.load(mmap_mode='r')``: nothing is read
until a sample is indexed. ``SkeletonLoader`` wraps a ``torch.utils.data.DataLoader`` and makes every
epoch reproducible: the shuffle order comes from ``(seed, epoch)``, each worker's numpy/torch/random
state from ``(seed, epoch, worker id)``, and the optional batch augmentation receives a
``torch.Generator`` seeded from ``(seed, epoch, batch index)`` on the batch's device. The augmentation
is any callable ``(x (B, 3, T, V, M), lengths (B,), generator) -> x`` (e.g. a recipe around
``skelfast.ops.augment``); it runs once per batch, on the device, after the transfer.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from skelfast.data import storage

BatchAugment = Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


class SkeletonDataset(Dataset):
    """Samples ``(x float32 (3, T, V, M), length int64, label int64, index int64)`` of one split part."""

    def __init__(
        self,
        data_path: str | Path,
        label_path: str | Path,
        num_frame_path: str | Path | None = None,
        mmap: bool = True,
    ) -> None:
        self.data_path = Path(data_path)
        if not self.data_path.exists():
            raise FileNotFoundError(f"skeleton data not found: {self.data_path}")
        self.data = np.load(self.data_path, mmap_mode="r" if mmap else None, allow_pickle=False)
        if self.data.ndim != 5 or self.data.shape[1] != 3:
            raise ValueError(f"{self.data_path}: expected (N, 3, T, V, M) data, got shape {self.data.shape}")
        self.sample_names, self.labels = storage.load_labels(label_path)
        n, _, t, _, _ = self.data.shape
        if len(self.labels) != n:
            raise ValueError(
                f"{self.data_path} has {n} samples but {label_path} has {len(self.labels)} labels"
            )
        if num_frame_path is not None and Path(num_frame_path).exists():
            self.num_frame = np.minimum(np.load(num_frame_path).astype(np.int64).reshape(-1), t)
            if len(self.num_frame) != n:
                raise ValueError(f"{num_frame_path} has {len(self.num_frame)} entries, expected {n}")
        else:  # AimCLR-style folders have no frame counts: every frame counts
            self.num_frame = np.full(n, t, dtype=np.int64)

    @classmethod
    def from_split(cls, root: str | Path, part: str = "train", mmap: bool = True) -> SkeletonDataset:
        """Open ``root/{part}_data_joint.npy`` with its ``num_frame`` and label files (``.json`` or ``.pkl``)."""
        label = storage.label_path(root, part)
        if not label.exists() and (Path(root) / f"{part}_label.pkl").exists():
            label = Path(root) / f"{part}_label.pkl"
        return cls(storage.data_path(root, part), label, storage.num_frame_path(root, part), mmap=mmap)

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1 if len(self.labels) else 0

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(np.array(self.data[index], dtype=np.float32))  # copies one sample off the map
        return x, torch.tensor(self.num_frame[index]), torch.tensor(self.labels[index]), torch.tensor(index)


def _seed_of(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1, dtype=np.uint64)[0] % (2**63))


class _WorkerInit:
    def __init__(self, seed: int, epoch: int) -> None:
        self.seed, self.epoch = seed, epoch

    def __call__(self, worker_id: int) -> None:
        s = _seed_of(self.seed, self.epoch, worker_id, 0x3077)
        np.random.seed(s % (2**32))
        random.seed(s)
        torch.manual_seed(s)


class SkeletonLoader:
    """Batches ``(x (B, 3, T, V, M), lengths (B,), labels (B,), indices (B,))`` on ``device``.

    Call ``set_epoch(e)`` before each epoch (the order and all random draws depend on ``(seed, e)``).
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        num_workers: int = 0,
        drop_last: bool = False,
        augment: BatchAugment | None = None,
        device: str | torch.device = "cpu",
        pin_memory: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.dataset, self.batch_size, self.shuffle, self.seed = dataset, batch_size, shuffle, seed
        self.num_workers, self.drop_last, self.augment = num_workers, drop_last, augment
        self.device, self.pin_memory = torch.device(device), pin_memory
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        order_gen = torch.Generator().manual_seed(_seed_of(self.seed, self.epoch, 0x0DE5))
        loader = DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            shuffle=self.shuffle,
            generator=order_gen,
            num_workers=self.num_workers,
            drop_last=self.drop_last,
            worker_init_fn=_WorkerInit(self.seed, self.epoch),
            pin_memory=self.pin_memory,
        )
        for b, (x, lengths, labels, idx) in enumerate(loader):
            x = x.to(self.device, non_blocking=True)
            lengths = lengths.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            if self.augment is not None:
                # a CPU generator: recipes draw a batch's few hundred parameters on the CPU
                gen = torch.Generator().manual_seed(_seed_of(self.seed, self.epoch, b, 0xA06))
                x = self.augment(x, lengths, gen)
            yield x, lengths, labels, idx
