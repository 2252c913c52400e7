"""Plots of the latest benchmark run: one PNG per benchmark from ``results/results.csv``.

Each benchmark's latest rows (its newest run, plus older rows of cases no newer run measured)
become horizontal bar charts: the speed-up ratios per case with a dashed line at each issue target
(#9), and, where the table has them, the fraction of the machine limit measured in the same run
(sgemm or copy) and peak-memory ratios. The CSV's metric names differ per benchmark, so each
benchmark maps them explicitly in ``SPECS``; a benchmark without a spec or without rows is skipped with a message.

Run: ``python -m benchmarks.plots`` (``make bench`` runs it after the benchmarks).
"""

from __future__ import annotations

import csv
import math
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks.common import RESULTS_DIR  # noqa: E402


@dataclass(frozen=True)
class Series:
    """One metric column drawn as bars: its CSV name, its legend label and its issue targets
    (value, label) drawn as dashed lines in its colour."""

    metric: str
    label: str
    targets: tuple[tuple[float, str], ...] = ()


@dataclass(frozen=True)
class Panel:
    """One bar chart: its x-axis title, its series, and whether lower values are better."""

    title: str
    series: tuple[Series, ...]
    lower_is_better: bool = False
    parity: float | None = 1.0  # the grey "as fast as the baseline" line


@dataclass(frozen=True)
class PlotSpec:
    """How one benchmark's table is drawn: the columns naming a case (besides ``case``) and its panels."""

    title: str
    label_metrics: tuple[str, ...] = ()
    panels: tuple[Panel, ...] = field(default_factory=tuple)


def _ge(x: float) -> str:
    return f">= {x:g}x"


