"""MoCo momentum update: ``skelfast.methods.momentum_update`` (one ``torch._foreach_lerp_`` over every
parameter) against MoCo's per-parameter Python loop ``k.mul_(m).add_(q, alpha=1 - m)`` and against
torch.compile of that loop, at the parameter lists of the four methods' key encoders, and against
this machine's copy bandwidth measured in the same run (on ``skelfast bench --device``'s device).

Run: ``python -m benchmarks.bench_moco`` (or ``make bench BENCH=moco``). Parameter lists (official
sizes, ``skelfast.perf_model.momentum_encoders``): HiCo's encoder, HiCLR's quarter-width ST-GCN,
ISC's GRU + AGCN, CRRL's key GRU (its key MLP is never updated). m = 0.999. The update is
memory-bound: it reads the key and query parameters and writes the key (3 x 4 bytes per parameter).
"""

from __future__ import annotations

import copy

import torch

from benchmarks.common import bench_device, compiled, copy_gbps, run_cases, time_fn, write_results
from skelfast.methods import momentum_update
from skelfast.perf_model import momentum_encoders

MOMENTUM = 0.999
METHODS = ("hico", "hiclr", "isc", "crrl")


def parameter_lists(method: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(key, query) parameter lists of a method's momentum update on the benchmark device; the query
    differs from the key."""
    device = bench_device()
    query = [p.detach().to(device) for module in momentum_encoders(method) for p in module.parameters()]
    key = [p + 0.01 * torch.randn_like(p) for p in copy.deepcopy(query)]
    return key, query


def fused(key: list[torch.Tensor], query: list[torch.Tensor]) -> None:
    momentum_update(key, query, MOMENTUM)


@torch.no_grad()
def moco_loop(key: list[torch.Tensor], query: list[torch.Tensor]) -> None:
    """The official MoCo ``_momentum_update_key_encoder`` body."""
    for k, q in zip(key, query, strict=True):
        k.mul_(MOMENTUM).add_(q, alpha=1 - MOMENTUM)


def run_case(method: str, repeats: int = 10, with_compile: bool = True) -> dict[str, object]:
    key, query = parameter_lists(method)
    numel = sum(p.numel() for p in key)
    fns = {"skelfast": fused, "loop": moco_loop}
    if with_compile:
        fns["compiled"] = compiled(moco_loop)
    timings = {name: time_fn(lambda f=f: f(key, query), repeats=repeats, warmup=2) for name, f in fns.items()}
    gbps = 3 * 4 * numel / (timings["skelfast"].median_ms * 1e-3) / 1e9
    row: dict[str, object] = {
        "case": method,
        "tensors": len(key),
        "M params": numel / 1e6,
        "skelfast ms": timings["skelfast"].median_ms,
        "loop ms": timings["loop"].median_ms,
    }
    if with_compile:
        row["compiled ms"] = timings["compiled"].median_ms
    row["vs loop"] = timings["loop"].median_ms / timings["skelfast"].median_ms
    if with_compile:
        row["vs compiled"] = timings["compiled"].median_ms / timings["skelfast"].median_ms
    row["GB/s"] = gbps
    row["of copy"] = gbps / copy_gbps()
    return row


def main() -> list[dict[str, object]]:
    torch.manual_seed(0)
    rows = run_cases(METHODS, run_case)
    note = (
        f"One momentum update (m={MOMENTUM}) of each method's key encoder. Copy bandwidth in the same run: "
        f"{copy_gbps():.1f} GB/s. 'vs loop'/'vs compiled' > 1: skelfast is faster. GB/s counts 12 bytes per "
        "parameter (key and query read, key written); 'of copy' (against a 256 MiB copy) can exceed 1 "
        "where the parameters fit in the last-level cache."
    )
    print(write_results("moco", rows, note))
    return rows


# --- pytest-benchmark cases (CI runs each once with --benchmark-disable) ----------------------


def test_momentum_update_fused(benchmark):
    key, query = parameter_lists("hiclr")
    benchmark(fused, key, query)


def test_momentum_update_moco_loop(benchmark):
    key, query = parameter_lists("hiclr")
    benchmark(moco_loop, key, query)


def test_fused_update_matches_the_moco_loop():
    key, query = parameter_lists("crrl")
    expected = [k.clone() for k in key]
    moco_loop(expected, query)
    fused(key, query)
    for a, b in zip(key, expected, strict=True):
        # lerp k + w (q - k) and k m + (1 - m) q round differently: a few fp32 ulps of |k| <~ 1
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


if __name__ == "__main__":
    main()
