"""Semi-supervised evaluation: fine-tune (or linear-evaluate) on a class-balanced labelled subset.

The subset follows HiCLR's (deleted) ``Feeder_semieval``: ``max(1, round(p * n_c))`` samples of
each class c, where n_c is the class's training count and p the label fraction (Python's
``round``: halves go to the even neighbour). They are drawn without replacement from a
``numpy.random.default_rng(seed)``, so the same seed gives the same subset; the chosen indices
are saved next to the report.

Quirk (HiCLR, default on): ``Feeder_semieval.__len__`` returns the *full* dataset size and wraps
indices modulo the subset, so one "epoch" is as many iterations as a full-data epoch (each
labelled clip is seen about 1/p times per epoch). ``full_epoch_iterations = false`` makes an
epoch one pass over the subset.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from skelfast.engine.evaluation.common import ProtocolResult, settings_from_dict, settings_to_dict
from skelfast.engine.evaluation.features import LabelledSubset, dataset_labels
from skelfast.engine.evaluation.finetune import FinetuneSettings, finetune
from skelfast.engine.evaluation.linear import LinearSettings, linear_eval


def balanced_subset(labels: np.ndarray, percent: float, seed: int = 0) -> np.ndarray:
    """Sorted int64 indices of a class-balanced subset: ``max(1, round(percent / 100 * n_c))``
    indices of each class c present in ``labels`` (N,), drawn without replacement with ``seed``."""
    if not 0 < percent <= 100:
        raise ValueError(f"percent must be in (0, 100], got {percent}")
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if labels.size == 0:
        raise ValueError("cannot draw a subset of an empty dataset")
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        members = np.nonzero(labels == c)[0]
        k = max(1, round(percent / 100.0 * len(members)))
        chosen.append(rng.choice(members, size=k, replace=False))
    return np.sort(np.concatenate(chosen))


def random_subset(num_samples: int, percent: float, seed: int = 0) -> np.ndarray:
    """Sorted int64 indices of ``max(1, round(percent / 100 * num_samples))`` samples drawn uniformly
    without replacement, ignoring classes (the CMD / HaLP derivatives of ISC)."""
    if not 0 < percent <= 100:
        raise ValueError(f"percent must be in (0, 100], got {percent}")
    if num_samples < 1:
        raise ValueError("cannot draw a subset of an empty dataset")
    k = max(1, round(percent / 100.0 * num_samples))
    return np.sort(np.random.default_rng(seed).choice(num_samples, size=k, replace=False))


def save_subset(path: str | Path, indices: np.ndarray, labels: np.ndarray, percent: float, seed: int) -> Path:
    """Write ``{"percent", "seed", "num_samples", "per_class", "indices"}`` as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    chosen_labels = np.asarray(labels)[indices]
    per_class = {str(int(c)): int((chosen_labels == c).sum()) for c in np.unique(chosen_labels)}
    record = {
        "percent": percent,
        "seed": seed,
        "num_samples": int(len(indices)),
        "per_class": per_class,
        "indices": [int(i) for i in indices],
    }
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


@dataclass
class SemiSettings:
    """What is specific to the semi-supervised protocol; every other key of ``[eval.semi]`` goes to
    the fine-tuning (or linear) settings. Defaults: HiCLR's deleted config (fine-tune, lr 0.1,
    5 warm-up epochs, x0.1 at 20 and 40, 60 epochs, batch 64), at 1 % and 10 % labels.
    ``sampling``: "balanced" (``balanced_subset``, HiCLR) or "random" (``random_subset``, the
    class-blind subsets of ISC's derivatives)."""

    mode: str = "finetune"
    percents: tuple[float, ...] = (1.0, 10.0)
    subset_seed: int = 0
    sampling: str = "balanced"
    full_epoch_iterations: bool = True


SEMI_TRAIN_DEFAULTS = {"epochs": 60, "milestones": (20, 40), "warmup_epochs": 5}


def split_semi_settings(
    values: dict[str, Any] | None,
) -> tuple[SemiSettings, FinetuneSettings | LinearSettings]:
    """Parse ``[eval.semi]`` into the semi-specific part and the training settings of its mode."""
    values = dict(values or {})
    semi_keys = {f.name for f in fields(SemiSettings)}
    semi = settings_from_dict(SemiSettings, {k: v for k, v in values.items() if k in semi_keys}, "semi")
    if semi.mode not in ("finetune", "linear"):
        raise ValueError(f"[eval.semi] mode must be 'finetune' or 'linear', got {semi.mode!r}")
    if semi.sampling not in ("balanced", "random"):
        raise ValueError(f"[eval.semi] sampling must be 'balanced' or 'random', got {semi.sampling!r}")
    rest = {k: v for k, v in values.items() if k not in semi_keys}
    cls = FinetuneSettings if semi.mode == "finetune" else LinearSettings
    train = settings_from_dict(cls, {**SEMI_TRAIN_DEFAULTS, **rest}, "semi")
    return semi, train


def semi_supervised(
    encoder: torch.nn.Module,
    train_set: Dataset,
    test_set: Dataset,
    percent: float,
    semi: SemiSettings | None = None,
    train_settings: FinetuneSettings | LinearSettings | None = None,
    out_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> ProtocolResult:
    """Train on a class-balanced ``percent`` % of ``train_set`` and score ``test_set``; the subset's
    indices go to ``out_dir/semi_<percent>_indices.json`` when ``out_dir`` is given."""
    semi = semi or SemiSettings()
    if train_settings is None:
        train_settings = split_semi_settings(settings_to_dict(semi))[1]
    labels = dataset_labels(train_set)
    if semi.sampling == "balanced":
        indices = balanced_subset(labels, percent, semi.subset_seed)
    else:
        indices = random_subset(len(labels), percent, semi.subset_seed)
    name = f"semi_{percent:g}"
    subset = LabelledSubset(train_set, indices, length=len(train_set) if semi.full_epoch_iterations else None)
    if semi.mode == "finetune":
        result = finetune(encoder, subset, test_set, train_settings, device, progress, protocol=name)
    else:
        result = linear_eval(encoder, subset, test_set, train_settings, device, progress, protocol=name)
    result.metrics.update(
        {
            "percent": percent,
            "mode": semi.mode,
            "sampling": semi.sampling,
            "labelled_samples": int(len(indices)),
            "full_epoch_iterations": semi.full_epoch_iterations,
        }
    )
    if out_dir is not None:
        path = save_subset(Path(out_dir) / f"{name}_indices.json", indices, labels, percent, semi.subset_seed)
        result.metrics["indices_file"] = str(path)
    return result
