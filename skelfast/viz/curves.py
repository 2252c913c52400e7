"""Training curves of a run folder: loss (and each loss term), learning rate, throughput, accuracy.

Reads ``RUN/metrics.csv`` (``stage,epoch,step,loss,lr,samples_per_s,<term columns>``) and
``RUN/eval/*.json`` (``accuracy_last``, ``accuracy_best``, ``history: [{epoch, accuracy}]``) and writes
PNGs. Nothing in a run folder is trusted to be complete: a missing file, a row with NaN or empty
values, or an unreadable eval file is skipped and said so in ``PlotReport.skipped``.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FIXED_COLUMNS = ("stage", "epoch", "step", "loss", "lr", "samples_per_s")


@dataclass
class PlotReport:
    """What ``plot_run`` wrote and what it left out (one readable line per skip)."""

    written: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


@dataclass
class Metrics:
    """``metrics.csv`` as columns: ``stage`` (R,) strings, every other column (R,) float64 (NaN where
    the value is empty or not a number)."""

    stage: list[str]
    columns: dict[str, np.ndarray]

    @property
    def terms(self) -> list[str]:
        """The loss-term columns (everything after the fixed ones), in file order."""
        return [c for c in self.columns if c not in FIXED_COLUMNS]


def _number(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def read_metrics(path: str | Path) -> Metrics:
    """Parse a ``metrics.csv``; raises ``ValueError`` naming the file if it lacks the step or loss column."""
    path = Path(path)
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in ("step", "loss") if c not in header]
        if missing:
            raise ValueError(f"{path}: no {' or '.join(missing)} column (header: {header})")
        rows = [{(k or "").strip(): v for k, v in row.items()} for row in reader]
    stage = [(row.get("stage") or "").strip() or "train" for row in rows]
    numeric = [h for h in header if h != "stage"]
    columns = {h: np.array([_number(row.get(h)) for row in rows], dtype=np.float64) for h in numeric}
    return Metrics(stage, columns)


def _new_figure(rows: int = 1, height: float = 2.6) -> tuple[object, list[object]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, height * rows), dpi=100)
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(rows, 1, 1)]
    axes += [fig.add_subplot(rows, 1, i + 1, sharex=axes[0]) for i in range(1, rows)]  # steps line up
    return fig, axes


def _save(fig: object, path: Path, report: PlotReport) -> None:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    report.written.append(path)


def _curve(ax: object, metrics: Metrics, column: str) -> int:
    """Plot ``column`` against ``step``, one line per stage; returns how many points were drawn."""
    step, values = metrics.columns["step"], metrics.columns[column]
    stages = np.array(metrics.stage)
    drawn = 0
    for i, name in enumerate(dict.fromkeys(metrics.stage)):  # stages in order of appearance
        keep = (stages == name) & np.isfinite(step) & np.isfinite(values)
        if keep.any():  # a stage keeps its colour in every panel
            marker = "." if keep.sum() < 30 else None
            ax.plot(step[keep], values[keep], lw=1.2, marker=marker, color=f"C{i}", label=name)
            drawn += int(keep.sum())
    ax.set_ylabel(column)
    ax.grid(alpha=0.3)
    if len(set(metrics.stage)) > 1:
        ax.legend(fontsize=7, title="stage", title_fontsize=7)
    return drawn


def _note_gaps(metrics: Metrics, column: str, report: PlotReport) -> None:
    """Report the rows left out of ``column``'s curve, within the stages that log it (a term of
    one stage only, like CRRL's reconstruction terms, is empty in the others by design)."""
    values, stages = metrics.columns[column], np.array(metrics.stage)
    logged = np.isin(stages, np.unique(stages[np.isfinite(values)]))
    bad = int((logged & (~np.isfinite(values) | ~np.isfinite(metrics.columns["step"]))).sum())
    if bad:
        report.skipped.append(f"metrics.csv: {bad} row(s) with NaN or missing {column!r} (or step) not drawn")


def plot_metrics(metrics: Metrics, out_dir: Path, report: PlotReport) -> None:
    """loss.png (loss and one panel per term), lr.png, throughput.png from parsed metrics."""
    panels = [c for c in ("loss", *metrics.terms) if np.isfinite(metrics.columns[c]).any()]
    for c in ("loss", *metrics.terms):
        if c not in panels:
            report.skipped.append(f"metrics.csv: column {c!r} has no finite value, not drawn")
    if panels:
        fig, axes = _new_figure(len(panels), height=2.0 if len(panels) > 1 else 2.6)
        for ax, column in zip(axes, panels, strict=True):
            _curve(ax, metrics, column)
            _note_gaps(metrics, column, report)
        axes[0].set_title("training loss" + (" and its terms" if len(panels) > 1 else ""))
        axes[-1].set_xlabel("optimizer step")
        _save(fig, out_dir / "loss.png", report)
    for column, name, title in (
        ("lr", "lr.png", "learning rate"),
        ("samples_per_s", "throughput.png", "throughput"),
    ):
        if column not in metrics.columns:
            report.skipped.append(f"metrics.csv: no {column!r} column, {name} not written")
            continue
        if not np.isfinite(metrics.columns[column]).any():
            report.skipped.append(f"metrics.csv: column {column!r} has no finite value, {name} not written")
            continue
        fig, (ax,) = _new_figure()
        _curve(ax, metrics, column)
        _note_gaps(metrics, column, report)
        ax.set_title(title + (" (samples/s)" if column == "samples_per_s" else ""))
        ax.set_xlabel("optimizer step")
        _save(fig, out_dir / name, report)


