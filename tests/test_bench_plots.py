"""benchmarks/plots.py: PNGs drawn from a hand-made results.csv (latest run per benchmark only)."""

from __future__ import annotations

import csv
import os

import matplotlib.image
import pytest

from benchmarks import plots

HEADER = ["date", "device", "torch", "benchmark", "case", "metric", "value"]
OLD, NEW = (
    ("2026-11-20 10:00", "cpu (2 threads)", "2.13.0+cpu"),
    ("2026-11-22 09:30", "cpu (2 threads)", "2.13.0+cpu"),
)


def _rows(who: tuple[str, str, str], benchmark: str, table: list[dict[str, object]]) -> list[list[object]]:
    """CSV rows as ``common.write_results`` writes them: one per (case, metric), case '' if absent."""
    out = []
    for row in table:
        for metric, value in row.items():
            if metric != "case":
                out.append([*who, benchmark, row.get("case", ""), metric, value])
    return out


def _graph_conv(speedup: float) -> list[dict[str, object]]:
    return [
        {"case": f"N=64 C={c}->{c} T=50", "fwd vs eager": speedup, "fwd+bwd vs eager": speedup / 2,
         "fwd+bwd vs compiled": 1.7, "of sgemm": 0.5, "peak vs eager": 0.25}
        for c in (16, 64)
    ]  # fmt: skip


def _write_csv(path: str) -> None:
    augment = [  # no 'case' column: rows are told apart by a repeated metric, labelled by 'recipe'
        {"recipe": "hico", "cpu path": "cpp", "vs numpy per-sample": 51.3, "vs eager reference": 23.2,
         "vs compiled reference": 4.04, "fraction of copy bandwidth": 0.45},
        {"recipe": "isc", "cpu path": "cpp", "vs numpy per-sample": 56.9, "vs eager reference": 22.6,
         "vs compiled reference": 3.68, "fraction of copy bandwidth": 0.51},
    ]  # fmt: skip
    methods = [{"method": "hiclr", "batch": 2, "x reference": 1.6, "fwd x reference": 1.8,
                "fwd x compiled": "n/a", "compiled reference fwd ms": "n/a (compile took > 180 s)",
                "peak vs reference": 0.4}]  # fmt: skip
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        writer.writerows(_rows(OLD, "graph_conv", _graph_conv(9.0)))
        writer.writerows(_rows(NEW, "graph_conv", _graph_conv(3.0)))
        writer.writerows(_rows(NEW, "augment", augment))
        writer.writerows(_rows(OLD, "methods", methods))
        writer.writerows(_rows(NEW, "mystery", [{"case": "a", "speed": 1.0}]))


def test_latest_runs_keeps_the_newest_date_and_rebuilds_the_table(tmp_path) -> None:  # noqa: ANN001
    path = str(tmp_path / "results.csv")
    _write_csv(path)
    runs = plots.latest_runs(path)
    assert set(runs) == {"graph_conv", "augment", "methods", "mystery"}
    graph_conv = runs["graph_conv"]
    assert graph_conv.date == NEW[0]
    # the older run's 9.0 must not leak in: only the two rows of the newest date
    assert [r["fwd vs eager"] for r in graph_conv.rows] == ["3.0", "3.0"]
    assert [r["case"] for r in graph_conv.rows] == ["N=64 C=16->16 T=50", "N=64 C=64->64 T=50"]
    augment = runs["augment"]
    assert [augment.label(r, plots.SPECS["augment"].label_metrics) for r in augment.rows] == [
        "hico, cpp",
        "isc, cpp",
    ]
    assert augment.rows[1]["vs eager reference"] == "22.6"
    assert runs["methods"].date == OLD[0]  # a benchmark's latest run may be older than another's


