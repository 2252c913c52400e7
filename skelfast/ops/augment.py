"""``skelfast.ops.augment``: batched skeleton augmentation in one pass, as one custom op.

Backends:
- ``triton``: ``skelfast.kernels.augment``, one fused pass (CUDA tensors; CPU under TRITON_INTERPRET);
- ``cpp``: ``torch.ops.skelfast.augment_cpu`` (csrc/augment/augment_cpu.cpp), one pass per sample
  through a cache-sized buffer, float32/float64 CPU tensors; the automatic choice on the CPU;
- ``torch``: vectorised PyTorch for CPU tensors (row gathers + lerp, one bmm, work only on the
  samples a random step touches); the fallback when the extension is not built
  and for float16/bfloat16;
- ``reference``: ``skelfast.reference.augment``, step by step.

Every backend adds the same noise: sample n's normals come from the counter-based stream keyed by
``params.noise_seed + n`` (``skelfast.reference.philox``: Philox4x32-10, four Box-Muller normals per
counter), drawn inside the C++ and Triton kernels. The Philox integers agree bit for bit; the
normals within a few float32 ulps (each backend's log/sin/cos). Each backend replays exactly.
"""

from __future__ import annotations

import torch

from skelfast import backends
from skelfast.augment.params import STREAMS, AugmentParams
from skelfast.ops._checks import check_floating, check_rank
from skelfast.profiling import profiled
from skelfast.reference import philox
from skelfast.reference.augment import augment as reference_augment
from skelfast.reference.augment import bone_parents, source_positions

OP = "augment"


def _check_inputs(x: torch.Tensor, valid: torch.Tensor, params: AugmentParams) -> None:
    check_rank("augment: x", x, 5, "(N, C=3, T, V, M)")
    check_floating("augment: x", x)
    n, c, t_in, v, _ = x.shape
    if c != 3:
        raise ValueError(f"augment: x must have 3 coordinate channels (N, 3, T, V, M), got {tuple(x.shape)}")
    if tuple(valid.shape) != (n,):
        raise ValueError(f"augment: valid must have shape (N,) = ({n},), got {tuple(valid.shape)}")
    if valid.is_floating_point() or valid.is_complex() or valid.dtype == torch.bool:
        raise TypeError(f"augment: valid must be an integer tensor of frame counts, got {valid.dtype}")
    if params.batch_size != n:
        raise ValueError(f"augment: params were drawn for {params.batch_size} samples but x has N={n}")
    # value checks read tensors; torch.compile traces the op without them (shapes still checked)
    values = not torch.compiler.is_compiling()
    params.validate(n, v, values=values)
    if n and values:
        lo, hi = int(valid.min()), int(valid.max())
        if lo < 1 or hi > t_in:
            raise ValueError(f"augment: valid lengths must be in [1, T_in={t_in}], got min {lo} max {hi}")
    for name, t in params.tensors().items():
        if t.device != x.device:
            raise ValueError(f"augment: params.{name} is on {t.device} but x is on {x.device}")
    if valid.device != x.device:
        raise ValueError(f"augment: valid is on {valid.device} but x is on {x.device}")


CPP_DTYPES = (torch.float32, torch.float64)


def _cpp_reason(x: torch.Tensor) -> str | None:
    if x.device.type != "cpu":
        return f"the cpp augment kernel is for CPU tensors, not {x.device}"
    reason = backends.cpp_reason(x.device, x.dtype, CPP_DTYPES)
    if reason is None and not hasattr(torch.ops.skelfast, "augment_cpu"):
        return "skelfast._C was built without augment_cpu (rebuild the extension)"
    return reason


def _backend(x: torch.Tensor) -> str:
    checks = {
        "triton": lambda: backends.triton_reason(x.device),
        "cpp": lambda: _cpp_reason(x),
        "torch": lambda: None if x.device.type == "cpu" else f"the torch path is for CPU, not {x.device}",
        "reference": lambda: None,
    }
    # Automatic choice: Triton on CUDA; on the CPU the C++ kernel, else the vectorised torch path
    # (never the interpreter).
    order = ("triton", "reference") if x.device.type == "cuda" else ("cpp", "torch", "reference")
    return backends.choose(OP, checks, order=order)