def read_evals(eval_dir: Path, report: PlotReport) -> dict[str, dict]:
    """Every ``*.json`` under ``eval/`` (``random-init/`` baselines included), by path without the
    suffix (``knn``, ``random-init/knn``); an unreadable or malformed file is skipped with a note."""
    out: dict[str, dict] = {}
    for path in sorted(eval_dir.rglob("*.json")):
        name = path.relative_to(eval_dir).with_suffix("").as_posix()
        try:
            result = json.loads(path.read_text())
            if not isinstance(result, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as err:
            report.skipped.append(f"eval/{name}.json: unreadable ({err}), not drawn")
            continue
        out[name] = result
    return out


def _history(name: str, result: dict, report: PlotReport) -> tuple[np.ndarray, np.ndarray] | None:
    """(epochs, accuracies) of a result's per-epoch history; entries without an epoch (a protocol
    with no training epochs, as kNN) are its final result, not curve points."""
    history = [h for h in result.get("history") or [] if isinstance(h, dict) and h.get("epoch") is not None]
    points = [(_number(h.get("epoch")), _number(h.get("accuracy"))) for h in history]
    points = [(e, a) for e, a in points if math.isfinite(e) and math.isfinite(a)]
    if len(points) < len(history):
        report.skipped.append(
            f"eval/{name}: {len(history) - len(points)} history entr(y/ies) with NaN or missing accuracy not drawn"
        )
    return tuple(np.array(points).T) if points else None


def plot_accuracy(evals: dict[str, dict], out_dir: Path, report: PlotReport) -> None:
    """accuracy.png: each protocol's per-epoch accuracy (its best circled) where it has a history,
    and a bar chart of every result's last and best accuracy (baselines next to the pretrained)."""
    curves, summary = {}, {}
    for name, result in evals.items():
        history = _history(name, result, report)
        if history is not None:
            curves[name] = history
        last, best = _number(result.get("accuracy_last")), _number(result.get("accuracy_best"))
        if math.isfinite(last) or math.isfinite(best):
            summary[name] = (last, best)
        elif history is None:
            report.skipped.append(f"eval/{name}: no accuracy (last, best or history) to draw")
    if not curves and not summary:
        report.skipped.append("eval: no accuracy to draw, accuracy.png not written")
        return
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = int(bool(curves)) + int(bool(summary))
    fig = Figure(figsize=(5.6 * panels, max(3.2, 0.3 * len(summary) + 1.2)), dpi=100)
    FigureCanvasAgg(fig)
    if curves:
        ax = fig.add_subplot(1, panels, 1)
        for name, (epochs, acc) in curves.items():
            line = ax.plot(epochs, acc, marker=".", lw=1.2, label=name)[0]
            i = int(np.argmax(acc))
            ax.scatter([epochs[i]], [acc[i]], s=40, facecolors="none", edgecolors=line.get_color(), zorder=3)
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy")
        ax.set_title("accuracy per epoch (circle: best)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if summary:
        ax = fig.add_subplot(1, panels, panels)
        names = list(summary)
        rows = np.arange(len(names))
        last, best = np.array([summary[n] for n in names]).T
        ax.barh(rows + 0.2, np.nan_to_num(best), height=0.4, color="C1", label="best")
        ax.barh(rows - 0.2, np.nan_to_num(last), height=0.4, color="C0", label="last")
        for r, value in [*zip(rows + 0.2, best, strict=True), *zip(rows - 0.2, last, strict=True)]:
            if math.isfinite(value):
                ax.text(value, r, f" {value:.4g}", va="center", fontsize=7)
        ax.set_yticks(rows, names, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("accuracy")
        ax.set_title("final accuracy per protocol", fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
        ax.margins(x=0.15)
    _save(fig, out_dir / "accuracy.png", report)


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None) -> PlotReport:
    """Draw every curve a run folder has into ``out_dir`` (default ``RUN/plots``).

    Raises ``FileNotFoundError`` when ``run_dir`` is not a folder; everything else missing is skipped
    and reported.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder not found: {run_dir}")
    out = Path(out_dir) if out_dir is not None else run_dir / "plots"
    report = PlotReport()
    metrics_path = run_dir / "metrics.csv"
    if metrics_path.exists():
        try:
            metrics = read_metrics(metrics_path)
        except (OSError, ValueError, csv.Error) as err:
            report.skipped.append(f"metrics.csv unreadable ({err}): loss, lr and throughput not drawn")
        else:
            if metrics.stage:
                plot_metrics(metrics, out, report)
            else:
                report.skipped.append("metrics.csv has no rows: loss, lr and throughput not drawn")
    else:
        report.skipped.append(f"no {metrics_path}: loss, lr and throughput not drawn")
    eval_dir = run_dir / "eval"
    if eval_dir.is_dir():
        evals = read_evals(eval_dir, report)
        if evals:
            plot_accuracy(evals, out, report)
        else:
            report.skipped.append(f"{eval_dir} holds no readable *.json: accuracy not drawn")
    else:
        report.skipped.append(f"no {eval_dir} folder: accuracy not drawn")
    return report
