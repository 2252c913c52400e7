"""skelfast.ops.temporal_conv (the frequency form) against F.conv2d: forward, every gradient, the
transform op's opcheck and adjoint, compile, the algorithm rule, the at::mm fallback, bad input."""

import pytest
import torch
import torch.nn.functional as F

from skelfast import backends, reference, use_backend
from skelfast.ops import temporal_conv
from skelfast.ops.temporal_conv import frequency_matrices, frequency_points, prefers_frequency
from tests.utils import assert_close, run_child

cpp_missing = backends.cpp_reason(torch.device("cpu"), torch.float32, (torch.float32,))
requires_cpp = pytest.mark.skipif(cpp_missing is not None, reason=str(cpp_missing))

# The frequency form sums P products of DFT coefficients instead of K taps: float64 agrees with the
# direct convolution to ~1e-13 of values O(sqrt(C K)) (1e-10 leaves room for T = 64 and K = 9);
# float32 to ~5e-7 of the output's scale in the benchmark shapes, 1e-5 relative with an absolute
# floor for outputs near zero.
TOL = {torch.float64: (1e-10, 1e-10), torch.float32: (2e-5, 1e-5)}

# (N, C_in, C_out, T, V, K, stride): T 1 and 2 (n shorter than the kernel), odd and even n, V 25 and
# 17 and 1 (the kernel's 16-lane column chunks, full and partial), K 1, 3, 9
CASES = [
    (2, 3, 4, 1, 25, 9, 1),
    (3, 5, 4, 2, 17, 9, 2),
    (1, 4, 6, 7, 25, 3, 1),
    (2, 6, 5, 13, 25, 9, 1),
    (2, 6, 5, 13, 25, 9, 2),
    (3, 4, 4, 50, 17, 9, 2),
    (2, 3, 2, 64, 1, 9, 1),
    (2, 5, 3, 25, 33, 1, 1),
    (18, 3, 2, 13, 25, 9, 2),  # the transform's groups of 16 samples: one full, one of 2
]


def make(case, dtype, bias=True):
    n, c_in, c_out, t, v, k, _ = case
    torch.manual_seed(t * 31 + v + k)
    x = torch.randn(n, c_in, t, v, dtype=dtype, requires_grad=True)
    w = (torch.randn(c_out, c_in, k, 1, dtype=dtype) / (c_in * k) ** 0.5).requires_grad_()
    b = torch.randn(c_out, dtype=dtype, requires_grad=True) if bias else None
    return x, w, b


