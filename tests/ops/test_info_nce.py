"""skelfast.ops.info_nce / hiclr_loss / queue_softmax_stats against the full-logits reference
(skelfast.reference.info_nce): each method's configuration, odd sizes, fp32/fp16, both fast
backends (the chunked PyTorch path and the Triton kernels under the interpreter), float64
gradcheck, opcheck, torch.compile, AOT compile of every kernel configuration, bad input."""

import importlib
import json

import pytest
import torch
import torch.nn.functional as F

import skelfast
from skelfast import aot
from skelfast import reference as ref
from skelfast.ops import hiclr_loss, info_nce, queue_softmax_stats
from skelfast.reference.info_nce import nearest_queue_entry
from tests.test_queue import _CountScalarReads
from tests.utils import assert_close

BACKENDS = ["torch", "triton"]
# the module (skelfast.ops re-exports its function under the same name)
info_nce_module = importlib.import_module("skelfast.ops.info_nce")


def unit(*shape, dtype=torch.float32, grad=False):
    t = F.normalize(torch.randn(*shape, dtype=torch.float64), dim=-1).to(dtype)
    return t.requires_grad_(grad)


def forcing(backend):
    # "torch" is the automatic CPU choice; Triton on the CPU (the interpreter) runs only when forced
    return skelfast.use_backend(f"info_nce={backend}")


def grads(loss, tensors):
    return torch.autograd.grad(loss, tensors)


