"""Keep freed CPU memory in glibc's heap, so large activations reuse pages already mapped.

By default glibc serves large allocations with a fresh ``mmap`` and unmaps them on free (above a
threshold it adjusts as the program runs, up to 32 MiB). A training step allocates and frees
activations of tens to hundreds of MiB, so every step page-faults them in again: on a 2-core CPU a
fresh 85 MiB tensor costs ~19 ms to fill against ~5 ms for one already mapped, and the step time
wanders with the threshold's history (the same official ST-GCN measured 18 and 29 samples/s in two
runs). Raising the mmap and trim thresholds keeps freed memory for reuse: the step is faster
(1.2-1.35x for the ST-GCN encoders, fused and official alike) and repeatable. The cost is that the
process keeps its peak heap instead of returning it to the system. Intel's PyTorch CPU tuning
guide gets the same effect with jemalloc or tcmalloc.

``skelfast`` commands and the benchmarks call :func:`tune_cpu_allocator` at start;
``SKELFAST_MALLOC_TUNE=0`` leaves the allocator alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
M_MMAP_THRESHOLD = -3
THRESHOLD_BYTES = 2**31 - 1  # the largest value mallopt takes (an int)

_state: dict[str, str] = {}


def tune_cpu_allocator() -> str:
    """Raise glibc's mmap and trim thresholds once per process; returns what was done (or why
    not): not glibc, turned off by ``SKELFAST_MALLOC_TUNE=0``, or mallopt refused."""
    if "status" in _state:
        return _state["status"]
    if os.environ.get("SKELFAST_MALLOC_TUNE", "1") == "0":
        status = "off (SKELFAST_MALLOC_TUNE=0)"
    else:
        status = _mallopt_thresholds()
    _state["status"] = status
    return status


def _libc_function(symbol: str) -> tuple[object | None, str | None]:
    """(the C library's ``symbol``, its library name), or (None, name or None) where it has none."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None, None
    try:
        return getattr(ctypes.CDLL(name), symbol), name
    except (OSError, AttributeError):
        return None, name


def _mallopt_thresholds() -> str:
    mallopt, name = _libc_function("mallopt")
    if name is None:
        return "not applied: no C library found"
    if mallopt is None:
        return f"not applied: {name} has no mallopt (not glibc)"
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if mallopt(M_MMAP_THRESHOLD, THRESHOLD_BYTES) != 1 or mallopt(M_TRIM_THRESHOLD, THRESHOLD_BYTES) != 1:
        return "not applied: mallopt refused the thresholds"
    return f"glibc mmap/trim thresholds raised to {THRESHOLD_BYTES >> 20} MiB"


def release_free_memory() -> bool:
    """Return the free pages of every glibc arena to the system (``malloc_trim(0)``): with the raised
    thresholds each arena otherwise stays at its peak, and a process that runs several large
    workloads in turn (the methods benchmark: fused, reference and compiled steps) holds the sum of
    their peaks. True where it ran (glibc)."""
    trim, _ = _libc_function("malloc_trim")
    if trim is None:
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    trim(0)
    return True
