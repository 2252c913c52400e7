"""``skelfast.ops.graph_conv``: ST-GCN's spatial graph convolution as one custom op.

Backends: ``cpp`` (``torch.ops.skelfast.graph_conv`` from csrc/, CPU and, when built with CUDA,
CUDA) and ``reference`` (the einsum form in ``skelfast.reference``). The C++ op is registered in
csrc/ops.cpp; its fake kernel and autograd formula are registered here so that it passes
``torch.library.opcheck`` and runs under ``torch.compile(fullgraph=True)``.
"""

from __future__ import annotations

import torch

from skelfast import backends, reference
from skelfast.ops._checks import check_floating, check_rank, check_same
from skelfast.profiling import profiled

OP = "graph_conv"
CPP_DTYPES = (torch.float32, torch.float64)


def _check_inputs(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, A: torch.Tensor) -> None:
    check_rank("graph_conv: x", x, 4, "(N, C_in, T, V)")
    check_rank("graph_conv: weight", weight, 2, "(K*C_out, C_in)")
    check_rank("graph_conv: A", A, 3, "(K, V, V)")
    check_floating("graph_conv: x", x)
    check_same(OP, [("x", x), ("weight", weight), ("bias", bias), ("A", A)])
    k, v, w = A.shape
    if v != w:
        raise ValueError(f"graph_conv: A must be square in its last two dims (K, V, V), got {tuple(A.shape)}")
    if x.shape[3] != v:
        raise ValueError(f"graph_conv: x has V={x.shape[3]} joints but A has V={v} (x {tuple(x.shape)})")
    if k == 0 or weight.shape[0] % k != 0:
        raise ValueError(
            f"graph_conv: weight rows ({weight.shape[0]}) must be K*C_out with K={k} subsets from A"
        )
    if weight.shape[1] != x.shape[1]:
        raise ValueError(
            f"graph_conv: weight has C_in={weight.shape[1]} but x has C_in={x.shape[1]} channels"
        )
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"graph_conv: bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")


def _cpp_has_op() -> bool:
    return backends.cpp_extension_error() is None and hasattr(torch.ops.skelfast, "graph_conv")


@torch.compiler.assume_constant_result  # decided once at trace time under torch.compile
def _backend(device: torch.device, dtype: torch.dtype) -> str:
    checks = {
        "cpp": lambda: backends.cpp_reason(device, dtype, CPP_DTYPES),
        "reference": lambda: None,
    }
    return backends.choose(OP, checks, order=("cpp", "reference"))


@profiled("skelfast.graph_conv")
def graph_conv(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, A: torch.Tensor
) -> torch.Tensor:
    """Spatial graph convolution of ST-GCN (``ConvTemporalGraphical`` with a 1x1 temporal kernel).

    ``y[n, o, t, w] = sum_k sum_v (W_k x + b_k)[n, o, t, v] * A[k, v, w]``

    Args:
        x: (N, C_in, T, V) features.
        weight: (K*C_out, C_in) 1x1 convolution weights, rows ordered (k, c_out) as ST-GCN's conv.
        bias: (K*C_out,) or None.
        A: (K, V, V) adjacency, already multiplied by any edge-importance mask.

    Returns:
        (N, C_out, T, V). Differentiable in x, weight, bias and A.
    """
    _check_inputs(x, weight, bias, A)
    if _backend(x.device, x.dtype) == "cpp":
        return torch.ops.skelfast.graph_conv(x, weight, bias, A)
    return reference.graph_conv(x, weight, bias, A)


# --- fake kernels and autograd for the C++ op ---------------------------------------------------


def _register() -> None:
    @torch.library.register_fake("skelfast::graph_conv")
    def _fake(x, weight, bias, A):  # noqa: ANN001, ANN202
        return x.new_empty((x.shape[0], weight.shape[0] // A.shape[0], x.shape[2], x.shape[3]))

    @torch.library.register_fake("skelfast::graph_conv_backward")
    def _fake_backward(grad, x, weight, bias, A, output_mask):  # noqa: ANN001, ANN202
        def grad_like(t: torch.Tensor | None, wanted: bool) -> torch.Tensor:
            return torch.empty_like(t) if (wanted and t is not None) else x.new_empty((0,))

        return (
            grad_like(x, output_mask[0]),
            grad_like(weight, output_mask[1]),
            grad_like(bias, output_mask[2]),
            grad_like(A, output_mask[3]),
        )

    def setup_context(ctx, inputs, output):  # noqa: ANN001, ANN202
        x, weight, bias, A = inputs
        ctx.save_for_backward(x, weight, bias, A)
        ctx.has_bias = bias is not None

    def backward(ctx, grad):  # noqa: ANN001, ANN202
        x, weight, bias, A = ctx.saved_tensors
        mask = list(ctx.needs_input_grad)
        mask[2] = mask[2] and ctx.has_bias
        dx, dw, db, da = torch.ops.skelfast.graph_conv_backward(grad, x, weight, bias, A, mask)
        return (
            dx if mask[0] else None,
            dw if mask[1] else None,
            db if mask[2] else None,
            da if mask[3] else None,
        )

    torch.library.register_autograd("skelfast::graph_conv", backward, setup_context=setup_context)


if _cpp_has_op():
    _register()
