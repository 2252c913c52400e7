"""Pretraining: a method's stages over a dataset, with atomic checkpoints, exact resume, metrics.

``pretrain(config, data, out)`` runs, for each stage of ``method.stages()``: ``set_stage``, a fresh
optimizer over the parameters that require grad, then per epoch ``set_epoch``, the epoch's learning
rate, and per batch ``method(x, lengths, generator)`` -> loss -> backward -> optimizer step. The
batch generator is seeded from ``(seed, stage, epoch, batch, rank)`` and the data order from
``(seed, stage, epoch)``, so each step's randomness is a function of its position alone; with the
global RNG states saved in the checkpoint, a killed run resumed with ``resume=True`` ends with the
same weights, bit for bit, as one that was never interrupted.

Checkpoints (``skelfast.engine.checkpoint``) are written atomically to ``RUN/checkpoint_last.pt``
every ``[train] checkpoint_steps`` steps (0: never mid-epoch) and at each epoch's end, when the run
stops at ``max_steps``, and as ``checkpoint_epochNNNN.pt`` snapshots every ``[train]
checkpoint_every`` epochs (and after each stage's last epoch). A non-finite loss (or a forward that
fails, e.g. on NaN input) stops the run with ``PretrainError`` naming the stage, epoch, step and the
batch's bad samples, before anything of the bad step is saved.

The run folder holds ``config.toml`` (the full config after overrides; ``[data] path`` is the data
folder used), the checkpoints, and ``metrics.csv`` (``skelfast.engine.metrics``).

``[train]`` keys the engine reads (unknown keys are an error): ``epochs``, ``batch_size`` (the global
batch under DDP), ``drop_last``, ``seed``; the optimizer and schedule keys of
``skelfast.engine.optim``; ``checkpoint_every`` (epochs between snapshots), ``checkpoint_steps``;
``amp`` (``"none"`` | ``"bf16"``: ``torch.autocast`` of the forward); ``num_workers``;
``find_unused_parameters`` (DDP); ``deterministic`` (deterministic CUDA kernels);
``clip_grad_norm`` (clip the global gradient norm before each step; absent: no clipping, as every
official recipe). A
``[train.<stage>]`` table overrides them for one stage.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import math
import os
import random
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from skelfast.engine import checkpoint as ckpt_io
from skelfast.engine import distributed
from skelfast.engine.metrics import BASE_COLUMNS, MetricsWriter
from skelfast.engine.optim import OPTIMIZERS, LRSchedule, build_optimizer, set_lr
from skelfast.methods import PretrainMethod, build_method
from skelfast.progress import Progress

TRAIN_KEYS = frozenset(
    {
        "epochs", "batch_size", "drop_last", "optimizer", "lr", "momentum", "weight_decay", "nesterov",
        "betas", "eps", "schedule", "milestones", "gamma", "warmup_epochs", "seed", "checkpoint_every",
        "checkpoint_steps", "amp", "num_workers", "find_unused_parameters", "deterministic", "clip_grad_norm",
    }
)  # fmt: skip
# settings that may change when a run is resumed: they do not change what is computed
RUNTIME_KEYS = frozenset({("train", "num_workers"), ("train", "checkpoint_steps"), ("data", "path")})
AMP_MODES = ("none", "bf16")
METRICS_TAIL = 20


class PretrainError(RuntimeError):
    """A run stopped on a bad step (non-finite loss or parameters, a failing forward)."""


@dataclass
class Position:
    """Where a run is: the stage, the epoch in progress (or next), batches done in it, optimizer steps."""

    stage_index: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    step: int = 0


def _mix_seed(*parts: int) -> int:
    return int(
        np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0] % (2**63)
    )


def batch_seed(seed: int, stage_index: int, epoch: int, batch: int, rank: int = 0) -> int:
    """The seed of the ``torch.Generator`` handed to the method for one batch on one rank."""
    return _mix_seed(seed, stage_index, epoch, batch, rank, 0xBA7C)


def loader_seed(seed: int, stage_index: int) -> int:
    """The data-order seed of a stage (``seed`` itself for the first, so it matches ``SkeletonLoader(seed)``)."""
    return seed if stage_index == 0 else _mix_seed(seed, stage_index, 0x57A6)


def stage_train_config(config: Mapping[str, Any], stage: str, stages: list[str]) -> dict[str, Any]:
    """The ``[train]`` table for one stage: the shared keys, overridden by a ``[train.<stage>]`` table."""
    train = dict(config.get("train") or {})
    per_stage = {s: train.pop(s) for s in list(train) if s in stages and isinstance(train[s], dict)}
    unknown = sorted(set(train) - TRAIN_KEYS)
    if unknown:
        raise ValueError(
            f"[train]: unknown key(s) {unknown}; known: {sorted(TRAIN_KEYS)} and [train.<stage>] tables"
        )
    out = {**train, **per_stage.get(stage, {})}
    unknown = sorted(set(out) - TRAIN_KEYS)
    if unknown:
        raise ValueError(f"[train.{stage}]: unknown key(s) {unknown}")
    for key in ("epochs", "batch_size", "lr"):
        if key not in out:
            raise ValueError(f"[train] needs {key!r} (stage {stage!r})")
    if int(out["epochs"]) < 1 or int(out["batch_size"]) < 1:
        raise ValueError(
            f"[train] epochs and batch_size must be >= 1, got {out['epochs']}, {out['batch_size']}"
        )
    optimizer = str(out.get("optimizer", "sgd")).lower()
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"[train] unknown optimizer {optimizer!r}; choose one of {OPTIMIZERS}")
    LRSchedule.from_config(out)  # raises on a bad schedule
    amp = str(out.get("amp", "none"))
    if amp not in AMP_MODES:
        raise ValueError(f"[train] amp must be one of {AMP_MODES}, got {amp!r}")
    if "clip_grad_norm" in out and not float(out["clip_grad_norm"]) > 0:
        raise ValueError(
            f"[train] clip_grad_norm must be > 0 (or absent: no clipping), got {out['clip_grad_norm']}"
        )
    return out


def _flatten(config: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    out = {}
    for k, v in config.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, (*prefix, k)))
        else:
            out[(*prefix, k)] = v
    return out


def config_differences(saved: Mapping[str, Any], given: Mapping[str, Any]) -> list[str]:
    """``"train.lr: 0.01 (saved) != 0.1"`` for each setting (other than ``RUNTIME_KEYS``) that differs."""
    a, b = _flatten(saved), _flatten(given)
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key in RUNTIME_KEYS or a.get(key) == b.get(key):
            continue
        diffs.append(f"{'.'.join(key)}: {a.get(key, '(unset)')!r} (saved) != {b.get(key, '(unset)')!r}")
    return diffs


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _default_run_dir(method: str) -> Path:
    return Path("runs") / f"{method}-{time.strftime('%Y%m%d-%H%M%S')}"


def _describe_bad_input(x: torch.Tensor, indices: torch.Tensor) -> str:
    bad = ~torch.isfinite(x.detach()).reshape(x.shape[0], -1).all(dim=1)
    if not bool(bad.any()):
        return "the input batch is finite"
    samples = indices.reshape(-1)[bad.cpu()].tolist()
    return f"the input batch holds NaN/Inf in dataset sample(s) {samples[:10]}{' ...' if len(samples) > 10 else ''}"


def _all_finite(tensors: list[torch.Tensor]) -> bool:
    floats = [t for t in tensors if t.is_floating_point() and t.numel()]
    if not floats:
        return True
    return bool(torch.stack([torch.isfinite(t).all() for t in floats]).all())


class _Run:
    """One call of ``pretrain``: the state shared by the loop's parts."""

    def __init__(
        self,
        config: dict[str, Any],
        run_dir: Path,
        info: distributed.DistInfo,
        device: torch.device,
        method: PretrainMethod,
        data_dir: Path,
        resume_state: dict[str, Any] | None,
        max_steps: int | None,
        progress: bool,
        tensorboard: bool | None,
        log: Callable[[str], None],
    ) -> None:
        self.config, self.run_dir, self.info, self.device = config, run_dir, info, device
        self.method, self.data_dir, self.max_steps, self.log = method, data_dir, max_steps, log
        self.progress = progress and info.is_main
        self.stages = method.stages()
        self.seed = int(config.get("train", {}).get("seed", 0))
        self.resume_state = resume_state
        self.pos = Position()
        if resume_state is not None:
            self.pos = Position(
                int(resume_state["stage_index"]),
                int(resume_state["epoch"]),
                int(resume_state["batch_in_epoch"]),
                int(resume_state["step"]),
            )
        self.metrics = MetricsWriter(
            run_dir,
            enabled=info.is_main,
            resume_step=self.pos.step if resume_state is not None else None,
            tensorboard=tensorboard,
        )
        self.tail: list[dict[str, Any]] = list(resume_state.get("metrics_tail", [])) if resume_state else []

    # --- checkpoints --------------------------------------------------------------------------------

    def _state(self, optimizer: torch.optim.Optimizer, schedule: LRSchedule) -> dict[str, Any] | None:
        """The checkpoint dict on rank 0 (None elsewhere); a collective: every rank must call it."""
        method_state = self.method.state_dict()  # the same on every rank (DDP keeps them equal)
        if not _all_finite(list(method_state.values())):
            raise PretrainError(
                f"the model's parameters or buffers became non-finite (stage {self.stages[self.pos.stage_index]!r}, "
                f"epoch {self.pos.epoch}, step {self.pos.step}); the last good checkpoint is kept"
            )
        rngs = distributed.all_gather_objects(ckpt_io.rng_state(), self.info)
        if not self.info.is_main:
            return None
        return {
            "format": ckpt_io.FORMAT,
            "config": self.config,
            "method": method_state,
            "stage": self.stages[self.pos.stage_index],
            "stage_index": self.pos.stage_index,
            "epoch": self.pos.epoch,
            "batch_in_epoch": self.pos.batch_in_epoch,
            "step": self.pos.step,
            "optimizer": optimizer.state_dict(),
            "scheduler": schedule.state_dict(),
            "rng": rngs,
            "world_size": self.info.world_size,
            "metrics_tail": self.tail[-METRICS_TAIL:],
        }

    def save(
        self, optimizer: torch.optim.Optimizer, schedule: LRSchedule, snapshot: str | None = None
    ) -> None:
        state = self._state(optimizer, schedule)
        if state is None:
            return
        last = self.run_dir / ckpt_io.LAST
        ckpt_io.save_checkpoint(state, last)
        if snapshot is not None:
            ckpt_io.snapshot(last, self.run_dir / snapshot)

    def snapshot_name(self, stage_index: int, epoch: int, epochs: int, every: int) -> str | None:
        """``checkpoint_epochNNNN.pt`` after epochs ``every`` divides (official ``epoch % N == 0``) and the last."""
        if not (epoch == epochs - 1 or (every > 0 and epoch % every == 0)):
            return None
        stage = f"{self.stages[stage_index]}_" if len(self.stages) > 1 else ""
        return f"checkpoint_{stage}epoch{epoch:04d}.pt"

    # --- the loop -----------------------------------------------------------------------------------

    def run(self) -> bool:
        """Train from ``self.pos`` to the end (True) or to ``max_steps`` (False)."""
        from skelfast.data.datasets import SkeletonDataset

        dataset = SkeletonDataset.from_split(self.data_dir, "train")
        self.method.train()
        for stage_index in range(self.pos.stage_index, len(self.stages)):
            resumed_here = self.resume_state is not None and stage_index == int(
                self.resume_state["stage_index"]
            )
            if not resumed_here:
                self.method.set_stage(self.stages[stage_index])
                self.pos = Position(stage_index, 0, 0, self.pos.step)
            if not self._run_stage(dataset, stage_index, resumed_here):
                return False
        return True

    def _run_stage(self, dataset: Any, stage_index: int, resumed_here: bool) -> bool:
        stage = self.stages[stage_index]
        train = stage_train_config(self.config, stage, self.stages)
        epochs, batch_size = int(train["epochs"]), int(train["batch_size"])
        params = [p for p in self.method.parameters() if p.requires_grad]
        optimizer = build_optimizer(params, train)
        schedule = LRSchedule.from_config(train)
        if resumed_here:
            assert self.resume_state is not None
            schedule.check_state_dict(self.resume_state["scheduler"])
            optimizer.load_state_dict(self.resume_state["optimizer"])
            self._restore_rng(self.resume_state["rng"])
        model = distributed.wrap_ddp(
            self.method, self.info, self.device, bool(train.get("find_unused_parameters", False))
        )
        loader = self._loader(dataset, train, stage_index)
        batches = len(loader)
        if str(train.get("amp", "none")) == "bf16":
            autocast: Callable[[], Any] = lambda: torch.autocast(self.device.type, dtype=torch.bfloat16)
        else:
            autocast = contextlib.nullcontext
        every_steps = int(train.get("checkpoint_steps", 0))
        clip_grad_norm = float(train["clip_grad_norm"]) if "clip_grad_norm" in train else None
        remaining = (epochs - self.pos.epoch) * batches - self.pos.batch_in_epoch
        if self.max_steps is not None:
            remaining = max(0, min(remaining, self.max_steps - self.pos.step))
        name = self.config.get("method", self.method.name)
        finished = (epochs - self.pos.epoch) * batches - self.pos.batch_in_epoch <= 0
        if finished and self.info.is_main and self.progress:  # a finished run resumed: no empty bar
            self.log(f"{name} {stage}: already trained ({epochs}/{epochs} epochs)")
        bar = Progress(remaining, f"{name} {stage}", unit="steps", enabled=self.progress and remaining > 0)
        stage_start = time.perf_counter()
        try:
            for epoch in range(self.pos.epoch, epochs):
                start = self.pos.batch_in_epoch if epoch == self.pos.epoch else 0
                self.pos.epoch, self.pos.batch_in_epoch = epoch, start
                self.method.set_epoch(epoch)
                loader.set_epoch(epoch, start_batch=start)
                lr = schedule.lr_at(epoch)
                set_lr(optimizer, lr)
                losses: list[float] = []
                tick = time.perf_counter()
                for b, (x, lengths, _, indices) in enumerate(loader, start=start):
                    if self.max_steps is not None and self.pos.step >= self.max_steps:
                        break
                    loss, terms = self._step(
                        model, optimizer, autocast, x, lengths, indices, stage_index, b, clip_grad_norm
                    )
                    self.pos.step += 1
                    self.pos.batch_in_epoch = b + 1
                    now = time.perf_counter()
                    row = {
                        "stage": stage,
                        "epoch": epoch,
                        "step": self.pos.step,
                        "loss": loss,
                        "lr": lr,
                        "samples_per_s": batch_size / max(now - tick, 1e-9),
                        **terms,
                    }
                    tick = now
                    losses.append(loss)
                    self.metrics.write(row)
                    self.tail = [*self.tail[-(METRICS_TAIL - 1) :], row]
                    bar.desc = f"{name} {stage} epoch {epoch + 1}/{epochs} loss {loss:.4f}"
                    bar.update(1)
                    if every_steps > 0 and self.pos.step % every_steps == 0 and b + 1 < batches:
                        self.save(optimizer, schedule)
                if self.pos.batch_in_epoch < batches:  # stopped at max_steps inside the epoch
                    self.save(optimizer, schedule)
                    return False
                self.pos.epoch, self.pos.batch_in_epoch = epoch + 1, 0
                snapshot = self.snapshot_name(
                    stage_index, epoch, epochs, int(train.get("checkpoint_every", 0))
                )
                self.save(optimizer, schedule, snapshot)
                if self.info.is_main and losses:
                    rate = bar.count / max(time.perf_counter() - stage_start, 1e-9)
                    line = self._epoch_line(
                        name, stage, epoch, epochs, losses, lr, rate, bar.total - bar.count
                    )
                    self.log(line)
                if self.max_steps is not None and self.pos.step >= self.max_steps and epoch + 1 < epochs:
                    return False
        finally:
            bar.close()
        return True

    def _loader(self, dataset: Any, train: Mapping[str, Any], stage_index: int) -> distributed.ShardedLoader:
        """This rank's share of each global batch, in the stage's order (``loader_seed``)."""
        loader = distributed.ShardedLoader(
            dataset,
            int(train["batch_size"]),
            rank=self.info.rank,
            world_size=self.info.world_size,
            shuffle=True,
            seed=loader_seed(self.seed, stage_index),
            num_workers=int(train.get("num_workers", 0)),
            drop_last=bool(train.get("drop_last", True)),
            device=self.device,
            pin_memory=self.device.type == "cuda",
        )
        if len(loader) == 0:
            raise ValueError(
                f"{self.data_dir}: {len(dataset)} training samples make no batch of {train['batch_size']} "
                "(drop_last)"
            )
        return loader

    @staticmethod
    def _epoch_line(
        name: str, stage: str, epoch: int, epochs: int, losses: list[float], lr: float, rate: float, left: int
    ) -> str:
        eta = datetime.timedelta(seconds=round(left / rate)) if rate > 0 else "?"
        return (
            f"{name} {stage} epoch {epoch + 1}/{epochs}: mean loss {sum(losses) / len(losses):.4f}, "
            f"lr {lr:.4g}, {rate:.2f} steps/s, ETA {eta}"
        )

    def _step(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        autocast: Callable[[], Any],
        x: torch.Tensor,
        lengths: torch.Tensor,
        indices: torch.Tensor,
        stage_index: int,
        batch: int,
        clip_grad_norm: float | None = None,
    ) -> tuple[float, dict[str, float]]:
        where = (
            f"stage {self.stages[stage_index]!r}, epoch {self.pos.epoch}, step {self.pos.step + 1} "
            f"(batch {batch} of the epoch)"
        )
        seed = batch_seed(self.seed, stage_index, self.pos.epoch, batch, self.info.rank)
        gen = torch.Generator().manual_seed(seed)
        error: Exception | None = None
        out = None
        try:
            with autocast():
                out = model(x, lengths, gen)
            loss = out.loss.reshape(())
        except Exception as err:  # reported below, once every rank knows (none is left in a collective)
            error, loss = err, torch.tensor(float("nan"), device=self.device)
        names = list(out.terms) if error is None and out is not None else []
        clash = sorted(set(names) & set(BASE_COLUMNS))
        if clash:
            raise ValueError(
                f"{self.method.name}: loss terms {clash} would overwrite metrics columns; rename them"
            )
        # one host sync in a single process: [loss, failed, *terms]; under DDP the ranks' means
        head = [loss.detach().float(), torch.tensor(float(error is not None), device=loss.device)]
        terms = [out.terms[k].detach().float().reshape(()).to(loss.device) for k in names] if out else []
        if self.info.distributed:
            values = distributed.all_reduce_mean(torch.stack(head), self.info).tolist()
        else:
            values = torch.stack(head + terms).tolist()
        if error is not None or values[1] > 0 or not math.isfinite(values[0]):
            if error is not None:
                cause = f"the forward failed: {type(error).__name__}: {error}"
            elif values[1] > 0:
                cause = "the step failed on another rank"
            else:
                cause = f"the loss is {values[0]}"
            raise PretrainError(
                f"pretraining stopped at {where}: {cause}; {_describe_bad_input(x, indices)}. "
                f"The last good checkpoint, {self.run_dir / ckpt_io.LAST}, is left as it was."
            ) from error
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_grad_norm is not None:  # after DDP's all-reduce: every rank clips the same gradient
            params = [p for group in optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
        optimizer.step()
        if self.info.distributed and terms:
            values += distributed.all_reduce_mean(torch.stack(terms), self.info).tolist()
        return values[0], dict(zip(names, values[2:], strict=True))

    def _restore_rng(self, states: list[dict[str, Any]]) -> None:
        if len(states) != self.info.world_size:
            print(
                f"warning: the checkpoint was written by {len(states)} process(es), this run has "
                f"{self.info.world_size}: random streams differ from an uninterrupted run",
                file=sys.stderr,
            )
        ckpt_io.set_rng_state(states[min(self.info.rank, len(states) - 1)])


def _resolve_data(
    config: dict[str, Any], data: str | Path | None, info: distributed.DistInfo, quiet: bool
) -> Path:
    from skelfast.data import storage
    from skelfast.engine.synthetic_data import synthetic_split_dir

    if data is None:
        saved = (config.get("data") or {}).get("path")
        data = saved if saved and Path(saved).exists() else None
    if data is not None:
        folder = Path(data)
        if not storage.data_path(folder, "train").exists():
            raise FileNotFoundError(
                f"--data {folder}: no train_data_joint.npy there (a folder of split arrays, e.g. the xsub/ "
                "folder `skelfast data ntu` or `skelfast data synthetic` writes)"
            )
        return folder.resolve()
    if info.is_main:
        folder = synthetic_split_dir(config.get("data"), quiet=quiet)
    distributed.barrier(info)  # rank 0 generated it; the others find it in the cache
    if not info.is_main:
        folder = synthetic_split_dir(config.get("data"), quiet=True)
    return folder.resolve()


def pretrain(
    config: dict[str, Any] | None,
    data: str | Path | None = None,
    out: str | Path | None = None,
    *,
    resume: bool = False,
    max_steps: int | None = None,
    device: str | torch.device | None = None,
    method: PretrainMethod | Callable[[], PretrainMethod] | None = None,
    progress: bool | None = None,
    tensorboard: bool | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Pretrain ``config["method"]`` (built from ``config["model"]``) and return the run folder.

    Args:
        config: a loaded config (``skelfast.configs.load_config``); None with ``resume`` uses the
            run's saved config. With ``resume``, a given config must equal the saved one except for
            ``[train] num_workers``, ``checkpoint_steps`` and ``[data] path``.
        data: a folder of split arrays (``train_data_joint.npy``, ...); None: the saved ``[data]
            path`` on resume, else the built-in synthetic dataset (generated once into the cache).
        out: the run folder (default ``runs/<method>-<time>``); a folder that already holds a run
            needs ``resume=True``.
        resume: continue from ``out/checkpoint_last.pt``.
        max_steps: stop after this many optimizer steps in total (checkpoint written; resumable).
        device: ``"cpu"`` or ``"cuda"`` (default: cuda when available). Under torchrun each rank
            uses ``cuda:LOCAL_RANK``.
        method: a custom method to train instead of ``build_method(config)``: a factory (e.g. the
            class), called after the seeding so that its initialisation follows ``[train] seed``,
            or a ready instance (initialised by the caller).
        progress: the progress line on stderr (default: when stderr is a terminal).
        tensorboard: see ``MetricsWriter``.
        log: where the per-epoch summary lines go (rank 0 only).

    Raises:
        PretrainError: the run stopped on a non-finite loss or a failing step (the last good
            checkpoint is kept); ValueError / FileNotFoundError / CheckpointError on bad input.
    """
    device = torch.device(device if device is not None else _default_device())
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for, but CUDA is not available")
    if max_steps is not None and max_steps < 0:
        raise ValueError(f"max_steps must be >= 0, got {max_steps}")
    info = distributed.init_distributed(device)
    clean = False
    try:
        device = distributed.process_device(device, info)
        run_dir = _pretrain(
            config, data, out, info, device, resume, max_steps, method, progress, tensorboard, log
        )
        clean = True
        return run_dir
    finally:
        distributed.shutdown(info, clean)


def _pretrain(
    config: dict[str, Any] | None,
    data: str | Path | None,
    out: str | Path | None,
    info: distributed.DistInfo,
    device: torch.device,
    resume: bool,
    max_steps: int | None,
    method: PretrainMethod | Callable[[], PretrainMethod] | None,
    progress: bool | None,
    tensorboard: bool | None,
    log: Callable[[str], None],
) -> Path:
    if out is None:
        if resume:
            raise ValueError("resume needs the run folder (out)")
        if config is None:
            raise ValueError("pretrain needs a config (or resume=True with an existing run folder)")
        out = distributed.broadcast_object(str(_default_run_dir(str(config.get("method", "run")))), info)
    run_dir = Path(out)
    last = run_dir / ckpt_io.LAST
    state = None
    if resume:
        state = ckpt_io.load_checkpoint(last)
        if config is None:
            config = copy.deepcopy(state["config"])
        else:
            diffs = config_differences(state["config"], config)
            if diffs:
                raise ValueError(
                    f"{run_dir}: resuming needs the run's own config; these settings differ: "
                    + "; ".join(diffs)
                )
    else:
        if config is None:
            raise ValueError("pretrain needs a config (or resume=True with an existing run folder)")
        if last.exists():
            raise ValueError(f"{run_dir} already holds a run ({last}): resume it, or choose another folder")
    config = copy.deepcopy(config)
    if "method" not in config:
        raise ValueError('the config names no method (top-level `method = "..."`)')
    seed = int(config.get("train", {}).get("seed", 0))
    if config.get("train", {}).get("deterministic", False):
        # deterministic CUDA kernels (cuBLAS needs its workspace setting before it starts), as
        # HiCLR's init_seed turns cudnn.deterministic on; CPU runs are deterministic already
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    if method is None:
        method = build_method(config["method"], config.get("model"))
    elif not isinstance(method, torch.nn.Module):  # a factory: built here, after the seeding, like ours
        method = method()
    if method.name and method.name != config["method"]:
        raise ValueError(f"the method instance is {method.name!r} but the config names {config['method']!r}")
    for stage in method.stages():  # check every stage's [train] before any work
        stage_train_config(config, stage, method.stages())
    data_dir = _resolve_data(config, data, info, quiet=progress is False)  # numpy draws of its own only
    config.setdefault("data", {})["path"] = str(data_dir)
    if info.distributed:  # decorrelate the ranks' dropout and other global draws
        torch.manual_seed(_mix_seed(seed, info.rank, 0xD1CE))
    method.to(device)
    if state is not None:
        stages = method.stages()
        if state["stage"] not in stages:
            raise ValueError(f"{last}: stage {state['stage']!r} is not one of {stages}")
        method.set_stage(state["stage"])
        method.load_state_dict(state["method"])
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        ckpt_io.save_config(config, run_dir / ckpt_io.CONFIG)
    distributed.barrier(info)

    if progress is None:
        progress = sys.stderr.isatty()
    run = _Run(config, run_dir, info, device, method, data_dir, state, max_steps, progress, tensorboard, log)
    try:
        finished = run.run()
    finally:
        run.metrics.close()
    if info.is_main:
        what = "finished" if finished else f"stopped at step {run.pos.step} (max_steps); resume to continue"
        log(f"pretraining {what}: {run_dir}")
    return run_dir
