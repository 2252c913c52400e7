"""Helpers shared by the tests."""

from __future__ import annotations

import shutil

import pytest
import torch

requires_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not found")


def assert_close(
    actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float, what: str = ""
) -> None:
    """allclose with a message that says where and by how much it fails (Liger's verbose allclose)."""
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol, msg=lambda m: f"{what}: {m}")
