"""The `skelfast` command: its subcommands parse and run end to end on small inputs."""

import subprocess
import sys

import numpy as np


def run(*args):
    return subprocess.run([sys.executable, "-m", "skelfast", *args], capture_output=True, text=True)


def test_info_lists_every_backend():
    out = run("info")
    assert out.returncode == 0, out.stderr
    for row in (
        "backend cpp (CPU)",
        "backend cpp (CUDA)",
        "backend triton (CUDA)",
        "backend triton (interpreter)",
    ):
        assert row in out.stdout


def test_data_synthetic_writes_ntu_arrays(tmp_path):
    out = run("data", "synthetic", str(tmp_path), "--samples", "40", "--classes", "4", "--seed", "1")
    assert out.returncode == 0, out.stderr
    data = np.load(tmp_path / "xsub" / "train_data_joint.npy", mmap_mode="r")
    assert data.shape[1:] == (3, 300, 25, 2) and data.dtype == np.float32


def test_unknown_command_is_an_error():
    out = run("frobnicate")
    assert out.returncode == 2
    assert "invalid choice" in out.stderr
