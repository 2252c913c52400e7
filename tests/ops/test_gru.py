"""skelfast.ops.gru and skelfast.nn.GRU against the literal step-by-step GRU and against nn.GRU:
forward, every gradient, ragged lengths in both directions, the module's nn.GRU inputs, opcheck,
compile, bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.utils.rnn as rnn_utils

from skelfast import backends, reference, use_backend
from skelfast.nn.rnn import GRU
from skelfast.ops import gru
from skelfast.reference.gru import gru_layer_steps
from tests.utils import assert_close, run_child

cpp_missing = backends.cpp_reason(torch.device("cpu"), torch.float32, (torch.float32,))
requires_cpp = pytest.mark.skipif(cpp_missing is not None, reason=str(cpp_missing))

# float64: the kernel and the literal loop apply the same equations in another order: rounding only.
# float32: the kernel's exp is a polynomial within 2 ulp and its GEMMs sum in another order; states
# are bounded by 1, so a few ulps per step over T <= 50 steps stay below 1e-5; gradients sum over
# every frame and weight row: 10x looser.
FWD_TOL = {torch.float64: (1e-12, 1e-10), torch.float32: (1e-5, 1e-5)}
GRAD_TOL = {torch.float64: (1e-11, 1e-9), torch.float32: (1e-4, 1e-4)}

# (B, T, I, H, lengths): ragged with ties, a single frame, one sample, prime sizes
CASES = [
    (5, 7, 3, 4, [3, 7, 1, 7, 5]),
    (1, 1, 1, 1, [1]),
    (3, 13, 17, 5, [13, 2, 13]),
    (4, 50, 150, 9, [50, 31, 7, 50]),
]


def layer_inputs(batch, frames, in_size, hidden, dtype, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=g, dtype=dtype)).requires_grad_()

    x = rand(batch, frames, in_size)
    h0 = rand(batch, hidden, scale=0.5)
    w_ih, w_hh = rand(3 * hidden, in_size, scale=0.4), rand(3 * hidden, hidden, scale=0.4)
    b_ih, b_hh = (rand(3 * hidden, scale=0.3), rand(3 * hidden, scale=0.3)) if bias else (None, None)
    return x, h0, w_ih, w_hh, b_ih, b_hh


def mask_padding(x, lengths):
    """Zero the frames past each length (the op's contract: they are never read)."""
    keep = torch.arange(x.shape[1])[None, :] < torch.as_tensor(lengths)[:, None]
    return x * keep[..., None].to(x.dtype)


@requires_cpp
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_layer_matches_the_step_by_step_gru(dtype, case, reverse, bias):
    batch, frames, in_size, hidden, lengths = case
    lengths = torch.tensor(lengths)
    x, h0, w_ih, w_hh, b_ih, b_hh = layer_inputs(batch, frames, in_size, hidden, dtype, bias)
    out, h_n, saved = torch.ops.skelfast.gru_layer(x, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse, True)
    want_out, want_h = gru_layer_steps(x, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse)
    atol, rtol = FWD_TOL[dtype]
    assert_close(out, want_out, atol, rtol, "output")
    assert_close(h_n, want_h, atol, rtol, "h_n")
    assert saved.shape == (batch, frames, 4 * hidden)
    assert not out[mask_padding(torch.ones_like(out), lengths) == 0].any(), "output past a length"

    grad_out, grad_h = torch.randn_like(out), torch.randn_like(h_n)
    wrt = [t for t in (x, h0, w_ih, w_hh, b_ih, b_hh) if t is not None]
    got = torch.autograd.grad((out * grad_out).sum() + (h_n * grad_h).sum(), wrt)
    want = torch.autograd.grad((want_out * grad_out).sum() + (want_h * grad_h).sum(), wrt, allow_unused=True)
    atol, rtol = GRAD_TOL[dtype]
    for name, a, b in zip(("x", "h0", "w_ih", "w_hh", "b_ih", "b_hh"), got, want, strict=False):
        b = torch.zeros_like(a) if b is None else b  # padding frames of x get no gradient
        assert_close(a, b, atol, rtol, f"grad {name}")


@requires_cpp
@pytest.mark.parametrize("reverse", [False, True])
def test_layer_gradcheck(reverse):
    x, h0, w_ih, w_hh, b_ih, b_hh = layer_inputs(3, 5, 2, 3, torch.float64)
    lengths = torch.tensor([5, 2, 4])

    def fn(x, h0, w_ih, w_hh, b_ih, b_hh):
        out, h_n, _ = torch.ops.skelfast.gru_layer(x, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse, True)
        return out, h_n

    assert torch.autograd.gradcheck(fn, (x, h0, w_ih, w_hh, b_ih, b_hh))


@requires_cpp
@pytest.mark.parametrize("used", ["output", "h_n"])
def test_layer_gradient_through_one_output(used):
    """A loss that reads only the output or only h_n leaves the other output's gradient None (the
    autograd formula does not materialise zeros for it): the gradients still equal the step loop's."""
    x, h0, w_ih, w_hh, b_ih, b_hh = layer_inputs(3, 6, 4, 5, torch.float64)
    lengths = torch.tensor([6, 2, 5])
    wrt = (x, h0, w_ih, w_hh, b_ih, b_hh)
    out, h_n, _ = torch.ops.skelfast.gru_layer(x, lengths, h0, w_ih, w_hh, b_ih, b_hh, False, True)
    want_out, want_h = gru_layer_steps(x, lengths, h0, w_ih, w_hh, b_ih, b_hh, False)
    got = torch.autograd.grad((out if used == "output" else h_n).square().sum(), wrt)
    want = torch.autograd.grad(
        (want_out if used == "output" else want_h).square().sum(), wrt, allow_unused=True
    )
    atol, rtol = GRAD_TOL[torch.float64]
    for name, a, b in zip(("x", "h0", "w_ih", "w_hh", "b_ih", "b_hh"), got, want, strict=True):
        assert_close(a, torch.zeros_like(a) if b is None else b, atol, rtol, f"grad {name}")


def stack_inputs(batch, frames, in_size, hidden, layers, bidirectional, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    module = torch.nn.GRU(in_size, hidden, layers, batch_first=True, bidirectional=bidirectional).to(dtype)
    x = torch.randn(batch, frames, in_size, dtype=dtype, requires_grad=True)
    h0 = torch.randn(layers * (2 if bidirectional else 1), batch, hidden, dtype=dtype, requires_grad=True)
    return module, x, h0


@requires_cpp
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("layers,bidirectional", [(1, False), (2, True), (3, False), (1, True)])
@pytest.mark.parametrize("with_lengths", [True, False])
def test_stack_matches_nn_gru(dtype, layers, bidirectional, with_lengths):
    module, x, h0 = stack_inputs(4, 11, 6, 5, layers, bidirectional, dtype)
    lengths = torch.tensor([11, 3, 8, 11]) if with_lengths else None
    weights = module._flat_weights
    with use_backend("gru=cpp"):
        out, h_n = gru(x, lengths, weights, layers, bidirectional, h0)
    want_out, want_h = reference.gru(x, lengths, h0, weights, layers, bidirectional)
    atol, rtol = FWD_TOL[dtype]
    assert_close(out, want_out, atol, rtol, "output")
    assert_close(h_n, want_h, atol, rtol, "h_n")
    grad_out, grad_h = torch.randn_like(out), torch.randn_like(h_n)
    wrt = [x, h0, *weights]
    got = torch.autograd.grad((out * grad_out).sum() + (h_n * grad_h).sum(), wrt)
    want = torch.autograd.grad((want_out * grad_out).sum() + (want_h * grad_h).sum(), wrt)
    atol, rtol = GRAD_TOL[dtype]
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        assert_close(a, b, atol, rtol, f"grad {i}")


@requires_cpp
@pytest.mark.parametrize(
    "env",
    [{"SKELFAST_CPU_ISA": "baseline"}, {"SKELFAST_CPU_BLAS": "aten"}],
    ids=["baseline-gates", "aten-gemm"],
)
def test_other_cpu_forms_agree(env):
    """The float32 gate loops are built twice (baseline and AVX2 + FMA, chosen at run time), and the
    recurrent GEMMs run on MKL's packed weights where torch links MKL, else as at::mm: run the
    baseline loops, and the at::mm GEMMs (ragged lengths: the packed form repacks as samples end), in
    a child process and hold them to the same reference as this process's."""
    script = (
        "import torch, skelfast.ops\n"
        "from skelfast.reference.gru import gru_layer_steps as steps\n"
        "torch.manual_seed(0)\n"
        "x = torch.randn(3, 9, 5, requires_grad=True); h0 = torch.randn(3, 17)\n"
        "w_ih = torch.randn(51, 5) * 0.4; w_hh = torch.randn(51, 17) * 0.4; b = torch.randn(51) * 0.3\n"
        "lengths = torch.tensor([9, 4, 6])\n"
        "out, h, _ = torch.ops.skelfast.gru_layer(x, lengths, h0, w_ih, w_hh, b, b, True, True)\n"
        "ref, ref_h = steps(x, lengths, h0, w_ih, w_hh, b, b, True)\n"
        "g = torch.autograd.grad(out.sum(), x)[0]; gr = torch.autograd.grad(ref.sum(), x)[0]\n"
        "print(float((out - ref).abs().max()), float((g - gr).abs().max()))\n"
    )
    result = run_child(script, **env)
    out_err, grad_err = map(float, result.stdout.split())
    assert out_err < 1e-5 and grad_err < 1e-4, (out_err, grad_err)


@requires_cpp
def test_zero_batch_and_non_contiguous_input():
    module, x, h0 = stack_inputs(0, 4, 3, 2, 2, True)
    with use_backend("gru=cpp"):
        out, h_n = gru(x, torch.zeros(0, dtype=torch.int64), module._flat_weights, 2, True, h0)
    assert out.shape == (0, 4, 4) and h_n.shape == (4, 0, 2)
    out.sum().backward()

    module, x, h0 = stack_inputs(3, 6, 5, 4, 1, True)
    # a (B, T, I) view of a (T, B, I) buffer
    x_t = x.detach().transpose(0, 1).contiguous().transpose(0, 1).requires_grad_()
    assert not x_t.is_contiguous()
    lengths = torch.tensor([6, 1, 4])
    with use_backend("gru=cpp"):
        out, _ = gru(x_t, lengths, module._flat_weights, 1, True, h0)
    want, _ = reference.gru(x.detach(), lengths, h0, module._flat_weights, 1, True)
    assert_close(out, want, 1e-5, 1e-5, "non-contiguous x")


@requires_cpp
def test_opcheck():
    x, h0, w_ih, w_hh, b_ih, b_hh = layer_inputs(3, 5, 4, 3, torch.float64)
    lengths = torch.tensor([5, 1, 3])
    for reverse in (False, True):
        torch.library.opcheck(
            torch.ops.skelfast.gru_layer, (x, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse, True)
        )
        torch.library.opcheck(
            torch.ops.skelfast.gru_layer, (x, lengths, h0, w_ih, w_hh, None, None, reverse, True)
        )


@requires_cpp
def test_compiles_fullgraph():
    module = GRU(5, 4, 2, batch_first=True, bidirectional=True)
    x = torch.randn(3, 7, 5, requires_grad=True)
    lengths = torch.tensor([7, 2, 5])
    # fullgraph: Dynamo refuses nn.GRU instances; skelfast's GRU is an RNNBase, not an nn.GRU
    compiled = torch.compile(lambda x: module(x, lengths=lengths), fullgraph=True, backend="aot_eager")
    out, h_n = compiled(x)
    want, want_h = module(x, lengths=lengths)
    assert_close(out, want, 1e-6, 1e-6, "compiled output")
    assert_close(h_n, want_h, 1e-6, 1e-6, "compiled h_n")
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


# --- the module: a drop-in nn.GRU --------------------------------------------------------------


def pair(batch_first=True, layers=2, bidirectional=True, bias=True, dropout=0.0, seed=0):
    torch.manual_seed(seed)
    official = torch.nn.GRU(
        6, 5, layers, batch_first=batch_first, bidirectional=bidirectional, bias=bias, dropout=dropout
    )
    ours = GRU(6, 5, layers, batch_first=batch_first, bidirectional=bidirectional, bias=bias, dropout=dropout)
    ours.load_state_dict(official.state_dict())
    return official, ours


@requires_cpp
def test_module_state_dict_is_nn_grus():
    official, ours = pair()
    assert list(official.state_dict()) == list(ours.state_dict())
    torch.manual_seed(3)
    fresh_official = torch.nn.GRU(6, 5, 2)
    torch.manual_seed(3)
    fresh_ours = GRU(6, 5, 2)
    for a, b in zip(fresh_official.parameters(), fresh_ours.parameters(), strict=True):
        assert torch.equal(a, b)  # the same initialisation, draw for draw


@requires_cpp
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_module_padded_input_matches_nn_gru(batch_first, bias):
    official, ours = pair(batch_first=batch_first, bias=bias)
    x = torch.randn(4, 9, 6) if batch_first else torch.randn(9, 4, 6)
    hx = torch.randn(4, 4, 5)
    want, want_h = official(x, hx)
    got, got_h = ours(x, hx)
    assert_close(got, want, 1e-5, 1e-5, "output")
    assert_close(got_h, want_h, 1e-5, 1e-5, "h_n")
    got, _ = ours(x[0] if batch_first else x[:, 0])  # unbatched (T, I)
    want, _ = official(x[0] if batch_first else x[:, 0])
    assert_close(got, want, 1e-5, 1e-5, "unbatched")


@requires_cpp
@pytest.mark.parametrize("enforce_sorted", [True, False])
def test_module_packed_and_lengths_inputs_match_nn_gru(enforce_sorted):
    official, ours = pair()
    lengths = torch.tensor([9, 7, 7, 2]) if enforce_sorted else torch.tensor([7, 9, 2, 7])
    x = mask_padding(torch.randn(4, 9, 6), lengths)
    hx = torch.randn(4, 4, 5)
    packed = rnn_utils.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=enforce_sorted)
    want, want_h = official(packed, hx)
    got, got_h = ours(packed, hx)
    assert isinstance(got, rnn_utils.PackedSequence)
    assert torch.equal(got.batch_sizes, want.batch_sizes)
    assert_close(got.data, want.data, 1e-5, 1e-5, "packed output")
    assert_close(got_h, want_h, 1e-5, 1e-5, "h_n")
    padded_want = rnn_utils.pad_packed_sequence(want, batch_first=True)[0]
    got_padded, got_h = ours(x, hx, lengths=lengths)
    assert_close(got_padded, padded_want, 1e-5, 1e-5, "lengths= output")
    assert_close(got_h, want_h, 1e-5, 1e-5, "lengths= h_n")


@requires_cpp
def test_module_dropout_only_in_training():
    official, ours = pair(dropout=0.5)
    x = torch.randn(3, 8, 6)
    ours.eval(), official.eval()
    assert_close(ours(x)[0], official(x)[0], 1e-5, 1e-5, "eval mode ignores dropout")
    ours.train()
    torch.manual_seed(0)
    first = ours(x)[0]
    torch.manual_seed(0)
    again = ours(x)[0]
    assert torch.equal(first, again), "training dropout must follow the global seed"
    assert not torch.allclose(first, ours.eval()(x)[0]), "training dropout changed nothing"


# --- bad input ----------------------------------------------------------------------------------


def test_bad_input_names_the_problem():
    module, x, h0 = stack_inputs(3, 5, 4, 2, 1, False)
    weights = module._flat_weights
    with pytest.raises(ValueError, match="x must have 3 dimensions"):
        gru(x[0], None, weights, 1, False)
    with pytest.raises(ValueError, match=r"lengths must be in \[1, T=5\]"):
        gru(x, torch.tensor([5, 0, 3]), weights, 1, False)
    with pytest.raises(ValueError, match=r"lengths must be in \[1, T=5\]"):
        gru(x, torch.tensor([5, 6, 3]), weights, 1, False)
    with pytest.raises(ValueError, match=r"lengths must be \(3,\)"):
        gru(x, torch.tensor([5, 5]), weights, 1, False)
    with pytest.raises(TypeError, match="lengths must be an integer tensor"):
        gru(x, torch.tensor([5.0, 5.0, 5.0]), weights, 1, False)
    with pytest.raises(ValueError, match="expected 2 .* or 4 weights"):
        gru(x, None, weights[:3], 1, False)
    with pytest.raises(ValueError, match=r"cell 1 \(layer 0\) needs w_ih"):
        gru(x, None, weights, 1, True)  # a unidirectional stack's weights read as two biasless cells
    with pytest.raises(ValueError, match=r"w_ih \(6, 7\)"):
        gru(torch.randn(3, 5, 7), None, weights, 1, False)
    with pytest.raises(ValueError, match=r"weights\[1\] must be the first cell's w_hh"):
        gru(x, None, [weights[0], weights[2], weights[1], weights[3]], 1, False)  # biases out of order
    with pytest.raises(ValueError, match=r"h0 must be"):
        gru(x, None, weights, 1, False, h0=torch.zeros(1, 2, 2))
    with pytest.raises(TypeError, match="dtype"):
        gru(x.double(), None, weights, 1, False)
    with pytest.raises(ValueError, match="dropout must be in"):
        gru(x, None, weights, 1, False, dropout=1.5)


@requires_cpp
def test_backward_without_saved_gates_is_refused():
    x, h0, w_ih, w_hh, b_ih, b_hh = layer_inputs(2, 3, 2, 2, torch.float64)
    lengths = torch.tensor([3, 2])
    with torch.no_grad():
        out, h_n, saved = torch.ops.skelfast.gru_layer(x, lengths, h0, w_ih, w_hh, b_ih, b_hh, False, False)
    assert saved.numel() == 0
    with pytest.raises(RuntimeError, match="save_gates=False"):
        torch.ops.skelfast.gru_layer_backward(
            torch.ones_like(out), torch.zeros_like(h_n), x, lengths, h0, w_ih, w_hh, out, saved, False, True,
            [True, True, True, True],
        )  # fmt: skip