SPECS: dict[str, PlotSpec] = {
    "graph_conv": PlotSpec(
        "graph convolution (skelfast op vs the reference einsum)",
        panels=(
            Panel(
                "speed-up (x faster)",
                (
                    Series("fwd vs eager", "fwd vs eager"),
                    Series("fwd vs compiled", "fwd vs compiled"),
                    Series("fwd+bwd vs eager", "fwd+bwd vs eager", ((2.0, _ge(2)),)),
                    Series("fwd+bwd vs compiled", "fwd+bwd vs compiled", ((1.5, _ge(1.5)),)),
                ),
            ),
            Panel(
                "fraction of sgemm",
                (Series("of sgemm", "fwd+bwd of sgemm", ((0.5, ">= 0.5"),)),),
                parity=None,
            ),
            Panel(
                "peak memory / eager",
                (Series("peak vs eager", "peak vs eager", ((0.5, "<= 0.5"),)),),
                lower_is_better=True,
            ),
        ),
    ),
    "augment": PlotSpec(
        "batched augmentation (skelfast op vs per-sample and batched references)",
        label_metrics=("recipe", "cpu path", "path"),
        panels=(
            Panel(
                "speed-up (x faster)",
                (
                    Series("vs numpy per-sample", "vs numpy per-sample", ((30.0, _ge(30)),)),
                    Series("vs eager reference", "vs eager", ((2.0, _ge(2)),)),
                    Series("vs compiled reference", "vs compiled", ((1.3, _ge(1.3)),)),
                ),
            ),
            Panel(
                "fraction of copy bandwidth",
                (Series("fraction of copy bandwidth", "of copy", ((0.4, ">= 0.4"),)),),
                parity=None,
            ),
        ),
    ),
    "info_nce": PlotSpec(
        "multi-level InfoNCE, forward+backward",
        panels=(
            Panel(
                "speed-up (x faster)",
                (
                    Series("vs eager", "vs eager", ((1.0, _ge(1)), (1.5, ">= 1.5x (HiCLR)"))),
                    Series("vs compiled", "vs compiled", ((1.0, _ge(1)),)),
                ),
            ),
            Panel("fraction of sgemm", (Series("of sgemm", "of sgemm"),), parity=None),
            Panel(
                "peak memory / eager",
                (Series("peak vs eager", "peak vs eager", ((1 / 8, "<= 1/8"),)),),
                lower_is_better=True,
            ),
        ),
    ),
    "encoders": PlotSpec(
        "encoders, forward+backward",
        label_metrics=("encoder",),
        panels=(
            Panel(
                "speed-up (x faster)",
                (
                    Series("x official", "vs official", ((2.0, _ge(2)),)),
                    Series("x compiled", "vs compiled", ((1.5, _ge(1.5)),)),
                    Series("attainable x official", "attainable vs official (oneDNN temporal convs)"),
                ),
            ),
            Panel("fraction of sgemm", (Series("sgemm fraction", "of sgemm"),), parity=None),
        ),
    ),
    "moco": PlotSpec(
        "momentum update of the key encoder",
        panels=(
            Panel(
                "speed-up (x faster)",
                (Series("vs loop", "vs per-tensor loop"), Series("vs compiled", "vs compiled loop")),
            ),
            Panel("fraction of copy bandwidth", (Series("of copy", "of copy"),), parity=None),
        ),
    ),
    "methods": PlotSpec(
        "pretraining step, fused ops vs all-reference ops",
        label_metrics=("method",),
        panels=(
            Panel(
                "speed-up (x faster)",
                (
                    Series(
                        "x reference",
                        "step vs reference",
                        ((1.5, ">= 1.5x (HiCLR, ISC)"), (1.2, ">= 1.2x (HiCo, CRRL)")),
                    ),
                    Series("fwd x reference", "fwd vs reference"),
                    Series("fwd x compiled", "fwd vs compiled reference"),
                    Series("attainable x reference", "attainable step (oneDNN convolutions, rest at sgemm)"),
                ),
            ),
            Panel(
                "peak memory / reference",
                (Series("peak vs reference", "step peak vs reference"),),
                lower_is_better=True,
            ),
        ),
    ),
    "gru": PlotSpec(
        "GRU over padded variable-length sequences (skelfast op vs nn.GRU)",
        label_metrics=("shape",),
        panels=(
            Panel(
                "speed-up (x faster)",
                (Series("fwd vs nn.GRU", "fwd vs nn.GRU"), Series("fwd+bwd vs nn.GRU", "fwd+bwd vs nn.GRU")),
            ),
            Panel("fraction of sgemm", (Series("of sgemm", "fwd+bwd of sgemm"),), parity=None),
        ),
    ),
    "temporal_conv": PlotSpec(
        "temporal conv (frequency form vs oneDNN)",
        panels=(Panel("speed-up (x faster)", (Series("x direct", "fwd+bwd x direct"),)),),
    ),
    "dropout": PlotSpec(
        "dropout (seeded Philox kernel vs F.dropout)",
        panels=(
            Panel(
                "speed-up (x faster)", (Series("vs eager", "vs eager"), Series("vs compiled", "vs compiled"))
            ),
            Panel("fraction of copy bandwidth", (Series("of copy", "fwd+bwd of copy"),), parity=None),
        ),
    ),
    "data": PlotSpec(
        "data pipeline throughput (items/s)",
        panels=(Panel("throughput (per s)", (Series("throughput", "throughput"),), parity=None),),
    ),
}


@dataclass
class Run:
    """One benchmark's latest run: who measured and its table (one dict per case, metric -> text)."""

    benchmark: str
    date: str
    device: str
    torch: str
    rows: list[dict[str, str]]

    def label(self, row: dict[str, str], label_metrics: Sequence[str]) -> str:
        parts = [row[m] for m in ("case", *label_metrics) if row.get(m)]
        return ", ".join(parts) or "?"


def _row_key(row: dict[str, str]) -> str:
    """What names a table row across runs: its case, else its first column (augment's ``recipe``,
    methods' ``method``)."""
    return row["case"] or next((v for k, v in row.items() if k != "case"), "")


