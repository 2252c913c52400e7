"""The performance model's byte and FLOP counts against numbers worked out by hand, and its reference
kernel lists against the kernels the reference code actually runs (torch.profiler on the CPU)."""

import pytest
import torch
from skelfast.kernels import info_nce as info_nce_kernels

from skelfast import perf_model, reference


def _kernel(row: perf_model.ModelRow, name: str) -> perf_model.Kernel:
    (kernel,) = [k for k in row.kernels if name in k.name]
    return kernel


def test_graph_conv_forward_counts_by_hand():
    # N=2, C_in=3, C_out=4, T=5, V=25, K=3: x 750, z 3000, y 1000, W 36, b 12, A 1875 fp32 elements
    fused, ref = perf_model.graph_conv_forward(2, 3, 4, 5)
    # reference: copy x (750 r + 750 w), bmm (750 + 36 r, 3000 w), + bias (3000 + 12 r, 3000 w),
    # copy z (3000 r + 3000 w), bmm (3000 + 1875 r, 1000 w); times 4 bytes
    assert ref.bytes == 4 * (1500 + 3786 + 6012 + 6000 + 5875) == 92692
    # fused: cuBLAS mix (786 r, 3000 w), bias table (12 + 1875 r, 100 w), aggregate (3000 + 1875 + 100 r, 1000 w)
    assert fused.bytes == 4 * (3786 + 1987 + 5975) == 46992
    # FLOPs: mix 2*N*T*V*K*C_out*C_in = 18000, aggregation 2*N*C_out*T*K*V*V = 150000, bias add 3000
    assert ref.flops == 18000 + 150000 + 3000
    assert _kernel(fused, "aggregate_forward").flops == 150000
    assert ref.launches == 5 and fused.launches == 3


def test_info_nce_fused_reads_the_queue_once_per_query_block():
    # 100 queries (2 blocks of BB=64), a queue of 1000 rows of D=16 split into chunks of 512 (2 chunks):
    # 4 work items; each reads its query block (64 or 36 rows) and its chunk of the queue
    kernels = perf_model.info_nce_fused_kernels([100], [1000], [1], d=16, chunk=512)
    stats = next(k for k in kernels if k.name.startswith("queue_stats_fwd"))
    bank_bytes = 2 * 1000 * 16 * 4  # the whole queue, once per query block
    query_bytes = 2 * 100 * 16 * 4  # the queries, once per queue chunk
    table_bytes = 4 * 5 * 4  # 4 items of 5 int32
    assert stats.bytes_read == bank_bytes + query_bytes + table_bytes == 140880
    assert stats.bytes_written == 2 * 100 * (16 + 3) * 4  # per chunk: lse, o (16), best, index
    assert stats.flops == 4 * 100 * 1000 * 16  # q.k and p.k: 2 FLOPs x D per (query, queue row), twice
    # the item count matches the launcher's own work table
    table, slots = info_nce_kernels.work_table([100], [(0, 1000)], 64, 512, torch.device("cpu"))
    assert table.numel() // info_nce_kernels.WORK_FIELDS == 4 and slots == 2


def test_info_nce_split_on_an_h100():
    # MoCo B=256 (4 row blocks) on 132 SMs: ceil(264 / 4) = 66 splits of ceil(65536 / 66) = 993 rows,
    # rounded up to whole 64-row tiles: 1024; a short queue keeps the 4-tile minimum
    assert perf_model.info_nce_split([256], [65536]) == 1024
    assert perf_model.info_nce_split([64] * 5, [2048] * 5) == 256


def test_info_nce_reference_moco_level_by_hand():
    # N=4, K=1000, D=8: the logits L = 4 x 1001 = 4004 fp32 values cross HBM in cat (r+w), / tau (r+w),
    # log_softmax (r+w), nll backward (w), log_softmax backward (2r+w), div backward (r+w): 12 L
    _, ref = perf_model.info_nce_case("t", [4], [1000], [1], d=8)
    logits = sum(
        k.bytes
        for k in ref.kernels
        if any(s in k.name for s in ("cat", "tau", "log_softmax", "div", "nll_loss_backward"))
    )
    assert logits == 12 * 4004 * 4
    # the queue (1000 x 8) is read twice: by the forward GEMM and by the backward dq GEMM
    assert _kernel(ref, "q.queue").bytes_read == (4 * 8 + 1000 * 8) * 4
    assert _kernel(ref, "dq = dlogits . queue").bytes_read == (4 * 1000 + 1000 * 8) * 4


def test_momentum_counts_by_hand():
    fused, ref = perf_model.momentum_case("toy", [10, 20, 30])
    assert fused.bytes == 60 * 12 and fused.launches == 1  # lerp: read k and q, write k
    assert ref.bytes == 60 * (8 + 12) and ref.launches == 6  # mul_: r+w; add_: 2r + w; per tensor


def test_time_is_the_roofline_bound_per_kernel():
    k = perf_model.Kernel("x", 3_350_000, 0, 67_000_000)  # 1 us of bandwidth, 1 us of fp32
    assert k.seconds() == pytest.approx(1e-6)
    k = perf_model.Kernel("x", 3_350_000, 0, 670_000_000)  # compute-bound: 10 us
    assert k.seconds() == pytest.approx(1e-5)
    assert perf_model.Kernel("x", 0, 0, 989_000_000, "bf16").seconds() == pytest.approx(1e-6)
    # a row sums its kernels; the launch column adds LAUNCH_S per launch (3 launches here)
    row = perf_model.ModelRow("op", "case", "fused", (k, perf_model.Kernel("y", 0, 0, 0, launches=2)))
    assert row.seconds() == pytest.approx(1e-5)
    assert row.seconds_with_launches() == pytest.approx(1e-5 + 3 * perf_model.LAUNCH_S)


def _profiled_kernels(fn) -> list[str]:
    """Top-level data-moving ATen ops ``fn`` runs (nested ops of an op are its own business)."""
    moving = {"aten::copy_", "aten::bmm", "aten::mm", "aten::add", "aten::sum"}
    with torch.profiler.profile() as prof:
        fn()
    names = []
    for e in prof.events():
        parent, nested = e.cpu_parent, False
        while parent is not None:
            nested |= parent.name in moving
            parent = parent.cpu_parent
        if e.name in moving and not nested:
            names.append(e.name)
    return names


def test_graph_conv_reference_kernels_are_the_ones_torch_runs():
    x = torch.randn(2, 3, 5, 25, requires_grad=True)
    w = torch.randn(12, 3, requires_grad=True)
    b = torch.randn(12, requires_grad=True)
    A = torch.randn(3, 25, 25, requires_grad=True)
    fused_f, ref_f = perf_model.graph_conv_forward(2, 3, 4, 5)
    fused_b, ref_b = perf_model.graph_conv_backward(2, 3, 4, 5)
    out = {}
    forward = _profiled_kernels(lambda: out.setdefault("y", reference.graph_conv(x, w, b, A)))
    backward = _profiled_kernels(lambda: out["y"].backward(torch.ones_like(out["y"])))
    assert len(forward) == len(ref_f.kernels) == 5  # copy, bmm, add, copy, bmm
    assert len(backward) == len(ref_b.kernels) == 8  # bmm, bmm, copy, sum, copy, bmm, bmm, copy


def test_table_is_labelled_a_model():
    rows = perf_model.model_rows(include_momentum=False)
    text = perf_model.format_table(rows)
    assert "model, not a measurement" in text
    fused_lines = [line for line in text.splitlines() if "| fused |" in line]
    assert len(fused_lines) == len(rows) // 2 and all(line.endswith("x |") for line in fused_lines)
