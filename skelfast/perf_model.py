"""A performance model on paper for a GPU we cannot time here: bytes moved and FLOPs of each fused
op against the reference's sequence of kernels, and the time each would take at an H100's limits.

MODEL, NOT A MEASUREMENT. Rules:

- every kernel reads each of its inputs once from HBM and writes each output once (ideal caching
  inside a kernel, none between kernels), so a sequence of kernels pays for every intermediate twice;
- a kernel takes ``max(bytes / HBM bandwidth, flops / peak)`` with the peak of the arithmetic it uses
  (fp32 CUDA cores for fp32 and IEEE-fp32 dots, as torch's default matmul precision; bf16 tensor cores
  for bf16 dots); a row's time is the sum over its kernels;
- launch overhead is NOT in the roofline time; a second column adds ``LAUNCH_S`` (5 us, an assumed
  cost of one eager PyTorch op: Python dispatch plus the launch) per kernel, because below ~20 us
  per op the count of launches, not the bytes, decides.

The reference kernels are those the reference code path runs (``skelfast/reference/``), in the
order ``torch.profiler`` lists their ATen ops on the CPU (einsum's permute copies and bmm, cat, div,
log_softmax, ...); the fused kernels are those of ``kernels/`` (Triton) and ``csrc/`` (CUDA).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

# NVIDIA H100 SXM5 limits (datasheet): HBM3 bandwidth, fp32 (non-tensor) and dense bf16 tensor peaks.
H100 = {"name": "H100 SXM", "hbm_bytes_per_s": 3.35e12, "fp32": 67e12, "bf16": 989e12, "sms": 132}
NOTE = "model, not a measurement: H100 SXM limits (3.35 TB/s HBM, 67 TFLOP/s fp32, 989 TFLOP/s bf16 dense)"
LAUNCH_S = 5e-6  # assumed cost of one eager op (dispatch + launch), for the "+ launches" column

FP32 = 4


@dataclass(frozen=True)
class Kernel:
    """One kernel launch (or a group of ``launches`` identical small ones) and its HBM traffic."""

    name: str
    bytes_read: int
    bytes_written: int
    flops: int = 0
    math: str = "fp32"  # which peak bounds its arithmetic: "fp32" or "bf16"
    launches: int = 1

    @property
    def bytes(self) -> int:
        return self.bytes_read + self.bytes_written

    def seconds(self, device: dict = H100) -> float:
        """max(bytes / bandwidth, flops / peak): the roofline bound of this kernel alone."""
        return max(self.bytes / device["hbm_bytes_per_s"], self.flops / device[self.math])


@dataclass(frozen=True)
class ModelRow:
    """One implementation (``fused`` or ``reference``) of one op at one shape."""

    op: str
    case: str
    impl: str
    kernels: tuple[Kernel, ...]

    @property
    def bytes(self) -> int:
        return sum(k.bytes for k in self.kernels)

    @property
    def flops(self) -> int:
        return sum(k.flops for k in self.kernels)

    @property
    def launches(self) -> int:
        return sum(k.launches for k in self.kernels)

    def seconds(self, device: dict = H100) -> float:
        return sum(k.seconds(device) for k in self.kernels)

    def seconds_with_launches(self, device: dict = H100, per_launch: float = LAUNCH_S) -> float:
        """The roofline time plus ``per_launch`` for every kernel launch."""
        return self.seconds(device) + per_launch * self.launches

    def bound(self, device: dict = H100) -> str:
        """ "memory" or "compute": which side of the roofline most of the modelled time is on."""
        mem = sum(
            k.seconds(device)
            for k in self.kernels
            if k.bytes / device["hbm_bytes_per_s"] >= k.flops / device[k.math]
        )
        return "memory" if mem >= self.seconds(device) / 2 else "compute"


def _ew(name: str, elems_read: int, elems_written: int, size: int = FP32, flops_per_elem: int = 1) -> Kernel:
    """An elementwise (or copy, or reduction) kernel over fp32/bf16 elements."""
    return Kernel(name, elems_read * size, elems_written * size, flops_per_elem * elems_written)


def _reduce(name: str, elems_read: int, elems_written: int, size: int = FP32) -> Kernel:
    """A sum over many elements into few: one add per element read."""
    return Kernel(name, elems_read * size, elems_written * size, elems_read)


# --- graph_conv ---------------------------------------------------------------------------------

V_NTU, K_SUBSETS = 25, 3


def graph_conv_forward(
    n: int, c_in: int, c_out: int, t: int, v: int = V_NTU, k: int = K_SUBSETS
) -> tuple[ModelRow, ModelRow]:
    """(fused, reference) for y = sum_k (W_k x + b_k) A_k, x (N, C_in, T, V), fp32."""
    x, z, y = n * c_in * t * v, n * k * c_out * t * v, n * c_out * t * v
    w, b, a = k * c_out * c_in, k * c_out, k * v * v
    mix_flops, agg_flops = 2 * n * t * v * k * c_out * c_in, 2 * n * c_out * t * k * v * v
    case = f"N={n} C={c_in}->{c_out} T={t}"
    fused = (  # csrc/graph_conv/graph_conv_cuda.cu: cuBLAS channel mix, then one aggregation kernel
        Kernel("channel_mix matmul (z = W x)", (x + w) * FP32, z * FP32, mix_flops),
        Kernel("bias table (O, V)", (b + a) * FP32, c_out * v * FP32, 2 * c_out * v * k * v),
        Kernel("aggregate_forward (y = z A + bias)", (z + a + c_out * v) * FP32, y * FP32, agg_flops),
    )
    reference = (  # skelfast/reference/graph_conv.py: einsum, + bias, einsum (profiled op order)
        _ew("einsum 1: permute copy of x", x, x, flops_per_elem=0),
        Kernel("einsum 1: bmm z = W x", (x + w) * FP32, z * FP32, mix_flops),
        _ew("z + bias", z + b, z),
        _ew("einsum 2: permute copy of z to (n,c,t,k,v)", z, z, flops_per_elem=0),
        Kernel("einsum 2: bmm y = z A", (z + a) * FP32, y * FP32, agg_flops),
    )
    return ModelRow("graph_conv fwd", case, "fused", fused), ModelRow(
        "graph_conv fwd", case, "reference", reference
    )


def graph_conv_backward(
    n: int, c_in: int, c_out: int, t: int, v: int = V_NTU, k: int = K_SUBSETS
) -> tuple[ModelRow, ModelRow]:
    """(fused, reference) backward for gradients of x, W, b and A (all four, as in training)."""
    x, z, y = n * c_in * t * v, n * k * c_out * t * v, n * c_out * t * v
    w, b, a = k * c_out * c_in, k * c_out, k * v * v
    mix_flops, agg_flops = 2 * n * t * v * k * c_out * c_in, 2 * n * c_out * t * k * v * v
    case = f"N={n} C={c_in}->{c_out} T={t}"
    fused = (  # graph_conv_backward_cuda
        Kernel("aggregate_backward (dz = g A^T)", (y + a) * FP32, z * FP32, agg_flops),
        Kernel("dx = W^T dz (cuBLAS)", (z + w) * FP32, x * FP32, mix_flops),
        Kernel("dW partials = dz x^T (cuBLAS, per sample)", (z + x) * FP32, n * w * FP32, mix_flops),
        _reduce("dW = partials.sum(0)", n * w, w),
        _reduce("gsum = g.sum((0, 2))", y, c_out * v),
        Kernel(
            "db, bias part of dA, dA zero/cast (small)",
            4 * (a + c_out * v) * FP32,
            (2 * a + b) * FP32,
            0,
            launches=6,
        ),
        Kernel("channel_mix again (z for dA)", (x + w) * FP32, z * FP32, mix_flops),
        # grid (row chunks, K): each of the K slices re-reads all of g
        Kernel("adjacency_grad (dA = sum z^T g)", (z + k * y) * FP32, a * FP32, agg_flops),
    )
    reference = (  # autograd of the reference, in the profiled order
        Kernel("bmm backward: dA = z^T g", (z + y) * FP32, a * FP32, agg_flops),
        Kernel("bmm backward: dz = g A^T", (y + a) * FP32, z * FP32, agg_flops),
        _ew("permute copy of dz back to (n,k,c,t,v)", z, z, flops_per_elem=0),
        _reduce("db = dz.sum", z, b),
        _ew("permute copy of dz for the bmm", z, z, flops_per_elem=0),
        Kernel("bmm backward: dx = W^T dz", (z + w) * FP32, x * FP32, mix_flops),
        Kernel("bmm backward: dW = dz x^T", (z + x) * FP32, w * FP32, mix_flops),
        _ew("AccumulateGrad: copy of the strided dx", x, x, flops_per_elem=0),
    )
    return ModelRow("graph_conv bwd", case, "fused", fused), ModelRow(
        "graph_conv bwd", case, "reference", reference
    )


# --- augment ------------------------------------------------------------------------------------


def augment(
    name: str,
    n: int,
    t_out: int,
    window: int,
    blurred_fraction: float,
    noisy: bool,
    joint_mask: bool,
    v: int = V_NTU,
    m: int = 2,
    blur_taps: int = 15,
) -> tuple[ModelRow, ModelRow]:
    """(fused, reference) for one view of N samples: x (N, 3, T_in, V, M) -> (N, 3, t_out, V, M).

    ``window``: input frames each sample's crop/shift window covers (what the fused kernel reads);
    ``blurred_fraction``: samples whose blur is on (the fused kernel runs 15 taps on those, 1 on the
    others; the reference always runs all 15)."""
    e = n * 3 * t_out * v * m  # output elements
    e_in = n * 3 * window * v * m
    small = n * t_out  # per-sample, per-frame index tensors (int64 / fp32)
    taps = blurred_fraction * blur_taps + (1 - blurred_fraction)
    per_tap = 3 + 5 + (2 if noisy else 0) + 2  # lerp, 3x3 row, noise FMA, blur FMA per output value
    fused = (
        Kernel("parameter packing and blur taps (~15 small ops)", 40 * n * 8, 40 * n * 4, 0, launches=15),
        Kernel("augment_kernel (Triton, one pass)", e_in * FP32, e * FP32, int(e * (taps * per_tap + 2))),
    )
    r = blur_taps // 2
    e_pad = e * (t_out + 2 * r) // t_out
    reference = [
        # source_positions, per-joint matrices, blur taps: ~30 small ops over (N, t_out) / (N, V, 3, 3)
        Kernel(
            "index math, per-sample tables, blur taps",
            40 * small * 8,
            20 * small * 8,
            20 * small,
            launches=30,
        ),
        _ew("gather frame tap a = x[i0]", e, e, flops_per_elem=0),
        _ew("gather frame tap b = x[i1]", e, e, flops_per_elem=0),
        _ew("a * (1 - w)", e, e),
        _ew("b * w", e, e),
        _ew("lerp sum", 2 * e, e),
        _ew("gather joints (flip index)", e, e, flops_per_elem=0),
        _ew("einsum: permute copy for the bmm", e, e, flops_per_elem=0),
        Kernel("einsum: bmm per-joint 3x3", e * FP32, e * FP32, 2 * 3 * e),
        # the noise stream in int64 tensor ops (skelfast.reference.philox.normal_fill): 16 per
        # Philox round, 10 rounds, one counter per 4 normals; then ~10 float ops per pair of
        # Box-Muller and the interleave
        Kernel(
            "noise: Philox4x32-10 rounds (int64 elementwise)",
            160 * 2 * (e // 4) * 8,
            160 * (e // 4) * 8,
            0,
            launches=160,
        ),
        Kernel(
            "noise: Box-Muller pairs and interleave", 10 * 2 * e * FP32, 10 * e * FP32, 10 * e, launches=20
        ),
        _ew("noise_std * z", e, e),
        _ew("y + noise", 2 * e, e),
        _ew("blur: zero pad", e, e_pad, flops_per_elem=0),
    ]
    reference += [_ew(f"blur: w_{i} * slice", e, e) for i in range(blur_taps)]
    reference += [_ew("blur: 0 + term 0", e, e)] + [_ew("blur: running sum", 2 * e, e)] * (blur_taps - 1)
    reference += [_ew("axis mask multiply", e, e)]
    if joint_mask:
        reference += [_ew("joint mask where(mask, fill, y)", e, e)]
    return ModelRow("augment", name, "fused", fused), ModelRow("augment", name, "reference", tuple(reference))


# --- info_nce -----------------------------------------------------------------------------------

BB, BK = 64, 64  # kernels/info_nce.py default_tiles(interpreting=False)


def info_nce_split(rows: Sequence[int], queues: Sequence[int], sms: int = H100["sms"]) -> int:
    """Queue chunk per work item, as ``kernels.info_nce.choose_chunk`` picks it on a GPU with ``sms``
    SMs: about two work items per SM, whole BK tiles, at least 4 tiles."""
    longest = max(queues)
    row_blocks = sum(-(-n // BB) for n in rows)
    want_splits = max(1, -(-2 * sms // max(1, row_blocks)))
    chunk = -(-longest // want_splits)
    return max(4 * BK, -(-chunk // BK) * BK)


def info_nce_fused_kernels(
    rows: Sequence[int],
    queues: Sequence[int],
    positives: Sequence[int],
    d: int,
    size: int = FP32,
    chunk: int | None = None,
) -> tuple[Kernel, ...]:
    """Forward + backward of ``skelfast.ops.info_nce`` on the Triton backend: level l has ``rows[l]``
    queries, ``positives[l]`` positives each (G) and a queue of ``queues[l]`` rows of D features.

    The queue-stats kernel reads each level's queue once per block of BB query rows (and each query
    block once per queue chunk); split-K partials are merged by a few torch ops; the loss and every
    gradient are O(R * D) (d lse / dq = o / tau: no second pass over the queue)."""
    chunk = chunk or info_nce_split(rows, queues)
    r = sum(rows)
    math_ = "bf16" if size == 2 else "fp32"
    items = bank_rows = q_reads = partial_rows = 0
    for n, k in zip(rows, queues, strict=True):
        blocks, chunks = -(-n // BB), max(1, -(-k // chunk))
        items += blocks * chunks
        bank_rows += blocks * k  # every row block streams the whole queue of its level
        q_reads += n * chunks  # every chunk item re-reads its query block
        partial_rows += n * chunks
    slots = max(max(1, -(-k // chunk)) for k in queues)
    pos = sum(n * g for n, g in zip(rows, positives, strict=True))
    pairs = sum(n * k for n, k in zip(rows, queues, strict=True))
    kernels = [
        _ew("torch.cat(queries)", r * d, r * d, size, 0),
        Kernel("work table (host to device)", 0, items * 5 * 4, 0),
        Kernel("partials init (lse, o, best, idx: 4 fills)", 0, slots * r * (d + 3) * FP32, 0, launches=4),
        Kernel(
            "queue_stats_fwd (Triton): q.k, online lse, p.k",
            (q_reads + bank_rows) * d * size + items * 5 * 4,
            partial_rows * (d + 3) * FP32,
            4 * pairs * d,  # two dots of D per (query, queue row)
            math_,
        ),
    ]
    if slots > 1:  # skelfast/ops/info_nce.py _triton_stats: logsumexp / weighted mean / argmax merge
        sr = slots * r
        kernels += [
            Kernel(
                "merge: logsumexp over chunks (amax, sub, exp, sum, log)",
                4 * sr * FP32,
                (2 * sr + 2 * r) * FP32,
                3 * sr,
                launches=5,
            ),
            _ew("merge: exp(lse_p - lse)", 2 * sr, 2 * sr),
            _ew("merge: weight * o_p", sr * d + sr, sr * d),
            _reduce("merge: sum over chunks", sr * d, r * d),
            Kernel(
                "merge: argmax, gather, cast, level offsets",
                2 * sr * FP32 + 4 * r * 8,
                4 * r * 8,
                0,
                launches=6,
            ),
        ]
    kernels += [
        # per level: q . positives, logsumexp with lse, loss rows; mean/stack
        Kernel(
            "loss epilogue (per level ~8 small ops)",
            (r * d + pos * d) * size + 8 * r * FP32,
            (pos + 6 * r) * FP32,
            2 * pos * d,
            launches=8 * len(rows) + 2,
        ),
        # backward of the epilogue: dq from the positives, dpositives from q, O(R) scalars
        Kernel(
            "epilogue backward (per level ~10 small ops)",
            (pos * d + r * d) * size + 10 * r * FP32,
            (r * d + pos * d) * size,
            4 * pos * d,
            launches=10 * len(rows),
        ),
        _ew("stats backward: zeros_like(o)", 0, r * d, FP32, 0),
        _ew("stats backward: grad_lse * o", r * d + r, r * d),
        _ew("stats backward: add", 2 * r * d, r * d),
        _ew("stats backward: * 1/tau", r * d, r * d),
        _ew("dq: accumulate the two paths", 2 * r * d, r * d, size),
    ]
    return tuple(kernels)


def _reference_level(n: int, k: int, g: int, d: int, size: int, name: str) -> list[Kernel]:
    """One level of ``reference.info_nce`` forward + backward: MoCo cross-entropy (g == 1) or HiCo's
    multi-positive logsumexp form (g > 1); logits L = N x (G + K)."""
    lg = n * (g + k)
    math_ = "bf16" if size == 2 else "fp32"
    ks = [
        Kernel(
            f"{name}: einsum q.positives (bmm)",
            (n * d + n * g * d) * size,
            n * g * size,
            2 * n * g * d,
            math_,
        ),
        Kernel(f"{name}: einsum q.queue (bmm)", (n * d + k * d) * size, n * k * size, 2 * n * k * d, math_),
        _ew(f"{name}: cat", lg, lg, size, 0),
        _ew(f"{name}: / tau", lg, lg, size),
    ]
    if size != FP32:
        ks.append(Kernel(f"{name}: .float()", lg * size, lg * FP32, 0))
    if g == 1:
        ks += [
            _ew(f"{name}: log_softmax", lg, lg, FP32, 3),
            Kernel(f"{name}: nll_loss, stack, sum (small)", n * 12, 8, 0, launches=4),
            _ew(f"{name}: nll_loss_backward (zeros + scatter)", 0, lg, FP32, 0),
            _ew(f"{name}: log_softmax_backward", 2 * lg, lg, FP32, 2),
        ]
    else:
        ks += [
            Kernel(
                f"{name}: logsumexp (amax, sub, exp_, sum)", 4 * lg * FP32, 2 * lg * FP32, 3 * lg, launches=6
            ),
            Kernel(
                f"{name}: logsumexp of positives, sub, mean (small)",
                6 * n * g * FP32,
                3 * n * g * FP32,
                0,
                launches=8,
            ),
            _ew(f"{name}: logsumexp backward: sub", lg, lg),
            _ew(f"{name}: logsumexp backward: exp", lg, lg),
            _ew(f"{name}: logsumexp backward: * grad", lg, lg),
            _ew(f"{name}: zeros for the positives' slice", 0, lg, FP32, 0),
            Kernel(
                f"{name}: positives' logsumexp backward (small)",
                4 * n * g * FP32,
                4 * n * g * FP32,
                0,
                launches=5,
            ),
            _ew(f"{name}: add the two logit gradients", 2 * lg, lg),
        ]
    ks += [
        _ew(f"{name}: div backward", lg, lg, FP32),
        Kernel(
            f"{name}: bmm backward dq = dlogits . queue",
            (n * k) * FP32 + k * d * size,
            n * d * size,
            2 * n * k * d,
            math_,
        ),
        Kernel(
            f"{name}: bmm backward dq, dpositives (positives)",
            2 * (n * g * d + n * d) * size,
            (n * g * d + n * d) * size,
            4 * n * g * d,
            math_,
            launches=3,
        ),
    ]
    return ks


def info_nce_case(
    name: str,
    rows: Sequence[int],
    queues: Sequence[int],
    positives: Sequence[int],
    d: int = 128,
    size: int = FP32,
) -> tuple[ModelRow, ModelRow]:
    """(fused, reference) forward+backward of one ``info_nce`` call with the given levels."""
    fused = info_nce_fused_kernels(rows, queues, positives, d, size)
    reference = []
    for lvl, (n, k, g) in enumerate(zip(rows, queues, positives, strict=True)):
        reference += _reference_level(n, k, g, d, size, f"level {lvl}")
    return ModelRow("info_nce", name, "fused", fused), ModelRow(
        "info_nce", name, "reference", tuple(reference)
    )


def hiclr_case(n: int = 128, k: int = 32768, d: int = 128) -> tuple[ModelRow, ModelRow]:
    """(fused, reference) forward+backward of ``hiclr_loss`` (three branches, one queue, no mining)."""
    fused = info_nce_fused_kernels([n, n, n], [k, k, k], [1, 1, 1], d)
    lg = n * (1 + k)
    reference: list[Kernel] = []
    for b in ("q", "q1", "q2"):  # queue_logits per branch
        reference += [
            Kernel(f"{b}: einsum q.k (bmm)", 2 * n * d * FP32, n * FP32, 2 * n * d),
            Kernel(f"{b}: einsum q.queue (bmm)", (n * d + k * d) * FP32, n * k * FP32, 2 * n * k * d),
            _ew(f"{b}: cat", lg, lg, FP32, 0),
            _ew(f"{b}: / tau", lg, lg),
            _ew(f"{b}: log_softmax", lg, lg, FP32, 3),
        ]
    reference += [
        _ew("nce: log_softmax of the q logits again (F.cross_entropy)", lg, lg, FP32, 3),
        Kernel("nce: nll_loss (small)", n * 12, 8, 0),
    ]
    for term in ("L1", "L2"):  # -(sg(p_t) * log p_s).sum(1).mean()
        reference += [
            _ew(f"{term}: exp of the target log-probabilities", lg, lg),
            _ew(f"{term}: target * log p", 2 * lg, lg),
            _reduce(f"{term}: sum over entries", lg, n),
        ]
    reference += [
        Kernel("means, weights, sums (small)", 16 * n * FP32, 8 * n * FP32, 0, launches=10),
        _ew("L1 backward: grad * target", lg, lg),
        _ew("L2 backward: grad * target", lg, lg),
        _ew("nce: nll_loss_backward (zeros + scatter)", 0, lg, FP32, 0),
    ]
    reference += [_ew(f"{b}: log_softmax_backward", 2 * lg, lg, FP32, 2) for b in ("nce", "q1", "q2")]
    for b in ("q", "q1", "q2"):
        reference += [
            _ew(f"{b}: div backward", lg, lg),
            Kernel(
                f"{b}: bmm backward dq = dlogits . queue",
                n * k * FP32 + k * d * FP32,
                n * d * FP32,
                2 * n * k * d,
            ),
            Kernel(
                f"{b}: dq from the key logit, accumulate (small)",
                3 * n * d * FP32,
                2 * n * d * FP32,
                4 * n * d,
                launches=2,
            ),
        ]
    case = f"HiCLR B={n} x3 branches K={k}"
    return ModelRow("info_nce", case, "fused", fused), ModelRow(
        "info_nce", case, "reference", tuple(reference)
    )


# --- momentum update ----------------------------------------------------------------------------

FOREACH_CHUNK, FOREACH_BLOCKS, FOREACH_TENSORS = 65536, 320, 110  # ATen multi_tensor_apply (depth 2)


def momentum_case(name: str, numels: Sequence[int]) -> tuple[ModelRow, ModelRow]:
    """(fused, reference) EMA of the key encoder: one ``torch._foreach_lerp_`` vs MoCo's loop of
    ``k.mul_(m).add_(q, alpha=1 - m)`` (two kernels per parameter)."""
    p, count = sum(numels), len(numels)
    chunks = sum(-(-x // FOREACH_CHUNK) for x in numels)
    launches = max(-(-count // FOREACH_TENSORS), -(-chunks // FOREACH_BLOCKS), 1)
    fused = (Kernel("_foreach_lerp_ (multi-tensor apply)", 2 * p * FP32, p * FP32, 3 * p, launches=launches),)
    reference = (
        Kernel("k.mul_(m) per parameter", p * FP32, p * FP32, p, launches=count),
        Kernel("k.add_(q, alpha=1-m) per parameter", 2 * p * FP32, p * FP32, 2 * p, launches=count),
    )
    case = f"{name}: {count} tensors, {p / 1e6:.2f} M parameters"
    return ModelRow("momentum", case, "fused", fused), ModelRow("momentum", case, "reference", reference)


def momentum_encoders(method: str) -> list[object]:
    """The modules whose parameters a method's momentum update walks (its key encoders, official
    sizes, from ``skelfast.nn``): HiCo's encoder, HiCLR's quarter ST-GCN, ISC's GRU and AGCN, CRRL's
    GRU only (its key MLP is never updated, spec isc_crrl.md §2.3)."""
    from skelfast.nn import AGCN, CRRLEncoder, HiCoEncoder, ISCSeqEncoder, stgcn_hiclr

    builders = {
        "hico": lambda: [HiCoEncoder()],
        "hiclr": lambda: [stgcn_hiclr()],
        "isc": lambda: [ISCSeqEncoder(), AGCN()],
        "crrl": lambda: [CRRLEncoder().gru],
    }
    if method not in builders:
        raise ValueError(f"momentum_encoders: unknown method {method!r}; choose one of {sorted(builders)}")
    return builders[method]()


@functools.cache
def momentum_numels(method: str) -> tuple[int, ...]:
    """Element count of each parameter tensor the method's momentum update touches."""
    return tuple(p.numel() for module in momentum_encoders(method) for p in module.parameters())


