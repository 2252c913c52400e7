"""``skelfast.ops.temporal_conv``: the (K x 1) temporal convolution of every GCN unit, in fewer FLOPs.

``F.conv2d(x, weight, bias, stride=(s, 1), padding=((K - 1) // 2, 0))`` on (N, C_in, T, V) is, for
each joint, a 1-D convolution along time. By the convolution theorem it is a product per frequency
of a DFT of length n = T + (K - 1) / 2 (long enough that the circular convolution equals the padded
linear one on every kept output), with the real and imaginary parts of each complex product done in
three real products (Gauss's trick) and the two real bins in one:

    points = A x        A (P, T):      the DFT rows (cos - sin, cos, -sin per complex bin)
    W_q    = G w        G (P, K):      the kernel's DFT in the same three forms
    y      = B (W_q points_q) + bias   B (T_out, P): the inverse DFT at the kept (strided) times

so the channel mixing is P GEMMs of (C_out x C_in) @ (C_in x N V) instead of K T_out of them: P is
25 against 117 for T = 13, 43 against 225 for T = 25, 80 against 450 for T = 50 (4.7-5.6x fewer
multiplications at stride 1, 2.7-2.8x at stride 2). The transforms along time are the C++ op
``skelfast::time_transform`` (each the other's adjoint, which gives the autograd formula); the GEMMs
are one ``torch.bmm``, whose own backward gives the weight and input gradients. Float32 error against
oneDNN's direct convolution: ~5e-7 of the output's scale (the DFT's rounding).

The transforms (dense, P T multiplications per channel) and the small GEMMs cost more than the saved
multiplications below 32 channels and for clips much longer than the channel count on the 2-core
Xeon of the README; ``algorithm="auto"`` picks the frequency form where it measured faster there (see
``prefers_frequency``) and ``F.conv2d`` elsewhere.

Backends: ``cpp`` (CPU, float32/float64) and ``reference`` (``F.conv2d``: CUDA, half precision,
empty input, and under autocast, where F.conv2d casts its operands as nn.Conv2d's would be).
"""

from __future__ import annotations

import math

import torch

from skelfast import backends, reference
from skelfast.ops._checks import check_floating, check_rank, check_same
from skelfast.profiling import profiled

OP = "temporal_conv"
CPP_DTYPES = (torch.float32, torch.float64)
ALGORITHMS = ("auto", "frequency", "direct")


def output_frames(frames: int, kernel: int, stride: int) -> int:
    """T_out of a (K x 1) convolution with padding (K - 1) / 2 and the given stride."""
    pad = (kernel - 1) // 2
    return (frames + 2 * pad - kernel) // stride + 1