def latest_runs(csv_path: str) -> dict[str, Run]:
    """Each benchmark's latest rows in ``csv_path``: its newest run (the rows sharing its newest
    date), and from older runs on the same device the rows that no newer run measured again, so a
    run of some cases (``SKELFAST_BENCH_METHODS=isc``) does not hide the others, while one plot never
    mixes two machines' ratios; ``Run.date`` lists the dates used, newest first. Tables are rebuilt
    from the records: a new row starts where the case changes or a metric repeats (tables without a
    ``case`` column, e.g. augment's ``recipe``, write every row with an empty case)."""
    with open(csv_path, newline="") as f:
        records = list(csv.DictReader(f))
    by_date: dict[str, dict[str, Run]] = {}  # benchmark -> date -> that run's table
    for r in records:
        run = by_date.setdefault(r["benchmark"], {}).setdefault(
            r["date"], Run(r["benchmark"], r["date"], r["device"], r["torch"], [])
        )
        row = run.rows[-1] if run.rows else None
        if row is None or row["case"] != r["case"] or r["metric"] in row:
            row = {"case": r["case"]}
            run.rows.append(row)
        row[r["metric"]] = r["value"]
    runs: dict[str, Run] = {}
    for name, dated in by_date.items():
        for run in dated.values():  # runs within one minute share a date: keep each case's last row
            last = {_row_key(r): r for r in run.rows}
            run.rows = [r for r in run.rows if last[_row_key(r)] is r]
        ordered = [dated[d] for d in sorted(dated, reverse=True)]  # "YYYY-MM-DD HH:MM" sorts as text
        merged = Run(name, ordered[0].date, ordered[0].device, ordered[0].torch, list(ordered[0].rows))
        seen, dates = {_row_key(r) for r in merged.rows}, [ordered[0].date]
        for older in (run for run in ordered[1:] if run.device == merged.device):
            new_rows = [r for r in older.rows if _row_key(r) not in seen]
            if new_rows:
                merged.rows.extend(new_rows)
                seen.update(_row_key(r) for r in new_rows)
                dates.append(older.date)
        merged.date = ", ".join(dates)
        runs[name] = merged
    return runs


