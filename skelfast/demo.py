"""``make demo`` / ``skelfast demo``: pretrain a method on the built-in synthetic data for a few
minutes on this machine, then evaluate it (kNN and linear) against the same encoder at random init.

Each method's demo recipe is ``skelfast/configs/<method>_demo.toml``: its official config (``base``)
with every quirk and loss as released, the sizes scaled to a 2-core CPU (encoder widths, batch,
queue, epochs) and the synthetic dataset of its ``[data]`` table; where a recipe departs from the
official one (views, dropout, learning rate, a quirk switch), its header names the option and the
runs that argue it. ``--method all --write-results`` runs the four
and writes ``benchmarks/results/pretrain_quality.md``, the README's table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

DEMO_METHODS = ("hiclr", "hico", "isc", "crrl")
PROTOCOLS = ("knn", "linear")


def _encoders(run: Path, config: dict[str, Any]) -> dict[str, Any]:
    """The pretrained feature encoder of a run and the same architecture at random init (drawn
    with the run's seed, as the pretraining drew its initial weights)."""
    import torch

    from skelfast.engine.checkpoint import load_checkpoint
    from skelfast.methods import build_method

    state = load_checkpoint(run / "checkpoint_last.pt")
    trained = build_method(state["config"]["method"], state["config"].get("model"))
    trained.load_state_dict(state["method"])
    torch.manual_seed(int(config.get("train", {}).get("seed", 0)))
    untrained = build_method(config["method"], config.get("model"))
    untrained.set_stage(untrained.stages()[-1])
    return {"pretrained": trained.feature_encoder(), "random init": untrained.feature_encoder()}


def pretrain_minutes(run: Path, config: dict[str, Any]) -> float:
    """The run's training time from its ``metrics.csv`` (the sum of its steps' times), so a demo that
    resumed a killed or finished run still reports the whole pretraining."""
    from skelfast.engine.metrics import read_metrics
    from skelfast.engine.pretrain import stage_train_config

    rows = read_metrics(run / "metrics.csv")
    stages = list(dict.fromkeys(r["stage"] for r in rows))
    batch = {s: int(stage_train_config(config, s, stages)["batch_size"]) for s in stages}
    return sum(batch[r["stage"]] / float(r["samples_per_s"]) for r in rows) / 60


def run_demo(
    method: str, out: str | Path | None = None, overrides: list[str] | None = None, progress: bool = True
) -> list[dict[str, Any]]:
    """Pretrain ``method`` with its demo config on synthetic data, evaluate kNN and linear for the
    pretrained and the random-init encoder; returns one row per (encoder, protocol)."""
    from skelfast.configs import load_config
    from skelfast.data.datasets import SkeletonDataset
    from skelfast.engine.evaluation import evaluate
    from skelfast.engine.pretrain import pretrain
    from skelfast.engine.synthetic_data import synthetic_split_dir

    config = load_config(f"{method}_demo", overrides)
    out = Path(out) if out is not None else Path("runs") / f"demo-{method}-{time.strftime('%Y%m%d-%H%M%S')}"
    run = pretrain(
        config, data=None, out=out, resume=(out / "checkpoint_last.pt").exists(), progress=progress
    )
    minutes = pretrain_minutes(run, config)
    folder = synthetic_split_dir(config.get("data"), quiet=True)
    train, test = SkeletonDataset.from_split(folder, "train"), SkeletonDataset.from_split(folder, "val")
    rows = []
    for name, encoder in _encoders(run, config).items():
        for protocol in PROTOCOLS:
            settings = config.get("eval", {}).get(protocol)
            sub = "eval" if name == "pretrained" else "eval/random-init"
            record = evaluate(protocol, encoder, train, test, settings, run / sub, progress=progress)
            rec = record[protocol]
            rows.append(
                {
                    "method": method,
                    "encoder": name,
                    "protocol": protocol,
                    "accuracy": rec["accuracy_official"],
                    "reports": rec["official_reports"],
                    "pretrain minutes": round(minutes, 1),
                }
            )
    return rows


def _summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per method: each protocol's pretrained and random-init accuracy and the gain."""
    table = []
    for method in dict.fromkeys(r["method"] for r in rows):
        line: dict[str, Any] = {"method": method}
        for protocol in PROTOCOLS:
            acc = {
                r["encoder"]: r["accuracy"]
                for r in rows
                if r["method"] == method and r["protocol"] == protocol
            }
            line[f"{protocol} pretrained"] = round(acc["pretrained"], 1)
            line[f"{protocol} random init"] = round(acc["random init"], 1)
            line[f"{protocol} gain"] = round(acc["pretrained"] - acc["random init"], 1)
        line["pretrain minutes"] = next(r["pretrain minutes"] for r in rows if r["method"] == method)
        line["target (gain >= 15) met"] = "yes" if all(line[f"{p} gain"] >= 15 for p in PROTOCOLS) else "no"
        table.append(line)
    return table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--method", default="hico", choices=(*DEMO_METHODS, "all"), help="which method (default: hico)"
    )
    parser.add_argument(
        "--out", help="run folder (default runs/demo-<method>-<time>); --method all: a parent"
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument(
        "--write-results",
        action="store_true",
        help="write the table to benchmarks/results/pretrain_quality.md (source checkout only)",
    )


def main(args: argparse.Namespace | None = None) -> int:
    """Run the demo (see the module docstring) and print the table."""
    from skelfast import info

    if args is None:
        parser = argparse.ArgumentParser(prog="skelfast demo")
        add_arguments(parser)
        args = parser.parse_args([])
    if args.write_results:  # before the pretraining: a finished run must be able to write its table
        from skelfast.checkout import import_benchmarks

        import_benchmarks()
    print(", ".join(f"{k} {v}" for k, v in info.report()[:3]), flush=True)
    methods = DEMO_METHODS if args.method == "all" else (args.method,)
    rows: list[dict[str, Any]] = []
    for method in methods:
        out = None
        if args.out:
            out = Path(args.out) / method if args.method == "all" else Path(args.out)
        print(f"== {method}: pretraining with skelfast/configs/{method}_demo.toml", flush=True)
        rows += run_demo(method, out, args.set)
    table = _summary(rows)
    keys = list(table[0])
    print("\n".join([" | ".join(keys)] + [" | ".join(str(r[k]) for k in keys) for r in table]))
    if args.write_results:
        from benchmarks.common import write_results

        write_results(
            "pretrain_quality",
            table,
            note="kNN (k=1 cosine) and linear accuracy (%) on the synthetic dataset's val split after "
            "`skelfast demo --method all` (configs `skelfast/configs/<method>_demo.toml`), against the same "
            "encoder at random init. Target: every method at least 15 points above random init.",
        )
    return 0
