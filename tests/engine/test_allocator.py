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
