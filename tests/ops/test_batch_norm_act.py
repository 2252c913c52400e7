"""skelfast.ops.batch_norm_act against the step-by-step reference (F.batch_norm, dropout's
multiplies, the residual add, ReLU): forward, running statistics, every gradient, opcheck, compile."""

import itertools

import pytest
import torch

from skelfast import backends, reference, use_backend
from skelfast.ops import batch_norm_act
from tests.utils import assert_close, run_per_isa

cpp_missing = backends.cpp_reason(torch.device("cpu"), torch.float32, (torch.float32,))
requires_cpp = pytest.mark.skipif(cpp_missing is not None, reason=str(cpp_missing))

# The kernel normalises with x * a + b and merges per-row statistics (Chan's formula); the reference
# computes (x - mean) * invstd * w + b with Welford statistics. Outputs are O(1): float32 agrees to a
# few ulps (1e-5), float64 to rounding (1e-10). Gradients sum N*S terms per channel: 10x looser.
TOL = {torch.float32: (2e-5, 2e-5), torch.float64: (1e-10, 1e-10)}

# (19, 5, 13, 25): three blocks of the kernel's per-channel reductions (8 samples each), the last short
SHAPES = [(3, 7, 13, 25), (2, 1, 1, 17), (4, 16, 50, 25), (5, 4), (4, 3, 300, 1), (1, 2, 3), (19, 5, 13, 25)]


def make(shape, dtype, residual, keep, requires_grad=True, offset=3.0):
    torch.manual_seed(sum(shape))
    c = shape[1]
    x = (torch.randn(shape, dtype=dtype) * 2 + offset).requires_grad_(requires_grad)
    weight = (torch.rand(c, dtype=dtype) + 0.5).requires_grad_(requires_grad)
    bias = torch.randn(c, dtype=dtype).requires_grad_(requires_grad)
    res = torch.randn(shape, dtype=dtype).requires_grad_(requires_grad) if residual else None
    mask = torch.rand(shape) > 0.3 if keep else None
    return x, weight, bias, res, mask


def run(fn, x, weight, bias, res, mask, training, relu):
    c = x.shape[1]
    running_mean = torch.linspace(-1, 1, c, dtype=x.dtype)
    running_var = torch.linspace(0.5, 2, c, dtype=x.dtype)
    y = fn(x, weight, bias, running_mean, running_var, training, 0.1, 1e-5, res, mask, 1 / 0.7, relu)
    return y, running_mean, running_var


@requires_cpp
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("residual,keep,relu", list(itertools.product([False, True], repeat=3)))
@pytest.mark.parametrize("training", [True, False])
def test_matches_reference(dtype, shape, residual, keep, relu, training):
    atol, rtol = TOL[dtype]
    x, weight, bias, res, mask = make(shape, dtype, residual, keep)
    with use_backend("batch_norm_act=cpp"):
        y, rm, rv = run(batch_norm_act, x, weight, bias, res, mask, training, relu)
    y_ref, rm_ref, rv_ref = run(reference.batch_norm_act, x, weight, bias, res, mask, training, relu)
    assert_close(y, y_ref, atol, rtol, "forward")
    assert_close(rm, rm_ref, atol, rtol, "running_mean")
    assert_close(rv, rv_ref, atol, rtol, "running_var")
    grad = torch.randn_like(y_ref)
    wrt = [t for t in (x, weight, bias, res) if t is not None]
    got = torch.autograd.grad(y, wrt, grad)
    want = torch.autograd.grad(y_ref, wrt, grad)
    for name, g, w in zip("x weight bias residual".split(), got, want, strict=False):
        assert_close(g, w, atol * 10 * max(1.0, w.abs().max().item()), rtol * 10, f"grad {name}")


@requires_cpp
def test_statistics_survive_a_large_mean():
    """mean/std = 1e4: E[x^2] - E[x]^2 in float32 would lose every digit of the variance; the
    per-row centred sums keep it (compared with the float64 reference)."""
    x = torch.randn(8, 4, 50, 25, dtype=torch.float64) + 1e4
    with use_backend("batch_norm_act=cpp"):
        y = batch_norm_act(x.float(), None, None, None, None, True, 0.1, 1e-5)
    y_ref = reference.batch_norm_act(x, None, None, None, None, True, 0.1, 1e-5)
    # x.float() rounds x to ~1e-3 absolute (ulp of 1e4): that, not the kernel, bounds the agreement
    assert_close(y.double(), y_ref, 2e-3, 0, "normalised")


