"""skelfast.ops.dropout: the C++ and Triton (interpreter) kernels against the Philox reference mask
bit for bit, the backward as the same mask, the keep rate, seeding, opcheck, compile, bad input and
the kernel's ahead-of-time compilation for sm_80 / sm_90."""

from __future__ import annotations

import json
import math

import pytest
import torch

from skelfast import backends, use_backend
from skelfast.ops import dropout
from skelfast.ops.dropout import draw_seed
from skelfast.reference.philox import dropout_keep, keep_mask_bytes

cpp_missing = backends.cpp_reason(torch.device("cpu"), torch.float32, (torch.float32,))
requires_cpp = pytest.mark.skipif(cpp_missing is not None, reason=str(cpp_missing))
triton_missing = backends.triton_reason(torch.device("cpu"))
requires_triton = pytest.mark.skipif(triton_missing is not None, reason=str(triton_missing))

# sizes around the kernels' granularity: one Philox counter is 4 elements, one C++ chunk 4096
SIZES = [1, 3, 4, 5, 31, 32, 33, 4095, 4096, 4097, 10_001]
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


def expected(x: torch.Tensor, p: float, seed: torch.Tensor) -> torch.Tensor:
    """What every seeded kernel must return: x * scale where the reference word is kept, scale
    rounded to x's compute type (float32 for the half types) as the kernels multiply."""
    keep = dropout_keep(int(seed), x.numel(), p).view(x.shape)
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    scale = torch.tensor(1.0 / (1.0 - p), dtype=compute)
    return torch.where(keep, x.to(compute) * scale, torch.zeros((), dtype=compute)).to(x.dtype)


def seeded(seed: int) -> torch.Tensor:
    return draw_seed(torch.Generator().manual_seed(seed))


@requires_cpp
@pytest.mark.parametrize("numel", SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_cpp_kernel_is_the_philox_mask_exactly(numel, dtype, p):
    x = (torch.rand(numel, generator=torch.Generator().manual_seed(numel)) + 0.5).to(dtype)
    seed = seeded(numel + int(100 * p))
    y = torch.ops.skelfast.dropout_cpu(x, p, seed)
    assert torch.equal(y, expected(x, p, seed))


@requires_cpp
@pytest.mark.parametrize("numel", [1, 5, 17, 16_384, 3 * 16_384 + 7])  # chunks of 16384 elements
@pytest.mark.parametrize("p", [0.0, 0.25, 0.5, 1.0])
def test_cpp_byte_keep_mask_is_the_philox_bytes_exactly(numel, p):
    """keep_mask_cpu (the fused BatchNorm tails' dropout masks): byte i & 3 of word i >> 2 against
    256 p, bit for bit against the PyTorch Philox reference, negative seeds included."""
    for seed in (numel, -(2**62) - numel):
        got = torch.ops.skelfast.keep_mask_cpu(numel, p, torch.tensor(seed))
        assert got.dtype == torch.bool and got.shape == (numel,)
        assert torch.equal(got, keep_mask_bytes(seed, numel, p))


@requires_cpp
def test_cpp_byte_keep_mask_opcheck():
    """Schema, fake (meta) kernel and dispatch of keep_mask_cpu, which the encoders call under
    torch.compile."""
    torch.library.opcheck(torch.ops.skelfast.keep_mask_cpu.default, (100, 0.5, torch.tensor(3)))


@requires_cpp
def test_cpp_byte_keep_mask_rejects_what_a_byte_cannot_decide():
    with pytest.raises(RuntimeError, match="multiple of 1/256"):
        torch.ops.skelfast.keep_mask_cpu(8, 0.3, torch.tensor(1))
    with pytest.raises(RuntimeError, match="seed must be a 0-dim int64"):
        torch.ops.skelfast.keep_mask_cpu(8, 0.5, torch.tensor([1, 2]))


@requires_triton
@pytest.mark.parametrize("numel", [1, 5, 4097, 10_001])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_triton_kernel_gives_the_same_mask(numel, dtype):
    from skelfast.kernels.dropout import dropout_triton

    x = (torch.rand(numel, generator=torch.Generator().manual_seed(7)) + 0.5).to(dtype)
    seed = seeded(numel)
    assert torch.equal(dropout_triton(x, 0.3, int(seed)), expected(x, 0.3, seed))


@requires_cpp
def test_negative_and_large_seeds_use_both_key_halves():
    x = torch.ones(4096)
    masks = {s: dropout_keep(s, x.numel(), 0.5) for s in (-1, 2**40 + 3, 3)}
    for s, keep in masks.items():
        y = torch.ops.skelfast.dropout_cpu(x, 0.5, torch.tensor(s))
        assert torch.equal(y != 0, keep)
    assert not torch.equal(masks[2**40 + 3], masks[3])  # the high key word changes the stream


@requires_cpp
@pytest.mark.parametrize("backend", ["cpp", "triton", "reference"])
@pytest.mark.parametrize("p", [0.1, 0.5])
def test_keep_rate_and_scale(backend, p):
    if backend == "triton" and triton_missing is not None:
        pytest.skip(triton_missing)
    n = 1_000_000 if backend != "triton" else 65_536  # the interpreter is slow
    x = torch.rand(n, generator=torch.Generator().manual_seed(0)) + 0.5  # no zeros
    with use_backend(f"dropout={backend}"):
        y = dropout(x, p, generator=torch.Generator().manual_seed(1))
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / (1 - p))
    # binomial(n, 1 - p): 5 standard deviations either way
    assert abs(kept.sum().item() - n * (1 - p)) < 5 * math.sqrt(n * p * (1 - p))


