"""Features of a dataset through a frozen ``FeatureEncoder``, and the datasets the protocols build
on top of them (cached features, class subsets).

The encoder reads each batch after its evaluation transform (``encoder.transform(train)``, a
batch transform for ``SkeletonLoader``). The lengths it receives are the dataset's valid lengths
clamped to the transformed clip's frame count: the right valid lengths for transforms that keep
frames one to one (CRRL's), and ignored by the encoders of fixed-length recipes (HiCo/ISC's
64-frame crops, HiCLR's 50 frames).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from skelfast.data.datasets import SkeletonLoader
from skelfast.progress import Progress


def dataset_labels(dataset: Dataset) -> np.ndarray:
    """The int64 labels (N,) of a ``SkeletonDataset``, a ``LabelledSubset``, a ``FeatureDataset``
    or a ``torch.utils.data.Subset`` of one of them."""
    labels = getattr(dataset, "labels", None)
    if labels is not None:
        return np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels, dtype=np.int64)
    inner, indices = getattr(dataset, "dataset", None), getattr(dataset, "indices", None)
    if inner is not None and indices is not None:
        return dataset_labels(inner)[np.asarray(indices, dtype=np.int64)]
    raise TypeError(f"{type(dataset).__name__} has no `labels`: the protocols need labelled datasets")


def num_classes_of(*datasets: Dataset) -> int:
    """Number of classes = 1 + the largest label over the datasets."""
    top = max(int(dataset_labels(d).max()) for d in datasets if len(d))
    return top + 1


class LabelledSubset(Dataset):
    """Samples ``indices`` of ``dataset`` (in that order), with their ``labels``. With
    ``length`` > len(indices) it cycles: item i is ``indices[i % len(indices)]`` (HiCLR's
    ``Feeder_semieval``, whose epoch is as long as the full dataset)."""

    def __init__(self, dataset: Dataset, indices: np.ndarray, length: int | None = None) -> None:
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)
        if len(self.indices) == 0:
            raise ValueError("a subset needs at least one index")
        if self.indices.min() < 0 or self.indices.max() >= len(dataset):
            raise IndexError(
                f"subset indices must be in [0, {len(dataset)}), got {self.indices.min()}..{self.indices.max()}"
            )
        self.length = len(self.indices) if length is None else int(length)
        self.labels = dataset_labels(dataset)[self.indices]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> object:
        return self.dataset[int(self.indices[i % len(self.indices)])]

    def one_pass(self) -> LabelledSubset:
        """The same subset without cycling (each index once)."""
        return LabelledSubset(self.dataset, self.indices)


class FeatureDataset(Dataset):
    """Cached features as ``SkeletonDataset``-shaped items ``(feature (F,), 0, label, index)``, so
    ``SkeletonLoader`` batches them in exactly the order it batches the skeletons they came from.
    With ``length`` > N it cycles like ``LabelledSubset`` (item i is feature i % N)."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, length: int | None = None) -> None:
        if features.shape[0] != labels.shape[0]:
            raise ValueError(f"{features.shape[0]} features but {labels.shape[0]} labels")
        self.features, self.labels = features.cpu(), labels.cpu()
        self.length = features.shape[0] if length is None else int(length)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        i = i % self.features.shape[0]
        return self.features[i], torch.tensor(0), self.labels[i], torch.tensor(i)


def encode_batch(encoder: nn.Module, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Transformed batch x (B, 3, T, V, M), dataset lengths (B,) -> features (B, F) (see module doc)."""
    feats = encoder(x, lengths.clamp(max=x.shape[2]))
    if feats.ndim != 2 or feats.shape[0] != x.shape[0]:
        raise ValueError(
            f"{type(encoder).__name__} returned {tuple(feats.shape)}, expected ({x.shape[0]}, F)"
        )
    return feats


def transform_is_deterministic(
    encoder: nn.Module, dataset: Dataset, train: bool, device: str | torch.device = "cpu", probe: int = 4
) -> bool:
    """Does ``encoder.transform(train)`` give the same clips for two different random streams?
    Checked on the first ``probe`` samples (a random recipe draws continuous parameters, so two
    seeds agreeing by chance does not happen)."""
    transform = encoder.transform(train)
    batch = [dataset[i] for i in range(min(probe, len(dataset)))]
    if not batch:
        return True
    x = torch.stack([b[0] for b in batch]).to(device)
    lengths = torch.stack([torch.as_tensor(b[1]) for b in batch]).to(device)
    first = transform(x.clone(), lengths, torch.Generator().manual_seed(1))
    second = transform(x.clone(), lengths, torch.Generator().manual_seed(2))
    return first.shape == second.shape and torch.equal(first, second)


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    dataset: Dataset,
    *,
    train_transform: bool = False,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    seed: int = 0,
    num_workers: int = 0,
    progress: bool = True,
    desc: str = "features",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (N, F) float32 and labels (N,) int64 of every sample, in dataset order, on the CPU.

    The encoder runs in eval mode (its mode is restored afterwards) on ``device``, with the test
    transform (or the linear-eval train transform with ``train_transform``).
    """
    was_training = encoder.training
    encoder.eval()
    loader = SkeletonLoader(
        dataset,
        batch_size,
        shuffle=False,
        seed=seed,
        num_workers=num_workers,
        augment=encoder.transform(train_transform),
        device=device,
    )
    feats, labels = [], []
    try:
        with Progress(len(dataset), desc, unit="samples", enabled=progress) as bar:
            for x, lengths, y, _ in loader:
                feats.append(encode_batch(encoder, x, lengths).float().cpu())
                labels.append(y.cpu())
                bar.update(x.shape[0])
    finally:
        encoder.train(was_training)
    if not feats:
        raise ValueError(f"{desc}: the dataset is empty")
    return torch.cat(feats), torch.cat(labels).long()


def batched_logits(
    head: Callable[[torch.Tensor], torch.Tensor],
    features: torch.Tensor,
    batch_size: int,
    device: torch.device,
) -> torch.Tensor:
    """``head`` over cached features (N, F) in batches on ``device`` -> logits (N, C) on the CPU."""
    out = [
        head(features[i : i + batch_size].to(device)).cpu() for i in range(0, features.shape[0], batch_size)
    ]
    return torch.cat(out)
