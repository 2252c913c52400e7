"""``skelfast data ...``: convert NTU RGB+D raw files, PKU-MMD, pyskl pickles; write the synthetic dataset.

Wired into ``skelfast/cli.py`` with ``add_parsers(subparsers)`` and ``run(args)``.
"""

from __future__ import annotations

import argparse
import sys


def add_parsers(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``data`` command (with its ``ntu``, ``synthetic``, ``pku``, ``pyskl`` subcommands)."""
    from skelfast.data.normalize import NORMALIZATIONS
    from skelfast.data.pku_mmd import CLASS_MODES, WINDOWS

    data = subparsers.add_parser("data", help="convert datasets to the standard arrays; write synthetic data")
    sub = data.add_subparsers(dest="data_command", required=True)

    ntu = sub.add_parser("ntu", help="NTU RGB+D 60/120 raw .skeleton folder -> arrays per benchmark")
    ntu.add_argument("raw_dir", help="folder of .skeleton files")
    ntu.add_argument(
        "out_dir", help="output folder; gets xsub/ and xview/ (ntu60) or xsub/ and xset/ (ntu120)"
    )
    ntu.add_argument("--dataset", choices=("ntu60", "ntu120"), default="ntu60")
    ntu.add_argument("--missing", help="samples_with_missing_skeletons.txt (listed samples are skipped)")
    ntu.add_argument("--normalization", choices=NORMALIZATIONS, default="agcn")
    ntu.add_argument(
        "--bodies", choices=("energy", "first"), help="body selection (default: energy; first for frame50)"
    )
    ntu.add_argument(
        "--workers", type=int, help="processes, forked on Linux (default: all cores; 1 = in this process)"
    )
    ntu.add_argument("--keep-cache", action="store_true", help="keep the resumable per-sample cache")
    ntu.add_argument("--quiet", action="store_true", help="no progress bar")

    syn = sub.add_parser("synthetic", help="write the synthetic NTU-layout dataset (xsub/ and xview/)")
    syn.add_argument("out_dir")
    syn.add_argument("--samples", type=int, default=6000)
    syn.add_argument("--classes", type=int, default=60)
    syn.add_argument("--seed", type=int, default=0)
    syn.add_argument("--normalization", choices=NORMALIZATIONS, default="agcn")
    syn.add_argument(
        "--distortion",
        type=float,
        default=0.0,
        help="per-recording body-frame linear distortion I + S, off-diagonal S ~ U(-a, a) (the demos use "
        "0.5: a nuisance that normalisation cannot remove and a shear view can; default 0)",
    )
    syn.add_argument(
        "--posture-std", type=float, default=0.06, help="per-subject resting-posture offsets (default 0.06)"
    )
    pku = sub.add_parser("pku", help="PKU-MMD I/II skeleton + label folders and a split file -> arrays")
    pku.add_argument("skeleton_dir")
    pku.add_argument("label_dir")
    pku.add_argument("split_file", help="cross_subject.txt / cross_view.txt (training ids on line 2)")
    pku.add_argument("out_dir")
    pku.add_argument("--normalization", choices=NORMALIZATIONS, default="agcn")
    pku.add_argument(
        "--classes",
        choices=CLASS_MODES,
        default="raw",
        help="raw (default): label = PKU-MMD class id - 1, 0..50 for both parts (Part II uses 41 of the "
        "51 ids; a classifier gets 1 + the largest label outputs, up to 51). compact: the ids that occur "
        "are renumbered 0..C-1 in increasing order (C = 41 on the full Part II) and the table is saved as "
        "OUT_DIR/class_map.json. CRRL evaluates Part II with 41 classes but its 51 -> 41 table is "
        "unpublished, so 'compact' is the order-preserving renumbering, not a confirmed official mapping "
        "(accuracy does not depend on the order; with compact, Part II's classifier has 41 outputs, as "
        "CRRL's)",
    )
    pku.add_argument(
        "--window",
        choices=WINDOWS,
        default="half-open",
        help="how a label line's start,end select frames: half-open (default) = 0-based [start, end), "
        "as CMD's converter (ISC lineage); inclusive = 1-based start..end, as the AimCLR-lineage "
        "pku_part{1,2}_skeleton.py that made the PKU files HiCo and HiCLR use",
    )
    pku.add_argument(
        "--class-map",
        help="with --classes compact: reuse this class_map.json (e.g. from the other split) instead of "
        "the ids found in LABEL_DIR, so that several conversions share one numbering",
    )

    pk = sub.add_parser(
        "pyskl", help="pyskl annotation pickle -> arrays (read without executing pickled code)"
    )
    pk.add_argument("pickle")
    pk.add_argument("out_dir")
    pk.add_argument("--train-split", required=True, help="e.g. xsub_train")
    pk.add_argument("--val-split", required=True, help="e.g. xsub_val")
    pk.add_argument("--normalization", choices=NORMALIZATIONS, default="none")
    return data


def run(args: argparse.Namespace) -> int:
    """Run the ``data`` subcommand parsed by ``add_parsers``; returns the exit status."""
    if args.data_command == "ntu":
        from skelfast.data.ntu_convert import convert_ntu

        res = convert_ntu(
            args.raw_dir, args.out_dir, dataset=args.dataset, missing_list=args.missing,
            normalization=args.normalization, bodies=args.bodies, workers=args.workers,
            progress=not args.quiet, keep_cache=args.keep_cache,
        )  # fmt: skip
        print(f"converted {res.converted_now} files now, skipped {len(res.skipped)} on the missing list")
        for k, n in res.sizes.items():
            print(f"  {res.out_dir / k}: {n} samples")
        return 0
    if args.data_command == "synthetic":
        from skelfast.data.synthetic import write_synthetic

        synth = write_synthetic(
            args.out_dir, args.samples, args.classes, args.seed, args.normalization,
            posture_std=args.posture_std, distortion=args.distortion,
        )  # fmt: skip
        where = f"{args.out_dir}/{{xsub,xview}}"
        print(f"wrote {len(synth.labels)} synthetic samples ({args.classes} classes) to {where}")
        return 0
    if args.data_command == "pku":
        from skelfast.data.pku_mmd import convert_pku

        res = convert_pku(
            args.skeleton_dir, args.label_dir, args.split_file, args.out_dir, args.normalization,
            classes=args.classes, class_map=args.class_map, window=args.window,
        )  # fmt: skip
        print(f"wrote {res.sizes} samples to {args.out_dir}")
        if res.class_ids is not None:
            print(f"  {len(res.class_ids)} classes, labels 0..{len(res.class_ids) - 1} = PKU-MMD ids "
                  f"{res.class_ids} (saved as {args.out_dir}/class_map.json)")  # fmt: skip
        return 0
    if args.data_command == "pyskl":
        from skelfast.data import normalize, pyskl, storage

        anno = pyskl.load_pyskl(args.pickle)
        for part, split in (("train", args.train_split), ("val", args.val_split)):
            data, num_frame, labels, names = pyskl.pyskl_to_arrays(anno, split)
            data, num_frame = normalize.normalize(data, num_frame, args.normalization)
            storage.save_split(args.out_dir, part, data, num_frame, labels, names)
            print(f"  {args.out_dir}/{part}: {len(labels)} samples")
        return 0
    print(f"unknown data command {args.data_command!r}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """``python -m skelfast.data.cli ...`` (the same as ``skelfast data ...``)."""
    parser = argparse.ArgumentParser(prog="skelfast")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
