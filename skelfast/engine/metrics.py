"""Training metrics: rows appended to ``RUN/metrics.csv`` and, if ``tensorboard`` is installed,
scalars for a TensorBoard ``SummaryWriter`` in ``RUN/tensorboard/``.

The columns are ``stage,epoch,step,loss,lr,samples_per_s`` then the method's loss terms in the
order they first appear; a term that first appears later (HiCLR's mining phase) extends the header
and the older rows get empty cells. A resumed run first drops the rows written after its
checkpoint, so the file reads as if the run had never been interrupted.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from skelfast.engine.checkpoint import atomic_write

BASE_COLUMNS = ("stage", "epoch", "step", "loss", "lr", "samples_per_s")
FILENAME = "metrics.csv"


def read_metrics(path: str | Path) -> list[dict[str, str]]:
    """The rows of a metrics CSV as dicts of strings (empty list if the file does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)


class MetricsWriter:
    """Append metric rows to ``run_dir/metrics.csv`` (and TensorBoard where available).

    Args:
        run_dir: the run folder.
        enabled: False on the ranks that must not write (everything becomes a no-op).
        resume_step: drop existing rows whose ``step`` is larger (rows of steps a resumed run redoes).
        tensorboard: True forces a SummaryWriter (an error if ``tensorboard`` is missing), False
            disables it, None uses it when importable.
    """

    def __init__(
        self,
        run_dir: str | Path,
        enabled: bool = True,
        resume_step: int | None = None,
        tensorboard: bool | None = None,
    ) -> None:
        self.path = Path(run_dir) / FILENAME
        self.enabled = enabled
        self.columns: list[str] = list(BASE_COLUMNS)
        self._file: io.TextIOWrapper | None = None
        self._tb = None
        if not enabled:
            return
        if resume_step is not None and self.path.exists():
            with open(self.path, newline="") as f:
                header = next(csv.reader(f), None)
            rows = read_metrics(self.path)
            self.columns = header or list(BASE_COLUMNS)
            kept = [r for r in rows if int(r["step"]) <= resume_step]
            if len(kept) != len(rows) or not header:
                self._rewrite(kept)
        else:
            self._rewrite([])
        self._file = open(self.path, "a", newline="")  # noqa: SIM115 (closed in close())
        if tensorboard is not False:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                if tensorboard:
                    raise
            else:
                self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))

    def _rewrite(self, rows: list[Mapping[str, Any]]) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns, extrasaction="raise", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in self.columns})
        atomic_write(self.path, lambda f: f.write(buf.getvalue().encode()))

    def write(self, row: Mapping[str, Any]) -> None:
        """Append one row: the base columns plus any loss terms (numbers)."""
        if not self.enabled:
            return
        missing = [c for c in BASE_COLUMNS if c not in row]
        if missing:
            raise ValueError(f"metrics row lacks {missing}")
        new = [k for k in row if k not in self.columns]
        if new:  # a term seen for the first time: widen the header, keep the old rows
            assert self._file is not None
            self._file.close()
            old = read_metrics(self.path)
            self.columns += new
            self._rewrite(old)
            self._file = open(self.path, "a", newline="")  # noqa: SIM115
        assert self._file is not None
        csv.writer(self._file, lineterminator="\n").writerow([_format(row.get(c)) for c in self.columns])
        self._file.flush()
        if self._tb is not None:
            step = int(row["step"])
            for key, value in row.items():
                if key not in ("stage", "epoch", "step") and isinstance(value, int | float):
                    self._tb.add_scalar(f"train/{key}", value, step)

    def close(self) -> None:
        """Flush and close the files."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
