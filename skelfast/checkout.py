"""The ``benchmarks`` package of the source checkout that this skelfast was imported from.

``benchmarks/`` sits next to ``skelfast/`` in the repository and is not installed, so ``import
benchmarks`` works only when the checkout root is on ``sys.path`` (``python -m`` from the root).
The ``skelfast`` console script and other working directories need it added; ``skelfast bench`` and
``skelfast demo --write-results`` call this before doing any work, so a long run never ends unable to
write its table.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class NotACheckoutError(RuntimeError):
    """skelfast runs from an installed copy with no ``benchmarks/`` next to it."""


def import_benchmarks() -> None:
    """Make ``import benchmarks`` find the checkout's package, or raise ``NotACheckoutError``."""
    if not (ROOT / "benchmarks" / "common.py").exists():
        raise NotACheckoutError(
            f"the benchmarks live in the source checkout, and {ROOT} has no benchmarks/: "
            "run from a clone of the repository (make bench, make demo)"
        )
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
