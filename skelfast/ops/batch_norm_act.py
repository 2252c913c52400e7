"""``skelfast.ops.batch_norm_act``: BatchNorm fused with the elementwise tail of a GCN unit.

``y = relu?(BatchNorm(x) * keep * keep_scale + residual)``: the chain nn.BatchNorm2d -> nn.Dropout
-> residual add -> nn.ReLU that closes every ST-GCN and AGCN unit (and BN -> ReLU, or BN alone,
inside them). Unfused on the CPU this is five to seven passes over the activation forward and as
many backward, and BatchNorm's own NCHW kernels run at a third of the memory bandwidth; the C++
kernel (csrc/batch_norm/) makes two passes each way. Dropout's mask comes in as a bool tensor, so
the caller draws it (``skelfast.nn.dropout.keep_mask``) and the op stays deterministic.

Backends: ``cpp`` (CPU, float32/float64) and ``reference`` (the step-by-step chain in
``skelfast.reference``, used elsewhere: CUDA, half precision, empty input). The C++ op's fake
kernel and autograd formula are registered here (``torch.library.opcheck`` passes, and it runs
under ``torch.compile(fullgraph=True)``). The running statistics are updated here, in Python,
from the batch mean and variance the kernel returns, exactly as ``F.batch_norm`` updates them.
"""

from __future__ import annotations

import torch

from skelfast import backends, reference
from skelfast.ops._checks import check_floating, check_same
from skelfast.profiling import profiled

OP = "batch_norm_act"
CPP_DTYPES = (torch.float32, torch.float64)


def _check_inputs(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    residual: torch.Tensor | None,
    keep: torch.Tensor | None,
) -> None:
    if x.dim() < 2:
        raise ValueError(f"batch_norm_act: x must be (N, C, *), got shape {tuple(x.shape)}")
    check_floating("batch_norm_act: x", x)
    check_same(OP, [("x", x), ("weight", weight), ("bias", bias)], dtype=not _mixed_params(x, weight, bias))
    if residual is not None:
        check_same(OP, [("x", x), ("residual", residual)], dtype=False)
        check_floating("batch_norm_act: residual", residual)
    channels = x.shape[1]
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and tuple(t.shape) != (channels,):
            raise ValueError(f"batch_norm_act: {name} must have shape ({channels},), got {tuple(t.shape)}")
    if residual is not None and residual.shape != x.shape:
        raise ValueError(
            f"batch_norm_act: residual must have x's shape {tuple(x.shape)}, got {tuple(residual.shape)}"
        )
    if keep is not None:
        if keep.dtype != torch.bool:
            raise TypeError(f"batch_norm_act: keep must be a bool mask, got {keep.dtype}")
        if keep.shape != x.shape or keep.device != x.device:
            raise ValueError(
                f"batch_norm_act: keep must have x's shape {tuple(x.shape)} and device {x.device}, "
                f"got {tuple(keep.shape)} on {keep.device}"
            )


def _mixed_params(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None) -> bool:
    """F.batch_norm's mixed-precision rule (what nn.BatchNorm2d runs under autocast): a bf16 or
    half x may come with float32 parameters and statistics; the output keeps x's dtype."""
    params = [t for t in (weight, bias) if t is not None]
    return (
        x.dtype in (torch.bfloat16, torch.float16)
        and bool(params)
        and all(t.dtype == torch.float32 for t in params)
    )


def _cpp_has_op() -> bool:
    return backends.cpp_extension_error() is None and hasattr(torch.ops.skelfast, "batch_norm_act")


@backends.constant_under_compile  # decided once at trace time under torch.compile
def _backend(device: torch.device, dtype: torch.dtype, empty: bool, mixed: bool) -> str:
    def cpp_check() -> str | None:
        if device.type != "cpu":
            return f"the batch_norm_act cpp kernel is CPU-only (got a {device.type} tensor)"
        if empty:
            return "x has no elements"
        if mixed:
            return "x, its parameters and the residual do not share one dtype (autocast)"
        return backends.cpp_reason(device, dtype, CPP_DTYPES)

    return backends.choose(OP, {"cpp": cpp_check, "reference": lambda: None}, order=("cpp", "reference"))


