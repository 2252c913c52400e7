# ruff: noqa: ANN001, ANN202  (Triton kernel parameters are untyped pointers and scalars)
"""Triton kernels for InfoNCE over memory queues: per-row softmax statistics of queries against
segments of a queue bank, without ever storing the (rows, K) logits.

For each query row i of a level whose queue is ``bank[k0:k1]`` the forward kernel computes, in
one online pass over queue tiles (the flash-attention recurrence with V = K):

- ``lse_i = log sum_j exp(q_i . k_j / tau)`` (natural log, fp32),
- ``o_i = sum_j softmax_j k_j`` (fp32, (D,)): the probability-weighted mean of queue rows,
- ``top1_i = argmax_j q_i . k_j`` (the nearest queue entry by raw dot product).

Because the queue is a constant (a MoCo buffer), ``d lse_i / d q_i = o_i / tau``: the backward of
everything built on ``lse`` is elementwise and needs no second pass. Only a gradient flowing into
``o`` itself needs the second-moment pass ``sum_j p_ij (k_j . g_i) k_j``, which the backward
kernel recomputes in tiles from the stored ``lse``.

Work is split over (level, row block, queue chunk) items listed in an int32 table, so one launch
covers every level of a method and a long queue is spread over many programs (split-K); each item
writes partial statistics into its chunk's slot and the caller merges slots with a logsumexp.
fp32 inputs use IEEE fp32 dots (torch's default matmul precision, no TF32); fp16/bf16 inputs use
fp16/bf16 dots with fp32 accumulation. No autograd here: skelfast/ops/info_nce.py wraps these launchers in a custom op.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634
WORK_FIELDS = 5  # row_start, row_end, k_start, k_end, slot


@triton.jit
def _work_item(work_ptr, w):
    """Entry w of the work table: query rows [row0, row1), queue rows [k0, k1), partial slot."""
    row0 = tl.load(work_ptr + w * 5 + 0)
    row1 = tl.load(work_ptr + w * 5 + 1)
    k0 = tl.load(work_ptr + w * 5 + 2)
    k1 = tl.load(work_ptr + w * 5 + 3)
    slot = tl.load(work_ptr + w * 5 + 4).to(tl.int64)
    return row0, row1, k0, k1, slot


@triton.jit
def _queue_stats_fwd_kernel(
    q_ptr,
    bank_ptr,
    work_ptr,
    lse_ptr,
    o_ptr,
    best_ptr,
    best_idx_ptr,
    R,
    D,
    stride_qr,
    stride_qd,
    stride_br,
    stride_bd,
    scale_log2,  # log2(e) / tau: logits in base 2
    BB: tl.constexpr,
    BK: tl.constexpr,
    BD: tl.constexpr,
):
    w = tl.program_id(0)
    row0, row1, k0, k1, slot = _work_item(work_ptr, w)

    rows = row0 + tl.arange(0, BB)
    rmask = rows < row1
    dd = tl.arange(0, BD)
    dmask = dd < D
    q = tl.load(
        q_ptr + rows[:, None].to(tl.int64) * stride_qr + dd[None, :] * stride_qd,
        mask=rmask[:, None] & dmask[None, :],
        other=0.0,
    )

    m = tl.full((BB,), float("-inf"), tl.float32)
    l_sum = tl.zeros((BB,), tl.float32)
    acc = tl.zeros((BB, BD), tl.float32)
    best = tl.full((BB,), float("-inf"), tl.float32)
    best_idx = tl.zeros((BB,), tl.int32)
    for start in range(k0, k1, BK):
        kk = start + tl.arange(0, BK)
        kmask = kk < k1
        k = tl.load(
            bank_ptr + kk[:, None].to(tl.int64) * stride_br + dd[None, :] * stride_bd,
            mask=kmask[:, None] & dmask[None, :],
            other=0.0,
        )
        s = tl.dot(q, tl.trans(k), input_precision="ieee")
        s = tl.where(kmask[None, :], s, float("-inf"))
        # nearest queue entry: strictly greater keeps the first of ties, as torch.argmax does
        tile_best = tl.max(s, axis=1)
        tile_arg = tl.argmax(s, axis=1)
        better = tile_best > best
        best_idx = tl.where(better, start + tile_arg, best_idx)
        best = tl.where(better, tile_best, best)
        # online logsumexp (base 2) and probability-weighted sum of queue rows
        z = s * scale_log2
        m_new = tl.maximum(m, tl.max(z, axis=1))
        alpha = tl.exp2(m - m_new)
        p = tl.exp2(z - m_new[:, None])
        l_sum = l_sum * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(k.dtype), k, input_precision="ieee")
        m = m_new

    lse = (m + tl.log2(l_sum)) / 1.4426950408889634
    o = acc / l_sum[:, None]
    out = slot * R + rows
    tl.store(lse_ptr + out, lse, mask=rmask)
    tl.store(best_ptr + out, best, mask=rmask)
    tl.store(best_idx_ptr + out, best_idx, mask=rmask)
    tl.store(o_ptr + out[:, None] * D + dd[None, :], o, mask=rmask[:, None] & dmask[None, :])


@triton.jit
def _queue_stats_bwd_kernel(
    q_ptr,
    bank_ptr,
    g_ptr,
    lse_ptr,
    work_ptr,
    out_ptr,
    R,
    D,
    stride_qr,
    stride_qd,
    stride_br,
    stride_bd,
    scale_log2,
    BB: tl.constexpr,
    BK: tl.constexpr,
    BD: tl.constexpr,
):
    """Partial ``sum_j p_ij (k_j . g_i) k_j`` over one queue chunk, with p from the final lse."""
    w = tl.program_id(0)
    row0, row1, k0, k1, slot = _work_item(work_ptr, w)

    rows = row0 + tl.arange(0, BB)
    rmask = rows < row1
    dd = tl.arange(0, BD)
    dmask = dd < D
    qmask = rmask[:, None] & dmask[None, :]
    q = tl.load(
        q_ptr + rows[:, None].to(tl.int64) * stride_qr + dd[None, :] * stride_qd, mask=qmask, other=0.0
    )
    g = tl.load(g_ptr + rows[:, None].to(tl.int64) * D + dd[None, :], mask=qmask, other=0.0)
    lse2 = tl.load(lse_ptr + rows, mask=rmask, other=0.0) * 1.4426950408889634

    acc = tl.zeros((BB, BD), tl.float32)
    for start in range(k0, k1, BK):
        kk = start + tl.arange(0, BK)
        kmask = kk < k1
        k = tl.load(
            bank_ptr + kk[:, None].to(tl.int64) * stride_br + dd[None, :] * stride_bd,
            mask=kmask[:, None] & dmask[None, :],
            other=0.0,
        )
        s = tl.dot(q, tl.trans(k), input_precision="ieee")
        p = tl.exp2(s * scale_log2 - lse2[:, None])
        p = tl.where(kmask[None, :] & rmask[:, None], p, 0.0)
        k32 = k.to(tl.float32)
        c = tl.dot(g, tl.trans(k32), input_precision="ieee")  # (BB, BK): k_j . g_i
        acc += tl.dot(p * c, k32, input_precision="ieee")
    out = slot * R + rows
    tl.store(out_ptr + out[:, None] * D + dd[None, :], acc, mask=qmask)


# --- launchers ----------------------------------------------------------------------------------


BD = 128  # feature tile: every feature dimension up to 128 (masked), the one shipped width
MAX_FEATURES = BD


def default_tiles(interpreting: bool) -> tuple[int, int]:
    """(BB, BK) for a call. The interpreter costs per program and per op, not per FLOP, so it gets
    big tiles; GPUs get the tiles that aot_specs() compiles and checks."""
    return (64, 512) if interpreting else (64, 64)


def work_table(
    rows: list[int], ranges: list[tuple[int, int]], bb: int, chunk: int, device: torch.device
) -> tuple[torch.Tensor, int]:
    """Work items (row_start, row_end, k_start, k_end, slot) for levels with ``rows[l]`` query rows
    (consecutive) and queue rows ``ranges[l] = (start, count)``; returns the table and the number
    of slots (queue chunks of the longest level)."""
    items: list[int] = []
    slots = 1
    row = 0
    for n, (k0, kn) in zip(rows, ranges, strict=True):
        n_chunks = max(1, -(-kn // chunk))
        slots = max(slots, n_chunks)
        for r in range(row, row + n, bb):
            for c in range(n_chunks):
                items += [r, min(r + bb, row + n), k0 + c * chunk, k0 + min(kn, (c + 1) * chunk), c]
        row += n
    table = torch.tensor(items, dtype=torch.int32, device=device)
    return table, slots


def choose_chunk(
    rows: list[int], ranges: list[tuple[int, int]], bb: int, bk: int, device: torch.device
) -> int:
    """Queue chunk per work item: enough items to fill the GPU (about two per SM), whole tiles."""
    longest = max(kn for _, kn in ranges)
    if device.type != "cuda":
        return max(bk, triton.next_power_of_2(longest))  # interpreter: one chunk per level
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    row_blocks = sum(-(-n // bb) for n in rows)
    want_splits = max(1, -(-2 * sms // max(1, row_blocks)))
    chunk = -(-longest // want_splits)
    return max(4 * bk, -(-chunk // bk) * bk)


@functools.lru_cache(maxsize=256)
def launch_plan(
    rows: tuple[int, ...], ranges: tuple[tuple[int, int], ...], bb: int, bk: int, device: torch.device
) -> tuple[torch.Tensor, int]:
    """The work table and slot count of ``work_table`` at ``choose_chunk``'s chunk, built once per
    shape and device: a training loop calls with the same shapes every step, and building the table
    costs a Python loop and a host-to-device copy."""
    chunk = choose_chunk(list(rows), list(ranges), bb, bk, device)
    return work_table(list(rows), list(ranges), bb, chunk, device)


def _table(
    rows: list[int], ranges: list[tuple[int, int]], bb: int, bk: int, chunk: int | None, device: torch.device
) -> tuple[torch.Tensor, int]:
    if not chunk:  # the automatic chunk
        return launch_plan(tuple(rows), tuple(ranges), bb, bk, device)
    return work_table(rows, ranges, bb, chunk, device)


def queue_stats_forward(
    q: torch.Tensor,
    bank: torch.Tensor,
    rows: list[int],
    ranges: list[tuple[int, int]],
    inv_tau: float,
    tiles: tuple[int, int] | None = None,
    chunk: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Partial statistics per queue chunk: lse (S, R), o (S, R, D), best (S, R), best_idx (S, R)
    (absolute rows of ``bank``), plus the work table (for the backward)."""
    from skelfast import backends

    r_total, d = q.shape
    bb, bk = tiles or default_tiles(backends.triton_interpreting())
    table, slots = _table(rows, ranges, bb, bk, chunk, q.device)
    lse = torch.full((slots, r_total), float("-inf"), dtype=torch.float32, device=q.device)
    o = torch.zeros((slots, r_total, d), dtype=torch.float32, device=q.device)
    best = torch.full((slots, r_total), float("-inf"), dtype=torch.float32, device=q.device)
    best_idx = torch.zeros((slots, r_total), dtype=torch.int32, device=q.device)
    n_items = table.numel() // WORK_FIELDS
    if n_items:
        _queue_stats_fwd_kernel[(n_items,)](
            q, bank, table, lse, o, best, best_idx, r_total, d,
            q.stride(0), q.stride(1), bank.stride(0), bank.stride(1),
            inv_tau * LOG2E, BB=bb, BK=bk, BD=BD,
        )  # fmt: skip
    return lse, o, best, best_idx, table


