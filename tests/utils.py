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


def assert_gradients_reach_every_parameter(
    model: torch.nn.Module, official: torch.nn.Module, x: torch.Tensor
) -> None:
    """Train mode, float64: every parameter gets a nonzero gradient except the biases whose gradient
    is zero in exact arithmetic, where the official form's gradient is rounding (under 1e-9 of its
    largest; the others are >= 1e-6 of it at these sizes): there it must be rounding too. Among them,
    the biases of the convolutions a BatchNorm with batch statistics follows (it cancels them) get
    exact zeros; at least one must. (The AGCN's theta biases are the other kind: the softmax over the
    first joint cancels them, rounding in both forms.) ``official`` takes ``model``'s state_dict."""
    model, official = model.double().train(), official.double().train()
    official.load_state_dict(model.state_dict())
    for m in (model, official):
        m(x.double()).square().sum().backward()
    official_grads = {name: p.grad for name, p in official.named_parameters()}
    largest = max(g.abs().max() for g in official_grads.values())
    exact_zeros = []
    for name, p in model.named_parameters():
        if official_grads[name].abs().max() < 1e-9 * largest:
            assert name.endswith("bias") and p.grad.abs().max() < 1e-9 * largest, name
            if torch.equal(p.grad, torch.zeros_like(p)):
                exact_zeros.append(name)
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert exact_zeros, "no bias is cancelled by a BatchNorm: the test no longer tells the kinds apart"
