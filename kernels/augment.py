# ruff: noqa: ANN001, ANN201, ANN202  (@triton.jit arguments are typed by the launch, not annotations)
"""One-pass batched skeleton augmentation (Triton).

One program computes a tile of (BT output frames) x (BJ = joints*bodies columns) of one sample,
all 3 channels. Each output value is composed from its source samples directly: for every blur
tap (15, or 1 where a sample is not blurred) and every stream term (1 for joint, 2 for bone and
motion) it reads the two temporal interpolation taps of the 3 input channels, applies the joint
map and the 3x3 matrix and adds noise; then axis mask, stream difference and joint mask, one
store. No intermediate tensor is written.

Noise is the stream every backend shares (``skelfast.reference.philox``: normal i of key k is
Box-Muller output i & 3 of Philox counter i >> 2), keyed by (seed + sample) and counted by the
pre-blur element (channel, frame, joint, body), so blurring the noise, as HiCLR's order (noise, then
blur) requires, stays exact: every tap regenerates the noise of the frame it reads.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# ints per sample: start, length, valid, reverse, blur_on
_NI = 5
# floats per sample: matrix (9), joint_matrix (9), axis_keep (3), noise_std (1)
_NF = 22
STREAM_CODES = {"joint": 0, "bone": 1, "motion": 2}


@triton.jit
def _uniform(word):
    """Triton's uint_to_uniform_float: int32 bitcast, negatives folded to -x - 1, to [0, 1)."""
    x = word.to(tl.int32, bitcast=True)
    x = tl.where(x < 0, -x - 1, x)
    return x.to(tl.float32) * 4.6566127342e-10


@triton.jit
def _normal(key, index):
    """Normal ``index`` (int32 >= 0) of the stream keyed by ``key``: Box-Muller output index & 3 of
    Philox counter index >> 2 (words 0, 1 give cos, sin; words 2, 3 the next pair)."""
    w0, w1, w2, w3 = tl.randint4x(key, index >> 2)
    slot = index & 3
    first = slot < 2
    u1 = tl.maximum(1.0e-7, _uniform(tl.where(first, w0, w2)))
    th = 6.283185307179586 * _uniform(tl.where(first, w1, w3))
    r = tl.sqrt(-2.0 * tl.log(u1))
    return r * tl.where((slot & 1) == 0, tl.cos(th), tl.sin(th))


@triton.jit
def _reflect(p, valid):
    p = tl.where(p < 0, -1 - p, p)
    p = tl.where(p >= valid, 2 * valid - 1 - p, p)
    return tl.minimum(tl.maximum(p, 0), valid - 1)


@triton.jit
def _value(
    x_ptr, sx_n, sx_c, sx_t, sx_v, sx_m, fl_ptr, jsrc_ptr, jsel_ptr,
    n, tq, vq, mq, cols, start, length, valid, reverse, scale, std, seed,
    T_OUT, V, M,
):  # fmt: skip
    """Augmented (pre-blur) value of frames tq (BT, 1) and output joints vq (1, BJ): 3 channels,
    zero outside [0, T_OUT) (the blur's zero padding)."""
    in_t = (tq >= 0) & (tq < T_OUT)
    tr = tl.where(reverse != 0, T_OUT - 1 - tq, tq)
    src = tl.maximum(scale * (tr.to(tl.float32) + 0.5) - 0.5, 0.0)
    i0 = src.to(tl.int32)
    w = src - i0.to(tl.float32)
    i1 = tl.minimum(i0 + 1, length - 1)
    i0 = tl.minimum(i0, length - 1)
    p0 = _reflect(start + i0, valid).to(tl.int64)
    p1 = _reflect(start + i1, valid).to(tl.int64)
    sv = tl.load(jsrc_ptr + n * V + vq, mask=cols, other=0)
    sel = tl.load(jsel_ptr + n * V + vq, mask=cols, other=0) != 0
    ok = in_t & cols
    base = x_ptr + n.to(tl.int64) * sx_n + sv.to(tl.int64) * sx_v + mq.to(tl.int64) * sx_m
    a0 = tl.load(base + p0 * sx_t, mask=ok, other=0.0).to(tl.float32)
    b0 = tl.load(base + p1 * sx_t, mask=ok, other=0.0).to(tl.float32)
    a1 = tl.load(base + sx_c + p0 * sx_t, mask=ok, other=0.0).to(tl.float32)
    b1 = tl.load(base + sx_c + p1 * sx_t, mask=ok, other=0.0).to(tl.float32)
    a2 = tl.load(base + 2 * sx_c + p0 * sx_t, mask=ok, other=0.0).to(tl.float32)
    b2 = tl.load(base + 2 * sx_c + p1 * sx_t, mask=ok, other=0.0).to(tl.float32)
    y0 = a0 * (1.0 - w) + b0 * w
    y1 = a1 * (1.0 - w) + b1 * w
    y2 = a2 * (1.0 - w) + b2 * w
    f = fl_ptr + n * 22
    o0 = (
        tl.where(sel, tl.load(f + 9), tl.load(f + 0)) * y0
        + tl.where(sel, tl.load(f + 10), tl.load(f + 1)) * y1
        + tl.where(sel, tl.load(f + 11), tl.load(f + 2)) * y2
    )
    o1 = (
        tl.where(sel, tl.load(f + 12), tl.load(f + 3)) * y0
        + tl.where(sel, tl.load(f + 13), tl.load(f + 4)) * y1
        + tl.where(sel, tl.load(f + 14), tl.load(f + 5)) * y2
    )
    o2 = (
        tl.where(sel, tl.load(f + 15), tl.load(f + 6)) * y0
        + tl.where(sel, tl.load(f + 16), tl.load(f + 7)) * y1
        + tl.where(sel, tl.load(f + 17), tl.load(f + 8)) * y2
    )
    if std != 0.0:
        # counter of the pre-blur element (c, t, v, m) of this sample; key = seed + n
        count = (tq * V + vq) * M + mq
        plane = T_OUT * V * M
        key = seed + n
        o0 += std * _normal(key, count)
        o1 += std * _normal(key, count + plane)
        o2 += std * _normal(key, count + 2 * plane)
    o0 = tl.where(in_t, o0, 0.0)
    o1 = tl.where(in_t, o1, 0.0)
    o2 = tl.where(in_t, o2, 0.0)
    return o0, o1, o2


