"""skelfast.engine.allocator: glibc's thresholds raised once, or a clear reason why not."""

import ctypes
import ctypes.util
import os
import subprocess
import sys

import pytest

from skelfast.engine import allocator

glibc = ctypes.util.find_library("c") is not None and sys.platform.startswith("linux")


def run_child(env_value: str | None) -> str:
    env = dict(os.environ)
    env.pop("SKELFAST_MALLOC_TUNE", None)
    if env_value is not None:
        env["SKELFAST_MALLOC_TUNE"] = env_value
    code = "from skelfast.engine.allocator import tune_cpu_allocator as t; a = t(); print(a); print(t() is a)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout


@pytest.mark.skipif(not glibc, reason="needs glibc")
def test_thresholds_raised_once_per_process():
    status, same = run_child(None).split("\n")[:2]
    assert status == f"glibc mmap/trim thresholds raised to {allocator.THRESHOLD_BYTES >> 20} MiB"
    assert same == "True"  # the second call reports the first call's result without calling mallopt


def test_switched_off_by_environment():
    assert run_child("0").split("\n")[0] == "off (SKELFAST_MALLOC_TUNE=0)"


@pytest.mark.skipif(not glibc or not os.path.exists("/proc/self/statm"), reason="needs glibc and /proc")
def test_release_free_memory_returns_the_heap_the_raised_thresholds_keep():
    """With the thresholds raised, a freed 256 MiB tensor stays resident (kept for reuse); the
    release hands it back to the system. In a child: the thresholds are process-wide."""
    code = (
        "import os, torch\n"
        "from skelfast.engine.allocator import release_free_memory, tune_cpu_allocator\n"
        "tune_cpu_allocator()\n"
        "rss = lambda: int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') >> 20\n"
        "x = torch.ones(64 * 2**20); del x\n"
        "kept = rss()\n"
        "print(release_free_memory(), kept - rss())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    ran, released_mib = out.stdout.split()
    assert ran == "True"
    assert int(released_mib) >= 200, out.stdout