def test_latest_runs_keeps_older_rows_that_a_partial_run_did_not_measure(tmp_path) -> None:  # noqa: ANN001
    """A newer run of one case (``SKELFAST_BENCH_METHODS=isc``) replaces that case's row only; of
    two runs within one minute (one date), the later row is kept."""
    full = [{"method": m, "x reference": x} for m, x in (("hico", 1.3), ("isc", 1.1), ("crrl", 3.7))]
    partial = [{"method": "isc", "x reference": 1.2}]
    path = str(tmp_path / "results.csv")
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        writer.writerows(_rows(OLD, "methods", full))
        writer.writerows(_rows(NEW, "methods", partial))
        writer.writerows(_rows(NEW, "methods", [{"method": "isc", "x reference": 1.25}]))  # same minute
    run = plots.latest_runs(path)["methods"]
    assert [(r["method"], r["x reference"]) for r in run.rows] == [
        ("isc", "1.25"),
        ("hico", "1.3"),
        ("crrl", "3.7"),
    ]
    assert run.date == f"{NEW[0]}, {OLD[0]}"


def test_latest_runs_does_not_mix_devices(tmp_path) -> None:  # noqa: ANN001
    """Rows of an older run on another CPU stay out of the newest run's plot: the VM's CPU changes
    between sessions and the ratios with it."""
    other_cpu = (NEW[0], "Some Xeon [family 6 model 106, AVX-512] (2 threads)", NEW[2])
    path = str(tmp_path / "results.csv")
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        writer.writerows(_rows(OLD, "methods", [{"method": m, "x reference": 1.5} for m in ("hico", "isc")]))
        writer.writerows(_rows(other_cpu, "methods", [{"method": "isc", "x reference": 1.7}]))
    run = plots.latest_runs(path)["methods"]
    assert [(r["method"], r["x reference"]) for r in run.rows] == [("isc", "1.7")]
    assert (run.date, run.device) == (NEW[0], other_cpu[1])


def test_as_number_reads_leading_numbers_only() -> None:
    assert plots.as_number("1.47") == 1.47
    assert plots.as_number("519 samples/s") == 519.0
    assert plots.as_number("2.5e-3") == 2.5e-3
    assert plots.as_number("n/a (compile took > 180 s)") is None
    assert plots.as_number("") is None


def _assert_png(path: str) -> None:
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 300


def test_plots_main_writes_one_png_per_benchmark_and_skips_the_rest(tmp_path, capsys) -> None:  # noqa: ANN001
    path = str(tmp_path / "results.csv")
    _write_csv(path)
    out = tmp_path / "plots"
    written = plots.main(path, str(out))
    assert sorted(os.path.basename(p) for p in written) == ["augment.png", "graph_conv.png", "methods.png"]
    for p in written:
        _assert_png(p)
    assert sorted(os.listdir(out)) == ["augment.png", "graph_conv.png", "methods.png"]
    printed = capsys.readouterr().out
    for skipped in ("encoders", "info_nce", "moco", "data"):
        assert f"no rows for benchmark '{skipped}'" in printed
    assert "benchmark 'mystery' has no plot spec" in printed


def test_plots_main_without_a_csv_says_so(tmp_path, capsys) -> None:  # noqa: ANN001
    assert plots.main(str(tmp_path / "missing.csv"), str(tmp_path / "plots")) == []
    assert "does not exist" in capsys.readouterr().out
    assert not (tmp_path / "plots").exists()


@pytest.mark.parametrize("name", sorted(plots.SPECS))
def test_every_plotted_metric_is_a_column_its_benchmark_writes(name: str) -> None:
    # The CSV's metric names are each benchmark's row keys: a renamed column would silently drop a
    # series from the plot, so every name the spec reads must appear quoted in bench_<name>.py.
    source_path = os.path.join(os.path.dirname(plots.__file__), f"bench_{name}.py")
    with open(source_path) as f:
        source = f.read()
    spec = plots.SPECS[name]
    names = [s.metric for p in spec.panels for s in p.series] + list(spec.label_metrics)
    assert spec.panels and names
    missing = [m for m in names if f'"{m}"' not in source]
    assert not missing, f"bench_{name}.py writes no column {missing}"
