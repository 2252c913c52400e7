"""Test set-up. TRITON_INTERPRET must be in the environment before any @triton.jit decorator runs
(spec/feasibility.md §2), so it is set here, before skelfast (and its kernels) are imported."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import skelfast  # noqa: E402, F401


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
