"""InfoNCE over memory queues: ``skelfast.ops`` (the chunked online path on the CPU, Triton on GPUs)
against the full-logits eager reference and torch.compile of it, forward+backward.

Run: ``python -m benchmarks.bench_info_nce`` (or ``make bench``). Shapes (spec hico_hiclr.md,
isc_crrl.md): HiCLR (B=128, three branches with consistency terms, K=32768, D=128, tau=0.07), HiCo
(B=64, five levels: clip/part with G=4 positives over 8192 rows, three levels of 2048, tau=0.2), and
one MoCo level at B=256, K=65536. Queries and positives require grad; the queue is a buffer.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from benchmarks.common import bench_device, compiled, peak_extra_memory, sgemm_gflops, time_fn, write_results
from skelfast import reference
from skelfast.ops import hiclr_loss, info_nce
from skelfast.queue import MemoryQueue

D = 128


def unit(*shape: int, grad: bool = False) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, device=bench_device()), dim=-1).requires_grad_(grad)


def hiclr_case(
    b: int, k: int, mining: bool = False
) -> tuple[str, Callable, Callable, list[torch.Tensor], int]:
    branches = [unit(b, D, grad=True) for _ in range(3)]
    key, queue = unit(b, D), unit(k, D)

    def fast(*qs):
        return hiclr_loss(*qs, key, queue, 0.07, mining=mining, check_finite=False).loss

    def ref(*qs):
        return reference.hiclr_loss(*qs, key, queue, 0.07, mining)[0]

    name = f"HiCLR B={b} x3 branches K={k}" + (" mining" if mining else "")
    return name, fast, ref, branches, 3 * b * k


def hico_case(b: int, k: int, g: int = 4) -> tuple[str, Callable, Callable, list[torch.Tensor], int]:
    # the five queues live in one bank, as skelfast.queue.MemoryQueue keeps them: no copy per step
    bank = MemoryQueue([g * k, g * k, k, k, k], D).to(bench_device())
    queues = [bank.level(lvl) for lvl in range(5)]
    queries = [unit(b, D, grad=True) for _ in range(5)]
    positives = [unit(b, g, D), unit(b, g, D), unit(b, D), unit(b, D), unit(b, D)]

    def fast(*qs):
        return info_nce(
            list(qs), positives, bank.bank, 0.2, queue_ranges=bank.ranges, check_finite=False
        ).losses.sum()

    def ref(*qs):
        return reference.info_nce(list(qs), positives, queues, 0.2).sum()

    return f"HiCo B={b} five levels K={g}x{k},{k}", fast, ref, queries, b * (2 * g * k + 3 * k)


def moco_case(b: int, k: int) -> tuple[str, Callable, Callable, list[torch.Tensor], int]:
    q, key, queue = unit(b, D, grad=True), unit(b, D), unit(k, D)

    def fast(x):
        return info_nce(x, key, queue, 0.07, check_finite=False).losses.sum()

    def ref(x):
        return reference.info_nce([x], [key], [queue], 0.07).sum()

    return f"MoCo B={b} K={k}", fast, ref, [q], b * k


def _fwd_bwd(fn: Callable, inputs: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    return torch.autograd.grad(fn(*inputs), inputs)


def run_case(
    name: str, fast: Callable, ref: Callable, inputs: list[torch.Tensor], pairs: int
) -> dict[str, object]:
    fns = {"skelfast": fast, "eager": ref, "compiled": compiled(ref)}
    full = {key: time_fn(lambda f=f: _fwd_bwd(f, inputs), repeats=7, warmup=2) for key, f in fns.items()}
    mem = {key: peak_extra_memory(lambda f=f: _fwd_bwd(f, inputs)) for key, f in fns.items()}
    # forward q.k (2 flop/pair/feature) + weighted key sum (2); the eager backward's dq matmul (2)
    gflops = 4 * pairs * D / (full["skelfast"].median_ms * 1e-3) / 1e9
    return {
        "case": name,
        "fwd+bwd ms": full["skelfast"].median_ms,
        "eager ms": full["eager"].median_ms,
        "compiled ms": full["compiled"].median_ms,
        "vs eager": full["eager"].median_ms / full["skelfast"].median_ms,
        "vs compiled": full["compiled"].median_ms / full["skelfast"].median_ms,
        "GFLOP/s": gflops,
        "of sgemm": gflops / sgemm_gflops(),
        "peak MiB": mem["skelfast"] / 2**20,
        "eager MiB": mem["eager"] / 2**20,
        "compiled MiB": mem["compiled"] / 2**20,
        "peak vs eager": mem["skelfast"] / mem["eager"],
    }


def main() -> list[dict[str, object]]:
    torch.manual_seed(0)
    cases = [
        hiclr_case(128, 32768),
        hiclr_case(128, 32768, mining=True),
        hico_case(64, 2048),
        moco_case(256, 65536),
    ]
    rows = [run_case(*case) for case in cases]
    note = (
        f"Forward+backward (gradients of queries and branches). sgemm in the same run: {sgemm_gflops():.0f} "
        "GFLOP/s. 'vs eager'/'vs compiled' > 1: skelfast is faster; 'peak vs eager' < 1: it needs less memory. "
        "GFLOP/s counts the two queue matmuls of the fused path (q.k and the probability-weighted key sum)."
    )
    print(write_results("info_nce", rows, note))
    return rows


# --- pytest-benchmark cases (CI runs each once with --benchmark-disable) ----------------------


def test_info_nce_hiclr_fwd_bwd(benchmark):
    _, fast, _, inputs, _ = hiclr_case(8, 256, mining=True)
    benchmark(_fwd_bwd, fast, inputs)


def test_info_nce_hico_fwd_bwd(benchmark):
    _, fast, _, inputs, _ = hico_case(4, 64)
    benchmark(_fwd_bwd, fast, inputs)


def test_info_nce_reference_fwd_bwd(benchmark):
    _, _, ref, inputs, _ = moco_case(8, 512)
    benchmark(_fwd_bwd, ref, inputs)


if __name__ == "__main__":
    main()
