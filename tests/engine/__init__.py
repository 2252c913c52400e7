"""Shared pieces of the engine tests: a toy method that follows the method contract at a tiny
size, and tiny split folders on disk."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from skelfast.data import storage
from skelfast.methods.base import MethodConfig, PretrainMethod, StepOutput
from skelfast.methods.moco import momentum_copy, momentum_update
from skelfast.ops.info_nce import info_nce
from skelfast.queue import MemoryQueue

FRAMES, JOINTS, BODIES = 6, 25, 2


@dataclass
class ToyConfig(MethodConfig):
    hidden: int = 16
    dim: int = 8
    queue_size: int = 24
    temperature: float = 0.2
    momentum: float = 0.9
    noise: float = 0.05  # view noise drawn from the step's generator
    dropout: float = 0.2  # draws from the global torch RNG (what the checkpoint's RNG state restores)
    check_finite: bool = True  # info_nce's own NaN check (False: the engine's loss check sees the NaN)


class ToyMethod(PretrainMethod):
    """MoCo in miniature: an MLP query encoder, its EMA key copy, one MemoryQueue, skelfast's info_nce.

    ``fail_at_call`` raises inside the n-th forward (1-based), after the key update, as a crash would.
    """

    name = "toy"
    config_class = ToyConfig

    def __init__(self, config: ToyConfig | None = None, fail_at_call: int | None = None) -> None:
        config = config if config is not None else ToyConfig()
        super().__init__(config)
        c = config
        self.encoder_q = nn.Sequential(
            nn.Flatten(),
            nn.Linear(3 * FRAMES * JOINTS * BODIES, c.hidden),
            nn.ReLU(),
            nn.Dropout(c.dropout),
            nn.Linear(c.hidden, c.dim),
        )
        self.encoder_k = momentum_copy(self.encoder_q)
        self.queue = MemoryQueue([c.queue_size], c.dim)
        self.fail_at_call, self.calls = fail_at_call, 0

    def view(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        noise = torch.randn(x.shape, generator=generator).to(x.device)
        return x + self.config.noise * noise

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator) -> StepOutput:
        c = self.config
        self.calls += 1
        xq, xk = self.view(x, generator), self.view(x, generator)
        q = F.normalize(self.encoder_q(xq), dim=1)
        momentum_update(self.encoder_k, self.encoder_q, c.momentum)
        if self.calls == self.fail_at_call:
            raise RuntimeError("injected crash")
        with torch.no_grad():
            k = F.normalize(self.encoder_k(xk), dim=1)
        out = info_nce(
            q.float(), k.float(), self.queue.bank.clone(), c.temperature, check_finite=c.check_finite
        )
        loss = out.losses.sum()
        self.queue.enqueue(k)
        return StepOutput(loss, {"nce": loss.detach(), "positive_cos": (q * k).sum(1).mean().detach()})


def toy_config(**train: object) -> dict:
    """A config dict for the toy method: a small [train] table with ``train`` overrides."""
    base = {
        "epochs": 2,
        "batch_size": 4,
        "drop_last": True,
        "optimizer": "sgd",
        "lr": 0.1,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "schedule": "step",
        "milestones": [1],
        "gamma": 0.5,
        "seed": 3,
    }
    return {"method": "toy", "model": {}, "data": {}, "train": {**base, **train}}


def write_split(folder: Path, n: int = 14, nan_sample: int | None = None, seed: int = 0) -> Path:
    """A train split of ``n`` random (3, FRAMES, 25, 2) samples in ``folder`` (NaN in one if asked)."""
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((n, 3, FRAMES, JOINTS, BODIES)).astype(np.float32)
    if nan_sample is not None:
        data[nan_sample, 0, 2, 3, 0] = np.nan
    num_frame = np.full(n, FRAMES, dtype=np.int64)
    labels = np.arange(n) % 3
    names = [f"S{i:03d}" for i in range(n)]
    storage.save_split(folder, "train", data, num_frame, labels, names)
    return folder
