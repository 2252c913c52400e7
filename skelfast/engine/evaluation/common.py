"""Pieces every trained protocol shares: settings parsing, the per-epoch learning rate, the
classifier head, the result record and the "which epoch counts" bookkeeping.

Conventions of every protocol: epochs are counted from 1 in histories and ``best_epoch`` (epoch
``e`` means "after e epochs of training"); accuracies are top-1 in percent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

import torch
from torch import nn

S = TypeVar("S")

# other spellings the shipped config files use for the same settings
ALIASES = {"fc_init_std": "init_std", "eval_interval": "eval_every", "reports": "official_reports"}


def settings_from_dict(cls: type[S], values: Mapping[str, Any] | None, what: str) -> S:
    """Build the settings dataclass ``cls`` from a config table (``ALIASES`` accepted); unknown keys
    are an error that names the known ones (a typo in ``--set eval.linear.lrr=...`` must not pass
    silently)."""
    values = dict(values or {})
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    for alias, name in ALIASES.items():
        if alias in values and name in known:
            if name in values:
                raise ValueError(
                    f"[eval.{what}]: both {alias!r} and {name!r} given; they are the same setting"
                )
            values[name] = values.pop(alias)
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"[eval.{what}]: unknown setting(s) {unknown}; known: {sorted(known)}")
    for name, v in values.items():
        if isinstance(v, list):
            values[name] = tuple(v)
    return cls(**values)


def settings_to_dict(settings: object) -> dict[str, Any]:
    """A settings dataclass as a JSON-ready dict (tuples become lists)."""
    out = {}
    for f in fields(settings):  # type: ignore[arg-type]
        v = getattr(settings, f.name)
        out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


@dataclass
class TrainSettings:
    """The optimisation shared by linear evaluation and fine-tuning (SGD, per-epoch schedule).

    ``milestones`` are 0-based epochs from which the lr is multiplied by ``gamma`` (the
    AimCLR-family ``lr * gamma ** sum(epoch >= milestones)``); ``warmup_epochs`` > 0 ramps the lr
    linearly, ``lr * (epoch + 1) / warmup_epochs`` for 0-based epochs below it; ``schedule="cosine"``
    replaces the steps by a half cosine over the epochs after the warm-up. The test set is scored
    every ``eval_every`` epochs and after the last one. ``init_std`` is the std of the fresh
    classifier's normal init (bias 0); ``None`` keeps PyTorch's default init.
    """

    epochs: int = 80
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    nesterov: bool = False
    schedule: str = "step"
    milestones: tuple[int, ...] = (50, 70)
    gamma: float = 0.1
    warmup_epochs: int = 0
    init_std: float | None = 0.01
    eval_every: int = 1
    drop_last: bool = False
    seed: int = 0
    num_workers: int = 0
    feature_batch_size: int = 256
    official_reports: str = "best"

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.eval_every < 1:
            raise ValueError(
                f"epochs, batch_size and eval_every must be >= 1, got {self.epochs}, "
                f"{self.batch_size}, {self.eval_every}"
            )
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.optimizer != "sgd":
            raise ValueError(
                f"optimizer: only 'sgd' (what every official evaluation uses), got {self.optimizer!r}"
            )
        if self.schedule not in ("step", "cosine"):
            raise ValueError(f"schedule must be 'step' or 'cosine', got {self.schedule!r}")
        if self.official_reports not in ("best", "last"):
            raise ValueError(f"official_reports must be 'best' or 'last', got {self.official_reports!r}")
        self.milestones = tuple(int(m) for m in self.milestones)


def lr_at_epoch(base_lr: float, epoch: int, settings: TrainSettings) -> float:
    """The learning rate of 0-based ``epoch`` (see ``TrainSettings``)."""
    warmup = settings.warmup_epochs
    if warmup > 0 and epoch < warmup:
        return base_lr * (epoch + 1) / warmup
    if settings.schedule == "cosine":
        span = max(settings.epochs - warmup, 1)
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup) / span))
    return base_lr * settings.gamma ** sum(epoch >= m for m in settings.milestones)


def should_evaluate(epoch: int, settings: TrainSettings) -> bool:
    """Score the test set after 0-based ``epoch``? Every ``eval_every`` epochs and after the last."""
    return (epoch + 1) % settings.eval_every == 0 or epoch + 1 == settings.epochs


def make_classifier(feature_dim: int, num_classes: int, init_std: float | None, seed: int) -> nn.Linear:
    """A fresh ``Linear(feature_dim, num_classes)``: weight ~ N(0, init_std) from a generator seeded
    by ``seed`` and bias 0 (the official linear heads), or PyTorch's default init when
    ``init_std`` is None (HiCLR's fine-tuning fc)."""
    if feature_dim < 1 or num_classes < 2:
        raise ValueError(
            f"a classifier needs feature_dim >= 1 and >= 2 classes, got {feature_dim}, {num_classes}"
        )
    gen = torch.Generator().manual_seed(seed)
    fc = nn.Linear(feature_dim, num_classes)
    with torch.no_grad():
        if init_std is None:
            bound = 1.0 / math.sqrt(feature_dim)  # nn.Linear's default, but from our generator
            fc.weight.uniform_(-bound, bound, generator=gen)
            fc.bias.uniform_(-bound, bound, generator=gen)
        else:
            fc.weight.normal_(0.0, init_std, generator=gen)
            fc.bias.zero_()
    return fc


@dataclass
class ProtocolResult:
    """What a protocol measured. ``history`` rows have at least ``epoch`` and ``accuracy`` (%).
    ``metrics`` holds protocol-specific numbers (kNN per k, retrieval mAP). ``model`` is the trained
    classifier (fine-tuning: a copy of the encoder with its head), never serialised."""

    protocol: str
    accuracy_last: float
    accuracy_best: float
    best_epoch: int | None
    official_reports: str
    history: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    model: nn.Module | None = field(default=None, repr=False)

    @property
    def accuracy_official(self) -> float:
        """The number the official code prints: best or last, per ``official_reports``."""
        return self.accuracy_best if self.official_reports == "best" else self.accuracy_last


def summarise_history(
    protocol: str, history: list[dict[str, Any]], official_reports: str, **kwargs: Any
) -> ProtocolResult:
    """A ``ProtocolResult`` from the evaluated epochs; the best epoch is the first one reaching the
    highest accuracy (what ``if acc > best`` in the official loops keeps)."""
    if not history:
        raise ValueError(f"{protocol}: no epoch was evaluated")
    best = max(history, key=lambda row: (row["accuracy"], -row["epoch"]))
    return ProtocolResult(
        protocol=protocol,
        accuracy_last=float(history[-1]["accuracy"]),
        accuracy_best=float(best["accuracy"]),
        best_epoch=int(best["epoch"]),
        official_reports=official_reports,
        history=history,
        **kwargs,
    )


def top1_percent(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in % of logits (N, C) against labels (N,)."""
    if logits.shape[0] != labels.shape[0]:
        raise ValueError(f"{logits.shape[0]} predictions but {labels.shape[0]} labels")
    if logits.shape[0] == 0:
        raise ValueError("cannot score an empty test set")
    return 100.0 * (logits.argmax(dim=1) == labels.to(logits.device)).double().mean().item()