@profiled("skelfast.augment")
def augment(
    x: torch.Tensor,
    valid: torch.Tensor,
    params: AugmentParams,
    fill: torch.Tensor | None = None,
    parents: torch.Tensor | None = None,
) -> torch.Tensor:
    """Apply one batch of augmentation parameters (see ``skelfast.augment.params``) in one pass.

    Args:
        x: (N, 3, T_in, V, M) skeleton sequences, any float dtype, any strides.
        valid: (N,) integer number of valid frames of each sample, in [1, T_in].
        params: an ``AugmentParams`` for N samples and V joints (from a recipe, or built by hand),
            on x's device.
        fill: the value of the entries masked by ``params.frame_joint_mask``, a one-element tensor
            (HiCLR's learnable mask token); gradients flow into it. Default 0.
        parents: (V,) parent joint of each joint for ``stream="bone"`` (default: the NTU table).

    Returns:
        (N, 3, params.t_out, V, M), x's dtype. Differentiable in ``fill`` only (x gets no gradient).
    """
    _check_inputs(x, valid, params)
    if x.requires_grad and torch.is_grad_enabled():
        raise ValueError("augment: x requires grad, but the op has no gradient for x (only for fill)")
    n, _, _, v, m = x.shape
    if fill is None:
        fill = torch.zeros((), device=x.device, dtype=torch.float32)
    if fill.numel() != 1:
        raise ValueError(f"augment: fill must hold one value, got shape {tuple(fill.shape)}")
    if parents is None:
        parents = bone_parents(v) if params.stream == "bone" else torch.arange(v)
    parents = parents.to(device=x.device, dtype=torch.int64)
    bad_index = (
        v and not torch.compiler.is_compiling() and (int(parents.min()) < 0 or int(parents.max()) >= v)
    )
    if tuple(parents.shape) != (v,) or bad_index:
        raise ValueError(f"augment: parents must be (V,) = ({v},) joint indices, got {tuple(parents.shape)}")
    backend = _backend(x)
    mask = params.frame_joint_mask
    return torch.ops.skelfast.augment(
        x,
        valid.to(torch.int64),
        params.start,
        params.length,
        params.reverse,
        params.matrix,
        params.joint_matrix,
        params.joint_select,
        params.joint_source,
        params.noise_std,
        params.noise_seed,
        params.blur_sigma,
        params.blur_on,
        params.axis_keep,
        mask,
        fill.reshape(()),
        parents,
        params.t_out,
        STREAMS.index(params.stream),
        params.blur_size,
        params.blur_normalized,
        backend,
    )


def _params_from_args(args: tuple) -> AugmentParams:
    (start, length, reverse, matrix, joint_matrix, joint_select, joint_source, noise_std, noise_seed) = args[
        :9
    ]
    (blur_sigma, blur_on, axis_keep, mask, t_out, stream, blur_size, blur_normalized) = args[9:]
    return AugmentParams(
        t_out=t_out,
        start=start,
        length=length,
        reverse=reverse,
        matrix=matrix,
        joint_matrix=joint_matrix,
        joint_select=joint_select,
        joint_source=joint_source,
        noise_std=noise_std,
        noise_seed=noise_seed,
        blur_sigma=blur_sigma,
        blur_on=blur_on,
        axis_keep=axis_keep,
        frame_joint_mask=mask,
        stream=STREAMS[stream],
        blur_size=blur_size,
        blur_normalized=blur_normalized,
    )


