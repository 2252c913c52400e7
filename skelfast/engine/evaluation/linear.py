"""Linear evaluation: a fresh linear classifier on the frozen encoder.

As in all four official codes the encoder stays in eval mode during training too (BatchNorm uses
its running statistics, dropout is off) and only the classifier is optimised: weight ~ N(0,
``init_std``), bias 0, SGD on the per-epoch schedule of ``TrainSettings``. The test set is scored
every ``eval_every`` epochs; the official codes report the best of those scores.

Feature caching: the encoder is frozen and in eval mode, so when the training transform is
deterministic (HiCo's and HiCLR's centre crop / no augmentation, CRRL's full clip; *not* ISC's
random crop [0.5, 1]) every epoch would feed the classifier the same features. With
``cache_features="auto"`` they are then extracted once and the classifier trains on them, in
the same batches and order as without the cache (the same ``SkeletonLoader`` shuffle); the
results agree up to floating-point batching differences. ``True`` forces the cache (a random
transform is then drawn once, not per epoch), ``False`` never caches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from skelfast.data.datasets import SkeletonLoader
from skelfast.engine.evaluation.common import (
    ProtocolResult,
    TrainSettings,
    lr_at_epoch,
    make_classifier,
    should_evaluate,
    summarise_history,
    top1_percent,
)
from skelfast.engine.evaluation.features import (
    FeatureDataset,
    LabelledSubset,
    batched_logits,
    encode_batch,
    extract_features,
    num_classes_of,
    transform_is_deterministic,
)


@dataclass
class LinearSettings(TrainSettings):
    """Linear-evaluation settings; the defaults are ISC's script (lr 0.1, batch 64, 80 epochs,
    x0.1 at 50 and 70, N(0, 0.01) head). Each method's config file gives its own (``[eval.linear]``)."""

    cache_features: bool | str = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cache_features not in (True, False, "auto"):
            raise ValueError(f"cache_features must be true, false or 'auto', got {self.cache_features!r}")


def _test_logits(
    encoder: nn.Module,
    head: nn.Linear,
    test_set: Dataset,
    test_cache: tuple[torch.Tensor, torch.Tensor] | None,
    settings: LinearSettings,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    if test_cache is not None:
        feats, labels = test_cache
        return batched_logits(head, feats, settings.feature_batch_size, device), labels
    loader = SkeletonLoader(
        test_set, settings.feature_batch_size, shuffle=False, augment=encoder.transform(False), device=device
    )
    logits, labels = [], []
    for x, lengths, y, _ in loader:
        logits.append(head(encode_batch(encoder, x, lengths)).cpu())
        labels.append(y.cpu())
    return torch.cat(logits), torch.cat(labels)


def linear_eval(
    encoder: nn.Module,
    train_set: Dataset,
    test_set: Dataset,
    settings: LinearSettings | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    protocol: str = "linear",
) -> ProtocolResult:
    """Train ``Linear(encoder.feature_dim, classes)`` on the frozen ``encoder`` (a ``FeatureEncoder``)
    over ``train_set`` and score ``test_set``; returns the per-evaluation history and best/last top-1.
    The encoder's weights are never changed; its train/eval mode is restored on return."""
    settings = settings or LinearSettings()
    device = torch.device(device)
    num_classes = num_classes_of(train_set, test_set)
    was_training = encoder.training
    encoder.to(device).eval()
    head = make_classifier(encoder.feature_dim, num_classes, settings.init_std, settings.seed).to(device)
    optimizer = torch.optim.SGD(
        head.parameters(),
        lr=settings.lr,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
        nesterov=settings.nesterov,
    )
    cache = settings.cache_features
    cache_train = cache is True or (
        cache == "auto" and transform_is_deterministic(encoder, train_set, True, device)
    )
    cache_test = cache is True or (
        cache == "auto" and transform_is_deterministic(encoder, test_set, False, device)
    )
    extract = dict(
        batch_size=settings.feature_batch_size,
        device=device,
        num_workers=settings.num_workers,
        progress=progress,
    )
    test_cache = extract_features(encoder, test_set, desc="test features", **extract) if cache_test else None
    if cache_train:
        # a cycling subset (HiCLR's semi-supervised epochs) is encoded once per distinct sample
        distinct = train_set.one_pass() if isinstance(train_set, LabelledSubset) else train_set
        feats, labels = extract_features(
            encoder, distinct, train_transform=True, desc="train features", **extract
        )
        train_data, augment = FeatureDataset(feats, labels, length=len(train_set)), None
    else:
        train_data, augment = train_set, encoder.transform(True)
    loader = SkeletonLoader(
        train_data,
        settings.batch_size,
        shuffle=True,
        seed=settings.seed,
        num_workers=0 if cache_train else settings.num_workers,
        drop_last=settings.drop_last,
        augment=augment,
        device=device,
    )
    history = []
    try:
        for epoch in range(settings.epochs):
            lr = lr_at_epoch(settings.lr, epoch, settings)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loader.set_epoch(epoch)
            total_loss, seen = 0.0, 0
            for x, lengths, y, _ in loader:
                with torch.no_grad():  # the encoder is frozen: no graph through it
                    feats = x if cache_train else encode_batch(encoder, x, lengths)
                loss = F.cross_entropy(head(feats), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total_loss += loss.item() * y.shape[0]
                seen += y.shape[0]
            if should_evaluate(epoch, settings):
                with torch.no_grad():
                    logits, test_labels = _test_logits(encoder, head, test_set, test_cache, settings, device)
                row = {"epoch": epoch + 1, "accuracy": top1_percent(logits, test_labels), "lr": lr}
                row["train_loss"] = total_loss / max(seen, 1)
                history.append(row)
                if progress:
                    print(
                        f"{protocol} epoch {epoch + 1}/{settings.epochs}: lr {lr:.4g} "
                        f"loss {row['train_loss']:.4f} test top-1 {row['accuracy']:.2f}%",
                        flush=True,
                    )
    finally:
        encoder.train(was_training)
    result = summarise_history(protocol, history, settings.official_reports, model=head)
    result.metrics.update(
        {"features_cached": {"train": cache_train, "test": cache_test}, "num_classes": num_classes}
    )
    return result
