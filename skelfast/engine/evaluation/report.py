"""``RUN/eval/<protocol>.json``: what a protocol measured, with what, on what; and a short table.

The record: ``protocol``, ``accuracy_last``, ``accuracy_best``, ``best_epoch`` (1-based; null for
the single-pass protocols), ``official_reports`` ("best" or "last": which of the two the official
code prints), ``accuracy_official`` (that one), ``history`` (one row per evaluated epoch),
``metrics`` (protocol-specific numbers), ``settings`` (everything the protocol ran with),
``dataset`` (where train and test came from, sizes, classes) and ``encoder`` (method, checkpoint,
or random init).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, TextIO

from skelfast.data.storage import atomic_path
from skelfast.engine.evaluation.common import ProtocolResult

REPORT_FORMAT = "skelfast-eval-1"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN
    if isinstance(value, Path):
        return str(value)
    return value


def report_record(
    result: ProtocolResult,
    settings: dict[str, Any],
    dataset: dict[str, Any] | None = None,
    encoder: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON-ready record of one protocol run (see the module docstring)."""
    return _jsonable(
        {
            "format": REPORT_FORMAT,
            "protocol": result.protocol,
            "accuracy_last": result.accuracy_last,
            "accuracy_best": result.accuracy_best,
            "best_epoch": result.best_epoch,
            "official_reports": result.official_reports,
            "accuracy_official": result.accuracy_official,
            "history": result.history,
            "metrics": result.metrics,
            "settings": settings,
            "dataset": dataset or {},
            "encoder": encoder or {},
        }
    )


def write_report(out_dir: str | Path, record: dict[str, Any]) -> Path:
    """Write ``out_dir/<protocol>.json`` atomically; returns its path."""
    path = Path(out_dir) / f"{record['protocol']}.json"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n")
    return path


def format_table(records: list[dict[str, Any]]) -> str:
    """A short text table: protocol, last, best (epoch), the official one, extra metrics."""
    rows = [("protocol", "last %", "best % (epoch)", "official", "other")]
    for r in records:
        best = f"{r['accuracy_best']:.2f}" + (f" ({r['best_epoch']})" if r.get("best_epoch") else "")
        extra = ", ".join(
            f"{k} {v:.2f}" for k, v in r.get("metrics", {}).items() if isinstance(v, float) and k != "percent"
        )
        rows.append(
            (
                r["protocol"],
                f"{r['accuracy_last']:.2f}",
                best,
                f"{r['official_reports']} {r['accuracy_official']:.2f}",
                extra,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def print_table(records: list[dict[str, Any]], stream: TextIO | None = None) -> None:
    """Print ``format_table(records)`` (stdout by default)."""
    print(format_table(records), file=stream or sys.stdout)