# --- all rows -----------------------------------------------------------------------------------

GRAPH_CONV_CASES = ((128, 64, 64, 50), (128, 64, 128, 50), (128, 16, 16, 50))  # ST-GCN; HiCLR quarter width


def model_rows(include_momentum: bool = True) -> list[ModelRow]:
    """Every modelled (op, shape, implementation), fused first in each pair."""
    rows: list[ModelRow] = []
    for shape in GRAPH_CONV_CASES:
        rows += graph_conv_forward(*shape)
    for shape in GRAPH_CONV_CASES:
        rows += graph_conv_backward(*shape)
    # HiCo: 300-frame clips cropped to a >= 64-frame window (NTU clips average ~90 frames: ~64 read);
    # HiCLR strong view with mask: 50-frame clips, half the samples blurred, noise on.
    rows += augment("HiCo view N=64 300->64 frames", 64, 64, 64, 0.0, False, False)
    rows += augment("HiCLR strong+mask view N=128 50->50", 128, 50, 50, 0.5, True, True)
    rows += info_nce_case("MoCo B=256 K=65536", [256], [65536], [1])
    rows += info_nce_case("MoCo B=256 K=65536 bf16", [256], [65536], [1], size=2)
    rows += info_nce_case("ISC B=64 two levels K=16384", [64, 64], [16384, 16384], [1, 1])
    rows += info_nce_case(
        "HiCo B=64 five levels K=4x2048,2048", [64] * 5, [8192, 8192, 2048, 2048, 2048], [4, 4, 1, 1, 1]
    )
    rows += hiclr_case()
    if include_momentum:
        for method in ("hico", "hiclr", "isc", "crrl"):
            rows += momentum_case(method, momentum_numels(method))
    return rows