@triton.jit
def _stream(
    x_ptr, sx_n, sx_c, sx_t, sx_v, sx_m, fl_ptr, jsrc_ptr, jsel_ptr, par_ptr,
    n, tq, vq, mq, cols, start, length, valid, reverse, scale, std, seed,
    T_OUT, V, M, STREAM: tl.constexpr,
):  # fmt: skip
    """The stream's value before blur: joint, bone (minus the parent joint) or motion (next frame
    minus this one); linear, so blurring it equals taking the stream of the blurred clip."""
    ta = tq
    if STREAM == 2:
        ta = tq + 1
    a0, a1, a2 = _value(
        x_ptr, sx_n, sx_c, sx_t, sx_v, sx_m, fl_ptr, jsrc_ptr, jsel_ptr,
        n, ta, vq, mq, cols, start, length, valid, reverse, scale, std, seed, T_OUT, V, M,
    )  # fmt: skip
    if STREAM != 0:
        if STREAM == 1:
            vb = tl.load(par_ptr + vq, mask=cols, other=0)
            tb = tq
        else:
            vb = vq
            tb = tq
        b0, b1, b2 = _value(
            x_ptr, sx_n, sx_c, sx_t, sx_v, sx_m, fl_ptr, jsrc_ptr, jsel_ptr,
            n, tb, vb, mq, cols, start, length, valid, reverse, scale, std, seed, T_OUT, V, M,
        )  # fmt: skip
        a0 -= b0
        a1 -= b1
        a2 -= b2
    return a0, a1, a2


