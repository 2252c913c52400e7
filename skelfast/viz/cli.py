"""``skelfast plot RUN`` (training curves, feature embedding) and ``skelfast show`` (skeletons and
their augmented views as PNG grids and GIFs).

Wired into ``skelfast/cli.py`` with ``add_parsers(subparsers)`` and ``run(args)``; matplotlib, torch and
the data readers are imported inside ``run`` so ``skelfast --help`` stays quick.
"""

from __future__ import annotations

import argparse
import sys

SHOW_METHODS = ("hico", "hiclr", "isc", "crrl", "all")


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``plot`` and ``show`` commands."""
    plot = subparsers.add_parser(
        "plot", help="draw a run's loss, lr, throughput and accuracy curves (and a feature embedding)"
    )
    plot.add_argument(
        "run_dir", metavar="RUN", help="run folder (metrics.csv, eval/*.json, checkpoint_last.pt)"
    )
    plot.add_argument("--out", help="output folder (default: RUN/plots)")
    plot.add_argument(
        "--embedding",
        action="store_true",
        help="also plot a 2-D PCA of the pretrained encoder's features on --data's val split",
    )
    plot.add_argument(
        "--data",
        help="--embedding: split folder whose val part is encoded (default: the run's synthetic data)",
    )
    plot.add_argument(
        "--samples", type=int, default=1000, help="--embedding: first N val samples (default 1000)"
    )
    plot.add_argument("--batch-size", type=int, default=64, help="--embedding: batch size (default 64)")
    plot.add_argument("--device", default="cpu", help="--embedding: device of the encoder (default cpu)")

    show = subparsers.add_parser(
        "show", help="draw a skeleton sequence and its augmented views per method (PNG grid + GIF)"
    )
    source = show.add_mutually_exclusive_group()
    source.add_argument("--data", help="split folder ({train,val}_data_joint.npy, ...)")
    source.add_argument("--synthetic", action="store_true", help="built-in synthetic samples (the default)")
    show.add_argument("--part", choices=("train", "val"), default="train", help="--data: which split part")
    show.add_argument("--index", type=int, default=0, help="sample index (default 0)")
    show.add_argument(
        "--method", choices=SHOW_METHODS, default="all", help="whose augmentations (default all)"
    )
    show.add_argument("--out", default="skelfast_show", help="output folder (default ./skelfast_show)")
    show.add_argument("--frames", type=int, default=8, help="frames across the PNG grid (default 8)")
    show.add_argument("--gif-frames", type=int, default=40, help="frames of the GIF (default 40)")
    show.add_argument("--seed", type=int, default=0, help="seed of the augmentation draws (default 0)")
    from skelfast.data.normalize import NORMALIZATIONS

    show.add_argument(
        "--normalization",
        choices=NORMALIZATIONS,
        help="--synthetic: the normalisation applied first (default: each method's config's, e.g. "
        "frame50 for HiCLR, agcn for ISC; none: Kinect camera space)",
    )


def run(args: argparse.Namespace) -> int:
    """Run ``plot`` or ``show``; returns the exit status."""
    if args.command == "plot":
        return _plot(args)
    if args.command == "show":
        return _show(args)
    raise ValueError(f"skelfast.viz.cli cannot run command {args.command!r}")


def _plot(args: argparse.Namespace) -> int:
    from pathlib import Path

    from skelfast.viz.curves import plot_run

    try:
        report = plot_run(args.run_dir, args.out)
    except FileNotFoundError as err:
        print(f"skelfast plot: {err}", file=sys.stderr)
        return 2
    if args.embedding:
        out = Path(args.out) if args.out else Path(args.run_dir) / "plots"
        try:
            report.written.append(_embedding(args, out))
        except (FileNotFoundError, ValueError) as err:
            report.skipped.append(f"embedding not drawn: {err}")
    for path in report.written:
        print(f"wrote {path}")
    for line in report.skipped:
        print(f"skipped: {line}")
    return 0 if report.written else 1


def _embedding(args: argparse.Namespace, out_dir: object) -> object:
    from pathlib import Path

    from skelfast.data.datasets import SkeletonDataset
    from skelfast.viz.embedding import embedding_plot, encoder_features, load_pretrained

    method, config = load_pretrained(Path(args.run_dir) / "checkpoint_last.pt")
    if args.data is not None:
        data_dir = args.data
    else:  # the run trained on the built-in synthetic data: its cached folder (generated if missing)
        from skelfast.engine.synthetic_data import synthetic_split_dir

        data_dir = synthetic_split_dir(config.get("data"))
    dataset = SkeletonDataset.from_split(data_dir, "val")
    feats, labels = encoder_features(
        method.feature_encoder(), dataset, args.batch_size, limit=args.samples, device=args.device
    )
    path = Path(out_dir) / "embedding.png"
    embedding_plot(feats, labels, path, title=f"{method.name} features, val split")
    return path


def _samples(args: argparse.Namespace, methods: list[str]) -> dict[str, tuple[object, int, str]]:
    """Per method, (x (3, T, V, M) tensor, valid length, description) of the sample to show: the
    --data sample as it is, or the synthetic one under ``--normalization`` (default: the method's
    config's ``[data] normalization``, so each method's views start from the data it trains on)."""
    import torch

    if args.data is not None:
        from skelfast.data.datasets import SkeletonDataset

        if args.normalization is not None:
            raise ValueError(
                "--normalization applies to --synthetic data (a --data folder is already prepared)"
            )
        dataset = SkeletonDataset.from_split(args.data, args.part)
        if not 0 <= args.index < len(dataset):
            raise ValueError(
                f"--index {args.index} outside the {len(dataset)} samples of {args.data} ({args.part})"
            )
        x, length, label, _ = dataset[args.index]
        sample = (x, int(length), f"{args.data} {args.part}[{args.index}], label {int(label)}")
        return dict.fromkeys(methods, sample)
    from skelfast.configs import load_config
    from skelfast.data import normalize
    from skelfast.data.synthetic import generate

    if args.index < 0:
        raise ValueError(f"--index must be >= 0, got {args.index}")
    synth = generate(num_samples=args.index + 1, num_classes=60)
    out = {}
    for method in methods:
        name = args.normalization or load_config(method).get("data", {}).get("normalization", "agcn")
        data, num_frame = normalize.normalize(
            synth.data[args.index :].copy(), synth.num_frame[args.index :], name
        )
        what = f"synthetic[{args.index}] ({name}), label {int(synth.labels[args.index])}"
        out[method] = (torch.from_numpy(data[0]), int(num_frame[0]), what)
    return out


def _show(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from skelfast.viz.skeleton_plot import METHOD_VIEWS, View, draw_grid, method_views, up_axis, write_gif

    if args.frames < 1 or args.gif_frames < 1:
        print("skelfast show: --frames and --gif-frames must be >= 1", file=sys.stderr)
        return 2
    methods = list(METHOD_VIEWS) if args.method == "all" else [args.method]
    try:
        samples = _samples(args, methods)
    except (FileNotFoundError, ValueError) as err:
        print(f"skelfast show: {err}", file=sys.stderr)
        return 2
    generator = torch.Generator().manual_seed(args.seed)
    out = Path(args.out)
    for method in methods:
        x, length, what = samples[method]
        raw = View("input", x.numpy(), length)
        up = up_axis(raw.x, raw.length)
        print(f"{method}: {what}: {length} frames, up axis {'+-'[up[1] < 0]}{'xyz'[up[0]]}")
        views = [raw, *method_views(x, length, method, generator)]
        stem = out / f"sample{args.index}_{method}"
        for path in (
            draw_grid(views, stem.with_suffix(".png"), frames=args.frames, up=up),
            write_gif(views, stem.with_suffix(".gif"), frames=args.gif_frames, up=up),
        ):
            print(f"wrote {path}")
    return 0
