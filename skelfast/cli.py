"""The ``skelfast`` command.

Each subcommand lives in its own module exposing ``add_parsers(subparsers)`` and ``run(args) -> int``;
those modules import torch and the heavy parts lazily, inside ``run``, so ``--help`` stays quick.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# subcommand modules, in the order ``skelfast --help`` lists them
COMMAND_MODULES = (
    "skelfast.engine.pretrain_cli",  # pretrain
    "skelfast.engine.eval_cli",  # eval {linear,knn,finetune,semi,retrieval}
    "skelfast.data.cli",  # data {ntu,pku,pyskl,synthetic}
    "skelfast.viz.cli",  # plot, show
    "skelfast.profiling",  # profile
)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``skelfast`` and ``python -m skelfast``."""
    parser = argparse.ArgumentParser(prog="skelfast", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, built and available backends, and why not")
    from skelfast import demo

    demo.add_arguments(
        sub.add_parser("demo", help="pretrain on built-in synthetic data and evaluate against random init")
    )
    bench = sub.add_parser("bench", help="run the benchmarks in benchmarks/ and write the tables")
    bench.add_argument("--op", action="append", help="only these benchmarks, e.g. graph_conv (default: all)")
    bench.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the benchmarks run")
    bench.add_argument(
        "--compile-report",
        action="store_true",
        help="compile every Triton kernel configuration for sm_80/sm_90 and print registers, spills, "
        "shared memory and the performance model (no GPU needed); non-zero exit on spills",
    )
    owners: dict[str, object] = {}
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name is None or not name.startswith(err.name):  # a real import bug: show it
                raise
            continue  # not written yet
        before = set(sub.choices)
        module.add_parsers(sub)
        for command in set(sub.choices) - before:
            owners[command] = module
    args = parser.parse_args(argv)
    if args.command != "info":
        from skelfast.engine.allocator import tune_cpu_allocator

        tune_cpu_allocator()  # freed activations stay mapped for the next step (see its docstring)

    if args.command == "info":
        from skelfast import info

        info.main()
    elif args.command == "demo":
        return demo.main(args)
    elif args.command == "bench":
        if args.compile_report:
            from skelfast import compile_report

            return compile_report.main([])
        if args.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                parser.error("--device cuda: torch sees no CUDA device (is this the CPU build of torch?)")
        os.environ["SKELFAST_BENCH_DEVICE"] = args.device
        from skelfast.checkout import NotACheckoutError, import_benchmarks

        try:
            import_benchmarks()
        except NotACheckoutError as err:
            parser.error(str(err))
        from benchmarks import run

        return run.main(args.op)
    else:
        return owners[args.command].run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
