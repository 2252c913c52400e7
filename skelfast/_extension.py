"""Loading of the compiled extension ``skelfast._C``; a missing or broken build never breaks import."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def once(fn: Callable[[], T]) -> Callable[[], T]:
    """``functools.cache`` for a function of no arguments, as a plain closure: the ops ask whether a
    kernel is available inside compiled code, and Dynamo warns on every lru_cache wrapper it traces
    through. Here, the first module skelfast imports, so that ``backends`` shares it."""
    result: list[T] = []

    @functools.wraps(fn)
    def cached() -> T:
        if not result:
            result.append(fn())
        return result[0]

    return cached


@once
def _load() -> tuple[object | None, str | None]:
    """The one attempt to load ``skelfast._C``: (module, None) or (None, why not)."""
    if os.environ.get("SKELFAST_SKIP_EXTENSION", "0") not in ("", "0"):
        return None, "SKELFAST_SKIP_EXTENSION is set"
    try:
        import torch  # noqa: F401  (the extension's symbols come from libtorch)

        from skelfast import _C
    except ImportError as exc:
        return None, f"{exc} (build it with `make setup` or `pip install -e . --no-build-isolation`)"
    except OSError as exc:  # e.g. an undefined symbol after a torch upgrade
        return None, f"{exc} (rebuild it against the installed torch with `make setup`)"
    built, installed = getattr(_C, "TORCH_VERSION", "?"), torch.__version__.split("+")[0]
    if built != installed:
        # ABI mismatches crash or misbehave later; refuse now and say how to fix it.
        return None, f"built against torch {built} but torch {installed} is installed (rebuild: `make setup`)"
    return _C, None


def load_error() -> str | None:
    """``None`` when ``skelfast._C`` is loaded, else why not."""
    return _load()[1]


def built_with_cuda() -> bool:
    """Whether the loaded extension contains the CUDA kernels."""
    module = _load()[0]
    return bool(module is not None and getattr(module, "WITH_CUDA", False))


def build_info() -> dict[str, object]:
    """What the extension was built with (empty when it is not loaded)."""
    module = _load()[0]
    if module is None:
        return {}
    return {"torch": getattr(module, "TORCH_VERSION", "?"), "cuda": built_with_cuda()}
