"""The contract between a pretraining method and the engine.

A method is an ``nn.Module`` that owns its encoders, queues and augmentation recipes. One call
``method(x, lengths, generator)`` is one training step's forward in the order the official code
runs it: draw the views, momentum-update the key encoders, encode, compute the loss, enqueue the
keys. The engine only calls ``backward()`` on ``StepOutput.loss`` and steps the optimizer.

Downstream protocols see a method through ``method.feature_encoder()``: the query encoder (or the
method's final encoder) wrapped so it reads the raw (N, 3, T, V, M) batch and returns features.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from skelfast.augment.recipes import RecipeAugment


class StepOutput(NamedTuple):
    """What one training step returns: the scalar to minimise and its detached parts for logging."""

    loss: torch.Tensor
    terms: dict[str, torch.Tensor]


class FeatureEncoder(nn.Module):
    """A frozen-able encoder for the evaluation protocols.

    ``forward(x (N, 3, T, V, M), lengths (N,)) -> (N, feature_dim)`` formats the batch the way the
    encoder reads it (HiCo's two domains, ISC's 150-d frames, CRRL's packed sequences) and returns
    the representation the official evaluation uses (before the projection head).
    ``test_recipe`` and ``train_recipe`` are the deterministic test-time and linear-eval training
    transforms of the method's official evaluation (recipes of ``skelfast.augment``).
    """

    def __init__(
        self,
        module: nn.Module,
        feature_dim: int,
        test_recipe: object,
        train_recipe: object | None = None,
    ) -> None:
        super().__init__()
        self.module = module
        self.feature_dim = int(feature_dim)
        self.test_recipe = test_recipe
        self.train_recipe = train_recipe if train_recipe is not None else test_recipe

    def features(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(N, 3, T, V, M) already transformed -> (N, feature_dim). Subclasses override."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.features(x, lengths)

    def transform(self, train: bool) -> RecipeAugment:
        """The batch transform (for ``SkeletonLoader(augment=...)``) of the eval protocols."""
        return RecipeAugment(self.train_recipe if train else self.test_recipe)


@dataclass
class MethodConfig:
    """Base of each method's configuration; the defaults are the official recipe."""

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None = None) -> MethodConfig:
        """Build from a mapping (a config file's ``[method]`` table); unknown keys are an error."""
        values = dict(values or {})
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown option(s) {unknown}; known: {sorted(known)}")
        for name, v in values.items():
            if isinstance(v, list):
                values[name] = tuple(v)
        return cls(**values)


class PretrainMethod(nn.Module):
    """Base class of the four methods (see the module docstring for the call contract)."""

    name: ClassVar[str] = ""
    config_class: ClassVar[type[MethodConfig]] = MethodConfig

    def __init__(self, config: MethodConfig) -> None:
        super().__init__()
        self.config = config
        self.epoch = 0

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator) -> StepOutput:
        """One training step's forward on a batch x (N, 3, T, V, M) with valid lengths (N,);
        ``generator`` (CPU) drives every random draw of the views."""
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        """Called by the engine before each epoch (0-based); methods with epoch-dependent
        behaviour (HiCLR's mining) switch here."""
        self.epoch = int(epoch)

    def stages(self) -> list[str]:
        """Training stages run one after the other, each with a fresh optimizer (CRRL has two)."""
        return ["pretrain"]

    def set_stage(self, stage: str) -> None:
        """Enter a stage of ``stages()``: freeze or unfreeze what that stage trains."""
        if stage not in self.stages():
            raise ValueError(f"{self.name}: unknown stage {stage!r}; stages are {self.stages()}")

    def feature_encoder(self) -> FeatureEncoder:
        """The encoder the downstream protocols evaluate, sharing this method's weights."""
        raise NotImplementedError