def frequency_points(frames: int, kernel: int) -> int:
    """P, the rows of A: one per real bin (f = 0, and n / 2 for even n) and three per complex bin of
    the length-n DFT, n = T + (K - 1) / 2, bins f = 0 .. n // 2."""
    n = frames + (kernel - 1) // 2
    real = 2 if n % 2 == 0 and n > 0 else 1
    return real + 3 * (n // 2 + 1 - real)


# (frames, kernel, stride, dtype) -> matrices: a plain dict, which torch.compile reads as constants
# (it warns on, and traces through, an lru_cache)
_MATRICES: dict[tuple[int, int, int, torch.dtype], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}


def frequency_matrices(
    frames: int, kernel: int, stride: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(A (P, T), G (P, K), B (T_out, P)) of the module docstring, computed in float64 and cast.

    Bins f = 0 .. n // 2 of a length-n DFT, n = T + (K - 1) / 2. A real bin (f = 0, and n / 2 for
    even n) is one product Re X * Re H; a complex bin is three, k1 = Hr (Xr + Xi), k2 = (Hi - Hr) Xr,
    k3 = (Hr + Hi) Xi, with Yr = k1 - k3 and Yi = k1 + k2 folded into B.
    """
    key = (frames, kernel, stride, dtype)
    if key not in _MATRICES:
        _MATRICES[key] = _build_matrices(frames, kernel, stride, dtype)
    return _MATRICES[key]


def _build_matrices(
    frames: int, kernel: int, stride: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    pad = (kernel - 1) // 2
    n = frames + pad
    t = torch.arange(frames, dtype=torch.float64)
    taps = torch.arange(kernel, dtype=torch.float64)
    kept = torch.arange(output_frames(frames, kernel, stride), dtype=torch.float64) * stride
    a_rows, g_rows, b_cols = [], [], []
    for f in range(n // 2 + 1):
        x_angle = 2 * math.pi * f * t / n  # X_f = sum_t x_t e^{-i x_angle}
        h_angle = 2 * math.pi * f * (pad - taps) / n  # tap k sits at circular lag pad - k
        y_angle = 2 * math.pi * f * kept / n
        real_bin = f == 0 or 2 * f == n
        weight = (1.0 if real_bin else 2.0) / n  # irfft: the conjugate half counted twice
        b_real, b_imag = weight * torch.cos(y_angle), -weight * torch.sin(y_angle)
        if real_bin:
            a_rows.append(torch.cos(x_angle))
            g_rows.append(torch.cos(h_angle))
            b_cols.append(b_real)
            continue
        cos_x, sin_x, cos_h, sin_h = (
            torch.cos(x_angle),
            torch.sin(x_angle),
            torch.cos(h_angle),
            torch.sin(h_angle),
        )
        a_rows += [cos_x - sin_x, cos_x, -sin_x]  # Xr + Xi, Xr, Xi
        g_rows += [cos_h, -sin_h - cos_h, cos_h - sin_h]  # Hr, Hi - Hr, Hr + Hi
        b_cols += [b_real + b_imag, b_imag, -b_real]  # y = Br (k1 - k3) + Bi (k1 + k2)
    return (
        torch.stack(a_rows).to(dtype).contiguous(),
        torch.stack(g_rows).to(dtype).contiguous(),
        torch.stack(b_cols, 1).to(dtype).contiguous(),
    )


def prefers_frequency(channels_in: int, channels_out: int, frames: int, kernel: int, stride: int) -> bool:
    """Whether the frequency form measured faster than oneDNN's direct convolution (forward +
    backward, ``benchmarks/bench_temporal_conv.py``: the ST-GCN, AGCN and DSTA-Net shapes and longer
    clips, 2-core AVX-512 Xeon, 2026-12-06). It saves P / (K T_out) of the channel multiplications,
    while its dense transforms cost about P T multiplications per channel each way (T^2: long clips
    lose) and its P GEMMs of (C_out x C_in) run slowly below 32 channels. Measured 20:10-20:40 (the
    transform as one GEMM per channel and 16 samples): 64 channels 1.4-1.7x at stride 1 (T 13-64),
    1.2-1.4x at stride 2 (T 25), 1.2-1.3x at T = 100, 1.06x at T = 150, 0.8x at T = 300; 32 channels
    1.2-1.3x at T 25-64, 0.75x at T = 100, 0.8-0.9x at stride 2 (T 50); 16 channels 0.7-1.0x; 128
    channels 1.1-1.7x at stride 2, 1.3x at T = 300; 256 channels 1.5-2.7x. The rule:
    min(C_in, C_out) >= 32 and (P / (K T_out)) T <= min(C_in, C_out) / 2."""
    if kernel == 1 or frames < 2:
        return False
    channels = min(channels_in, channels_out)
    saving = frequency_points(frames, kernel) / (kernel * output_frames(frames, kernel, stride))
    return channels >= 32 and saving * frames <= channels / 2


def _check_inputs(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int, autocast: bool
) -> None:
    check_rank("temporal_conv: x", x, 4, "(N, C_in, T, V)")
    check_rank("temporal_conv: weight", weight, 4, "(C_out, C_in, K, 1)")
    check_floating("temporal_conv: x", x)
    check_same(OP, [("x", x), ("weight", weight), ("bias", bias)], dtype=not autocast)
    out_channels, in_channels, kernel, width = weight.shape
    if width != 1 or kernel % 2 == 0:
        raise ValueError(
            f"temporal_conv: weight must be (C_out, C_in, K, 1) with K odd, got {tuple(weight.shape)}"
        )
    if x.shape[1] != in_channels:
        raise ValueError(f"temporal_conv: x has {x.shape[1]} channels but weight expects {in_channels}")
    if bias is not None and tuple(bias.shape) != (out_channels,):
        raise ValueError(f"temporal_conv: bias must have shape ({out_channels},), got {tuple(bias.shape)}")
    if not isinstance(stride, int) or stride < 1:
        raise ValueError(f"temporal_conv: stride must be a positive int, got {stride!r}")


def _cpp_has_op() -> bool:
    return backends.cpp_extension_error() is None and hasattr(torch.ops.skelfast, "time_transform")


@backends.constant_under_compile  # decided once at trace time under torch.compile
def _backend(device: torch.device, dtype: torch.dtype, empty: bool) -> str:
    def cpp_check() -> str | None:
        if device.type != "cpu":
            return f"the time_transform cpp kernel is CPU-only (got a {device.type} tensor)"
        if empty:
            return "x has no elements"
        return backends.cpp_reason(device, dtype, CPP_DTYPES)

    return backends.choose(OP, {"cpp": cpp_check, "reference": lambda: None}, order=("cpp", "reference"))


@profiled("skelfast.temporal_conv")
def temporal_conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int = 1,
    algorithm: str = "auto",
) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, stride=(stride, 1), padding=((K - 1) // 2, 0))``, the temporal
    convolution of ST-GCN and AGCN units, in the frequency form where that is faster.

    Args:
        x: (N, C_in, T, V).
        weight: (C_out, C_in, K, 1), K odd.
        bias: (C_out,) or None.
        stride: along time.
        algorithm: ``"auto"`` (``prefers_frequency``), ``"frequency"`` or ``"direct"`` (F.conv2d).
            The frequency form needs the ``cpp`` backend; elsewhere every choice is F.conv2d.

    Returns:
        (N, C_out, T_out, V), T_out = (T - 1) // stride + 1. Differentiable in x, weight and bias.
    """
    autocast = torch.is_autocast_enabled(x.device.type)
    _check_inputs(x, weight, bias, stride, autocast)
    if algorithm not in ALGORITHMS:
        raise ValueError(f"temporal_conv: algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    if autocast:  # as nn.Conv2d under autocast: F.conv2d casts x, weight and bias to the autocast dtype
        return reference.temporal_conv(x, weight, bias, stride)
    out_channels, in_channels, kernel, _ = weight.shape
    frames = x.shape[2]
    frequency = algorithm == "frequency" or (
        algorithm == "auto" and prefers_frequency(in_channels, out_channels, frames, kernel, stride)
    )
    if not frequency or _backend(x.device, x.dtype, x.numel() == 0) == "reference":
        return reference.temporal_conv(x, weight, bias, stride)
    n, _, _, joints = x.shape
    to_points, mixing, from_points = frequency_matrices(frames, kernel, stride, x.dtype)
    points = to_points.shape[0]
    # (P, C_in, N, V): the DFT along time, time moved out front so each point is one GEMM operand
    x_points = torch.ops.skelfast.time_transform(x, to_points, None, True)
    w_points = (mixing @ weight.reshape(out_channels * in_channels, kernel).t()).view(
        points, out_channels, in_channels
    )
    y_points = torch.bmm(w_points, x_points.view(points, in_channels, n * joints))
    return torch.ops.skelfast.time_transform(
        y_points.view(points, out_channels, n, joints), from_points, bias, False
    )


# --- fake kernel and autograd of the C++ transform -------------------------------------------------


def _register() -> None:
    @torch.library.register_fake("skelfast::time_transform")
    def _fake(src, matrix, bias, to_points):  # noqa: ANN001, ANN202
        rows = matrix.shape[0]
        if to_points:
            n, c, _, v = src.shape
            return src.new_empty((rows, c, n, v))
        _, c, n, v = src.shape
        return src.new_empty((n, c, rows, v))

    def setup_context(ctx, inputs, output):  # noqa: ANN001, ANN202
        _, matrix, bias, to_points = inputs
        ctx.save_for_backward(matrix)
        ctx.to_points, ctx.has_bias = to_points, bias is not None

    def backward(ctx, grad):  # noqa: ANN001, ANN202
        (matrix,) = ctx.saved_tensors
        need = ctx.needs_input_grad
        # The adjoint: the other direction with the matrix transposed. The matrix is a constant.
        grad_src = (
            torch.ops.skelfast.time_transform(grad, matrix.t().contiguous(), None, not ctx.to_points)
            if need[0]
            else None
        )
        grad_bias = grad.sum((0, 2, 3)) if (ctx.has_bias and need[2]) else None
        return grad_src, None, grad_bias, None

    torch.library.register_autograd("skelfast::time_transform", backward, setup_context=setup_context)


if _cpp_has_op():
    _register()
