"""``skelfast.ops.dropout``: seeded dropout whose mask is regenerated, not stored.

Each call draws one 64-bit seed from the generator; element i (row-major) is kept where Philox word
i of that seed reaches round(p * 2^32) (keep probability 1 - p to within 2^-32), and kept elements
are scaled by 1 / (1 - p): ``nn.Dropout``'s distribution, not its random stream. The mask is a
function of (seed, i), so the backward is the same kernel on the gradient and autograd keeps one
seed instead of a mask as large as x. The C++ kernel and the Triton kernel draw the same words
(Triton's ``tl.randint4x``), so a seed gives the same mask on the CPU and the GPU.

Backends: ``cpp`` (CPU: csrc/dropout/, Philox eight counters a time with AVX2; float32/64, bf16,
half), ``triton`` (CUDA, or the interpreter: kernels/dropout.py) and ``reference`` (``nn.Dropout``'s
own ``bernoulli_`` computation, ``skelfast.reference.dropout``). On this CPU, ``bernoulli_`` draws
about 130 M elements/s; the kernel applies a mask at a few times the copy time.
"""

from __future__ import annotations

import torch

from skelfast import backends, reference
from skelfast.ops._checks import check_floating
from skelfast.profiling import profiled

OP = "dropout"
CPP_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


@backends.constant_under_compile  # decided once at trace time under torch.compile
def _backend(device: torch.device, dtype: torch.dtype) -> str:
    def cpp_check() -> str | None:
        if device.type != "cpu":
            return f"the dropout cpp kernel is CPU-only (got a {device.type} tensor)"
        return backends.cpp_reason(device, dtype, CPP_DTYPES)

    checks = {"cpp": cpp_check, "triton": lambda: backends.triton_reason(device), "reference": lambda: None}
    return backends.choose(OP, checks, order=("cpp", "triton", "reference"))


def runs_reference(x: torch.Tensor) -> bool:
    """Whether ``dropout`` on a tensor like x would run the reference (nn.Dropout's own computation):
    callers that replace one of PyTorch's blocks to reach the kernel keep PyTorch's block then."""
    return _backend(x.device, x.dtype) == "reference"


def draw_seed(generator: torch.Generator | None = None) -> torch.Tensor:
    """One 64-bit seed from ``generator`` (a CPU generator; default: the global one) as a 0-dim
    int64 CPU tensor: the key of a seeded dropout mask."""
    return torch.randint(-(2**63), 2**63 - 1, (), dtype=torch.int64, generator=generator)


@profiled("skelfast.dropout")
def dropout(
    x: torch.Tensor, p: float = 0.5, training: bool = True, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``F.dropout(x, p, training)`` in distribution.

    Args:
        x: any shape, floating point.
        p: probability of zeroing an element, in [0, 1].
        training: identity when False (as nn.Dropout in eval mode).
        generator: CPU generator the seed is drawn from (default: the global one, so
            ``torch.manual_seed`` makes runs repeat).

    Returns:
        x's shape and dtype: each element kept with probability 1 - p and scaled by 1 / (1 - p),
        else zero. Differentiable in x.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    check_floating("dropout: x", x)
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    backend = _backend(x.device, x.dtype)
    if backend == "reference":
        return reference.dropout(x, p, generator)
    return _dropout_op(x, float(p), draw_seed(generator), backend)


@torch.library.custom_op("skelfast::dropout", mutates_args=())
def _dropout_op(x: torch.Tensor, p: float, seed: torch.Tensor, backend: str) -> torch.Tensor:
    if backend == "triton":
        from skelfast.kernels.dropout import dropout_triton

        return dropout_triton(x, p, int(seed))
    return torch.ops.skelfast.dropout_cpu(x, p, seed)


@_dropout_op.register_fake
def _(x, p, seed, backend):  # noqa: ANN001, ANN202
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output):  # noqa: ANN001, ANN202
    _, ctx.p, seed, ctx.backend = inputs
    ctx.save_for_backward(seed)


def _backward(ctx, grad):  # noqa: ANN001, ANN202
    (seed,) = ctx.saved_tensors
    return _dropout_op(grad, ctx.p, seed, ctx.backend), None, None, None


_dropout_op.register_autograd(_backward, setup_context=_setup_context)


def keep_mask_cpp(numel: int, p: float, seed: torch.Tensor) -> torch.Tensor | None:
    """A (numel,) bool mask from the seed's Philox words, four elements a word: element i kept where
    byte ``i & 3`` of word ``i >> 2`` is at least 256 p (``skelfast.reference.philox.keep_mask_bytes``),
    so with probability exactly 1 - p. None where the C++ kernel cannot serve it (no extension, a p
    that is not a multiple of 1/256): the caller draws its mask another way."""
    if not (p * 256).is_integer() or not _keep_mask_kernel_built():
        return None
    return torch.ops.skelfast.keep_mask_cpu(numel, p, seed)


def _keep_mask_kernel_built() -> bool:
    return backends.cpp_extension_error() is None and hasattr(torch.ops.skelfast, "keep_mask_cpu")


if _keep_mask_kernel_built():

    @torch.library.register_fake("skelfast::keep_mask_cpu")
    def _(numel, p, seed):  # noqa: ANN001, ANN202
        return torch.empty(numel, dtype=torch.bool, device=seed.device)
