"""A tiny progress bar on stderr (count, rate, ETA), so the data tools need no tqdm dependency."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h:d}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """``with Progress(total, "convert") as bar: bar.update(1)`` prints ``convert 10/56880 (35.2/s, ETA 26:53)``.

    Redraws at most every ``min_interval`` seconds, and only when ``enabled`` (a closed stream or a
    non-terminal costs nothing but the final line).
    """

    def __init__(
        self,
        total: int,
        desc: str = "",
        unit: str = "it",
        enabled: bool = True,
        stream: TextIO | None = None,
        min_interval: float = 0.25,
    ) -> None:
        self.total = int(total)
        self.desc = desc
        self.unit = unit
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.min_interval = min_interval
        self.count = 0
        self._start = time.perf_counter()
        self._last_draw = 0.0

    def update(self, n: int = 1) -> None:
        """Advance by ``n`` items."""
        self.count += n
        now = time.perf_counter()
        if self.enabled and (now - self._last_draw >= self.min_interval or self.count >= self.total):
            self._last_draw = now
            self._draw(now, end="\r")

    def line(self) -> str:
        """The current status line, e.g. ``convert 10/100 (5.0 files/s, ETA 00:18)``."""
        return self._format(time.perf_counter())

    def _format(self, now: float) -> str:
        elapsed = now - self._start
        rate = self.count / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.count) / rate if rate > 0 else float("inf")
        eta_s = _clock(eta) if eta != float("inf") else "--:--"
        return f"{self.desc} {self.count}/{self.total} ({rate:.1f} {self.unit}/s, ETA {eta_s}, elapsed {_clock(elapsed)})"

    def _draw(self, now: float, end: str) -> None:
        try:
            self.stream.write(self._format(now) + end)
            self.stream.flush()
        except (ValueError, OSError):  # closed stream: progress is cosmetic, never fatal
            self.enabled = False

    def close(self) -> None:
        """Print the final line."""
        if self.enabled:
            self._draw(time.perf_counter(), end="\n")
            self.enabled = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