@torch.library.custom_op("skelfast::augment", mutates_args=())
def _augment_op(
    x: torch.Tensor,
    valid: torch.Tensor,
    start: torch.Tensor,
    length: torch.Tensor,
    reverse: torch.Tensor,
    matrix: torch.Tensor,
    joint_matrix: torch.Tensor,
    joint_select: torch.Tensor,
    joint_source: torch.Tensor,
    noise_std: torch.Tensor,
    noise_seed: torch.Tensor,
    blur_sigma: torch.Tensor,
    blur_on: torch.Tensor,
    axis_keep: torch.Tensor,
    frame_joint_mask: torch.Tensor | None,
    fill: torch.Tensor,
    parents: torch.Tensor,
    t_out: int,
    stream: int,
    blur_size: int,
    blur_normalized: bool,
    backend: str,
) -> torch.Tensor:
    params = _params_from_args(
        (start, length, reverse, matrix, joint_matrix, joint_select, joint_source, noise_std, noise_seed)
        + (blur_sigma, blur_on, axis_keep, frame_joint_mask, t_out, stream, blur_size, blur_normalized)
    )
    if backend == "triton":
        from skelfast.kernels.augment import augment_triton

        return augment_triton(x, valid, params, fill, parents)
    if backend == "cpp":
        return augment_cpp(x, valid, params, fill, parents)
    if backend == "torch":
        return augment_torch(x, valid, params, fill, parents)
    return reference_augment(x, valid, params, fill, parents)


@_augment_op.register_fake
def _(x, valid, start, *args):  # noqa: ANN001, ANN202
    t_out = args[-5]
    return x.new_empty((x.shape[0], x.shape[1], t_out, x.shape[3], x.shape[4]))


def _setup_context(ctx, inputs, output):  # noqa: ANN001, ANN202
    ctx.mask = inputs[14]
    ctx.fill_shape = inputs[15].shape


def _backward(ctx, grad):  # noqa: ANN001, ANN202
    grads: list[torch.Tensor | None] = [None] * 22
    if ctx.needs_input_grad[15]:
        if ctx.mask is None:
            grads[15] = grad.new_zeros(ctx.fill_shape)
        else:
            mask = ctx.mask[None, None, :, :, None].to(grad.dtype)
            grads[15] = (grad * mask).sum().reshape(ctx.fill_shape)
    return tuple(grads)


_augment_op.register_autograd(_backward, setup_context=_setup_context)

# Under autocast the op runs in float32 with autocast off: the views are data, not activations, and
# autocast would otherwise recast the torch/reference paths' matmuls (rotations in bf16 lose ~3 digits
# of every coordinate; the torch path's index_add_ then meets mixed dtypes).
for _device_type in ("cpu", "cuda"):
    _augment_op.register_autocast(_device_type, torch.float32)


# --- the C++ CPU path ------------------------------------------------------------------------------


def augment_cpp(
    x: torch.Tensor,
    valid: torch.Tensor,
    params: AugmentParams,
    fill: torch.Tensor,
    parents: torch.Tensor,
) -> torch.Tensor:
    """The C++ kernel: one pass, the noise and the blur's taps made inside it.
    x: (N, 3, T_in, V, M) float32/float64 -> (N, 3, t_out, V, M)."""
    return torch.ops.skelfast.augment_cpu(
        x,
        valid,
        params.start,
        params.length,
        params.reverse,
        params.t_out,
        params.matrix,
        params.joint_matrix,
        params.joint_select,
        params.joint_source,
        params.noise_std,
        int(params.noise_seed),
        params.blur_on,
        params.blur_sigma,
        params.blur_size,
        params.blur_normalized,
        params.axis_keep,
        params.frame_joint_mask,
        fill,
        parents,
        STREAMS.index(params.stream),
    )


# --- the vectorised CPU path ---------------------------------------------------------------------