def queue_stats_backward_moment(
    q: torch.Tensor,
    bank: torch.Tensor,
    grad_o: torch.Tensor,
    lse: torch.Tensor,
    rows: list[int],
    ranges: list[tuple[int, int]],
    inv_tau: float,
    tiles: tuple[int, int] | None = None,
    chunk: int | None = None,
) -> torch.Tensor:
    """``sum_j p_ij (k_j . g_i) k_j`` (R, D) fp32, with p_ij = exp(q_i . k_j / tau - lse_i).

    Only a gradient flowing into ``o`` needs this (the InfoNCE losses detach it), so it runs in fp32
    whatever the input dtype: one shipped configuration, and no fp16 rounding of p * (k . g)."""
    from skelfast import backends

    q, bank = q.float(), bank.float()
    r_total, d = q.shape
    bb, bk = tiles or default_tiles(backends.triton_interpreting())
    table, slots = _table(rows, ranges, bb, bk, chunk, q.device)
    out = torch.zeros((slots, r_total, d), dtype=torch.float32, device=q.device)
    n_items = table.numel() // WORK_FIELDS
    if n_items:
        _queue_stats_bwd_kernel[(n_items,)](
            q, bank, grad_o.float().contiguous(), lse.contiguous(), table, out, r_total, d,
            q.stride(0), q.stride(1), bank.stride(0), bank.stride(1),
            inv_tau * LOG2E, BB=bb, BK=bk, BD=BD,
        )  # fmt: skip
    return out.sum(0)


