"""skelfast.ops.graph_conv against the reference einsum: forward, every gradient, opcheck, compile."""

import os
import subprocess
import sys

import pytest
import torch

from skelfast import backends, reference, use_backend
from skelfast.nn import GraphConv, stgcn_graph
from skelfast.ops import graph_conv
from tests.utils import assert_close

cpp_missing = backends.cpp_reason(torch.device("cpu"), torch.float32, (torch.float32,))
requires_cpp = pytest.mark.skipif(cpp_missing is not None, reason=str(cpp_missing))

# float32: both sides sum K*C_in*V products of O(1) terms in different orders; 1e-4 relative
# covers the accumulated rounding (~sqrt(K*C*V) * 6e-8) with margin at C_in=64.
TOL = {torch.float32: (1e-4, 1e-4), torch.float64: (1e-10, 1e-10)}


def make_inputs(n, c_in, c_out, t, v, k, dtype=torch.float32, bias=True, requires_grad=True):
    x = torch.randn(n, c_in, t, v, dtype=dtype)
    weight = torch.randn(k * c_out, c_in, dtype=dtype) / max(c_in, 1) ** 0.5
    b = torch.randn(k * c_out, dtype=dtype) if bias else None
    A = torch.rand(k, v, v, dtype=dtype) / v
    tensors = [x, weight, b, A]
    if requires_grad:
        for t_ in tensors:
            if t_ is not None:
                t_.requires_grad_(True)
    return tensors


def check_against_reference(inputs, dtype):
    atol, rtol = TOL[dtype]
    out = graph_conv(*inputs)
    ref = reference.graph_conv(*inputs)
    assert_close(out, ref, atol, rtol, "forward")
    grad = torch.randn_like(ref)
    present = [(n, t) for n, t in zip("x weight bias A".split(), inputs, strict=True) if t is not None]
    names, wrt = [n for n, _ in present], [t for _, t in present]
    got = torch.autograd.grad(out, wrt, grad)
    want = torch.autograd.grad(ref, wrt, grad)
    for name, g, w in zip(names, got, want, strict=True):
        assert_close(g, w, atol * 10, rtol * 10, f"grad {name}")


SHAPES = [
    # (N, C_in, C_out, T, V, K): ST-GCN-like, odd and prime sizes, both contraction orders
    (2, 3, 64, 13, 25, 3),
    (3, 64, 64, 7, 25, 3),
    (2, 64, 7, 5, 17, 3),  # C_out < C_in: mix-first order
    (3, 16, 16, 13, 25, 3),  # HiCLR's quarter width: aggregate-first forward, mix-first backward
    (1, 7, 1, 1, 1, 1),
    (5, 1, 3, 13, 17, 1),
    (2, 16, 32, 300, 25, 3),
    # the AVX-512 spread over all subsets (x A_k, g A_k^T): 6 vectors a row (V = 32, K = 3) with a
    # tail of rows, 4 vectors (K = 2; mix-first backward, A^T), and V = 33, past the kernel (GEMMs)
    (2, 5, 9, 11, 32, 3),
    (2, 9, 9, 7, 25, 2),
    (2, 4, 8, 5, 33, 3),
]


@requires_cpp
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_reference(shape, dtype):
    n, c_in, c_out, t, v, k = shape
    with use_backend("graph_conv=cpp"):
        check_against_reference(make_inputs(n, c_in, c_out, t, v, k, dtype), dtype)


@requires_cpp
def test_without_bias_and_partial_grads():
    x, w, _, A = make_inputs(2, 5, 6, 4, 25, 3, bias=False)
    A.requires_grad_(False)
    x.requires_grad_(False)
    with use_backend("graph_conv=cpp"):
        out = graph_conv(x, w, None, A)
    ref = reference.graph_conv(x, w, None, A)
    assert_close(out, ref, 1e-5, 1e-5, "forward")
    (g,) = torch.autograd.grad(out.square().sum(), [w])
    (r,) = torch.autograd.grad(ref.square().sum(), [w])
    assert_close(g, r, 1e-4, 1e-4, "grad weight")


@requires_cpp
def test_gradcheck_float64():
    inputs = make_inputs(2, 3, 4, 3, 5, 2, dtype=torch.float64)
    with use_backend("graph_conv=cpp"):
        assert torch.autograd.gradcheck(graph_conv, inputs)


