# ruff: noqa: ANN001, ANN201, ANN202  (@triton.jit arguments are typed by the launch, not annotations)
"""Seeded dropout (Triton): ``y_i = x_i / (1 - p)`` where Philox word i of ``seed`` reaches
``round(p * 2^32)``, else 0.

Word i is word ``i & 3`` of ``tl.randint4x(seed, i >> 2)``, the stream of the C++ kernel
(csrc/dropout/) and of ``skelfast.reference.philox.dropout_keep``, so a seed gives the same mask on
the CPU and the GPU. One program takes BLOCK counters, i.e. 4 * BLOCK consecutive elements: one
Philox call per four elements, each word used once. The backward is the same kernel on the gradient.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 1024  # counters per program (4096 elements)


@triton.jit
def _apply(x_ptr, y_ptr, index, n, word, threshold, scale):
    inside = index < n
    x = tl.load(x_ptr + index, mask=inside, other=0.0)
    # words are uint32: compared as int64 (zero-extended) with a threshold of up to 2^32 - 1
    kept = tl.where(word.to(tl.int64) >= threshold, x.to(tl.float32) * scale, 0.0)
    tl.store(y_ptr + index, kept.to(y_ptr.dtype.element_ty), mask=inside)


@triton.jit
def dropout_kernel(x_ptr, y_ptr, n, seed, threshold, scale, BLOCK: tl.constexpr):
    counter = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    w0, w1, w2, w3 = tl.randint4x(seed, counter)
    base = counter.to(tl.int64) * 4
    _apply(x_ptr, y_ptr, base, n, w0, threshold, scale)
    _apply(x_ptr, y_ptr, base + 1, n, w1, threshold, scale)
    _apply(x_ptr, y_ptr, base + 2, n, w2, threshold, scale)
    _apply(x_ptr, y_ptr, base + 3, n, w3, threshold, scale)


def keep_threshold(p: float) -> int:
    """round(p * 2^32), capped at 2^32 - 1: element i is kept where its word is at least this."""
    return min(round(p * 2**32), 2**32 - 1)


def dropout_triton(x: torch.Tensor, p: float, seed: int) -> torch.Tensor:
    """x (any shape; read in row-major order) -> y of x's shape, dtype and device."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout (triton): p must be in [0, 1), got {p}")
    x = x.contiguous()
    n = x.numel()
    if n >= 2**33:  # counters are int32 in the kernel
        raise ValueError(f"dropout (triton): at most 2^33 elements per call, got {n}")
    y = torch.empty_like(x)
    if n == 0:
        return y
    grid = (triton.cdiv(triton.cdiv(n, 4), BLOCK),)
    dropout_kernel[grid](x, y, n, seed, keep_threshold(p), 1.0 / (1.0 - p), BLOCK=BLOCK)
    return y


def aot_specs() -> list:
    """The shipped configuration, for the three activation dtypes."""
    from skelfast.aot import KernelSpec

    specs = []
    for dtype in ("fp32", "fp16", "bf16"):
        signature = {
            "x_ptr": f"*{dtype}", "y_ptr": f"*{dtype}", "n": "i64", "seed": "i64", "threshold": "i64",
            "scale": "fp32", "BLOCK": "constexpr",
        }  # fmt: skip
        specs.append(KernelSpec(dropout_kernel, signature, {"BLOCK": BLOCK}, num_warps=4, num_stages=1))
    return specs