def augment_torch(
    x: torch.Tensor,
    valid: torch.Tensor,
    params: AugmentParams,
    fill: torch.Tensor,
    parents: torch.Tensor,
) -> torch.Tensor:
    """The same composition as the reference with fewer passes over memory: the two temporal taps
    are gathered as whole (V*M) rows straight from x (only the frames used are read), the matrices
    are one bmm, and each random step runs on the samples it touches only."""
    n, c, t_in, v, m = x.shape
    t_out, vm = params.t_out, v * m
    cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    if n == 0:
        return x.new_empty((0, c, t_out, v, m))
    # 1. time: rows (n, c, frame) of V*M contiguous values
    i0, i1, w = source_positions(params, valid)
    rows = x.to(cdt).contiguous().view(n * c * t_in, vm)
    base = (torch.arange(n * c).view(n, c, 1)) * t_in
    y = rows.index_select(0, (base + i0[:, None, :]).view(-1))
    if bool((w != 0).any()):
        b = rows.index_select(0, (base + i1[:, None, :]).view(-1))
        wr = w.to(cdt)[:, None, :].expand(n, c, t_out).reshape(-1, 1)
        y = torch.addcmul(y * (1 - wr), b, wr)  # F.interpolate's lambda0 * x0 + lambda1 * x1
    y = y.view(n, c, t_out, v, m)
    # 2. space: joint index map on the samples that permute joints, then the matrices
    identity = torch.arange(v)
    permuted = (params.joint_source != identity).any(dim=1).nonzero().flatten()
    if len(permuted):
        src = params.joint_source[permuted][:, None, None, :, None].expand(-1, c, t_out, v, m)
        y[permuted] = torch.gather(y[permuted], 3, src)
    flat = y.view(n, c, t_out * vm)
    out = torch.bmm(params.matrix.to(cdt), flat)
    selected = params.joint_select.any(dim=1).nonzero().flatten()
    if len(selected):
        second = torch.bmm(params.joint_matrix[selected].to(cdt), flat[selected]).view(-1, c, t_out, v, m)
        sel = params.joint_select[selected][:, None, None, :, None]
        out = out.view(n, c, t_out, v, m)
        out[selected] = torch.where(sel, second, out[selected])
    out = out.view(n, c, t_out, v, m)
    # 3. noise on the noisy samples: the reference's stream (Philox in int64 tensor ops)
    noisy = (params.noise_std != 0).nonzero().flatten()
    if len(noisy):
        z = philox.normal_fill(params.noise_seed + noisy, c * t_out * vm).view(-1, c, t_out, v, m).to(cdt)
        out.index_add_(0, noisy, z.mul_(params.noise_std[noisy].to(cdt).view(-1, 1, 1, 1, 1)))
    # 4. blur on the blurred samples: a depthwise (K x 1) convolution along time, zero padded
    blurred = params.blur_on.nonzero().flatten()
    if len(blurred):
        nb, r = len(blurred), params.blur_size // 2
        taps = params.blur_weights(cdt)[blurred]
        # subnormal taps (sigma near 0.3 or 0.5 in float32: two near 1e-43) made every multiply by
        # them a microcode assist (the op 1.7x slower at sigma 0.5); as zeros they change values
        # below the dtype's smallest normal only, as in the C++ kernel
        taps = torch.where(taps.abs() < torch.finfo(cdt).tiny, 0, taps)
        taps = taps.repeat_interleave(c, dim=0).view(nb * c, 1, -1, 1)
        inp = out[blurred].view(1, nb * c, t_out, vm)
        conv = torch.nn.functional.conv2d(inp, taps, padding=(r, 0), groups=nb * c)
        out[blurred] = conv.view(nb, c, t_out, v, m)
    # 5. axis mask on the masked samples
    masked = (params.axis_keep != 1).any(dim=1).nonzero().flatten()
    if len(masked):
        out[masked] *= params.axis_keep[masked].to(cdt).view(-1, c, 1, 1, 1)
    # 6. stream
    if params.stream == "bone":
        out = out - out.index_select(3, parents)
    elif params.stream == "motion":
        motion = torch.empty_like(out)
        torch.sub(out[:, :, 1:], out[:, :, :-1], out=motion[:, :, :-1])
        motion[:, :, -1] = 0
        out = motion
    # 7. joint mask shared by the batch
    if params.frame_joint_mask is not None:
        out.masked_fill_(params.frame_joint_mask[None, None, :, :, None], fill.to(cdt))
    return out.to(x.dtype)