@requires_cpp
def test_non_contiguous_inputs():
    x, w, b, A = make_inputs(3, 8, 6, 5, 25, 3, requires_grad=False)
    x_nc = x.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2)  # same values, transposed strides
    w_nc = w.t().contiguous().t()
    A_nc = A.transpose(1, 2).contiguous().transpose(1, 2)
    assert not (x_nc.is_contiguous() or w_nc.is_contiguous() or A_nc.is_contiguous())
    with use_backend("graph_conv=cpp"):
        out = graph_conv(x_nc, w_nc, b, A_nc)
    assert_close(out, reference.graph_conv(x, w, b, A), 1e-5, 1e-5, "non-contiguous forward")


@requires_cpp
def test_zero_size_batch():
    x, w, b, A = make_inputs(0, 4, 6, 5, 25, 3)
    with use_backend("graph_conv=cpp"):
        out = graph_conv(x, w, b, A)
    assert out.shape == (0, 6, 5, 25)
    out.sum().backward()
    assert x.grad.shape == x.shape
    assert torch.equal(w.grad, torch.zeros_like(w))
    assert torch.equal(A.grad, torch.zeros_like(A))


def per_sample_inputs(n, c_in, c_out, t, v, k, dtype=torch.float32):
    """x, weight, None, A (N, K, V, V): the per-sample adjacency form (no bias)."""
    x, weight, _, _ = make_inputs(n, c_in, c_out, t, v, k, dtype, bias=False, requires_grad=False)
    A = torch.rand(n, k, v, v, dtype=dtype) / v
    return [x.requires_grad_(), weight.requires_grad_(), None, A.requires_grad_()]


