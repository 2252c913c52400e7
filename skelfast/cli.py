"""The ``skelfast`` command."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``skelfast`` and ``python -m skelfast``."""
    parser = argparse.ArgumentParser(prog="skelfast", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, built and available backends, and why not")
    sub.add_parser("demo", help="a short end-to-end demonstration on built-in synthetic data")
    bench = sub.add_parser("bench", help="run the benchmarks in benchmarks/ and write the tables")
    bench.add_argument("--op", action="append", help="only these benchmarks, e.g. graph_conv (default: all)")
    from skelfast.data import cli as data_cli  # numpy-only imports: cheap

    data_cli.add_parsers(sub)
    args = parser.parse_args(argv)

    if args.command == "info":
        from skelfast import info

        info.main()
    elif args.command == "demo":
        from skelfast import demo

        demo.main()
    elif args.command == "data":
        return data_cli.run(args)
    elif args.command == "bench":
        try:
            from benchmarks import run
        except ImportError:
            parser.error("the benchmarks live in the source checkout: run `make bench` from its root")
        return run.main(args.op)
    return 0


if __name__ == "__main__":
    sys.exit(main())
