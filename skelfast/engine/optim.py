"""The optimizer and the learning-rate schedule of a config's ``[train]`` table.

The official code of all four methods sets the learning rate once per epoch, at the epoch's start
(MoCo's ``adjust_learning_rate``): ``LRSchedule.lr_at(epoch)`` is that value for a 0-based epoch,
and the engine writes it into the optimizer before the epoch's first step.

* ``schedule = "step"``: ``lr`` times ``gamma`` once per milestone ``m <= epoch`` (milestones are 0-based
  epochs from which the factor applies: HiCo's ``--schedule 351`` is ``[351]``, CRRL's
  ``epoch > 18`` is ``[19]``);
* ``schedule = "cosine"``: MoCo's ``lr * 0.5 * (1 + cos(pi * epoch / epochs))``;
* ``schedule = "constant"``: ``lr``;
* ``warmup_epochs = W > 0``: ``lr * (epoch + 1) / W`` for ``epoch < W`` (the HiCLR/ST-GCN
  processors' linear warm-up), then the schedule above.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("step", "cosine", "constant")


@dataclass(frozen=True)
class LRSchedule:
    """Per-epoch learning rate (see the module docstring)."""

    lr: float
    schedule: str = "step"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    epochs: int = 1
    warmup_epochs: int = 0

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown lr schedule {self.schedule!r}; choose one of {SCHEDULES}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if any(m < 0 for m in self.milestones) or list(self.milestones) != sorted(self.milestones):
            raise ValueError(
                f"milestones must be increasing non-negative epochs, got {list(self.milestones)}"
            )

    @classmethod
    def from_config(cls, train: Mapping[str, Any]) -> LRSchedule:
        """From a ``[train]`` table (``lr``, ``schedule``, ``milestones``, ``gamma``, ``epochs``, ``warmup_epochs``)."""
        return cls(
            lr=float(train["lr"]),
            schedule=str(train.get("schedule", "step")),
            milestones=tuple(int(m) for m in train.get("milestones", ())),
            gamma=float(train.get("gamma", 0.1)),
            epochs=int(train.get("epochs", 1)),
            warmup_epochs=int(train.get("warmup_epochs", 0)),
        )

    def lr_at(self, epoch: int) -> float:
        """The learning rate of 0-based ``epoch``."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        if epoch < self.warmup_epochs:
            return self.lr * (epoch + 1) / self.warmup_epochs
        if self.schedule == "step":
            lr = self.lr
            for m in self.milestones:  # one multiplication per passed milestone, as MoCo's loop
                if epoch >= m:
                    lr *= self.gamma
            return lr
        if self.schedule == "cosine":
            return self.lr * 0.5 * (1.0 + math.cos(math.pi * epoch / self.epochs))
        return self.lr

    def state_dict(self) -> dict[str, Any]:
        """The schedule's settings (it has no other state: the lr is a function of the epoch)."""
        return {
            "lr": self.lr,
            "schedule": self.schedule,
            "milestones": list(self.milestones),
            "gamma": self.gamma,
            "epochs": self.epochs,
            "warmup_epochs": self.warmup_epochs,
        }

    def check_state_dict(self, state: Mapping[str, Any]) -> None:
        """Raise if a checkpoint's schedule differs from this one (a resumed run must not switch)."""
        mine = self.state_dict()
        diff = {k: (state.get(k), v) for k, v in mine.items() if state.get(k) != v}
        if diff:
            raise ValueError(f"the checkpoint's lr schedule differs from the config's: {diff} (saved, now)")


def build_optimizer(params: Iterable[torch.nn.Parameter], train: Mapping[str, Any]) -> torch.optim.Optimizer:
    """``[train] optimizer`` over ``params``: ``"sgd"`` (``lr``, ``momentum``, ``weight_decay``,
    ``nesterov``) or ``"adam"`` (``lr``, ``betas``, ``eps``, ``weight_decay``)."""
    params = list(params)
    if not params:
        raise ValueError("no trainable parameters (every parameter has requires_grad=False)")
    name = str(train.get("optimizer", "sgd")).lower()
    lr = float(train["lr"])
    weight_decay = float(train.get("weight_decay", 0.0))
    if name == "sgd":
        momentum = float(train.get("momentum", 0.0))
        nesterov = bool(train.get("nesterov", False))
        if nesterov and momentum <= 0:
            raise ValueError("nesterov = true needs momentum > 0")
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    if name == "adam":
        betas = tuple(float(b) for b in train.get("betas", (0.9, 0.999)))
        if len(betas) != 2:
            raise ValueError(f"betas must be two numbers, got {list(betas)}")
        eps = float(train.get("eps", 1e-8))
        return torch.optim.Adam(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {OPTIMIZERS}")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Write ``lr`` into every parameter group (the official per-epoch ``adjust_learning_rate``)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
