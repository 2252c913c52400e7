"""``make bench``: run every benchmark module's ``main()``, each in a process of its own, write the
tables, then redraw the plots (``benchmarks/results/plots/<name>.png``) from the accumulated CSV."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import benchmarks
from benchmarks import plots
from benchmarks.common import ChildFailed, run_in_child


def run_module(name: str) -> None:
    """``benchmarks.<name>.main()``: the body of one benchmark's child process."""
    importlib.import_module(f"benchmarks.{name}").main()


def main(selected: list[str] | None = None) -> int:
    """Run the ``bench_*`` modules (all, or those named in ``selected``: ``graph_conv`` or
    ``bench_graph_conv``), each in a fresh process (``run_in_child``: one benchmark's memory and
    compile caches do not carry into the next), then draw every benchmark's latest run as a PNG.
    A benchmark that fails or is killed is reported and the others still run; the exit status is
    then 1."""
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
    failed = []
    for name in names:
        print(f"== {name}", flush=True)
        try:
            run_in_child(run_module, name)
        except ChildFailed as error:
            print(f"== {name} FAILED: {error}", file=sys.stderr, flush=True)
            failed.append(name)
    print("== plots", flush=True)
    plots.main()
    if failed:
        print(f"benchmarks that did not finish: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