@requires_cpp
def test_same_bits_on_one_and_two_threads():
    """The per-channel sums run over fixed sample blocks merged in order, so the thread count that
    splits the blocks cannot change a bit of the statistics, the output or the gradients."""
    x, weight, bias, res, mask = make((21, 6, 13, 25), torch.float32, True, True)
    grad = torch.randn(x.shape)
    outputs = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            with use_backend("batch_norm_act=cpp"):
                y, rm, rv = run(batch_norm_act, x, weight, bias, res, mask, True, True)
            outputs.append([y, rm, rv, *torch.autograd.grad(y, [x, weight, bias, res], grad)])
    finally:
        torch.set_num_threads(threads)
    for one, two in zip(*outputs, strict=True):
        assert torch.equal(one, two)


@requires_cpp
def test_instruction_set_forms_give_the_same_bits(tmp_path):
    """The row loops are compiled for the baseline, AVX2 and AVX-512 and picked at run time (capped
    by SKELFAST_CPU_ISA, read once per process): each form runs in a child process, float32 and
    float64, training and eval, with S = 13 * 3 = 39 (two 16-lane blocks and a tail). None contracts
    to FMA and the sums keep 16 accumulators in every form, so all give the same bits."""
    script = (
        "import sys, torch\n"
        "from skelfast import use_backend\n"
        "from skelfast.ops import batch_norm_act\n"
        "from tests.ops.test_batch_norm_act import make, run\n"
        "outs = []\n"
        "for dtype in (torch.float32, torch.float64):\n"
        "    for training in (True, False):\n"
        "        x, w, b, res, mask = make((10, 5, 13, 3), dtype, True, True)\n"
        "        with use_backend('batch_norm_act=cpp'):\n"
        "            y, rm, rv = run(batch_norm_act, x, w, b, res, mask, training, True)\n"
        "        g = torch.randn(x.shape, dtype=dtype, generator=torch.Generator().manual_seed(1))\n"
        "        outs += [y, rm, rv, *torch.autograd.grad(y, [x, w, b, res], g)]\n"
        "torch.save(outs, sys.argv[1])\n"
    )
    results = run_per_isa(script, tmp_path)
    for isa in ("baseline", "avx2"):
        for i, (a, b) in enumerate(zip(results[isa], results["avx512"], strict=True)):
            assert torch.equal(a, b), (isa, i)


@requires_cpp
def test_gradcheck_float64():
    x, weight, bias, res, mask = make((3, 4, 5, 3), torch.float64, True, True)
    for relu, training in itertools.product([False, True], [False, True]):

        def fn(x, weight, bias, res, relu=relu, training=training):
            rm, rv = torch.zeros(4, dtype=x.dtype), torch.ones(4, dtype=x.dtype)
            return torch.ops.skelfast.batch_norm_act(
                x,
                weight,
                bias,
                None if training else rm,
                None if training else rv,
                res,
                mask,
                1.5,
                relu,
                1e-5,
                True,  # relu_mask: the [y > 0] bytes the backward reads
            )[0]

        assert torch.autograd.gradcheck(fn, (x, weight, bias, res))


@requires_cpp
def test_backward_needs_the_forwards_relu_mask():
    # batch_norm_act asks for the [y > 0] bytes only where a backward will run; the raw op run
    # without them and then differentiated names the cause rather than reading garbage
    x, weight, bias, res, mask = make((3, 4, 5, 3), torch.float32, True, True)
    x.requires_grad_()
    y = torch.ops.skelfast.batch_norm_act(x, weight, bias, None, None, res, mask, 1.5, True, 1e-5, False)[0]
    with pytest.raises(RuntimeError, match="relu_mask=False"):
        y.sum().backward()
    with torch.no_grad():  # no backward to come: no mask written, the same output
        y_no_grad = batch_norm_act(x, weight, bias, None, None, True, 0.1, 1e-5, res, mask, 1.5, True)
    assert torch.equal(y_no_grad, y.detach())


@requires_cpp
def test_non_contiguous_input():
    x, weight, bias, res, mask = make((4, 6, 9, 5), torch.float64, True, True)
    xt = (
        x.detach().transpose(2, 3).contiguous().transpose(2, 3).requires_grad_()
    )  # channels-last-like strides
    assert not xt.is_contiguous()
    with use_backend("batch_norm_act=cpp"):
        y, _, _ = run(batch_norm_act, xt, weight, bias, res, mask, True, True)
    y_ref, _, _ = run(reference.batch_norm_act, x, weight, bias, res, mask, True, True)
    assert_close(y, y_ref, 1e-10, 1e-10, "non-contiguous")


