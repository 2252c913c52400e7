"""The C++ noise and dropout streams come from one of three fill loops (scalar, AVX2, AVX-512F),
picked by the CPU at run time: all three must give the same bits, or a result would depend on the
machine. tests/ops/native/philox_forms.cpp runs each form this CPU has against the scalar one."""

from __future__ import annotations

import platform
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HARNESS = Path(__file__).with_name("native") / "philox_forms.cpp"


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="the SIMD forms are x86-64 only")
@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++ (the extension's compiler)")
def test_simd_fill_loops_give_the_scalar_bits(tmp_path: Path) -> None:
    exe = tmp_path / "philox_forms"
    # the extension's flags (setup.py): -O3 with -fno-trapping-math
    subprocess.run(
        [
            "g++",
            "-O3",
            "-fno-trapping-math",
            "-std=c++17",
            f"-I{ROOT / 'csrc' / 'random'}",
            str(HARNESS),
            "-o",
            str(exe),
        ],
        check=True,
    )
    lines = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.split("\n")
    results = {name: (int(compared), int(bad)) for name, compared, bad in (ln.split() for ln in lines if ln)}
    assert set(results) == {"avx2", "avx512"}
    for name, (compared, bad) in results.items():
        assert bad == 0, f"the {name} fill loop differs from the scalar one in {bad} of {compared} values"
    assert results["avx2"][0] > 0 or results["avx512"][0] == 0  # every AVX-512 CPU has AVX2