@requires_cpp
def test_backward_is_the_same_mask_and_gradcheck():
    x = torch.randn(6, 7, dtype=torch.float64, requires_grad=True)
    gen = torch.Generator()
    gen.manual_seed(11)
    y = dropout(x, 0.4, generator=gen)
    (g,) = torch.autograd.grad(y, x, torch.ones_like(y))
    torch.testing.assert_close(g, (y != 0).double() / 0.6)

    def fn(t: torch.Tensor) -> torch.Tensor:
        return dropout(t, 0.4, generator=torch.Generator().manual_seed(3))  # the same mask each call

    assert torch.autograd.gradcheck(fn, (x,))


@requires_cpp
def test_non_contiguous_input_masks_in_row_major_order():
    base = torch.randn(40, 30)
    seed = seeded(5)
    y = torch.ops.skelfast.dropout_cpu(base.t(), 0.5, seed)  # (30, 40) view
    assert y.is_contiguous()
    assert torch.equal(y, expected(base.t().contiguous(), 0.5, seed))


def test_seeding_eval_and_edge_probabilities():
    x = torch.randn(1000)
    torch.manual_seed(4)
    a = dropout(x, 0.5)
    torch.manual_seed(4)
    assert torch.equal(dropout(x, 0.5), a)
    assert not torch.equal(dropout(x, 0.5), a)  # the next call draws another seed
    assert dropout(x, 0.5, training=False) is x
    assert dropout(x, 0.0) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))


@requires_cpp
def test_zero_size_and_bf16_under_autograd():
    empty = torch.randn(0, 5, requires_grad=True)
    dropout(empty, 0.3).sum().backward()
    assert empty.grad.shape == (0, 5)
    x = torch.randn(8, 9, dtype=torch.bfloat16, requires_grad=True)
    y = dropout(x, 0.2, generator=torch.Generator().manual_seed(0))
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert torch.equal(x.grad != 0, y != 0)


@requires_cpp
def test_opcheck():
    x = torch.randn(5, 9, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(torch.ops.skelfast.dropout, (x, 0.3, seeded(0), "cpp"))


@requires_cpp
def test_compiles_fullgraph():
    x = torch.randn(33, 17, requires_grad=True)

    @torch.compile(fullgraph=True, backend="aot_eager")
    def step(t: torch.Tensor) -> torch.Tensor:
        return dropout(t * 2.0, 0.25).sum()

    torch.manual_seed(9)
    loss = step(x)
    loss.backward()
    kept = x.grad != 0
    torch.testing.assert_close(x.grad[kept], torch.full_like(x.grad[kept], 2.0 / 0.75))
    assert 0.5 < kept.float().mean().item() < 0.95


def test_bad_input_names_the_problem():
    x = torch.randn(4)
    for p in (-0.1, 1.5):
        with pytest.raises(ValueError, match="p must be in"):
            dropout(x, p)
    with pytest.raises(TypeError, match="floating-point"):
        dropout(torch.arange(4), 0.5)


@requires_cpp
def test_kernel_rejects_bad_seed_and_p():
    x = torch.randn(4)
    with pytest.raises(RuntimeError, match="seed must be a 0-dim int64"):
        torch.ops.skelfast.dropout_cpu(x, 0.5, torch.tensor([1, 2]))
    with pytest.raises(RuntimeError, match="p must be in"):
        torch.ops.skelfast.dropout_cpu(x, 1.0, torch.tensor(1))


def test_every_kernel_configuration_compiles_ahead_of_time():
    pytest.importorskip("triton")
    from skelfast import aot

    proc = aot.compile_in_subprocess(("skelfast.kernels.dropout",))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 3 * len(aot.ARCHS)  # fp32, fp16, bf16 x (sm_80, sm_90)
    assert all(r["fits"] for r in rows), rows
