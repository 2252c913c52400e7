"""``skelfast pretrain``: pretrain a method with its official recipe, every value overridable.

Wired into ``skelfast/cli.py`` with ``add_parsers(subparsers)`` and ``run(args)``; torch is imported
only inside ``run``.
"""

from __future__ import annotations

import argparse
import sys

# the registry's names (skelfast.methods.METHODS; importing it would import torch at --help time)
METHOD_NAMES = ("hico", "hiclr", "isc", "crrl")


def add_parsers(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``pretrain`` command."""
    p = subparsers.add_parser(
        "pretrain",
        help="pretrain a method (official recipe by default) on a dataset folder or the synthetic data",
        description=(
            "Pretrain HiCo, HiCLR, ISC or CRRL. The method's official config is the default; "
            "--config picks another (a shipped name such as hiclr_pku2, or a path) and --set changes any "
            "value. Without --data the built-in synthetic dataset is generated once into the cache "
            "($SKELFAST_CACHE or ~/.cache/skelfast). Under torchrun each process trains one shard of "
            "each global batch (DDP)."
        ),
    )
    p.add_argument("--method", choices=METHOD_NAMES, help="the method (default: the one --config names)")
    p.add_argument(
        "--config", help="a shipped config name or a .toml path (default: the method's official one)"
    )
    p.add_argument(
        "--data", help="a folder of split arrays (train_data_joint.npy, ...); default: synthetic data"
    )
    p.add_argument("--out", help="the run folder (default: runs/<method>-<time>)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value, e.g. --set train.lr=0.1 --set model.queue_size=1024 (repeatable)",
    )
    p.add_argument("--epochs", type=int, help="= --set train.epochs=N")
    p.add_argument("--batch-size", type=int, help="= --set train.batch_size=N (the global batch under DDP)")
    p.add_argument("--seed", type=int, help="= --set train.seed=S")
    p.add_argument(
        "--amp", choices=("none", "bf16"), help="= --set train.amp=...: bf16 autocast of the forward"
    )
    p.add_argument("--workers", type=int, help="data loader worker processes (= --set train.num_workers=N)")
    p.add_argument(
        "--checkpoint-every",
        type=int,
        metavar="STEPS",
        help="also write checkpoint_last.pt every STEPS optimizer steps (= --set train.checkpoint_steps=N; "
        "it is always written at each epoch's end; the epoch snapshots follow [train] checkpoint_every)",
    )
    p.add_argument("--max-steps", type=int, help="stop after this many optimizer steps in all (resumable)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from checkpoint_last.pt")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    p.add_argument("--quiet", action="store_true", help="no progress line and no per-epoch lines")
    return p


def _cli_overrides(args: argparse.Namespace) -> list[str]:
    pairs = (
        ("train.epochs", args.epochs),
        ("train.batch_size", args.batch_size),
        ("train.seed", args.seed),
        ("train.amp", None if args.amp is None else f'"{args.amp}"'),
        ("train.num_workers", args.workers),
        ("train.checkpoint_steps", args.checkpoint_every),
    )
    return [*args.overrides, *(f"{key}={value}" for key, value in pairs if value is not None)]


def build_config(args: argparse.Namespace) -> dict:
    """The config a ``pretrain`` command line asks for (on ``--resume``: the run's saved one + overrides)."""
    from pathlib import Path

    from skelfast.configs import apply_overrides, load_config
    from skelfast.engine import checkpoint

    overrides = _cli_overrides(args)
    if args.resume and args.config is None:
        if args.out is None:
            raise ValueError("--resume needs --out RUN (the run folder to continue)")
        saved = checkpoint.load_checkpoint(Path(args.out) / checkpoint.LAST)["config"]
        config = apply_overrides(saved, overrides)
    else:
        name = args.config or args.method
        if name is None:
            raise ValueError("give --method (or --config)")
        config = load_config(name, overrides)
    if args.method is not None and config.get("method") != args.method:
        raise ValueError(f"--method {args.method} but the config is for {config.get('method')!r}")
    return config


def run(args: argparse.Namespace) -> int:
    """Run ``skelfast pretrain``; returns the exit status (1 when training stopped on a bad step)."""
    from skelfast.engine.checkpoint import CheckpointError
    from skelfast.engine.pretrain import PretrainError, pretrain

    try:
        config = build_config(args)
        run_dir = pretrain(
            config,
            args.data,
            args.out,
            resume=args.resume,
            max_steps=args.max_steps,
            device=args.device,
            progress=False if args.quiet else None,
            log=(lambda _line: None) if args.quiet else print,
        )
    except PretrainError as err:
        print(f"skelfast pretrain: {err}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, CheckpointError) as err:
        print(f"skelfast pretrain: error: {err}", file=sys.stderr)
        return 2
    if args.quiet:
        print(run_dir)
    return 0
