"""``skelfast eval {linear,knn,finetune,semi,retrieval}``: a downstream protocol on a pretrained
(or randomly initialised) encoder.

    skelfast eval linear --run runs/hico                      # RUN/checkpoint_last.pt -> RUN/eval/linear.json
    skelfast eval knn --checkpoint runs/hico/checkpoint_epoch0450.pt
    skelfast eval knn --random-init --method hico             # the untrained baseline (shipped config)
    skelfast eval knn --run runs/hico --random-init           # the run's architecture, untrained
    skelfast eval semi --run runs/hiclr --percent 1 10
    skelfast eval linear --run runs/hico --train-data pku/xsub --test-data pku/xsub   # transfer
    skelfast eval linear --run runs/hico --set eval.linear.lr=0.5 --set eval.linear.epochs=10

Settings: the checkpoint's ``config["eval"][protocol]`` (the method's official evaluation), then
``--set`` overrides; documented defaults (``skelfast.engine.evaluation``) fill what is missing.
Data: ``--data DIR`` (a folder of ``{train,val}_*`` split arrays: train = gallery / training set,
val = test set), or ``--train-data`` and ``--test-data`` apart; by default the synthetic dataset
the config's ``[data]`` table describes (the one pretraining used).

Imports stay light here: torch and the protocols load inside ``run``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

PROTOCOL_HELP = {
    "linear": "linear classifier on the frozen encoder (the official headline number)",
    "knn": "k-nearest-neighbour classification on frozen features (1-NN cosine, weighted 20-NN)",
    "finetune": "fine-tune the whole network with labels",
    "semi": "fine-tune on class-balanced 1% / 10% label subsets",
    "retrieval": "action retrieval: test clips query the training set (top-1, mAP)",
}


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add ``eval`` and its protocol subcommands to the ``skelfast`` parser."""
    parser = subparsers.add_parser(
        "eval",
        help="downstream evaluation of a pretrained encoder (linear, knn, finetune, semi, retrieval)",
        description="Run a downstream protocol on a pretrained (or randomly initialised) encoder and "
        "write its report to RUN/eval/<protocol>.json.",
    )
    protocols = parser.add_subparsers(dest="protocol", required=True, metavar="PROTOCOL")
    for name, text in PROTOCOL_HELP.items():
        # help strings are %-formatted by argparse, descriptions are not
        p = protocols.add_parser(name, help=text.replace("%", "%%"), description=text)
        source = p.add_mutually_exclusive_group()
        source.add_argument("--run", type=Path, help="a pretraining run folder (its checkpoint_last.pt)")
        source.add_argument("--checkpoint", type=Path, help="a checkpoint file")
        p.add_argument(
            "--random-init",
            action="store_true",
            help="evaluate the method untrained (the baseline); with --run/--checkpoint their config",
        )
        p.add_argument("--method", help="method for --random-init without a run (hico, hiclr, isc, crrl)")
        p.add_argument(
            "--config", help="config name or file for --random-init --method (default: the method's)"
        )
        p.add_argument("--data", type=Path, help="folder of {train,val} split arrays")
        p.add_argument("--train-data", type=Path, help="training / gallery split folder (its train_* arrays)")
        p.add_argument("--test-data", type=Path, help="test / query split folder (its val_* arrays)")
        p.add_argument(
            "--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="config override"
        )
        p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
        p.add_argument("--out", type=Path, help="report folder (default: RUN/eval, or RUN/eval/random-init)")
        p.add_argument("--seed", type=int, default=0, help="seed of the random init (--random-init)")
        p.add_argument("--quiet", action="store_true", help="no progress output")
        if name == "semi":
            p.add_argument("--percent", type=float, nargs="+", help="label percentages (default: 1 10)")


def _fail(message: str) -> int:
    import sys

    print(f"skelfast eval: error: {message}", file=sys.stderr)
    return 2


def _checkpoint_path(args: argparse.Namespace) -> Path | None:
    from skelfast.engine.checkpoint import LAST

    if args.run is not None:
        path = args.run / LAST
        if not path.is_file():
            raise FileNotFoundError(f"{args.run} has no {LAST}: is it a pretraining run folder?")
        return path
    return args.checkpoint


