"""Backend choice: automatic order, forcing by environment and context, clear errors."""

import subprocess
import sys

import pytest
import torch

from skelfast import backends
from skelfast.backends import BackendUnavailableError, choose, forced_backend, use_backend

CHECKS = {"cpp": lambda: "not built", "triton": lambda: None, "reference": lambda: None}


def test_automatic_choice_takes_the_first_that_can_run(monkeypatch):
    monkeypatch.delenv("SKELFAST_BACKEND", raising=False)
    assert choose("op", CHECKS, order=("cpp", "triton", "reference")) == "triton"
    assert choose("op", CHECKS, order=("cpp", "reference")) == "reference"


def test_environment_forces_globally_and_per_op(monkeypatch):
    monkeypatch.setenv("SKELFAST_BACKEND", "reference")
    assert forced_backend("graph_conv") == "reference"
    monkeypatch.setenv("SKELFAST_BACKEND", "graph_conv=cpp, info_nce=reference")
    assert forced_backend("graph_conv") == "cpp"
    assert forced_backend("info_nce") == "reference"
    assert forced_backend("augment") is None


def test_context_overrides_environment(monkeypatch):
    monkeypatch.setenv("SKELFAST_BACKEND", "cpp")
    with use_backend("op=triton"):
        assert choose("op", CHECKS, order=("reference",)) == "triton"
        with use_backend("reference"):
            assert forced_backend("op") == "reference"
        assert forced_backend("op") == "triton"
    assert forced_backend("op") == "cpp"


def test_forced_backend_that_cannot_run_raises_with_reason(monkeypatch):
    monkeypatch.delenv("SKELFAST_BACKEND", raising=False)
    with use_backend("cpp"), pytest.raises(BackendUnavailableError, match="op: backend 'cpp' .* not built"):
        choose("op", CHECKS, order=("reference",))
    with use_backend("op=triton"), pytest.raises(BackendUnavailableError, match="no triton implementation"):
        choose("op", {"reference": lambda: None}, order=("reference",))


def test_unknown_backend_name_is_rejected(monkeypatch):
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        with use_backend("cuda"):
            pass
    monkeypatch.setenv("SKELFAST_BACKEND", "graph_conv=fast")
    with pytest.raises(ValueError, match="SKELFAST_BACKEND"):
        forced_backend("graph_conv")


def test_triton_reason_on_cpu_depends_on_the_interpreter(monkeypatch):
    # import triton under the suite's TRITON_INTERPRET=1 first: imported while the variable reads 0,
    # every @triton.jit created afterwards in this process builds compiled kernels, and the Triton
    # tests that run after this one (tests/test_backends.py before tests/ops/) then fail
    backends.triton_import_error()
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert "TRITON_INTERPRET" in backends.triton_reason(torch.device("cpu"))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert backends.triton_reason(torch.device("cpu")) is None


def test_import_and_info_survive_a_missing_extension():
    """With the extension hidden, skelfast imports, ops fall back, and info says why."""
    code = (
        "import torch, skelfast; from skelfast import info, reference;"
        "x=torch.randn(1,2,3,4); w=torch.randn(3,2); A=torch.rand(1,4,4);"
        "assert torch.equal(skelfast.ops.graph_conv(x,w,None,A), reference.graph_conv(x,w,None,A));"
        "info.main()"
    )
    env = {"SKELFAST_SKIP_EXTENSION": "1", "PATH": ""}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert "backend cpp (CPU)             unavailable: SKELFAST_SKIP_EXTENSION is set" in out.stdout
    forced = subprocess.run(
        [sys.executable, "-c", code.replace("info.main()", "")],
        capture_output=True,
        text=True,
        env={**env, "SKELFAST_BACKEND": "cpp"},
    )
    assert forced.returncode != 0
    assert "skelfast._C is not available (SKELFAST_SKIP_EXTENSION is set)" in forced.stderr


def test_constant_marker_is_the_one_torch_compiler_sets():
    def official():
        return 1

    def ours():
        return 1

    before = set(vars(official))
    torch.compiler.assume_constant_result(official)
    assert set(vars(official)) - before == {"_dynamo_marked_constant"}
    assert backends.constant_under_compile(ours) is ours and vars(ours) == vars(official)


def test_import_does_not_load_dynamo():
    # torch._dynamo costs seconds at every CLI start; it loads on the first torch.compile instead
    code = "import sys, skelfast; print('torch._dynamo' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_availability_checks_are_not_lru_cache_wrappers():
    # The ops ask whether the extension is built inside compiled code; Dynamo warns on each
    # functools.lru_cache wrapper it traces through (compiling an ST-GCN warned twice), so these
    # memoise with plain closures.
    from skelfast import _extension

    for fn in (backends.cpp_extension_error, backends.triton_import_error, _extension._load):
        assert not hasattr(fn, "cache_info"), fn.__name__
    assert backends.cpp_extension_error() is backends.cpp_extension_error()  # memoised