def test_zero_batch_falls_back_to_reference():
    x = torch.randn(0, 5, 7, 3)
    y = batch_norm_act(x, torch.ones(5), torch.zeros(5), None, None, True, 0.1, 1e-5, relu=True)
    assert y.shape == x.shape
    with (
        pytest.raises(backends.BackendUnavailableError, match="no elements"),
        use_backend("batch_norm_act=cpp"),
    ):
        batch_norm_act(x, None, None, None, None, True, 0.1, 1e-5)


@requires_cpp
def test_opcheck():
    x, weight, bias, res, mask = make((3, 4, 5, 3), torch.float32, True, True)
    for given in (False, True):
        stats = (torch.zeros(4), torch.ones(4)) if given else (None, None)
        torch.library.opcheck(
            torch.ops.skelfast.batch_norm_act, (x, weight, bias, *stats, res, mask, 1.5, True, 1e-5, True)
        )
        torch.library.opcheck(
            torch.ops.skelfast.batch_norm_act, (x, weight, bias, *stats, None, None, 1.0, False, 1e-5, False)
        )


@requires_cpp
def test_compile_fullgraph():
    x, weight, bias, res, mask = make((3, 4, 5, 3), torch.float32, True, True)

    def fn(x, weight, bias, res, mask):
        return batch_norm_act(x, weight, bias, None, None, True, 0.1, 1e-5, res, mask, 1.5, True)

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    assert_close(compiled(x, weight, bias, res, mask), fn(x, weight, bias, res, mask), 1e-6, 1e-6, "compiled")


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"x": torch.randn(5)}, ValueError, r"\(N, C, \*\)"),
        ({"x": torch.ones(2, 3, dtype=torch.long)}, TypeError, "floating-point"),
        ({"weight": torch.ones(4)}, ValueError, r"weight must have shape \(3,\)"),
        ({"residual": torch.randn(2, 3, 5)}, ValueError, "residual must have x's shape"),
        ({"keep": torch.ones(2, 3, 4)}, TypeError, "keep must be a bool mask"),
        ({"keep": torch.ones(2, 3, 5, dtype=torch.bool)}, ValueError, "keep must have x's shape"),
        ({"x": torch.randn(1, 3, 1)}, ValueError, "more than 1 value per channel"),
        ({"weight": torch.ones(3, dtype=torch.float64)}, TypeError, "weight has dtype torch.float64"),
        (
            {"x": torch.randn(2, 3, 4, dtype=torch.bfloat16), "weight": torch.ones(3, dtype=torch.float64)},
            TypeError,
            "weight has dtype",
        ),
        ({"residual": torch.ones(2, 3, 4, dtype=torch.long)}, TypeError, "residual must be a floating-point"),
    ],
)
def test_bad_input(kwargs, error, match):
    args = {"x": torch.randn(2, 3, 4), "weight": torch.ones(3), "residual": None, "keep": None}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        batch_norm_act(
            args["x"], args["weight"], None, None, None, True, 0.1, 1e-5, args["residual"], args["keep"]
        )


@pytest.mark.parametrize("x_dtype", [torch.bfloat16, torch.float16])
def test_mixed_precision_follows_batch_norm(x_dtype):
    """Under autocast a bf16 / half activation meets nn.BatchNorm2d's float32 parameters and
    buffers: F.batch_norm accepts that and returns x's dtype, so the op must too (it runs the
    reference chain, bit-equal); a float32 residual promotes the sum, as ``y + residual`` does."""
    x, weight, bias, res, mask = make((4, 3, 6, 5), torch.float32, residual=True, keep=True)
    x_low = x.detach().to(x_dtype).requires_grad_()
    res_low = res.detach().to(x_dtype)
    for residual, out_dtype in ((res_low, x_dtype), (res.detach(), torch.float32)):
        outputs = []
        for fn in (batch_norm_act, reference.batch_norm_act):
            stats = torch.linspace(-1, 1, 3), torch.linspace(0.5, 2, 3)  # float32, as the module's
            y = fn(x_low, weight, bias, *stats, True, 0.1, 1e-5, residual, mask, 1 / 0.7, True)
            outputs.append((y, *stats))
        (y, rm, rv), (y_ref, rm_ref, rv_ref) = outputs
        assert y.dtype == out_dtype
        assert torch.equal(y, y_ref) and torch.equal(rm, rm_ref) and torch.equal(rv, rv_ref)