@requires_cpp
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("bias", [True, False])
def test_frequency_form_matches_conv2d(dtype, case, bias):
    atol, rtol = TOL[dtype]
    x, w, b = make(case, dtype, bias)
    stride = case[-1]
    y = temporal_conv(x, w, b, stride, algorithm="frequency")
    y_ref = F.conv2d(x, w, b, stride=(stride, 1), padding=((w.shape[2] - 1) // 2, 0))
    assert y.shape == y_ref.shape
    assert_close(y, y_ref, atol, rtol, "forward")
    grad = torch.randn_like(y_ref)
    wrt = [t for t in (x, w, b) if t is not None]
    for got, want, name in zip(
        torch.autograd.grad(y, wrt, grad),
        torch.autograd.grad(y_ref, wrt, grad),
        ("x", "weight", "bias"),
        strict=False,
    ):
        assert_close(got, want, 10 * atol, 10 * rtol, f"grad {name}")  # sums over N T V terms


@requires_cpp
def test_gradcheck_float64():
    x, w, b = make((2, 3, 2, 11, 5, 9, 2), torch.float64)
    assert torch.autograd.gradcheck(lambda *a: temporal_conv(*a, 2, algorithm="frequency"), (x, w, b))


@requires_cpp
def test_matrices_reproduce_the_dft_definition():
    # y = B ((G w) * (A x)) for one channel is the padded linear convolution, checked on unit impulses:
    # input impulse at t0 and tap k give the output 1 at t_out with stride t_out = t0 + pad - k.
    frames, kernel, stride = 9, 5, 2
    a, g, b = frequency_matrices(frames, kernel, stride, torch.float64)
    response = torch.einsum("tq,qk,qs->tks", b, g, a)  # (T_out, K, T): output per (tap, input time)
    expected = torch.zeros_like(response)
    for t_out in range(response.shape[0]):
        for k in range(kernel):
            src = t_out * stride + k - (kernel - 1) // 2
            if 0 <= src < frames:
                expected[t_out, k, src] = 1.0
    assert_close(response, expected, 1e-12, 0, "impulse response")
    assert (
        a.shape[0] == g.shape[0] == b.shape[1] == 16
    )  # n = 11: bin 0 real (one product), five complex bins (three)


def test_frequency_points_counts_the_rows_the_matrices_have():
    """prefers_frequency (the auto choice) reads P from frequency_points' formula, while the
    matrices derive it by building the rows: they must agree for every length, odd and even n."""
    for kernel in (1, 3, 5, 7, 9, 15):
        for frames in [*range(1, 70), 100, 150, 300]:
            a, g, b = frequency_matrices(frames, kernel, 1, torch.float64)
            points = frequency_points(frames, kernel)
            assert a.shape[0] == g.shape[0] == b.shape[1] == points, (frames, kernel)


@requires_cpp
@pytest.mark.parametrize("to_points", [True, False])
def test_time_transform_opcheck_and_adjoint(to_points):
    torch.manual_seed(0)
    src = torch.randn(3, 4, 5, 19, dtype=torch.float64)  # (N, C, S, V) or (S, C, N, V)
    rows = 7
    matrix = torch.randn(rows, src.shape[2] if to_points else src.shape[0], dtype=torch.float64)
    bias = None if to_points else torch.randn(4, dtype=torch.float64)
    out = torch.ops.skelfast.time_transform(src, matrix, bias, to_points)
    want = (
        torch.einsum("rs,ncsv->rcnv", matrix, src)
        if to_points
        else torch.einsum("rs,scnv->ncrv", matrix, src) + bias.view(1, -1, 1, 1)
    )
    assert_close(out, want, 1e-12, 1e-12, "transform")
    # <T src, g> = <src, T^T g>: the adjoint the autograd formula uses
    g = torch.randn_like(out)
    back = torch.ops.skelfast.time_transform(g, matrix.t().contiguous(), None, not to_points)
    linear = out if bias is None else out - bias.view(1, -1, 1, 1)
    assert_close((linear * g).sum(), (src * back).sum(), 1e-10, 1e-10, "adjoint")
    torch.library.opcheck(
        torch.ops.skelfast.time_transform,
        (src.requires_grad_(), matrix, bias.requires_grad_() if bias is not None else None, to_points),
    )


@requires_cpp
def test_compiles_fullgraph():
    x, w, b = make((2, 4, 3, 13, 25, 9, 1), torch.float32)
    fn = torch.compile(lambda x, w, b: temporal_conv(x, w, b, 1, algorithm="frequency"), fullgraph=True)
    assert_close(fn(x, w, b), temporal_conv(x, w, b, 1, algorithm="frequency"), 1e-6, 1e-6, "compiled")


@requires_cpp
def test_aten_gemm_fallback_matches():
    # Where torch's BLAS exports no sgemm_/dgemm_ the transform's GEMMs run as at::mm on the same
    # memory (SKELFAST_CPU_BLAS=aten, read once per process: a child process); float64 against the
    # direct convolution, as in the main test.
    script = (
        "import torch, torch.nn.functional as F\n"
        "from skelfast.ops import temporal_conv\n"
        "torch.manual_seed(0)\n"
        "x = torch.randn(18, 4, 25, 17, dtype=torch.float64, requires_grad=True)\n"
        "w = torch.randn(5, 4, 9, 1, dtype=torch.float64, requires_grad=True)\n"
        "b = torch.randn(5, dtype=torch.float64, requires_grad=True)\n"
        "for stride in (1, 2):\n"
        "    y = temporal_conv(x, w, b, stride, algorithm='frequency')\n"
        "    y_ref = F.conv2d(x, w, b, stride=(stride, 1), padding=(4, 0))\n"
        "    torch.testing.assert_close(y, y_ref, atol=1e-10, rtol=1e-10)\n"
        "    g = torch.randn_like(y)\n"
        "    for got, want in zip(torch.autograd.grad(y, (x, w, b), g), torch.autograd.grad(y_ref, (x, w, b), g)):\n"
        "        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)\n"
    )
    run_child(script, SKELFAST_CPU_BLAS="aten")


def test_reference_backend_and_empty_batch():
    x, w, b = make((2, 3, 4, 13, 25, 9, 1), torch.float32)
    with use_backend("temporal_conv=reference"):
        y = temporal_conv(x, w, b, 1, algorithm="frequency")
    assert torch.equal(y, reference.temporal_conv(x, w, b, 1))
    empty = temporal_conv(x[:0], w, b, 1, algorithm="frequency")
    assert empty.shape == (0, 4, 13, 25)


def test_auto_rule_follows_the_measured_crossover():
    # frequency where measured faster (prefers_frequency's docstring), oneDNN's direct convolution elsewhere
    assert prefers_frequency(256, 256, 13, 9, 1) and prefers_frequency(256, 256, 25, 9, 2)
    assert prefers_frequency(128, 128, 25, 9, 1) and prefers_frequency(128, 128, 50, 9, 2)
    assert prefers_frequency(64, 64, 64, 9, 1) and prefers_frequency(64, 64, 25, 9, 2)
    assert prefers_frequency(32, 32, 25, 9, 1) and prefers_frequency(128, 128, 25, 7, 1)
    # below 32 channels the P small GEMMs lose; at stride 2 the saving is half as large
    assert not prefers_frequency(16, 16, 50, 9, 1) and not prefers_frequency(16, 16, 13, 9, 1)
    assert not prefers_frequency(32, 32, 50, 9, 2) and not prefers_frequency(256, 256, 13, 1, 1)
    # long clips: the dense transforms' T^2 work (32 channels at T = 100 measured 0.75x, 64 at 300 0.8x)
    assert prefers_frequency(64, 64, 100, 9, 1) and prefers_frequency(128, 128, 300, 9, 1)
    assert not prefers_frequency(32, 32, 100, 9, 1) and not prefers_frequency(64, 64, 300, 9, 1)


@pytest.mark.parametrize(
    "args,match",
    [
        ((torch.randn(2, 3, 5), torch.randn(4, 3, 9, 1)), "4 dimensions"),
        ((torch.randn(2, 3, 5, 7), torch.randn(4, 3, 8, 1)), "K odd"),
        ((torch.randn(2, 3, 5, 7), torch.randn(4, 2, 9, 1)), "3 channels but weight expects 2"),
        ((torch.randn(2, 3, 5, 7), torch.randn(4, 3, 9, 1), torch.randn(3)), r"bias must have shape \(4,\)"),
        ((torch.randn(2, 3, 5, 7), torch.randn(4, 3, 9, 1), None, 0), "stride must be a positive int"),
    ],
)
def test_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        temporal_conv(*args)


def test_bad_algorithm():
    with pytest.raises(ValueError, match="algorithm must be one of"):
        temporal_conv(torch.randn(1, 2, 3, 4), torch.randn(2, 2, 3, 1), algorithm="fft")


def test_autocast_runs_as_nn_conv2d():
    # under CPU autocast nn.Conv2d computes in bf16 from a float32 weight; so does temporal_conv
    x, w, b = make((2, 4, 4, 13, 25, 9, 1), torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = temporal_conv(x.to(torch.bfloat16), w, b, 1, algorithm="frequency")
        y_ref = F.conv2d(x.to(torch.bfloat16), w, b, padding=(4, 0))
    assert y.dtype == torch.bfloat16
    assert torch.equal(y, y_ref)


@requires_cpp
def test_non_contiguous_input():
    # a (N, C, V, T) tensor read as (N, C, T, V): the transform copies it to rows of V first
    x, w, b = make((2, 4, 3, 13, 25, 9, 1), torch.float64)
    x_t = x.detach().transpose(2, 3).contiguous().transpose(2, 3).requires_grad_()
    assert not x_t.is_contiguous()
    y = temporal_conv(x_t, w, b, 1, algorithm="frequency")
    assert_close(y, F.conv2d(x_t, w, b, padding=(4, 0)), 1e-10, 1e-10, "non-contiguous")
