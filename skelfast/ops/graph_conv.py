"""``skelfast.ops.graph_conv``: ST-GCN's spatial graph convolution as one custom op.

Backends: ``cpp`` (``torch.ops.skelfast.graph_conv`` from csrc/, CPU and, when built with CUDA,
CUDA) and ``reference`` (the einsum form in ``skelfast.reference``). The C++ op is registered in
csrc/ops.cpp; its fake kernel, autograd formula and autocast rule are registered here so that it
passes ``torch.library.opcheck`` and runs under ``torch.compile(fullgraph=True)`` and ``torch.autocast``.

Mixed precision: under ``torch.autocast`` the public ``graph_conv`` casts x, weight, bias and A to
one compute dtype, runs the op with autocast off (the kernels' own matmuls must not be recast) and
returns the autocast dtype, as autocast's matmul-like ops do. The compute dtype is the autocast dtype
where the chosen kernel has it (the CUDA kernel: fp16/bf16 loads, fp32 accumulation; the reference
einsum) and float32 for the C++ CPU kernel, which has no half-precision path.
"""

from __future__ import annotations

import torch

from skelfast import backends, reference
from skelfast.ops._checks import check_floating, check_rank, check_same
from skelfast.profiling import profiled

OP = "graph_conv"
CPP_DTYPES = {  # per device type: the CPU kernel is float32/float64 only, the CUDA one also takes halves
    "cpu": (torch.float32, torch.float64),
    "cuda": (torch.float32, torch.float64, torch.float16, torch.bfloat16),
}
AUTOCAST_DEVICES = ("cpu", "cuda")


def _check_inputs(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, A: torch.Tensor) -> None:
    check_rank("graph_conv: x", x, 4, "(N, C_in, T, V)")
    check_rank("graph_conv: weight", weight, 2, "(K*C_out, C_in)")
    if A.dim() == 4:  # one adjacency per sample (2s-AGCN's data-dependent graphs)
        if A.shape[0] != x.shape[0]:
            raise ValueError(
                f"graph_conv: a per-sample A must be (N, K, V, V) with N={x.shape[0]}, got {tuple(A.shape)}"
            )
        if bias is not None:
            raise ValueError("graph_conv: a per-sample A (N, K, V, V) takes no bias (add it to the output)")
    else:
        check_rank("graph_conv: A", A, 3, "(K, V, V) or (N, K, V, V)")
    check_floating("graph_conv: x", x)
    check_same(OP, [("x", x), ("weight", weight), ("bias", bias), ("A", A)])
    k, v, w = A.shape[-3:]
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


@backends.constant_under_compile  # decided once at trace time under torch.compile
def _backend(device: torch.device, dtype: torch.dtype) -> str:
    checks = {
        "cpp": lambda: backends.cpp_reason(device, dtype, CPP_DTYPES.get(device.type, ())),
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
        A: (K, V, V) adjacency, already multiplied by any edge-importance mask; or one adjacency
            per sample, (N, K, V, V) (2s-AGCN's data-dependent graphs), with ``bias`` None:
            ``y[n] = sum_k W_k x[n] A[n, k]``. The C++ CUDA kernel takes the shared form only; a
            per-sample A on CUDA runs the reference.

    Returns:
        (N, C_out, T, V). Differentiable in x, weight, bias and A. Under ``torch.autocast`` the
        inputs may mix float32 and the autocast dtype; the result is in the autocast dtype (see the
        module docstring for the dtype each kernel computes in).
    """
    device_type = x.device.type
    if device_type in AUTOCAST_DEVICES and torch.is_autocast_enabled(device_type) and x.is_floating_point():
        return _graph_conv_autocast(x, weight, bias, A, torch.get_autocast_dtype(device_type))
    _check_inputs(x, weight, bias, A)
    return _dispatch(x, weight, bias, A)


def _dispatch(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, A: torch.Tensor
) -> torch.Tensor:
    # the CUDA kernel has no per-sample adjacency (its check says so): the reference runs it there
    if _backend(x.device, x.dtype) == "cpp" and (A.dim() == 3 or x.device.type == "cpu"):
        return torch.ops.skelfast.graph_conv(x, weight, bias, A)
    return reference.graph_conv(x, weight, bias, A)


def _autocast_compute_dtype(device: torch.device, amp_dtype: torch.dtype) -> torch.dtype:
    """The autocast dtype, unless the C++ kernel would run and has no kernel for it: then float32."""
    if _backend(device, torch.float32) == "cpp" and amp_dtype not in CPP_DTYPES.get(device.type, ()):
        return torch.float32
    return amp_dtype


def _graph_conv_autocast(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, A: torch.Tensor, amp_dtype: torch.dtype
) -> torch.Tensor:
    """graph_conv under autocast: inputs in one compute dtype (float64 ones are left alone, as
    autocast leaves them), the op with autocast off, the result in the autocast dtype."""
    compute = _autocast_compute_dtype(x.device, amp_dtype)

    def cast(t: torch.Tensor) -> torch.Tensor:
        return t.to(compute) if t.is_floating_point() and t.dtype != torch.float64 else t

    x, weight, A = cast(x), cast(weight), cast(A)
    bias = None if bias is None else cast(bias)
    _check_inputs(x, weight, bias, A)
    with torch.autocast(x.device.type, enabled=False):
        y = _dispatch(x, weight, bias, A)
    return y if y.dtype == torch.float64 else y.to(amp_dtype)


# --- fake kernels and autograd for the C++ op ---------------------------------------------------


def _register() -> None:
    @torch.library.register_fake("skelfast::graph_conv")
    def _fake(x, weight, bias, A):  # noqa: ANN001, ANN202
        return x.new_empty((x.shape[0], weight.shape[0] // A.shape[-3], x.shape[2], x.shape[3]))

    @torch.library.register_fake("skelfast::graph_conv_backward")
    def _fake_backward(grad, x, weight, bias, A, output_mask):  # noqa: ANN001, ANN202
        def grad_like(t: torch.Tensor | None, wanted: bool) -> torch.Tensor:
            # the kernel writes contiguous gradients whatever the inputs' strides
            return (
                torch.empty_like(t, memory_format=torch.contiguous_format)
                if (wanted and t is not None)
                else x.new_empty((0,))
            )

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

    # The op called directly under autocast (the public graph_conv turns autocast off first): float32
    # inputs, and no autocast inside, where it would recast the kernels' own matmuls.
    for device_type in AUTOCAST_DEVICES:
        for op in ("skelfast::graph_conv", "skelfast::graph_conv_backward"):
            torch.library.register_autocast(op, device_type, torch.float32)


if _cpp_has_op():
    _register()
