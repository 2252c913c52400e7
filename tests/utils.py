"""Helpers shared by the tests."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import torch

requires_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not found")


def assert_close(
    actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float, what: str = ""
) -> None:
    """allclose with a message that says where and by how much it fails (Liger's verbose allclose)."""
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol, msg=lambda m: f"{what}: {m}")


def run_child(script: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    """Run ``script`` (with ``args`` as sys.argv[1:]) in a child Python with these environment
    variables added (the C++ kernels read SKELFAST_CPU_ISA and SKELFAST_CPU_BLAS once per process);
    asserts it exited cleanly."""
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"{env}: {done.stderr[-3000:]}"
    return done


def run_per_isa(
    script: str, tmp_path: pathlib.Path, isas: tuple[str, ...] = ("baseline", "avx2", "avx512")
) -> dict:
    """Run ``script`` (which torch.saves its results to ``sys.argv[1]``) once per instruction-set
    form in a child process with ``SKELFAST_CPU_ISA`` set (the C++ kernels read it once per process,
    so one process cannot run two forms); returns {isa: what it saved}."""
    results = {}
    for isa in isas:
        path = tmp_path / f"{isa}.pt"
        run_child(script, str(path), SKELFAST_CPU_ISA=isa)
        results[isa] = torch.load(path)
    return results