def format_table(rows: Sequence[ModelRow], device: dict = H100) -> str:
    """A markdown table: per row MB moved, GFLOP, launches, bound, modelled time (roofline, and with
    ``LAUNCH_S`` per launch); on each fused row the reference/fused ratios."""
    lines = [
        f"Performance model ({NOTE}; '+launches' adds {LAUNCH_S * 1e6:.0f} us per kernel launch).",
        "",
        "| op | case | impl | kernels | MB moved | GFLOP | bound | time us | +launches us "
        "| bytes ref/fused | time ref/fused | +launches ref/fused |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    pairs = {(r.op, r.case): r for r in rows if r.impl == "reference"}
    for r in rows:
        ref = pairs.get((r.op, r.case)) if r.impl == "fused" else None
        ratio_b = f"{ref.bytes / r.bytes:.1f}x" if ref else ""
        ratio_t = f"{ref.seconds(device) / r.seconds(device):.1f}x" if ref else ""
        ratio_l = f"{ref.seconds_with_launches(device) / r.seconds_with_launches(device):.1f}x" if ref else ""
        lines.append(
            f"| {r.op} | {r.case} | {r.impl} | {r.launches} | {r.bytes / 1e6:.2f} | {r.flops / 1e9:.3f} | "
            f"{r.bound(device)} | {r.seconds(device) * 1e6:.1f} | {r.seconds_with_launches(device) * 1e6:.0f} | "
            f"{ratio_b} | {ratio_t} | {ratio_l} |"
        )
    return "\n".join(lines)


def format_kernels(row: ModelRow, device: dict = H100) -> str:
    """One row's kernels, slowest first: name, MB, GFLOP, launches and modelled microseconds."""
    lines = [f"{row.op} | {row.case} | {row.impl}: {row.seconds(device) * 1e6:.1f} us ({NOTE})"]
    for k in sorted(row.kernels, key=lambda k: -k.seconds(device)):
        lines.append(
            f"  {k.name:<62} {k.bytes / 1e6:>9.2f} MB {k.flops / 1e9:>8.3f} GFLOP x{k.launches:<4} "
            f"{k.seconds(device) * 1e6:>8.1f} us"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m skelfast.perf_model [--kernels]``: print the table (and every row's kernels)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m skelfast.perf_model", description=NOTE)
    parser.add_argument("--kernels", action="store_true", help="also list each row's kernels, slowest first")
    args = parser.parse_args(argv)
    rows = model_rows()
    print(format_table(rows))
    if args.kernels:
        for row in rows:
            print()
            print(format_kernels(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["H100", "Kernel", "ModelRow", "format_kernels", "format_table", "model_rows"]