# --- ahead-of-time configurations ---------------------------------------------------------------

_TRITON_DTYPE = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def _signature(kernel: str, dtype_name: str) -> dict[str, str]:
    scalars = {
        "R": "i32", "D": "i32", "stride_qr": "i32", "stride_qd": "i32", "stride_br": "i32",
        "stride_bd": "i32", "scale_log2": "fp32", "BB": "constexpr", "BK": "constexpr", "BD": "constexpr",
    }  # fmt: skip
    if kernel == "fwd":
        ptrs = {
            "q_ptr": f"*{dtype_name}", "bank_ptr": f"*{dtype_name}", "work_ptr": "*i32", "lse_ptr": "*fp32",
            "o_ptr": "*fp32", "best_ptr": "*fp32", "best_idx_ptr": "*i32",
        }  # fmt: skip
    else:
        ptrs = {
            "q_ptr": f"*{dtype_name}", "bank_ptr": f"*{dtype_name}", "g_ptr": "*fp32", "lse_ptr": "*fp32",
            "work_ptr": "*i32", "out_ptr": "*fp32",
        }  # fmt: skip
    return {**ptrs, **scalars}


def aot_specs() -> list:
    """Every configuration launched on GPUs: the forward per input dtype, the backward in fp32."""
    from skelfast.aot import KernelSpec

    bb, bk = default_tiles(interpreting=False)
    consts = {"BB": bb, "BK": bk, "BD": BD}
    specs = [
        KernelSpec(_queue_stats_fwd_kernel, _signature("fwd", n), consts) for n in _TRITON_DTYPE.values()
    ]
    specs.append(KernelSpec(_queue_stats_bwd_kernel, _signature("bwd", "fp32"), consts))
    return specs
