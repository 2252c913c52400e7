"""Fine-tuning: the whole network (encoder and a fresh linear head) trained with labels.

Runs on a deep copy of the encoder, so the caller's (pretrained) encoder is untouched and the
other protocols can still evaluate it; the fine-tuned network is ``ProtocolResult.model``.
The network is in train mode while training (HiCLR's ``FT_Processor``: dropout active) and in eval
mode on the test set. ``encoder_lr`` gives the encoder its own learning rate (CRRL: encoder 0.01,
classifier 0.1); warm-up, steps or cosine and nesterov come from ``TrainSettings``. The training
clips use the method's test transform unless ``augment`` asks for its training transform
(HiCLR's GCN fine-tuning uses no augmentation, its Transformer variant crop + shear).
"""

from __future__ import annotations

import copy
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
from skelfast.engine.evaluation.features import encode_batch, num_classes_of


@dataclass
class FinetuneSettings(TrainSettings):
    """Fine-tuning settings; the defaults are HiCLR's released GCN config (the only released
    fine-tuning recipe of the four): lr 0.1, nesterov, wd 1e-4, batch 64, 70 epochs, 5 warm-up
    epochs, x0.1 at 30 and 55, PyTorch-default head init."""

    epochs: int = 70
    lr: float = 0.1
    nesterov: bool = True
    weight_decay: float = 1e-4
    milestones: tuple[int, ...] = (30, 55)
    warmup_epochs: int = 5
    init_std: float | None = None
    encoder_lr: float | None = None
    augment: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.encoder_lr is not None and self.encoder_lr < 0:
            raise ValueError(f"encoder_lr must be >= 0, got {self.encoder_lr}")


class Classifier(nn.Module):
    """A feature encoder with a linear head: (x (N, 3, T, V, M), lengths (N,)) -> logits (N, C)."""

    def __init__(self, encoder: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.head(encode_batch(self.encoder, x, lengths))


@torch.no_grad()
def score(model: Classifier, test_set: Dataset, batch_size: int, device: torch.device) -> float:
    """Top-1 (%) of ``model`` in eval mode on ``test_set`` with the test transform."""
    model.eval()
    loader = SkeletonLoader(
        test_set, batch_size, shuffle=False, augment=model.encoder.transform(False), device=device
    )
    logits, labels = [], []
    for x, lengths, y, _ in loader:
        logits.append(model(x, lengths).cpu())
        labels.append(y.cpu())
    return top1_percent(torch.cat(logits), torch.cat(labels))


def finetune(
    encoder: nn.Module,
    train_set: Dataset,
    test_set: Dataset,
    settings: FinetuneSettings | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    protocol: str = "finetune",
) -> ProtocolResult:
    """Fine-tune a copy of ``encoder`` (a ``FeatureEncoder``) with a new head on ``train_set``;
    score ``test_set`` every ``eval_every`` epochs. ``encoder`` itself is not modified."""
    settings = settings or FinetuneSettings()
    device = torch.device(device)
    num_classes = num_classes_of(train_set, test_set)
    encoder_copy = copy.deepcopy(encoder)
    for p in encoder_copy.parameters():  # a checkpoint's encoder may arrive frozen
        p.requires_grad_(True)
    head = make_classifier(encoder_copy.feature_dim, num_classes, settings.init_std, settings.seed)
    model = Classifier(encoder_copy, head).to(device)
    encoder_lr = settings.lr if settings.encoder_lr is None else settings.encoder_lr
    groups = [
        {"params": list(encoder_copy.parameters()), "base_lr": encoder_lr},
        {"params": list(head.parameters()), "base_lr": settings.lr},
    ]
    optimizer = torch.optim.SGD(
        [{**g, "lr": g["base_lr"]} for g in groups],
        lr=settings.lr,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
        nesterov=settings.nesterov,
    )
    loader = SkeletonLoader(
        train_set,
        settings.batch_size,
        shuffle=True,
        seed=settings.seed,
        num_workers=settings.num_workers,
        drop_last=settings.drop_last,
        augment=encoder_copy.transform(settings.augment),
        device=device,
    )
    history = []
    for epoch in range(settings.epochs):
        for group in optimizer.param_groups:
            group["lr"] = lr_at_epoch(group["base_lr"], epoch, settings)
        loader.set_epoch(epoch)
        model.train()
        total_loss, seen = 0.0, 0
        for x, lengths, y, _ in loader:
            loss = F.cross_entropy(model(x, lengths), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * y.shape[0]
            seen += y.shape[0]
        if should_evaluate(epoch, settings):
            lr = optimizer.param_groups[1]["lr"]
            acc = score(model, test_set, settings.feature_batch_size, device)
            history.append(
                {"epoch": epoch + 1, "accuracy": acc, "lr": lr, "train_loss": total_loss / max(seen, 1)}
            )
            if progress:
                print(
                    f"{protocol} epoch {epoch + 1}/{settings.epochs}: lr {lr:.4g} "
                    f"loss {history[-1]['train_loss']:.4f} test top-1 {acc:.2f}%",
                    flush=True,
                )
    result = summarise_history(protocol, history, settings.official_reports, model=model)
    result.metrics["num_classes"] = num_classes
    return result
