"""``make bench``: run every benchmark module's ``main()`` in one process, write the tables, then
redraw the plots (``benchmarks/results/plots/<name>.png``) from the accumulated CSV."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import benchmarks
from benchmarks import plots


def main(selected: list[str] | None = None) -> int:
    """Run the ``bench_*`` modules (all, or those named in ``selected``: ``graph_conv`` or
    ``bench_graph_conv``), then draw every benchmark's latest run as a PNG."""
    names = sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_"))
    if selected:
        short = {n.removeprefix("bench_") for n in names}
        unknown = [s for s in selected if s.removeprefix("bench_") not in short]
        if unknown:
            print(
                f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(sorted(short))}",
                file=sys.stderr,
            )
            return 2
        names = [n for n in names if n.removeprefix("bench_") in selected or n in selected]
    for name in names:
        print(f"== {name}", flush=True)
        importlib.import_module(f"benchmarks.{name}").main()
    print("== plots", flush=True)
    plots.main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