def check_against_reference(backend, queries, positives, queues, tau, mined=None, atol=1e-5):
    """Per-level losses, top-1 and gradients for queries and positives equal the reference's."""
    expected = ref.info_nce(queries, positives, queues, tau, mined)
    with forcing(backend):
        out = info_nce(queries, positives, queues, tau, mined=mined)
    assert_close(out.losses, expected, atol=atol, rtol=1e-5, what="losses")
    top1 = torch.cat([nearest_queue_entry(q, k) for q, k in zip(queries, queues, strict=True)])
    assert torch.equal(out.top1, top1)
    weights = torch.arange(1, len(queues) + 1, dtype=torch.float32)  # distinct per-level gradients
    for got, want, name in zip(
        grads((out.losses * weights).sum(), [*queries, *positives]),
        grads((expected * weights).sum(), [*queries, *positives]),
        [f"d q{i}" for i in range(len(queries))] + [f"d pos{i}" for i in range(len(positives))],
        strict=True,
    ):
        assert_close(got, want, atol=atol, rtol=1e-4, what=name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_hico_five_levels_with_multi_positives(backend):
    # clip/part: finest query vs G=4 key granularities over G*K rows; cross-domain t/s; instance
    n, d, g, k = 5, 16, 4, 24
    c_q, p_q, s_q, t_q, i_q = (unit(k * (g if i < 2 else 1), d) for i in range(5))
    queries = [unit(n, d, grad=True) for _ in range(5)]
    positives = [unit(n, g, d, grad=True), unit(n, g, d, grad=True)] + [
        unit(n, d, grad=True) for _ in range(3)
    ]
    check_against_reference(backend, queries, positives, [c_q, p_q, s_q, t_q, i_q], tau=0.2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_isc_cross_terms_share_a_bank(backend):
    n, d, k = 6, 32, 40
    q_s1, q_s2 = unit(k, d), unit(k, d)
    queries = [unit(n, d, grad=True), unit(n, d, grad=True)]
    positives = [unit(n, d, grad=True), unit(n, d, grad=True)]
    check_against_reference(backend, queries, positives, [q_s2, q_s1], tau=0.07)
    # the same levels read from one bank through ranges give the same losses
    bank = torch.cat([q_s1, q_s2])
    with forcing(backend):
        sliced = info_nce(queries, positives, bank, 0.07, queue_ranges=[(k, k), (0, k)]).losses
    assert_close(sliced, ref.info_nce(queries, positives, [q_s2, q_s1], 0.07), atol=1e-5, rtol=1e-5)


def test_crrl_small_queue_wide_features():
    # CRRL: K=64, tau=0.1, 512-d features (wider than the Triton kernels: the chunked path runs)
    check_against_reference(
        "torch", [unit(8, 512, grad=True)], [unit(8, 512, grad=True)], [unit(64, 512)], 0.1
    )
    with (
        skelfast.use_backend("info_nce=triton"),
        pytest.raises(skelfast.BackendUnavailableError, match="128 features"),
    ):
        info_nce(unit(8, 512), unit(8, 512), unit(64, 512), 0.1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_mined_positive_sets(backend):
    n, d, k = 7, 16, 30
    mined = torch.randint(0, k, (n, 3))
    mined[0] = torch.tensor([4, 4, 4])  # duplicates count once
    check_against_reference(
        backend, [unit(n, d, grad=True)], [unit(n, d, grad=True)], [unit(k, d)], 0.07, [mined]
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mining", [False, True])
def test_hiclr_three_branches(backend, mining):
    n, d, k = 9, 32, 300
    branches = [unit(n, d, grad=True) for _ in range(4)]
    queue = unit(k, d)
    expected = ref.hiclr_loss(*branches, queue, 0.07, mining)
    with forcing(backend):
        out = hiclr_loss(*branches, queue, 0.07, mining=mining)
    for got, want, name in zip(out[:4], expected, ["loss", "nce", "L1", "L2"], strict=True):
        assert_close(got, want, atol=2e-5, rtol=1e-5, what=name)
    assert torch.equal(out.top1, torch.stack([nearest_queue_entry(b, queue) for b in branches[:3]]))
    for got, want, name in zip(
        grads(out.loss, branches), grads(expected[0], branches), ["q", "q1", "q2", "k"], strict=True
    ):
        assert_close(got, want, atol=2e-5, rtol=1e-4, what=f"d {name}")


def test_hiclr_consistency_only_trains_the_stronger_branch():
    branches = [unit(4, 8, grad=True) for _ in range(4)]
    out = hiclr_loss(*branches, unit(20, 8), 0.07)
    d_q, d_q1, _, _ = grads(out.consistency_1, branches)
    assert bool((d_q == 0).all()) and bool((d_q1 != 0).any())


@pytest.mark.parametrize(
    "backend,b,k,d",
    [("torch", b, k, d) for b in (1, 3, 33) for k in (1, 7, 2049) for d in (3, 128)]
    + [("triton", 1, 1, 3), ("triton", 3, 7, 128), ("triton", 33, 2049, 3), ("triton", 33, 2049, 128)],
)
def test_odd_sizes(backend, b, k, d):
    check_against_reference(backend, [unit(b, d, grad=True)], [unit(b, d, grad=True)], [unit(k, d)], 0.07)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fp16_inputs_accumulate_in_fp32(backend):
    # reference: the same fp16-rounded values in fp32. The kernel rounds probabilities to fp16 for
    # the probability-weighted key sum (as flash attention does): ~1e-3 relative on gradients.
    n, d, k = 17, 64, 500
    q16, p16, k16 = (
        unit(n, d, dtype=torch.float16, grad=True),
        unit(n, 3, d, dtype=torch.float16, grad=True),
        unit(k, d, dtype=torch.float16),
    )
    q32, p32 = q16.detach().float().requires_grad_(), p16.detach().float().requires_grad_()
    with forcing(backend):
        out = info_nce([q16], [p16], [k16], 0.07)
    expected = ref.info_nce([q32], [p32], [k16.float()], 0.07)
    assert out.losses.dtype == torch.float32
    assert_close(out.losses, expected, atol=1e-4, rtol=1e-4, what="fp16 loss")
    got, want = grads(out.losses.sum(), [q16, p16]), grads(expected.sum(), [q32, p32])
    assert got[0].dtype == torch.float16
    assert_close(got[0].float(), want[0], atol=2e-2, rtol=1e-2, what="fp16 d q")
    assert_close(got[1].float(), want[1], atol=2e-2, rtol=1e-2, what="fp16 d pos")


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradient_into_weighted_keys(backend):
    # the rarely used path: a loss on o itself needs the second-moment backward pass
    q, bank = unit(10, 16, grad=True), unit(50, 16)
    g = torch.randn(10, 16)
    with forcing(backend):
        stats = queue_softmax_stats(q, bank, 0.1, backend=backend)
    (got,) = grads((stats.weighted_keys * g).sum() + stats.lse.sum(), [q])
    p = torch.softmax(q @ bank.T / 0.1, 1)
    (want,) = grads(((p @ bank) * g).sum() + torch.logsumexp(q @ bank.T / 0.1, 1).sum(), [q])
    assert_close(got, want, atol=1e-5, rtol=1e-4, what="d q through o")


def full_stats(q, bank, tau, rows, ranges):
    """lse, weighted keys and nearest entry of each level from its full logits (float64)."""
    lse, o, top1 = [], [], []
    for q_l, (start, count) in zip(q.double().split(rows), ranges, strict=True):
        keys = bank[start : start + count].double()
        logits = q_l @ keys.T / tau
        lse.append(torch.logsumexp(logits, 1))
        o.append(torch.softmax(logits, 1) @ keys)
        top1.append(nearest_queue_entry(q_l, keys))
    return torch.cat(lse), torch.cat(o), torch.cat(top1)


# level layouts of the chunked path: evenly stepping queues batched into one matmul (HiCo's
# 2 + 3 levels), levels sharing a queue stacked (HiCLR's branches), a backward step (ISC's swapped
# queues), overlapping windows, and a lone level; each queue spans several chunks
LAYOUTS = {
    "hico": ([3, 3, 3, 3, 3], [(0, 700), (700, 700), (1400, 300), (1700, 300), (2000, 300)]),
    "shared": ([2, 3, 4], [(100, 600)] * 3),
    "swapped": ([4, 4], [(600, 600), (0, 600)]),
    "overlapping": ([2, 2, 2, 1], [(0, 900), (300, 900), (600, 900), (5, 1)]),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_chunked_path_batches_levels_exactly(layout):
    rows, ranges = LAYOUTS[layout]
    q, bank = unit(sum(rows), 16, grad=True), unit(2300, 16)
    groups = info_nce_module._plan(tuple(rows), tuple(v for r in ranges for v in r))
    assert any(g.count > g.chunk for g in groups)  # the queues really are chunked
    if layout == "hico":  # two batched matmuls per chunk, not one per level
        assert [(g.levels, g.count) for g in groups] == [(2, 700), (3, 300)]
    stats = queue_softmax_stats(q, bank, 0.1, rows, ranges, backend="torch")
    lse, o, top1 = full_stats(q.detach(), bank, 0.1, rows, ranges)
    # fp32 statistics against float64: a few ulp of |lse| ~ 10 and of the unit-norm weighted keys
    assert_close(stats.lse, lse.float(), atol=1e-5, rtol=1e-6, what="lse")
    assert_close(stats.weighted_keys, o.float(), atol=1e-6, rtol=1e-5, what="weighted keys")
    assert torch.equal(stats.top1, top1)


def test_chunked_path_tiles_stay_within_the_memory_budget():
    # HiCo at its official sizes: every tile within 1/CHUNK_FRACTION of the five levels' full logits
    rows = (64,) * 5
    ranges = (0, 8192, 8192, 8192, 16384, 2048, 18432, 2048, 20480, 2048)
    groups = info_nce_module._plan(rows, ranges)
    logit_bytes = 4 * 64 * (2 * 8192 + 3 * 2048)
    for g in groups:
        assert 4 * g.levels * g.rows * g.chunk <= logit_bytes // info_nce_module.CHUNK_FRACTION


def test_large_logits_fall_back_to_the_online_recurrence():
    # norm-30 queries along e0 at tau = 0.1 (logits up to 300) whose first queue chunk points away
    # (x0 <= 0): later chunks exceed the first chunk's maximum by far more than the fixed softmax
    # shift allows, so the fixed-shift pass reports failure and the online recurrence reruns
    q = 30 * F.normalize(torch.eye(8)[:6] * 0.01 + torch.eye(8)[0], dim=1)
    bank = unit(3000, 8)
    group = info_nce_module._plan((6,), (0, 3000))[0]
    bank[: group.chunk, 0] = -bank[: group.chunk, 0].abs()
    outputs = torch.empty(6), torch.empty(6, 8), torch.empty(6, dtype=torch.long)
    assert not info_nce_module._group_stats(q, bank, group, 10.0, *outputs, online=False)
    stats = queue_softmax_stats(q, bank, 0.1, backend="torch")
    lse, o, top1 = full_stats(q, bank, 0.1, [6], [(0, 3000)])
    assert_close(stats.lse, lse.float(), atol=1e-4, rtol=1e-6, what="lse")  # |lse| ~ 300: ulp 3e-5
    assert_close(stats.weighted_keys, o.float(), atol=1e-5, rtol=1e-5, what="weighted keys")
    assert torch.equal(stats.top1, top1)


def test_finite_check_reads_the_device_once_and_names_the_culprit():
    queries = [unit(3, 8) for _ in range(5)]
    positives = [unit(3, 8) for _ in range(5)]
    bank = unit(20, 8)
    with _CountScalarReads() as mode:
        info_nce_module._check_finite(
            "info_nce", [(str(i), t) for i, t in enumerate([*queries, *positives, bank])]
        )
    assert mode.reads == 1
    positives[3] = positives[3].clone()
    positives[3][1, 2] = float("inf")
    with pytest.raises(ValueError, match="level 3 positives contains NaN or Inf"):
        info_nce(queries, positives, bank, 0.2)
    with pytest.raises(ValueError, match="hiclr_loss: q1 contains NaN"):
        hiclr_loss(unit(3, 8), unit(3, 8) * float("nan"), unit(3, 8), unit(3, 8), bank)


def test_float64_gradcheck_of_the_chunked_path():
    q, pos, bank = (
        unit(4, 5, dtype=torch.float64, grad=True),
        unit(4, 2, 5, dtype=torch.float64, grad=True),
        unit(9, 5, dtype=torch.float64),
    )
    rows, ranges = [2, 2], [(0, 9), (3, 4)]

    def stats(x):
        s = queue_softmax_stats(x, bank, 0.3, rows, ranges, backend="torch")
        return s.lse, s.weighted_keys

    assert torch.autograd.gradcheck(stats, (q,))
    assert torch.autograd.gradcheck(lambda a, b: info_nce([a], [b], bank, 0.3).losses, (q, pos))
    # the stop-gradient targets make the full HiCLR loss non-differentiable as a function, so check
    # the mined InfoNCE in all inputs and a consistency term in its source branch only
    b = [unit(4, 5, dtype=torch.float64, grad=True) for _ in range(4)]
    assert torch.autograd.gradcheck(lambda *t: hiclr_loss(*t, bank, 0.3, mining=True).nce, tuple(b))
    assert torch.autograd.gradcheck(
        lambda q2: hiclr_loss(b[0], b[1], q2, b[3], bank, 0.3).consistency_2, (b[2],)
    )


@pytest.mark.parametrize("use_triton", [False, True])
def test_opcheck(use_triton):
    q, bank = unit(6, 16, grad=True), unit(20, 16)
    torch.library.opcheck(
        torch.ops.skelfast.queue_softmax_stats, (q, bank, [4, 2], [0, 20, 5, 7], 5.0, use_triton)
    )
    g, lse = torch.randn(6, 16), torch.randn(6)
    torch.library.opcheck(
        torch.ops.skelfast.queue_softmax_moment, (q.detach(), bank, g, lse, [6], [0, 20], 5.0, use_triton)
    )


def test_torch_compile_fullgraph():
    queries = [unit(5, 16, grad=True), unit(5, 16, grad=True)]
    positives = [unit(5, 2, 16, grad=True), unit(5, 16, grad=True)]
    queues = [unit(40, 16), unit(12, 16)]

    def total(qs, ps):
        return info_nce(qs, ps, queues, 0.2, check_finite=False).losses.sum()

    compiled = torch.compile(total, fullgraph=True)
    got = compiled(queries, positives)
    want = ref.info_nce(queries, positives, queues, 0.2).sum()
    assert_close(got, want, atol=1e-5, rtol=1e-5, what="compiled loss")
    for a, b in zip(grads(got, queries + positives), grads(want, queries + positives), strict=True):
        assert_close(a, b, atol=1e-5, rtol=1e-4, what="compiled grad")


def test_normalize_inside_matches_normalizing_outside():
    q, pos, bank = torch.randn(4, 8, requires_grad=True), torch.randn(4, 8), unit(10, 8)
    inside = info_nce(q, pos, bank, 0.2, normalize=True).losses
    outside = ref.info_nce([F.normalize(q, dim=1)], [F.normalize(pos, dim=1)], [bank], 0.2)
    assert_close(inside, outside, atol=1e-6, rtol=1e-6, what="normalize")
    assert_close(*[grads(x.sum(), [q])[0] for x in (inside, outside)], atol=1e-6, rtol=1e-5, what="d q")


def test_reference_backend_is_the_official_form():
    q, pos, bank = unit(3, 8), unit(3, 8), unit(10, 8)
    with skelfast.use_backend("info_nce=reference"):
        out = info_nce(q, pos, bank, 0.2)
    logits = torch.cat([(q * pos).sum(1, keepdim=True), q @ bank.T], 1) / 0.2
    assert_close(
        out.losses[0], F.cross_entropy(logits, torch.zeros(3, dtype=torch.long)), atol=1e-6, rtol=1e-6
    )


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: info_nce(unit(3, 8), unit(3, 8), unit(0, 8), 0.2), "non-empty queue"),
        (lambda: info_nce(unit(3, 8), unit(3, 8), unit(5, 7), 0.2), "D=8 features but the queue has D=7"),
        (lambda: info_nce(unit(3, 8), unit(2, 8), unit(5, 8), 0.2), "positives must be"),
        (
            lambda: info_nce([unit(3, 8), unit(3, 6)], [unit(3, 8), unit(3, 6)], unit(5, 8), 0.2),
            "level 1 queries have D=6",
        ),
        (
            lambda: info_nce(unit(3, 8) * float("nan"), unit(3, 8), unit(5, 8), 0.2),
            "level 0 queries contains NaN",
        ),
        (lambda: info_nce(unit(3, 8), unit(3, 8), unit(5, 8) / 0.0, 0.2), "the queue contains NaN or Inf"),
        (lambda: info_nce(unit(3, 8), unit(3, 8), unit(5, 8, grad=True), 0.2), "must not require grad"),
        (
            lambda: info_nce(unit(3, 8), unit(3, 8), unit(5, 8), 0.2, queue_ranges=[(3, 4)]),
            "outside the bank",
        ),
        (lambda: hiclr_loss(unit(3, 8), unit(3, 8), unit(2, 8), unit(3, 8), unit(5, 8)), "q2 must be"),
    ],
)
def test_bad_input_raises_a_clear_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_integer_queries_are_rejected():
    with pytest.raises(TypeError, match="floating-point"):
        queue_softmax_stats(torch.ones(2, 3, dtype=torch.long), torch.ones(4, 3, dtype=torch.long), 0.1)


@pytest.mark.slow  # compiles every kernel configuration for sm_80 and sm_90 (tens of seconds)
def test_every_kernel_configuration_compiles_and_fits():
    proc = aot.compile_in_subprocess(("skelfast.kernels.info_nce",))
    reports = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(reports) == 8 and all(r["fits"] for r in reports), reports


# --- torch.autocast ---------------------------------------------------------------------------

AUTOCAST_BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


def bf16_leaves(*tensors):
    """bf16 copies (what the encoders return under autocast) and float32 twins of the same values."""
    halves = [t.detach().bfloat16().requires_grad_() for t in tensors]
    return halves, [h.detach().float().requires_grad_() for h in halves]


def check_grads_in_bf16(got, want, what):
    # a bf16 gradient is the float32 gradient (same values, another summation order: 1e-5) rounded
    # once to bf16's 8-bit significand: within 2^-9 relative, 2^-8 with margin
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g.dtype == torch.bfloat16
        assert_close(g.float(), w, atol=1e-5, rtol=2.0**-8, what=f"{what} {i}")


@pytest.mark.parametrize("backend", ["torch", "triton", "reference"])
def test_autocast_bf16_features_meet_the_float32_queue(backend):
    """HiCo's shape (multi-positive and single-positive levels on slices of one fp32 bank) under CPU
    autocast: the features are cast up (the interpreter has no bf16 dot, so "triton" too), so the
    losses equal the float32 losses of the same values (1e-5: float32 in another order)."""
    (q0, q1, p0, p1), twins = bf16_leaves(unit(5, 16), unit(4, 16), unit(5, 3, 16), unit(4, 16))
    bank, ranges = unit(40, 16), [(0, 24), (24, 16)]
    with forcing(backend), torch.autocast(**AUTOCAST_BF16):
        out = info_nce([q0, q1], [p0, p1], bank, 0.07, queue_ranges=ranges)
    expected = ref.info_nce(twins[:2], twins[2:], [bank[:24], bank[24:]], 0.07)
    assert out.losses.dtype == torch.float32
    assert_close(out.losses, expected, atol=1e-5, rtol=1e-5, what="autocast losses")
    check_grads_in_bf16(grads(out.losses.sum(), [q0, q1, p0, p1]), grads(expected.sum(), twins), "d")


@pytest.mark.parametrize("mining", [False, True])
def test_autocast_hiclr_loss_with_a_float32_queue(mining):
    (q, q1, q2, k), twins = bf16_leaves(*(unit(6, 16) for _ in range(4)))
    queue = unit(30, 16)
    with torch.autocast(**AUTOCAST_BF16):
        got = hiclr_loss(q, q1, q2, k, queue, 0.2, mining=mining)
    want = hiclr_loss(*twins, queue, 0.2, mining=mining)
    for name in ("loss", "nce", "consistency_1", "consistency_2"):
        assert_close(getattr(got, name), getattr(want, name), atol=1e-5, rtol=1e-5, what=name)
    assert torch.equal(got.top1, want.top1)
    check_grads_in_bf16(grads(got.loss, [q, q1, q2, k]), grads(want.loss, twins), "hiclr d")


def test_autocast_leaves_float32_inputs_in_float32():
    """Float32 features and queue under autocast give bit-equal statistics and losses: autocast is
    off inside (before, the chunked path's matmuls silently ran in bf16)."""
    q, pos, bank = unit(7, 16), unit(7, 2, 16), unit(3000, 16)  # several queue chunks
    want_stats, want = queue_softmax_stats(q, bank, 0.1), info_nce(q, pos, bank, 0.1)
    with torch.autocast(**AUTOCAST_BF16):
        got_stats, got = queue_softmax_stats(q, bank, 0.1), info_nce(q, pos, bank, 0.1)
    assert all(torch.equal(a, b) for a, b in zip(got_stats, want_stats, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))


def test_op_called_directly_under_autocast_runs_in_float32():
    q, bank = unit(6, 16), unit(20, 16)
    args = ([4, 2], [0, 20, 5, 7], 5.0, False)
    want = torch.ops.skelfast.queue_softmax_stats(q, bank, *args)
    with torch.autocast(**AUTOCAST_BF16):
        got = torch.ops.skelfast.queue_softmax_stats(q.bfloat16(), bank, *args)
    want_bf16 = torch.ops.skelfast.queue_softmax_stats(q.bfloat16().float(), bank, *args)
    assert all(torch.equal(a, b) for a, b in zip(got, want_bf16, strict=True))
    assert got[0].dtype == want[0].dtype == torch.float32


def test_mismatched_dtypes_outside_autocast_are_still_an_error():
    q = unit(3, 8, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="queue is torch.float32 on cpu but queries are torch.bfloat16"):
        queue_softmax_stats(q, unit(5, 8), 0.2)
    with pytest.raises(ValueError, match="queue is torch.float32 on cpu but queries are torch.float64"):
        with torch.autocast(**AUTOCAST_BF16):  # autocast never makes float64: still a mismatch
            queue_softmax_stats(unit(3, 8, dtype=torch.float64), unit(5, 8), 0.2)


def test_torch_compile_fullgraph_under_autocast():
    (q, pos), _ = bf16_leaves(unit(5, 16), unit(5, 16))
    bank = unit(40, 16)

    def total(q, pos):
        return info_nce(q, pos, bank, 0.2, check_finite=False).losses.sum()

    with torch.autocast(**AUTOCAST_BF16):
        eager = total(q, pos)
        compiled = torch.compile(total, fullgraph=True)(q, pos)
    assert_close(compiled, eager, atol=1e-6, rtol=1e-6, what="compiled autocast loss")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_autocast_cuda_casts_the_bank_to_bf16_tiles():
    """On CUDA the Triton kernels take the bf16 queries with the fp32 bank cast to bf16 (fp32
    accumulation). Reference: float32 on the same bf16-rounded values. bf16 x bf16 products are exact
    in fp32, so the losses match to fp32 summation (1e-4); the probabilities are rounded to bf16 for
    the weighted key sum (2^-9 relative), so gradients get 2^-7 relative and the fp16 test's atol."""
    (q, pos), _ = bf16_leaves(unit(17, 64), unit(17, 3, 64))
    q, pos = (t.detach().cuda().requires_grad_() for t in (q, pos))
    bank = unit(500, 64).cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = info_nce([q], [pos], bank, 0.07)
    q32, p32 = (t.detach().float().requires_grad_() for t in (q, pos))
    expected = ref.info_nce([q32], [p32], [bank.bfloat16().float()], 0.07)
    assert_close(out.losses, expected, atol=1e-4, rtol=1e-4, what="bf16 tiles loss")
    for got, want, name in zip(
        grads(out.losses.sum(), [q, pos]), grads(expected.sum(), [q32, p32]), ["q", "pos"], strict=True
    ):
        assert_close(got.float(), want, atol=2e-2, rtol=2.0**-7, what=f"bf16 tiles d {name}")