@requires_cpp
@pytest.mark.parametrize(
    "shape",
    [(3, 16, 16, 7, 25, 3), (2, 64, 7, 5, 17, 3), (3, 3, 64, 13, 25, 3), (2, 5, 5, 1, 1, 1)],
    ids=lambda s: "x".join(map(str, s)),
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_per_sample_adjacency_matches_reference(shape, dtype):
    """A (N, K, V, V), 2s-AGCN's form: both contraction orders each way, every gradient (dA per sample)."""
    with use_backend("graph_conv=cpp"):
        check_against_reference(per_sample_inputs(*shape, dtype=dtype), dtype)


@requires_cpp
def test_per_sample_adjacency_gradcheck_and_opcheck():
    inputs = per_sample_inputs(2, 3, 4, 3, 5, 2, dtype=torch.float64)
    with use_backend("graph_conv=cpp"):
        assert torch.autograd.gradcheck(graph_conv, inputs)
    torch.library.opcheck(torch.ops.skelfast.graph_conv.default, tuple(per_sample_inputs(2, 5, 6, 4, 25, 3)))


@requires_cpp
def test_per_sample_adjacency_bad_input():
    x, w, _, A = per_sample_inputs(2, 5, 6, 4, 25, 3)
    with pytest.raises(ValueError, match="takes no bias"):
        graph_conv(x, w, torch.zeros(w.shape[0]), A)
    with pytest.raises(ValueError, match="per-sample A must be"):
        graph_conv(x, w, None, A[:1])
    with pytest.raises(RuntimeError, match="takes no bias"):
        torch.ops.skelfast.graph_conv(x, w, torch.zeros(w.shape[0]), A)


@requires_cpp
def test_opcheck():
    inputs = make_inputs(2, 5, 6, 4, 25, 3)
    torch.library.opcheck(torch.ops.skelfast.graph_conv.default, tuple(inputs))
    x, w, b, A = make_inputs(2, 5, 6, 4, 25, 3, requires_grad=False)
    grad = torch.randn(2, 6, 4, 25)
    torch.library.opcheck(torch.ops.skelfast.graph_conv_backward.default, (grad, x, w, b, A, [True] * 4))
    # a non-contiguous x (an ST-GCN's first unit reads data_bn's permuted output): the kernel's
    # gradients are contiguous, and so must the fake kernel's be, or a compiled training step fails
    x_nc = x.transpose(2, 3).contiguous().transpose(2, 3)
    torch.library.opcheck(torch.ops.skelfast.graph_conv_backward.default, (grad, x_nc, w, b, A, [True] * 4))


@requires_cpp
def test_torch_compile_fullgraph():
    x, w, b, A = make_inputs(2, 5, 6, 4, 25, 3)

    def f(x, w, b, A):
        return graph_conv(x, w, b, A).relu().sum()

    compiled = torch.compile(f, fullgraph=True, backend="inductor")
    got = torch.autograd.grad(compiled(x, w, b, A), [x, w, b, A])
    want = torch.autograd.grad(reference.graph_conv(x, w, b, A).relu().sum(), [x, w, b, A])
    for g, r in zip(got, want, strict=True):
        assert_close(g, r, 1e-4, 1e-4, "compiled grad")


@pytest.mark.parametrize(
    "args, error, match",
    [
        (
            lambda: (torch.randn(2, 3, 4), torch.randn(6, 3), None, torch.rand(2, 4, 4)),
            ValueError,
            "4 dimensions",
        ),
        (lambda: (torch.randn(2, 3, 4, 5), torch.randn(6, 3), None, torch.rand(2, 4, 4)), ValueError, "V=5"),
        (
            lambda: (torch.randn(2, 3, 4, 5), torch.randn(6, 2), None, torch.rand(2, 5, 5)),
            ValueError,
            "C_in=2",
        ),
        (lambda: (torch.randn(2, 3, 4, 5), torch.randn(7, 3), None, torch.rand(2, 5, 5)), ValueError, "K=2"),
        (
            lambda: (torch.randn(2, 3, 4, 5), torch.randn(6, 3), torch.randn(5), torch.rand(2, 5, 5)),
            ValueError,
            "bias",
        ),
        (
            lambda: (
                torch.randn(2, 3, 4, 5),
                torch.randn(6, 3, dtype=torch.float64),
                None,
                torch.rand(2, 5, 5),
            ),
            TypeError,
            "dtype",
        ),
        (
            lambda: (torch.ones(2, 3, 4, 5, dtype=torch.long), torch.ones(6, 3), None, torch.rand(2, 5, 5)),
            TypeError,
            "floating",
        ),
    ],
)
def test_bad_input_is_a_clear_error(args, error, match):
    with pytest.raises(error, match=match):
        graph_conv(*args())


def test_forced_backend_that_cannot_run_says_why():
    x, w, b, A = make_inputs(1, 2, 2, 2, 3, 1, dtype=torch.float16, requires_grad=False)
    with use_backend("graph_conv=cpp"), pytest.raises(backends.BackendUnavailableError, match="float16"):
        graph_conv(x, w, b, A)
    with use_backend("graph_conv=triton"), pytest.raises(backends.BackendUnavailableError, match="no triton"):
        graph_conv(x, w, b, A)


def test_half_precision_falls_back_to_reference():
    x, w, b, A = make_inputs(1, 2, 2, 2, 3, 1, dtype=torch.bfloat16, requires_grad=False)
    assert_close(graph_conv(x, w, b, A), reference.graph_conv(x, w, b, A), 0, 0, "bf16 reference path")


def test_graphconv_module_is_a_drop_in():
    """Same parameters and state_dict keys as ST-GCN's ConvTemporalGraphical (conv = Conv2d(C, K*O, 1))."""
    A = stgcn_graph()
    module = GraphConv(3, 16, kernel_size=3)
    assert sorted(module.state_dict()) == ["conv.bias", "conv.weight"]
    assert module.conv.weight.shape == (48, 3, 1, 1)
    x = torch.randn(2, 3, 11, 25)
    y, A_out = module(x, A)
    z = module.conv(x).view(2, 3, 16, 11, 25)
    official = torch.einsum("nkctv,kvw->nctw", z, A)
    assert A_out is A
    assert_close(y, official, 1e-5, 1e-5, "GraphConv vs ConvTemporalGraphical")


@requires_cpp
def test_aten_gemm_fallback_matches_reference():
    """Where torch's BLAS exports no sgemm_/dgemm_, the kernels fall back to at::mm on the same memory."""
    code = (
        "import torch, skelfast; from skelfast import reference, use_backend; from skelfast.ops import graph_conv\n"
        "torch.manual_seed(0)\n"
        "for c_in, c_out in ((3, 8), (8, 3)):\n"
        "    x, w, b, A = (torch.randn(2, c_in, 5, 7, dtype=torch.float64, requires_grad=True),\n"
        "                  torch.randn(3 * c_out, c_in, dtype=torch.float64, requires_grad=True),\n"
        "                  torch.randn(3 * c_out, dtype=torch.float64, requires_grad=True),\n"
        "                  torch.rand(3, 7, 7, dtype=torch.float64, requires_grad=True))\n"
        "    with use_backend('graph_conv=cpp'):\n"
        "        assert torch.autograd.gradcheck(graph_conv, (x, w, b, A))\n"
        "        torch.testing.assert_close(graph_conv(x, w, b, A), reference.graph_conv(x, w, b, A))\n"
    )
    env = {**os.environ, "SKELFAST_CPU_BLAS": "aten"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]


# --- torch.autocast ---------------------------------------------------------------------------


def autocast_inputs():
    """What ST-GCN hands the op under autocast: bf16 activations (from the autocast temporal conv),
    float32 parameters and adjacency."""
    x, w, b, A = make_inputs(2, 5, 6, 4, 25, 3)
    return x.detach().bfloat16().requires_grad_(), w, b, A


def abs_bound(x, w, b, A):
    """|y| of every term: the reference on absolute values, the scale of each output's rounding."""
    return reference.graph_conv(*(t.detach().float().abs() for t in (x, w, b, A)))


@requires_cpp
def test_autocast_cpu_computes_in_float32_and_returns_bf16():
    """The C++ CPU kernel has no bf16 path: under autocast it runs in float32 on the (exactly
    representable) upcast inputs, and the result is that float32 output rounded to bf16."""
    x, w, b, A = autocast_inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = graph_conv(x, w, b, A)
    want = graph_conv(x.float(), w, b, A)
    assert got.dtype == torch.bfloat16
    assert torch.equal(got, want.bfloat16())
    # gradients come back in each input's own dtype, from the float32 backward
    grads = torch.autograd.grad(got.float().sum(), [x, w, b, A])
    want_grads = torch.autograd.grad(want.sum(), [x, w, b, A])
    assert [g.dtype for g in grads] == [torch.bfloat16, torch.float32, torch.float32, torch.float32]
    assert torch.equal(grads[0], want_grads[0].bfloat16())
    for g, r, name in zip(grads[1:], want_grads[1:], ("weight", "bias", "A"), strict=True):
        assert_close(g, r, 0, 0, f"autocast grad {name}")


def test_autocast_reference_runs_in_bf16():
    """The reference einsum takes bf16 itself. A term w x A meets at most five roundings to bf16
    (w and A, or b, as inputs; W x; W x + b; the output), each within 2^-9 relative (bf16's 8-bit
    significand), so every output is within 5 * 2^-9 < 2^-6 of the sum of its terms' magnitudes."""
    x, w, b, A = autocast_inputs()
    with use_backend("graph_conv=reference"), torch.autocast("cpu", dtype=torch.bfloat16):
        got = graph_conv(x, w, b, A)
    want = reference.graph_conv(x.float(), w, b, A)
    assert got.dtype == torch.bfloat16
    assert bool(((got.float() - want).abs() <= 2.0**-6 * abs_bound(x, w, b, A)).all())


@requires_cpp
def test_op_called_directly_under_autocast_runs_in_float32():
    """The op's autocast rule: float32 inputs, no recasting of the kernels' own matmuls inside
    (before the rule, the nested matmuls came back bf16 and the kernel failed on mixed dtypes)."""
    x, w, b, A = (t.detach() for t in make_inputs(2, 5, 6, 4, 25, 3))
    grad = torch.randn(2, 6, 4, 25)
    want = torch.ops.skelfast.graph_conv(x, w, b, A)
    want_grads = torch.ops.skelfast.graph_conv_backward(grad, x, w, b, A, [True] * 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = torch.ops.skelfast.graph_conv(x, w, b, A)
        got_grads = torch.ops.skelfast.graph_conv_backward(grad, x, w, b, A, [True] * 4)
    assert torch.equal(got, want)
    assert all(torch.equal(g, r) for g, r in zip(got_grads, want_grads, strict=True))


@requires_cpp
def test_torch_compile_fullgraph_under_autocast():
    x, w, b, A = autocast_inputs()

    def f(x, w, b, A):
        return graph_conv(x, w, b, A)

    with torch.autocast("cpu", dtype=torch.bfloat16):
        eager = f(x, w, b, A)
        compiled = torch.compile(f, fullgraph=True, backend="inductor")(x, w, b, A)
    assert compiled.dtype == torch.bfloat16
    assert torch.equal(compiled, eager)  # the same float32 kernel, the same final rounding


def test_mixed_dtypes_outside_autocast_are_still_an_error():
    x, w, b, A = autocast_inputs()
    with pytest.raises(TypeError, match="weight has dtype torch.float32 but x has dtype torch.bfloat16"):
        graph_conv(x, w, b, A)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast_cuda_runs_the_half_precision_kernel(dtype):
    """On CUDA the C++ kernel takes fp16/bf16 (fp32 accumulation): under autocast it runs in the
    autocast dtype. A term meets at most five roundings to the half dtype (2^-9 relative for bf16,
    2^-12 for fp16), as in the reference test: within 2^-6 of each output's term magnitudes."""
    x, w, b, A = (t.detach().cuda() for t in autocast_inputs())
    with torch.autocast("cuda", dtype=dtype):
        got = graph_conv(x, w, b, A)
    assert got.dtype == dtype
    with use_backend("graph_conv=cpp"):
        assert torch.equal(got, graph_conv(*(t.to(dtype) for t in (x, w, b, A))))
    want = reference.graph_conv(x.float(), w, b, A)
    assert bool(((got.float() - want).abs() <= 2.0**-6 * abs_bound(x, w, b, A)).all())