def _load_method(args: argparse.Namespace) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """(method, config, encoder description) from the arguments."""
    import torch

    from skelfast.configs import apply_overrides, load_config
    from skelfast.engine.checkpoint import load_checkpoint
    from skelfast.methods import build_method

    path = _checkpoint_path(args)
    state = None
    if path is not None:
        state = load_checkpoint(path)
        config = state.get("config")
        if not isinstance(config, dict) or "method" not in config:
            raise ValueError(f"{path}: the checkpoint has no config with a method name")
        if args.method is not None and args.method != config["method"]:
            raise ValueError(f"--method {args.method} but {path} holds a {config['method']} checkpoint")
    elif args.random_init:
        if args.method is None:
            raise ValueError("--random-init without --run/--checkpoint needs --method NAME")
        config = load_config(args.config or args.method)
        if config["method"] != args.method:
            raise ValueError(f"config {args.config!r} is for {config['method']}, not --method {args.method}")
    else:
        raise ValueError("say what to evaluate: --run RUN, --checkpoint FILE, or --random-init --method NAME")
    config = apply_overrides(config, args.set)
    torch.manual_seed(args.seed)
    method = build_method(config["method"], config.get("model"))
    if args.random_init:
        encoder_info = {"method": config["method"], "random_init": True, "seed": args.seed}
    else:
        method.load_state_dict(state["method"])
        encoder_info = {
            "method": config["method"],
            "random_init": False,
            "checkpoint": str(path),
            "epoch": state.get("epoch"),
            "step": state.get("step"),
            "stage": state.get("stage"),
        }
    if path is not None:
        encoder_info["config_from"] = str(path)
    return method, config, encoder_info


def _datasets(
    args: argparse.Namespace, config: dict[str, Any], quiet: bool
) -> tuple[Any, Any, dict[str, Any]]:
    from skelfast.data.datasets import SkeletonDataset

    data = config.get("data") or {}
    if (args.train_data is None) != (args.test_data is None):
        raise ValueError("--train-data and --test-data go together (transfer between datasets)")
    if args.train_data is not None:
        if args.data is not None:
            raise ValueError("give either --data or --train-data/--test-data, not both")
        train_dir, test_dir = args.train_data, args.test_data
    elif args.data is not None:
        train_dir = test_dir = args.data
    elif data.get("path"):  # the folder pretraining read, when the engine recorded one
        train_dir = test_dir = Path(data["path"])
    else:
        from skelfast.engine.synthetic_data import synthetic_split_dir

        train_dir = test_dir = synthetic_split_dir(data, quiet=quiet)
    for d in {train_dir, test_dir}:
        if not Path(d).is_dir():
            raise FileNotFoundError(f"data folder not found: {d}")
    info = {"train_dir": str(train_dir), "test_dir": str(test_dir), "train_part": "train", "test_part": "val"}
    return SkeletonDataset.from_split(train_dir, "train"), SkeletonDataset.from_split(test_dir, "val"), info


def _out_dir(args: argparse.Namespace, checkpoint: Path | None) -> Path:
    if args.out is not None:
        return args.out
    if args.run is not None:
        base = args.run / "eval"
    elif checkpoint is not None:
        base = checkpoint.parent / "eval"
    else:
        return Path("runs") / f"random-init-{args.method}" / "eval"
    return base / "random-init" if args.random_init else base


def run(args: argparse.Namespace) -> int:
    """Run one protocol from parsed arguments; returns the exit status."""
    import torch

    from skelfast.engine.evaluation import evaluate, print_table

    try:
        method, config, encoder_info = _load_method(args)
        train_set, test_set, data_info = _datasets(args, config, args.quiet)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as err:
        return _fail(str(err))
    settings = dict((config.get("eval") or {}).get(args.protocol) or {})
    if args.protocol == "semi" and args.percent:
        settings["percents"] = list(args.percent)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    out_dir = _out_dir(args, _checkpoint_path(args))
    try:
        records = evaluate(
            args.protocol,
            method.feature_encoder(),
            train_set,
            test_set,
            settings,
            out_dir,
            device=device,
            progress=not args.quiet,
            dataset_info=data_info,
            encoder_info=encoder_info,
        )
    except ValueError as err:  # a bad setting or an unusable dataset: say so, no traceback
        return _fail(str(err))
    print_table(list(records.values()))
    print(f"reports: {', '.join(str(out_dir / f'{name}.json') for name in records)}")
    return 0