@profiled("skelfast.batch_norm_act")
def batch_norm_act(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    training: bool,
    momentum: float,
    eps: float,
    residual: torch.Tensor | None = None,
    keep: torch.Tensor | None = None,
    keep_scale: float = 1.0,
    relu: bool = False,
) -> torch.Tensor:
    """``relu?(F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)
    * keep * keep_scale + residual)`` in one op.

    Args:
        x: (N, C, *) features.
        weight, bias: (C,) affine parameters, or None; x's dtype, or float32 for a bf16 or half
            x (F.batch_norm's mixed precision, as under autocast).
        running_mean, running_var: (C,) buffers or None; used in eval, updated in training, as
            ``F.batch_norm`` does.
        training: batch statistics (True) or the running ones (False).
        residual: x's shape, added after the normalisation (and the dropout), or None; a residual
            of another dtype promotes the output as ``y + residual`` would.
        keep: bool mask like x (dropout's kept elements), scaled by ``keep_scale``, or None.
        relu: apply ReLU last.

    Returns:
        (N, C, *). Differentiable in x, weight, bias and residual.
    """
    _check_inputs(x, weight, bias, residual, keep)
    mixed = any(t is not None and t.dtype != x.dtype for t in (weight, bias, residual))
    if _backend(x.device, x.dtype, x.numel() == 0, mixed) == "reference":
        return reference.batch_norm_act(
            x,
            weight,
            bias,
            running_mean,
            running_var,
            training,
            momentum,
            eps,
            residual,
            keep,
            keep_scale,
            relu,
        )
    batch_stats = training or running_mean is None or running_var is None
    per_channel = x.numel() // (x.shape[0] * x.shape[1])
    count = x.shape[0] * per_channel
    if batch_stats and count <= 1:  # F.batch_norm's own check, with its wording
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {x.shape}")
    given_mean, given_var = (None, None) if batch_stats else (running_mean, running_var)
    # the ReLU gate [y > 0] as bytes for the backward, only where one will run (not in a no-grad key pass)
    relu_mask = (
        bool(relu)
        and torch.is_grad_enabled()
        and any(t is not None and t.requires_grad for t in (x, weight, bias, residual))
    )
    y, mean, var, _ = torch.ops.skelfast.batch_norm_act(
        x,
        weight,
        bias,
        given_mean,
        given_var,
        residual,
        keep,
        float(keep_scale),
        bool(relu),
        float(eps),
        relu_mask,
    )
    if training and running_mean is not None and running_var is not None:
        with torch.no_grad():
            running_mean.mul_(1.0 - momentum).add_(mean.to(running_mean.dtype), alpha=momentum)
            unbiased = var.to(running_var.dtype) * (count / (count - 1))
            running_var.mul_(1.0 - momentum).add_(unbiased, alpha=momentum)
    return y


# --- fake kernels and autograd for the C++ op ---------------------------------------------------


def _register() -> None:
    @torch.library.register_fake("skelfast::batch_norm_act")
    def _fake(x, weight, bias, mean, var, residual, keep, keep_scale, relu, eps, relu_mask):  # noqa: ANN001, ANN202
        channels = x.shape[1]
        return (
            torch.empty_like(x, memory_format=torch.contiguous_format),
            x.new_empty(channels),
            x.new_empty(channels),
            x.new_empty(x.shape if (relu and relu_mask) else (0,), dtype=torch.bool),
        )

    @torch.library.register_fake("skelfast::batch_norm_act_backward")
    def _fake_backward(grad, x, positive, weight, mean, var, keep, keep_scale, relu, eps, batch_stats, mask):  # noqa: ANN001, ANN202
        channels = x.shape[1] if mask[1] else 0
        like_x = torch.empty_like(x, memory_format=torch.contiguous_format)
        return (
            like_x if mask[0] else x.new_empty((0,)),
            x.new_empty(channels),
            x.new_empty(channels),
            torch.empty_like(like_x) if (mask[2] and relu) else x.new_empty((0,)),
        )

    def setup_context(ctx, inputs, output):  # noqa: ANN001, ANN202
        x, weight, bias, mean_in, _, residual, keep, keep_scale, relu, eps, _ = inputs
        _, mean, var, positive = output
        ctx.save_for_backward(x, positive, weight, mean, var, keep)  # positive, not y: a quarter of its bytes
        # the statistics' and the mask's gradients stay None: materialised, the mask's is a zero fill
        # of x's size each backward
        ctx.set_materialize_grads(False)
        ctx.batch_stats = mean_in is None
        ctx.keep_scale, ctx.relu, ctx.eps = keep_scale, relu, eps
        ctx.has_weight, ctx.has_bias, ctx.has_residual = (
            weight is not None,
            bias is not None,
            residual is not None,
        )

    def backward(ctx, grad, _grad_mean, _grad_var, _grad_positive):  # noqa: ANN001, ANN202
        if grad is None:  # y unused: only the statistics or the mask reached the loss
            return (None,) * 11
        x, positive, weight, mean, var, keep = ctx.saved_tensors
        need = ctx.needs_input_grad
        need_affine = (need[1] and ctx.has_weight) or (need[2] and ctx.has_bias)
        need_residual = need[5] and ctx.has_residual
        mask = [need[0], need_affine, need_residual]
        dx, dw, db, dres = torch.ops.skelfast.batch_norm_act_backward(
            grad,
            x,
            positive,
            weight,
            mean,
            var,
            keep,
            ctx.keep_scale,
            ctx.relu,
            ctx.eps,
            ctx.batch_stats,
            mask,
        )
        if need_residual and not ctx.relu:
            dres = grad  # the residual is added last: its gradient is the output's
        return (
            dx if need[0] else None,
            dw if (need[1] and ctx.has_weight) else None,
            db if (need[2] and ctx.has_bias) else None,
            None,
            None,
            dres if need_residual else None,
            None,
            None,
            None,
            None,
            None,
        )

    torch.library.register_autograd("skelfast::batch_norm_act", backward, setup_context=setup_context)


if _cpp_has_op():
    _register()