_NUMBER = re.compile(r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def as_number(text: str | None) -> float | None:
    """The number a cell starts with ("1.47", "519 samples/s"), None for "n/a (...)" or empty."""
    match = _NUMBER.match(text or "")
    return float(match.group(0)) if match else None


def _annotation(text: str, value: float) -> str:
    """The bar's label: the cell itself where it carries a unit ("519 samples/s"), else the number."""
    if re.search(r"[A-Za-z/]", _NUMBER.sub("", text, count=1)):
        return text.strip()
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def _draw_panel(
    ax: plt.Axes, legend_ax: plt.Axes, panel: Panel, labels: list[str], rows: list[dict[str, str]]
) -> bool:
    """Grouped horizontal bars on ``ax``, one group per case, their legend on ``legend_ax`` (below
    it); returns False when no series is in the table."""
    present = [s for s in panel.series if any(s.metric in row for row in rows)]
    if not present:
        return False
    height = 0.8 / len(present)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    values_all: list[float] = []
    for i, series in enumerate(present):
        color = colors[i % len(colors)]
        for j, row in enumerate(rows):
            y = j + (i - (len(present) - 1) / 2) * height
            value = as_number(row.get(series.metric))
            if value is None:
                if series.metric in row:  # measured but not a number: say so on the chart
                    ax.text(
                        0,
                        y,
                        f" {series.label}: n/a",
                        va="center",
                        fontsize=7,
                        color=color,
                        transform=ax.get_yaxis_transform(),
                    )
                continue
            values_all.append(value)
            ax.barh(y, value, height=height, color=color, label=series.label if j == 0 else None)
            ax.text(value, y, " " + _annotation(row[series.metric], value), va="center", fontsize=7)
        for (target, text), style in zip(series.targets, ("--", ":", "-."), strict=False):
            ax.axvline(target, color=color, linestyle=style, linewidth=1.2, label=f"target {text}")
            values_all.append(target)
    if panel.parity is not None:
        ax.axvline(panel.parity, color="grey", linewidth=0.8)
    positive = [v for v in values_all if v > 0]
    if positive and max(positive) / min(positive) > 30:  # e.g. augment: 2x to 50x on one axis
        ax.set_xscale("log")
    ax.set_xlim(right=max(values_all, default=1.0) * (2.0 if ax.get_xscale() == "log" else 1.2))
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.set_ylim(len(rows) - 0.5, -0.5)  # first case on top, as in the table (axes share y)
    ax.set_xlabel(panel.title + (" (lower is better)" if panel.lower_is_better else ""))
    legend_ax.axis("off")
    legend_ax.legend(*ax.get_legend_handles_labels(), fontsize=7, loc="upper center", ncol=2)
    ax.grid(axis="x", alpha=0.3)
    return True


def plot_run(run: Run, spec: PlotSpec, path: str) -> bool:
    """Draw ``run`` as ``spec`` says into the PNG at ``path``; False (nothing written) when none of
    the spec's metrics is in the table."""
    panels = [p for p in spec.panels if any(s.metric in row for s in p.series for row in run.rows)]
    if not panels:
        return False
    labels = [run.label(row, spec.label_metrics) for row in run.rows]
    bars_height = 0.6 + 0.35 * len(run.rows) * max(1, max(len(p.series) for p in panels) // 2)
    legend_entries = max(sum(1 + len(s.targets) for s in p.series) for p in panels)
    legend_height = 0.2 + 0.2 * math.ceil(legend_entries / 2)  # two columns of ~0.2 in per line
    widths = [2.0 if i == 0 and len(panels) > 1 else 1.0 for i in range(len(panels))]
    fig, grid = plt.subplots(
        2,
        len(panels),
        figsize=(4.5 * sum(widths), 1.2 + bars_height + legend_height),
        sharey="row",
        squeeze=False,
        gridspec_kw={"width_ratios": widths, "height_ratios": [bars_height, legend_height]},
    )
    for column, panel in enumerate(panels):
        _draw_panel(grid[0][column], grid[1][column], panel, labels, run.rows)
    fig.suptitle(
        f"{run.benchmark}: {spec.title}\n{run.device}, torch {run.torch}\n{run.date} UTC", fontsize=10
    )
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(csv_path: str | None = None, out_dir: str | None = None) -> list[str]:
    """Draw ``<out_dir>/<benchmark>.png`` for every benchmark with a spec and rows in ``csv_path``
    (default ``benchmarks/results/results.csv`` -> ``benchmarks/results/plots``); returns the paths."""
    csv_path = csv_path or os.path.join(RESULTS_DIR, "results.csv")
    out_dir = out_dir or os.path.join(os.path.dirname(os.path.abspath(csv_path)), "plots")
    if not os.path.exists(csv_path):
        print(f"plots: {csv_path} does not exist (run `make bench` first); nothing drawn")
        return []
    runs = latest_runs(csv_path)
    written = []
    for name, spec in SPECS.items():
        run = runs.get(name)
        if run is None or not run.rows:
            print(f"plots: no rows for benchmark {name!r} in {csv_path}; skipped")
            continue
        path = os.path.join(out_dir, f"{name}.png")
        if plot_run(run, spec, path):
            print(f"plots: {path}")
            written.append(path)
        else:
            print(f"plots: the latest {name!r} run ({run.date}) has none of the plotted metrics; skipped")
    for name in sorted(set(runs) - set(SPECS)):
        print(f"plots: benchmark {name!r} has no plot spec in benchmarks/plots.py; skipped")
    return written


if __name__ == "__main__":
    main(*sys.argv[1:3])
    sys.exit(0)