@triton.jit
def augment_kernel(
    x_ptr, out_ptr, int_ptr, fl_ptr, jsrc_ptr, jsel_ptr, par_ptr, bw_ptr, seed_ptr, mask_ptr, fill_ptr,
    sx_n, sx_c, sx_t, sx_v, sx_m,
    T_OUT, V, M, has_mask,
    STREAM: tl.constexpr, KB: tl.constexpr, BT: tl.constexpr, BJ: tl.constexpr,
):  # fmt: skip
    n = tl.program_id(0)
    t = tl.program_id(1) * BT + tl.arange(0, BT)[:, None]
    j = tl.arange(0, BJ)[None, :]
    cols = j < V * M
    vq = j // M
    mq = j % M
    ip = int_ptr + n * 5
    start = tl.load(ip)
    length = tl.load(ip + 1)
    valid = tl.load(ip + 2)
    reverse = tl.load(ip + 3)
    blur_on = tl.load(ip + 4)
    # float32 scale, rounded like ATen's area_pixel_compute_scale
    scale = tl.math.div_rn(length.to(tl.float32), T_OUT.to(tl.float32))
    f = fl_ptr + n * 22
    std = tl.load(f + 21)
    seed = tl.load(seed_ptr)

    acc0 = tl.zeros((BT, BJ), dtype=tl.float32)
    acc1 = tl.zeros((BT, BJ), dtype=tl.float32)
    acc2 = tl.zeros((BT, BJ), dtype=tl.float32)
    # unblurred samples have identity taps: run only the centre one
    k_lo = tl.where(blur_on != 0, 0, KB // 2)
    k_hi = tl.where(blur_on != 0, KB, KB // 2 + 1)
    for k in range(k_lo, k_hi):  # a loop, not unrolled: each tap inlines the noise generator
        wk = tl.load(bw_ptr + n * KB + k)
        s0, s1, s2 = _stream(
            x_ptr, sx_n, sx_c, sx_t, sx_v, sx_m, fl_ptr, jsrc_ptr, jsel_ptr, par_ptr,
            n, t + (k - KB // 2), vq, mq, cols, start, length, valid, reverse, scale, std, seed,
            T_OUT, V, M, STREAM,
        )  # fmt: skip
        acc0 += wk * s0
        acc1 += wk * s1
        acc2 += wk * s2
    acc0 *= tl.load(f + 18)
    acc1 *= tl.load(f + 19)
    acc2 *= tl.load(f + 20)
    if STREAM == 2:  # motion: the last frame has no successor
        last = t == T_OUT - 1
        acc0 = tl.where(last, 0.0, acc0)
        acc1 = tl.where(last, 0.0, acc1)
        acc2 = tl.where(last, 0.0, acc2)
    ok = (t < T_OUT) & cols
    if has_mask != 0:
        masked = tl.load(mask_ptr + t * V + vq, mask=ok, other=0) != 0
        fill = tl.load(fill_ptr)
        acc0 = tl.where(masked, fill, acc0)
        acc1 = tl.where(masked, fill, acc1)
        acc2 = tl.where(masked, fill, acc2)
    # out is contiguous (N, 3, T_OUT, V, M): the (v, m) columns are j
    plane = T_OUT * V * M
    o = out_ptr + n.to(tl.int64) * 3 * plane + t * (V * M) + j
    ty = out_ptr.dtype.element_ty
    tl.store(o, acc0.to(ty), mask=ok)
    tl.store(o + plane, acc1.to(ty), mask=ok)
    tl.store(o + 2 * plane, acc2.to(ty), mask=ok)


def _tiles(device: torch.device, t_out: int, vm: int) -> tuple[int, int]:
    bj = triton.next_power_of_2(vm)
    if device.type == "cuda":
        return 16, bj
    # the interpreter's cost is per program: one program per sample
    return triton.next_power_of_2(t_out), bj


def augment_triton(
    x: torch.Tensor,
    valid: torch.Tensor,
    params: object,
    fill: torch.Tensor,
    parents: torch.Tensor,
) -> torch.Tensor:
    """Launch ``augment_kernel`` for x (N, 3, T_in, V, M) and an ``AugmentParams`` -> (N, 3, t_out, V, M)."""
    n, c, _, v, m = x.shape
    t_out = params.t_out
    out = torch.empty((n, c, t_out, v, m), device=x.device, dtype=x.dtype)
    if n == 0:
        return out
    dev = x.device
    ints = torch.stack(
        [params.start, params.length, valid.to(torch.int64), params.reverse.long(), params.blur_on.long()], 1
    ).to(device=dev, dtype=torch.int32)
    floats = torch.cat(
        [
            params.matrix.reshape(n, 9),
            params.joint_matrix.reshape(n, 9),
            params.axis_keep.reshape(n, 3),
            params.noise_std.reshape(n, 1),
        ],
        1,
    ).to(device=dev, dtype=torch.float32)
    jsrc = params.joint_source.to(device=dev, dtype=torch.int32).contiguous()
    jsel = params.joint_select.to(device=dev, dtype=torch.int32).contiguous()
    par = parents.to(device=dev, dtype=torch.int32).contiguous()
    weights = params.blur_weights(torch.float32).to(dev).contiguous()
    seed = params.noise_seed.reshape(1).to(device=dev, dtype=torch.int64)
    has_mask = params.frame_joint_mask is not None
    mask = params.frame_joint_mask.to(dev, torch.int8).contiguous() if has_mask else ints
    fill_t = fill.reshape(1).to(device=dev, dtype=torch.float32)
    bt, bj = _tiles(dev, t_out, v * m)
    grid = (n, triton.cdiv(t_out, bt))
    augment_kernel[grid](
        x, out, ints, floats, jsrc, jsel, par, weights, seed, mask, fill_t,
        *x.stride(), t_out, v, m, int(has_mask),
        STREAM=STREAM_CODES[params.stream], KB=params.blur_size, BT=bt, BJ=bj,
    )  # fmt: skip
    return out


def aot_specs() -> list:
    """Every shipped configuration: each stream (the joint mask is a runtime flag), NTU's 25 joints
    x 2 bodies (BJ = 64), 16-frame tiles, HiCLR's 15 blur taps."""
    from skelfast.aot import KernelSpec

    signature = {
        "x_ptr": "*fp32", "out_ptr": "*fp32", "int_ptr": "*i32", "fl_ptr": "*fp32", "jsrc_ptr": "*i32",
        "jsel_ptr": "*i32", "par_ptr": "*i32", "bw_ptr": "*fp32", "seed_ptr": "*i64", "mask_ptr": "*i8",
        "fill_ptr": "*fp32", "sx_n": "i64", "sx_c": "i64", "sx_t": "i64", "sx_v": "i64", "sx_m": "i64",
        "T_OUT": "i32", "V": "i32", "M": "i32", "has_mask": "i32",
        "STREAM": "constexpr", "KB": "constexpr", "BT": "constexpr", "BJ": "constexpr",
    }  # fmt: skip
    specs = []
    for stream in (0, 1, 2):
        constexprs = {"STREAM": stream, "KB": 15, "BT": 16, "BJ": 64}
        specs.append(KernelSpec(augment_kernel, signature, constexprs, num_warps=8, num_stages=1))
    return specs
