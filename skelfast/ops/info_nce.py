"""``skelfast.ops.info_nce`` and ``skelfast.ops.hiclr_loss``: InfoNCE over memory queues, every level
of a method in one call, without the (N, K) logits.

Everything rests on one primitive, the custom op ``skelfast::queue_softmax_stats``: for each query
row i of a level whose negatives are ``bank[k0:k0+K]``, the queue logsumexp ``lse_i``, the
probability-weighted queue mean ``o_i = sum_j softmax(q_i . k_j / tau)_j k_j`` and the nearest queue
entry. Since the queue is a constant, ``d lse_i / d q_i = o_i / tau`` and every loss below is an
O(N * D) composition of these statistics with the positives:

- MoCo / ISC / CRRL: ``loss_i = logaddexp(lse_i, s_i+) - s_i+`` with ``s_i+ = q_i . k_i / tau``;
- HiCo's multi-positive levels: ``logsumexp(lse_i, s_i1..s_iG) - logsumexp(s_i1..s_iG)``;
- mining (HiCLR phase 2): the mean of ``s_ij - lse_all_i`` over {key} union mined queue entries;
- HiCLR's consistency: ``sum_j sg(p_t)_j log p_s,j = p_t,0 s_s,0 + P_t,queue * q_s . o_t / tau - lse_s``
  because the queue logits are linear in the query, so neither distribution is ever materialised.

Backends: ``triton`` (CUDA; CPU tensors under ``TRITON_INTERPRET=1`` when forced), ``torch`` (the
same statistics in PyTorch over queue chunks, levels batched into one matmul per chunk, memory
O(N * chunk); the CPU default) and
``reference`` (``skelfast.reference.info_nce``: full logits and F.cross_entropy).

Mixed precision: under ``torch.autocast`` the losses run like autocast's fp32 ops (cross_entropy,
log_softmax): autocast is off inside, so every dot product accumulates in fp32 and nothing is recast.
Half-precision features may then meet the fp32 queue buffer: on the ``triton`` backend the bank is
cast down to the features' dtype (half-precision tiles, fp32 accumulation, as for all-half inputs),
on ``torch`` and ``reference`` the features are cast up to float32. Outside autocast the queries and
the queue must share a dtype.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Sequence
from typing import NamedTuple, TypeVar

import torch
import torch.nn.functional as F

from skelfast import backends
from skelfast.ops._checks import check_floating
from skelfast.profiling import profiled
from skelfast.reference.info_nce import hiclr_loss as reference_hiclr_loss
from skelfast.reference.info_nce import info_nce as reference_info_nce
from skelfast.reference.info_nce import nearest_queue_entry, queue_logits

OP = "info_nce"
TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
AUTOCAST_DEVICES = ("cpu", "cuda")
HALF_DTYPES = (torch.float16, torch.bfloat16)
TRITON_MAX_FEATURES = 128  # kernels/info_nce.py BD
CHUNK_BYTES = 1 << 20  # the chunked path keeps one (rows, chunk) fp32 tile in about 1 MiB of cache
CHUNK_FRACTION = 8  # ... and at most 1/8 of all levels' full logits (eager keeps them and their gradient)
MIN_CHUNK = 256  # queue rows per matmul at least: below this, per-chunk overhead dominates
ARGMAX_BLOCK = 32  # chunks are whole blocks of this many columns for the blocked row argmax
SHIFT_MARGIN = 40.0  # fixed softmax shift: later logits may exceed it by this (e^40 * K stays finite)


# --- the primitive: a custom op with fake and autograd ------------------------------------------


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


class _Group(NamedTuple):
    """Levels the chunked path handles with one batched matmul per queue chunk: ``levels``
    consecutive levels of ``rows`` query rows each (from query row ``row0``), level i reading the
    queue rows ``[start + i * step, start + i * step + count)``: a strided view of the bank."""

    row0: int
    levels: int
    rows: int
    start: int
    step: int
    count: int
    chunk: int  # queue rows per matmul (the last chunk may be shorter)


@functools.lru_cache(maxsize=256)
def _plan(rows: tuple[int, ...], ranges: tuple[int, ...]) -> tuple[_Group, ...]:
    """Batches of levels for ``_chunked_stats`` (a pure function of the shapes: cached per call site).

    Consecutive levels reading the same queue rows (HiCLR's branches) become one level with their
    rows stacked; consecutive levels with equal row and queue counts whose queues step evenly forward
    through the bank (HiCo's five levels: 2 + 3) are batched. Chunks are sized so that all tiles
    together stay under 1/CHUNK_FRACTION of the full logits of every level (what the eager
    reference keeps for backward) and CHUNK_BYTES."""
    merged: list[list[int]] = []  # [rows, start, count]
    for n, k0, kn in zip(rows, ranges[0::2], ranges[1::2], strict=True):
        if merged and merged[-1][1:] == [k0, kn]:
            merged[-1][0] += n
        else:
            merged.append([n, k0, kn])
    batches: list[list[int]] = []  # [row0, levels, rows, start, step, count]
    row = 0
    for n, k0, kn in merged:
        last = batches[-1] if batches else None
        if last is not None and last[2] == n and last[5] == kn:
            step = k0 - (last[3] + (last[1] - 1) * last[4])
            if step > 0 and (last[1] == 1 or step == last[4]):
                last[1] += 1
                last[4] = step
                row += n
                continue
        batches.append([row, 1, n, k0, kn, kn])
        row += n
    logit_bytes = 4 * sum(n * kn for n, kn in zip(rows, ranges[1::2], strict=True))
    tile_bytes = min(CHUNK_BYTES, logit_bytes // CHUNK_FRACTION)
    groups = []
    for row0, levels, n, start, step, count in batches:
        widest = max(MIN_CHUNK, tile_bytes // (4 * levels * n)) // ARGMAX_BLOCK * ARGMAX_BLOCK
        pieces = -(-count // widest)
        chunk = min(count, -(-count // (pieces * ARGMAX_BLOCK)) * ARGMAX_BLOCK)  # whole blocks, <= widest
        groups.append(_Group(row0, levels, n, start, step, count, chunk))
    return tuple(groups)


def _row_max(s: torch.Tensor, best: torch.Tensor, arg: torch.Tensor) -> None:
    """``torch.max(s, -1, out=(best, arg))`` (the first of equal entries wins). The max with indices
    is a scalar loop on the CPU, several times slower than a vectorised amax: take the amax of
    blocks of ARGMAX_BLOCK columns, then the index only among block maxima and in the winning block."""
    width = s.shape[-1]
    if width % ARGMAX_BLOCK or width < 4 * ARGMAX_BLOCK:
        torch.max(s, -1, out=(best, arg))
        return
    blocks = s.view(*s.shape[:-1], width // ARGMAX_BLOCK, ARGMAX_BLOCK)
    torch.max(blocks.amax(-1), -1, out=(best, arg))  # the first block holding the maximum
    winner = blocks.gather(-2, arg[..., None, None].expand(*arg.shape, 1, ARGMAX_BLOCK))
    arg.mul_(ARGMAX_BLOCK).add_(winner[..., 0, :].argmax(-1))


def _keys_t(bank: torch.Tensor, g: _Group) -> torch.Tensor:
    """(levels, D, count) transposed view of the group's queues (no copy)."""
    span = bank[g.start : g.start + (g.levels - 1) * g.step + g.count]
    return span.unfold(0, g.count, g.step)


def _group_stats(
    q: torch.Tensor,
    bank: torch.Tensor,
    g: _Group,
    inv_tau: float,
    lse: torch.Tensor,
    o: torch.Tensor,
    top1: torch.Tensor,
    online: bool,
) -> bool:
    """Statistics of one group, written into its rows of lse, o and top1. Returns False if the fixed
    softmax shift was unsafe (then nothing is valid and the caller reruns with ``online``).

    The softmax shift of a row is its largest logit in the first chunk. Without ``online`` it stays
    fixed, so chunks only add up (no rescaling of the running sums per chunk); the result is exact
    unless a later logit exceeds the shift by more than SHIFT_MARGIN, checked once at the end (a host
    read: free on the CPU). ``online`` rescales the sums whenever the running maximum grows (the
    flash-attention recurrence), which needs no such check, for devices where a host read waits."""
    acc, d = q.dtype, q.shape[1]
    span = slice(g.row0, g.row0 + g.levels * g.rows)
    qg = q[span].view(g.levels, g.rows, d)
    keys_t = _keys_t(bank, g)
    n_chunks = -(-g.count // g.chunk)
    tile = q.new_empty(g.levels * g.rows * g.chunk)
    best = q.new_empty((n_chunks, g.levels, g.rows))
    arg = torch.empty((n_chunks, g.levels, g.rows), dtype=torch.long, device=q.device)
    sums = q.new_empty((n_chunks, g.levels, g.rows))
    weighted = o[span].view(g.levels, g.rows, d)  # accumulated in place: no extra (R, D) buffer
    weighted.zero_()
    shift = best[0]
    for c in range(n_chunks):
        c0, c1 = c * g.chunk, min(g.count, (c + 1) * g.chunk)
        kt = keys_t[:, :, c0:c1].to(acc)  # (levels, D, chunk)
        s = tile[: g.levels * g.rows * (c1 - c0)].view(g.levels, g.rows, c1 - c0)
        s.baddbmm_(qg, kt, beta=0.0, alpha=inv_tau)  # logits; argmax is the raw dot product's (tau > 0)
        _row_max(s, best[c], arg[c])
        if online and c > 0:
            grown = torch.maximum(shift, best[c])
            alpha = (shift - grown).exp_()
            sums[:c].mul_(alpha)
            weighted.mul_(alpha[..., None])
            shift = grown
        s.sub_(shift[..., None]).exp_()
        torch.sum(s, -1, out=sums[c])
        weighted.baddbmm_(s, kt.mT)
    if not online and bool((best.amax(0) - shift > SHIFT_MARGIN).any()):
        return False
    total = sums.sum(0)
    lse[span] = (shift + total.log()).view(-1)
    weighted.div_(total[..., None])
    first = best.argmax(0, keepdim=True)  # the earliest chunk holding the row's maximum
    top1[span] = (arg.gather(0, first)[0] + first[0] * g.chunk).view(-1)
    return True


def _chunked_stats(
    q: torch.Tensor, bank: torch.Tensor, rows: list[int], ranges: list[int], inv_tau: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    acc = _acc_dtype(q.dtype)
    r_total, d = q.shape
    lse = q.new_empty((r_total,), dtype=acc)
    o = q.new_empty((r_total, d), dtype=acc)
    top1 = q.new_empty((r_total,), dtype=torch.long)
    q = q.to(acc)
    online = q.device.type != "cpu"  # elsewhere the fixed shift's check would wait for the device
    for group in _plan(tuple(rows), tuple(ranges)):
        if not _group_stats(q, bank, group, inv_tau, lse, o, top1, online):
            _group_stats(q, bank, group, inv_tau, lse, o, top1, online=True)
    return lse, o, top1


def _chunked_moment(
    q: torch.Tensor,
    bank: torch.Tensor,
    grad_o: torch.Tensor,
    lse: torch.Tensor,
    rows: list[int],
    ranges: list[int],
    inv_tau: float,
) -> torch.Tensor:
    acc = _acc_dtype(q.dtype)
    d = q.shape[1]
    q, grad_o, lse = q.to(acc), grad_o.to(acc), lse.to(acc)
    out = torch.zeros(q.shape, dtype=acc, device=q.device)
    for g in _plan(tuple(rows), tuple(ranges)):
        span = slice(g.row0, g.row0 + g.levels * g.rows)
        qg, gg = (t[span].view(g.levels, g.rows, d) for t in (q, grad_o))
        neg_lse = -lse[span].view(g.levels, g.rows, 1)
        og = out[span].view(g.levels, g.rows, d)
        keys_t = _keys_t(bank, g)
        for c0 in range(0, g.count, g.chunk):
            kt = keys_t[:, :, c0 : c0 + g.chunk].to(acc)
            p = torch.baddbmm(neg_lse, qg, kt, alpha=inv_tau).exp_()  # softmax probabilities
            og.baddbmm_(p.mul_(torch.bmm(gg, kt)), kt.mT)
    return out


@functools.lru_cache(maxsize=256)
def _level_starts(rows: tuple[int, ...], ranges: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """(R,) first queue row of each query row's level, built once per shape and device."""
    starts = [start for n, start in zip(rows, ranges[0::2], strict=True) for _ in range(n)]
    return torch.tensor(starts, dtype=torch.long, device=device)


def _triton_stats(
    q: torch.Tensor, bank: torch.Tensor, rows: list[int], ranges: list[int], inv_tau: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from skelfast.kernels import info_nce as kernels

    pairs = list(zip(ranges[0::2], ranges[1::2], strict=True))
    lse_p, o_p, best_p, idx_p, _ = kernels.queue_stats_forward(q, bank, rows, pairs, inv_tau)
    if lse_p.shape[0] == 1:  # one queue chunk per row: nothing to merge
        lse, o, idx = lse_p[0], o_p[0], idx_p[0].long()
    else:  # merge the split-K partials: logsumexp of the chunks' lse, lse-weighted mean of their o
        lse = torch.logsumexp(lse_p, 0)
        o = (torch.exp(lse_p - lse)[..., None] * o_p).sum(0)
        idx = idx_p.gather(0, best_p.argmax(0, keepdim=True)).squeeze(0).long()
    return lse, o, idx - _level_starts(tuple(rows), tuple(ranges), q.device)


@torch.library.custom_op("skelfast::queue_softmax_stats", mutates_args=())
def _queue_softmax_stats(
    q: torch.Tensor, bank: torch.Tensor, rows: list[int], ranges: list[int], inv_tau: float, use_triton: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if use_triton:
        return _triton_stats(q, bank, rows, ranges, inv_tau)
    return _chunked_stats(q, bank, rows, ranges, inv_tau)


@_queue_softmax_stats.register_fake
def _(q, bank, rows, ranges, inv_tau, use_triton):  # noqa: ANN001, ANN202
    acc = _acc_dtype(q.dtype)
    n = q.shape[0]
    return (
        q.new_empty((n,), dtype=acc),
        q.new_empty((n, q.shape[1]), dtype=acc),
        q.new_empty((n,), dtype=torch.long),
    )


@torch.library.custom_op("skelfast::queue_softmax_moment", mutates_args=())
def _queue_softmax_moment(
    q: torch.Tensor,
    bank: torch.Tensor,
    grad_o: torch.Tensor,
    lse: torch.Tensor,
    rows: list[int],
    ranges: list[int],
    inv_tau: float,
    use_triton: bool,
) -> torch.Tensor:
    """``sum_j p_ij (k_j . g_i) k_j``: the backward of ``o`` (only needed when ``o`` gets a gradient)."""
    if use_triton:
        from skelfast.kernels import info_nce as kernels

        pairs = list(zip(ranges[0::2], ranges[1::2], strict=True))
        return kernels.queue_stats_backward_moment(q, bank, grad_o, lse, rows, pairs, inv_tau)
    return _chunked_moment(q, bank, grad_o, lse, rows, ranges, inv_tau)


@_queue_softmax_moment.register_fake
def _(q, bank, grad_o, lse, rows, ranges, inv_tau, use_triton):  # noqa: ANN001, ANN202
    return q.new_empty(q.shape, dtype=_acc_dtype(q.dtype))


def _setup_context(ctx, inputs, output):  # noqa: ANN001, ANN202
    q, bank, rows, ranges, inv_tau, use_triton = inputs
    lse, o, _ = output
    ctx.save_for_backward(q, bank, lse, o)
    ctx.args = (rows, ranges, inv_tau, use_triton)
    ctx.set_materialize_grads(False)  # no gradient into o (the usual case) skips the moment pass


def _backward(ctx, grad_lse, grad_o, grad_top1):  # noqa: ANN001, ANN202
    q, bank, lse, o = ctx.saved_tensors
    rows, ranges, inv_tau, use_triton = ctx.args
    grad_q = None
    if grad_lse is not None:  # the usual case: one (R, D) product
        grad_q = (grad_lse * inv_tau)[:, None] * o
    if grad_o is not None:  # d o_i = (sum_j p_ij k_j k_j^T - o_i o_i^T) dq_i / tau
        moment = _queue_softmax_moment(q, bank, grad_o, lse, rows, ranges, inv_tau, use_triton)
        through_o = (moment - (o * grad_o).sum(1, keepdim=True) * o) * inv_tau
        grad_q = through_o if grad_q is None else grad_q + through_o
    if grad_q is None:
        grad_q = torch.zeros_like(o)
    return grad_q.to(q.dtype), None, None, None, None, None


_queue_softmax_stats.register_autograd(_backward, setup_context=_setup_context)

# The ops called directly under autocast (the public functions turn autocast off first): float32
# inputs, and no autocast inside, where it would recast the chunked path's matmuls to half precision.
for _device_type in AUTOCAST_DEVICES:
    _queue_softmax_stats.register_autocast(_device_type, torch.float32)
    _queue_softmax_moment.register_autocast(_device_type, torch.float32)


# --- input checks and backend choice ----------------------------------------------------------


def _check_finite(what: str, named: Sequence[tuple[str, torch.Tensor]]) -> None:
    """Raise if any named tensor holds NaN or Inf, with one host read for all of them (on a GPU each
    read waits for the device); the culprit is looked up only after the check failed. A
    data-dependent check: skipped inside torch.compile, where it would break the graph."""
    if torch.compiler.is_compiling():
        return
    tensors = [t.detach() for _, t in named if t.numel() and t.is_floating_point()]
    if not tensors:
        return
    # max |x| per tensor: NaN or Inf exactly when the tensor holds one (a max cannot overflow).
    # Tensors on several devices (a mistake the device check reports later) are checked one by one.
    one_device = len({t.device for t in tensors}) == 1
    if one_device and bool(
        torch.stack([p.float() for p in torch._foreach_norm(tensors, math.inf)]).isfinite().all()
    ):
        return
    for name, t in named:
        if t.numel() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{what}: {name} contains NaN or Inf")


def _triton_reason(device: torch.device, dtype: torch.dtype, features: int) -> str | None:
    reason = backends.triton_reason(device)
    if reason is not None:
        return reason
    if dtype not in TRITON_DTYPES:
        return (
            f"the Triton kernels take float32, float16 or bfloat16, not {str(dtype).removeprefix('torch.')}"
        )
    if dtype == torch.bfloat16 and device.type == "cpu":
        return "the Triton interpreter has no bfloat16 dot"
    if features > TRITON_MAX_FEATURES:
        return f"the Triton kernels take at most {TRITON_MAX_FEATURES} features, got {features}"
    return None


def _backend(device: torch.device, dtype: torch.dtype, features: int) -> str:
    checks = {
        "triton": lambda: _triton_reason(device, dtype, features),
        "torch": lambda: None,
        "reference": lambda: None,
    }
    # the interpreter is far slower than the chunked path: Triton on the CPU only when forced
    order = ("triton", "torch", "reference") if device.type == "cuda" else ("torch", "reference")
    return backends.choose(OP, checks, order)


# --- mixed precision --------------------------------------------------------------------------


def _autocast_on(device: torch.device) -> bool:
    return device.type in AUTOCAST_DEVICES and torch.is_autocast_enabled(device.type)


def _autocast_off(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast off inside the losses: they are fp32-accumulating reductions, and autocast would
    recast the chunked path's matmuls (and the positives' dot products) to half precision."""
    return torch.autocast(device.type, enabled=False) if _autocast_on(device) else contextlib.nullcontext()


def _autocast_dtype(q: torch.Tensor, bank: torch.Tensor) -> torch.dtype | None:
    """Under autocast, the one dtype that queries, positives and queue run in: the queue's where it
    is the queries', else (half-precision features meeting the fp32 buffer) the half dtype where
    the Triton kernels would take it (half tiles are their point; they accumulate in fp32) and
    float32 otherwise. None outside autocast, or where no autocast rule applies (float64): the
    dtype check then reports a mismatch."""
    if q.device != bank.device or not _autocast_on(q.device):
        return None
    if q.dtype == bank.dtype:
        return q.dtype
    dtypes = {q.dtype, bank.dtype}
    if not dtypes <= {torch.float32, *HALF_DTYPES}:
        return None
    half = [t for t in HALF_DTYPES if t in dtypes]
    if len(half) == 1:
        try:
            if _backend(q.device, half[0], q.shape[1]) == "triton":
                return half[0]
        except backends.BackendUnavailableError:
            pass  # a forced backend that cannot take the half dtype: float32 below
    return torch.float32


T = TypeVar("T", torch.Tensor, list[torch.Tensor])


def _cast(tensors: T, dtype: torch.dtype | None) -> T:
    if dtype is None:
        return tensors
    if isinstance(tensors, torch.Tensor):
        return tensors.to(dtype)
    return [t.to(dtype) for t in tensors]


class QueueStats(NamedTuple):
    """Per-row statistics of queries against their level's queue (no positives)."""

    lse: torch.Tensor  # (R,) fp32 (fp64 for fp64 input): log sum_j exp(q . k_j / tau)
    weighted_keys: torch.Tensor  # (R, D) sum_j softmax_j k_j
    top1: torch.Tensor  # (R,) int64 index, within the level's queue, of the largest q . k_j


def queue_softmax_stats(
    q: torch.Tensor,
    bank: torch.Tensor,
    temperature: float,
    rows: Sequence[int] | None = None,
    ranges: Sequence[tuple[int, int]] | None = None,
    backend: str | None = None,
) -> QueueStats:
    """Softmax statistics of queries q (R, D) against queue rows of ``bank`` (K_total, D).

    Level l owns the next ``rows[l]`` query rows and the queue rows ``bank[start:start+count]`` with
    ``(start, count) = ranges[l]``; by default one level over the whole bank. Differentiable in q
    (``lse`` and ``weighted_keys``); the bank is a constant and must not require grad.
    ``backend`` is ``"triton"`` or ``"torch"`` (default: the automatic choice).
    """
    check_floating("info_nce: queries", q)
    if q.dim() != 2 or bank.dim() != 2:
        raise ValueError(
            f"info_nce: queries must be (R, D) and the queue (K, D), got {tuple(q.shape)} and {tuple(bank.shape)}"
        )
    if bank.requires_grad:
        raise ValueError(
            "info_nce: the queue must not require grad (it is a memory buffer: pass queue.detach())"
        )
    if bank.shape[1] != q.shape[1]:
        raise ValueError(
            f"info_nce: queries have D={q.shape[1]} features but the queue has D={bank.shape[1]}"
        )
    mixed = _autocast_dtype(q, bank)
    q, bank = _cast(q, mixed), _cast(bank, mixed)
    if bank.device != q.device or bank.dtype != q.dtype:
        raise ValueError(
            f"info_nce: queue is {bank.dtype} on {bank.device} but queries are {q.dtype} on {q.device}"
            " (outside torch.autocast they must match)"
        )
    rows = [q.shape[0]] if rows is None else [int(n) for n in rows]
    ranges = [(0, bank.shape[0])] if ranges is None else [(int(a), int(b)) for a, b in ranges]
    if len(rows) != len(ranges) or sum(rows) != q.shape[0]:
        raise ValueError(
            f"info_nce: {len(rows)} levels with {sum(rows)} rows for {len(ranges)} queue ranges and {q.shape[0]} queries"
        )
    for start, count in ranges:
        if count <= 0:
            raise ValueError(f"info_nce: every level needs a non-empty queue (K >= 1), got K={count}")
        if start < 0 or start + count > bank.shape[0]:
            raise ValueError(
                f"info_nce: queue range ({start}, {count}) is outside the bank of {bank.shape[0]} rows"
            )
    backend = backend or _backend(q.device, q.dtype, q.shape[1])
    if backend == "triton" and (reason := _triton_reason(q.device, q.dtype, q.shape[1])) is not None:
        raise backends.BackendUnavailableError(f"{OP}: backend 'triton' cannot run: {reason}")
    flat = [v for pair in ranges for v in pair]
    with _autocast_off(q.device):
        return QueueStats(*_queue_softmax_stats(q, bank, rows, flat, 1.0 / temperature, backend == "triton"))


# --- the losses -------------------------------------------------------------------------------


class InfoNCEOutput(NamedTuple):
    losses: torch.Tensor  # (L,) fp32 per-level mean losses
    row_losses: torch.Tensor  # (R,) fp32 per-row losses, levels concatenated
    lse: torch.Tensor  # (R,) fp32 logsumexp of each row's full logits [positives, queue]
    top1: torch.Tensor  # (R,) int64 nearest entry of each row's queue (raw dot product)


def _as_bank(
    queue: torch.Tensor | Sequence[torch.Tensor], queue_ranges: Sequence[tuple[int, int]] | None, levels: int
) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """One bank and per-level ranges: a single tensor (shared, or sliced by ``queue_ranges``), or one
    queue per level, concatenated once (a tensor passed for several levels is stored once)."""
    if isinstance(queue, torch.Tensor):
        if queue_ranges is None:
            return queue, [(0, queue.shape[0])] * levels
        if len(queue_ranges) != levels:
            raise ValueError(f"info_nce: {len(queue_ranges)} queue ranges for {levels} levels")
        return queue, list(queue_ranges)
    if queue_ranges is not None:
        raise ValueError("info_nce: queue_ranges goes with one bank tensor, not a list of queues")
    if len(queue) != levels:
        raise ValueError(f"info_nce: {len(queue)} queues for {levels} levels")
    parts: list[torch.Tensor] = []
    ranges = []
    for t in queue:
        i = next((i for i, seen in enumerate(parts) if seen is t), None)
        if i is None:
            parts.append(t)
            i = len(parts) - 1
        ranges.append((sum(p.shape[0] for p in parts[:i]), t.shape[0]))
    return (parts[0] if len(parts) == 1 else torch.cat(parts)), ranges


def _check_level(lvl: int, q: torch.Tensor, pos: torch.Tensor, d: int) -> None:
    if q.dim() != 2:
        raise ValueError(f"info_nce: level {lvl} queries must be (N, D), got {tuple(q.shape)}")
    if pos.dim() not in (2, 3) or pos.shape[0] != q.shape[0] or pos.shape[-1] != q.shape[1]:
        raise ValueError(
            f"info_nce: level {lvl} positives must be (N, D) or (N, G, D) matching queries {tuple(q.shape)}, got {tuple(pos.shape)}"
        )
    if q.shape[1] != d:
        raise ValueError(f"info_nce: level {lvl} queries have D={q.shape[1]} but level 0 has D={d}")


@profiled("skelfast.info_nce")
def info_nce(
    queries: torch.Tensor | Sequence[torch.Tensor],
    positives: torch.Tensor | Sequence[torch.Tensor],
    queue: torch.Tensor | Sequence[torch.Tensor],
    temperature: float,
    *,
    queue_ranges: Sequence[tuple[int, int]] | None = None,
    mined: Sequence[torch.Tensor | None] | None = None,
    normalize: bool = False,
    check_finite: bool = True,
) -> InfoNCEOutput:
    """InfoNCE of every level of a method in one pass over the queues, never storing (N, K) logits.

    Args:
        queries: (N_l, D) per level (a list), or one (N, D) tensor for a single level.
        positives: per level (N_l, D) (one positive: MoCo cross-entropy with label 0) or (N_l, G, D)
            (G positives: HiCo's ``-log sum_g softmax_g``). Gradients flow into them.
        queue: one (K, D) bank for every level, a bank sliced per level by ``queue_ranges``
            ((start, count) rows per level), or a list of (K_l, D) queues. A constant: no gradient.
        temperature: tau; logits are ``[q . positives, q . queue] / tau``.
        mined: per level None or (N_l, M) int64 queue indices joining the positive set (HiCLR phase 2):
            loss = ``-mean_{j in P} log softmax_j`` over P = {positive 0} union mined (duplicates once).
        normalize: L2-normalise queries and positives inside (the queue is stored normalised).
        check_finite: raise on NaN/Inf features (a device sync; skipped under torch.compile).

    Returns:
        InfoNCEOutput(losses (L,), row_losses (R,), lse (R,), top1 (R,)), R = sum of N_l.
    """
    single = isinstance(queries, torch.Tensor)
    queries = [queries] if single else list(queries)
    positives = [positives] if isinstance(positives, torch.Tensor) else list(positives)
    levels = len(queries)
    if levels == 0 or len(positives) != levels:
        raise ValueError(f"info_nce: {levels} query levels but {len(positives)} positive levels")
    if mined is not None and len(mined) != levels:
        raise ValueError(f"info_nce: mined has {len(mined)} entries for {levels} levels")
    d = queries[0].shape[-1]
    for lvl, (q, pos) in enumerate(zip(queries, positives, strict=True)):
        _check_level(lvl, q, pos, d)
    bank, ranges = _as_bank(queue, queue_ranges, levels)
    if check_finite:
        named = [
            (f"level {lvl} {kind}", t)
            for lvl, pair in enumerate(zip(queries, positives, strict=True))
            for kind, t in zip(("queries", "positives"), pair, strict=True)
        ]
        _check_finite("info_nce", [*named, ("the queue", bank)])
    mixed = _autocast_dtype(queries[0], bank)
    queries, positives, bank = _cast(queries, mixed), _cast(positives, mixed), _cast(bank, mixed)
    with _autocast_off(bank.device):
        return _info_nce(queries, positives, bank, ranges, temperature, mined, normalize)


def _info_nce(
    queries: list[torch.Tensor],
    positives: list[torch.Tensor],
    bank: torch.Tensor,
    ranges: list[tuple[int, int]],
    temperature: float,
    mined: Sequence[torch.Tensor | None] | None,
    normalize: bool,
) -> InfoNCEOutput:
    if normalize:
        queries = [F.normalize(q, dim=-1) for q in queries]
        positives = [F.normalize(p, dim=-1) for p in positives]

    q0 = queries[0]
    if _backend(q0.device, q0.dtype, q0.shape[1]) == "reference":
        return _reference_output(queries, positives, bank, ranges, temperature, mined)

    rows = [q.shape[0] for q in queries]
    stats = queue_softmax_stats(torch.cat(queries), bank, temperature, rows, ranges)
    s_pos = _positive_logits(queries, positives, temperature).to(stats.lse.dtype)  # (R, G_max)
    lse_all = torch.logsumexp(torch.cat([stats.lse[:, None], s_pos], 1), 1)
    # the log of the positives' share: padding columns (-inf) add nothing to the logsumexp
    target = s_pos[:, 0] if s_pos.shape[1] == 1 else torch.logsumexp(s_pos, 1)
    if mined is not None and any(m is not None for m in mined):
        target = _with_mined_targets(target, s_pos, queries, positives, bank, ranges, temperature, mined)
    row_losses = lse_all - target
    if len(set(rows)) == 1:  # every method's levels have equal batches: one reduction
        losses = row_losses.view(len(rows), rows[0]).mean(1)
    else:
        losses = torch.stack([r.mean() for r in row_losses.split(rows)])
    return InfoNCEOutput(losses, row_losses, lse_all, stats.top1)


def _positive_logits(
    queries: list[torch.Tensor], positives: list[torch.Tensor], temperature: float
) -> torch.Tensor:
    """(R, G_max) logits ``q . p_g / tau`` of every level's rows, padded with -inf past a level's G."""
    s_pos = [
        torch.einsum("nd,ngd->ng", q, p if p.dim() == 3 else p.unsqueeze(1))
        for q, p in zip(queries, positives, strict=True)
    ]
    g_max = max(s.shape[1] for s in s_pos)
    padded = [s if s.shape[1] == g_max else F.pad(s, (0, g_max - s.shape[1]), value=-math.inf) for s in s_pos]
    return (padded[0] if len(padded) == 1 else torch.cat(padded)) / temperature


def _with_mined_targets(
    target: torch.Tensor,
    s_pos: torch.Tensor,
    queries: list[torch.Tensor],
    positives: list[torch.Tensor],
    bank: torch.Tensor,
    ranges: list[tuple[int, int]],
    temperature: float,
    mined: Sequence[torch.Tensor | None],
) -> torch.Tensor:
    """``target`` with the rows of mined levels replaced by their mean logit over {key} union mined."""
    rows = [q.shape[0] for q in queries]
    pieces = list(target.split(rows))
    keys = s_pos[:, 0].split(rows)
    for lvl, mined_l in enumerate(mined):
        if mined_l is None:
            continue
        if positives[lvl].dim() == 3 and positives[lvl].shape[1] > 1:
            raise ValueError(
                f"info_nce: level {lvl} has mined positives and G={positives[lvl].shape[1]} positives; mining takes one"
            )
        start, count = ranges[lvl]
        pieces[lvl] = _mined_mean_logit(
            queries[lvl], keys[lvl], bank[start : start + count], mined_l, temperature
        )
    return torch.cat(pieces)


def _mined_mean_logit(
    q: torch.Tensor, s_key: torch.Tensor, queue: torch.Tensor, mined: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Mean logit over {key} union the distinct mined queue entries, per row."""
    if mined.dim() != 2 or mined.shape[0] != q.shape[0]:
        raise ValueError(f"info_nce: mined must be (N, M) queue indices, got {tuple(mined.shape)}")
    s_mined = torch.einsum("nd,nmd->nm", q, queue[mined]).to(s_key.dtype) / temperature
    m = mined.shape[1]
    # an index counts once: drop it where it equals an earlier column of the same row
    dup = (
        (mined[:, :, None] == mined[:, None, :]).tril(-1).any(2)
        if m > 1
        else torch.zeros_like(mined, dtype=torch.bool)
    )
    keep = (~dup).to(s_key.dtype)
    return (s_key + (s_mined * keep).sum(1)) / (1 + keep.sum(1))


def _reference_output(
    queries: list[torch.Tensor],
    positives: list[torch.Tensor],
    bank: torch.Tensor,
    ranges: list[tuple[int, int]],
    temperature: float,
    mined: Sequence[torch.Tensor | None] | None,
) -> InfoNCEOutput:
    queues = [bank[s : s + c].detach() for s, c in ranges]
    losses = reference_info_nce(queries, positives, queues, temperature, mined)
    logits = [
        queue_logits(q, p, k, temperature).float() for q, p, k in zip(queries, positives, queues, strict=True)
    ]
    lse = torch.cat([torch.logsumexp(lg, 1) for lg in logits])
    top1 = torch.cat([nearest_queue_entry(q, k) for q, k in zip(queries, queues, strict=True)])
    # per-row losses are only needed for the output's completeness: recompute them from the logits
    rows = []
    for lvl, (lg, p) in enumerate(zip(logits, positives, strict=True)):
        g = p.shape[1] if p.dim() == 3 else 1
        mined_l = None if mined is None else mined[lvl]
        if mined_l is not None:
            mask = torch.zeros_like(lg)
            mask[:, 0] = 1
            mask[:, g:].scatter_(1, mined_l, 1.0)
            rows.append(-(F.log_softmax(lg, 1) * mask).sum(1) / mask.sum(1))
        else:
            rows.append(torch.logsumexp(lg, 1) - torch.logsumexp(lg[:, :g], 1))
    return InfoNCEOutput(losses, torch.cat(rows), lse, top1)


class HiCLRLoss(NamedTuple):
    loss: torch.Tensor  # L_nce + w * (L_1 + L_2)
    nce: torch.Tensor
    consistency_1: torch.Tensor  # CE(sg(p_q) -> p_q1)
    consistency_2: torch.Tensor  # CE(sg(p_q1) -> p_q2)
    top1: torch.Tensor  # (3, N) nearest queue entry of q, q1, q2


@profiled("skelfast.hiclr_loss")
def hiclr_loss(
    q: torch.Tensor,
    q1: torch.Tensor,
    q2: torch.Tensor,
    k: torch.Tensor,
    queue: torch.Tensor,
    temperature: float = 0.07,
    *,
    mining: bool = False,
    consistency_weight: float = 0.5,
    normalize: bool = False,
    check_finite: bool = True,
) -> HiCLRLoss:
    """HiCLR's objective (spec hico_hiclr.md §2.5) with its three branches in one queue pass.

    q, q1, q2 (N, D): basic, strong and strong+masked query branches; k (N, D) the key; queue (K, D).
    ``L = L_nce + w (L_1 + L_2)``: L_nce is InfoNCE of q (``mining``: mean log-probability over
    {k} union the top-1 queue entries of q, q1, q2), ``L_1 = CE(sg(p_q), p_q1)``,
    ``L_2 = CE(sg(p_q1), p_q2)`` over the [k, queue] entries, computed from per-row statistics.
    """
    branches = [q, q1, q2]
    for name, t in zip(("q", "q1", "q2", "k"), (*branches, k), strict=True):
        check_floating(f"hiclr_loss: {name}", t)
        if t.dim() != 2 or t.shape != q.shape:
            raise ValueError(
                f"hiclr_loss: {name} must be (N, D) like q {tuple(q.shape)}, got {tuple(t.shape)}"
            )
    if check_finite:
        _check_finite(
            "hiclr_loss", [*zip(("q", "q1", "q2", "k"), (*branches, k), strict=True), ("the queue", queue)]
        )
    mixed = _autocast_dtype(q, queue)
    branches, k, queue = _cast(branches, mixed), _cast(k, mixed), _cast(queue, mixed)
    with _autocast_off(queue.device):
        return _hiclr_loss(branches, k, queue, temperature, mining, consistency_weight, normalize)


def _hiclr_loss(
    branches: list[torch.Tensor],
    k: torch.Tensor,
    queue: torch.Tensor,
    temperature: float,
    mining: bool,
    consistency_weight: float,
    normalize: bool,
) -> HiCLRLoss:
    if normalize:
        branches = [F.normalize(b, dim=-1) for b in branches]
        k = F.normalize(k, dim=-1)
    q = branches[0]
    if _backend(q.device, q.dtype, q.shape[1]) == "reference":
        loss, nce, l1, l2 = reference_hiclr_loss(*branches, k, queue, temperature, mining, consistency_weight)
        top1 = torch.stack([nearest_queue_entry(b, queue) for b in branches])
        return HiCLRLoss(loss, nce, l1, l2, top1)

    n = q.shape[0]
    stats = queue_softmax_stats(torch.cat(branches), queue, temperature, [n, n, n], [(0, queue.shape[0])] * 3)
    lse_q = stats.lse.view(3, n)
    o = stats.weighted_keys.view(3, n, -1)
    s_pos = torch.stack([(b * k).sum(1) for b in branches]).to(lse_q.dtype) / temperature  # (3, N)
    lse_all = torch.logaddexp(lse_q, s_pos)
    top1 = stats.top1.view(3, n)
    if mining:
        nce = (lse_all[0] - _mined_mean_logit(branches[0], s_pos[0], queue, top1.T, temperature)).mean()
    else:
        nce = (lse_all[0] - s_pos[0]).mean()

    def consistency(t: int, s: int) -> torch.Tensor:
        # CE(sg(p_t), p_s) = lse_s - [p_t,key s_s,key + P_t,queue * (q_s . o_t) / tau]
        p_key = torch.exp(s_pos[t] - lse_all[t]).detach()
        p_queue = torch.exp(lse_q[t] - lse_all[t]).detach()
        cross = (branches[s].to(o.dtype) * o[t].detach()).sum(1) / temperature
        return (lse_all[s] - p_key * s_pos[s] - p_queue * cross).mean()

    l1, l2 = consistency(0, 1), consistency(1, 2)
    return HiCLRLoss(nce + consistency_weight * (l1 + l2), nce, l1, l2, top1)
