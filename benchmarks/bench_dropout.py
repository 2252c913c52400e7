"""Dropout: ``skelfast.ops.dropout`` (C++, a Philox mask keyed by one seed, regenerated in the
backward) against ``F.dropout`` (``bernoulli_`` mask, kept for the backward) in eager mode and under
torch.compile (inductor's own random kernel), forward+backward, train mode, float32.

Run: ``python -m benchmarks.bench_dropout`` (or ``make bench BENCH=dropout``). Cases: HiCo's
Transformer activations (batch 64, 64 frames, 512 channels, p 0.1) and attention weights (64 x 4
heads, 64 x 64, p 0.1), a quarter-width ST-GCN activation (256 x 16 x 50 x 25, p 0.5) and CRRL's
inter-layer GRU output (32 x 300 x 512, p 0.2). 'of copy' compares the op's forward+backward with
copying the same bytes twice (x -> y, grad -> dx) at this machine's copy bandwidth, measured in the
same run; 'saved MiB' is what autograd keeps for the backward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmarks.common import compiled, copy_gbps, run_cases, time_fn, write_results
from skelfast import use_backend
from skelfast.ops import dropout

CASES = {  # name: (shape, p)
    "HiCo FFN 64x64x512": ((64, 64, 512), 0.1),
    "HiCo attention 256x64x64": ((256, 64, 64), 0.1),
    "ST-GCN quarter 256x16x50x25": ((256, 16, 50, 25), 0.5),
    "CRRL GRU 32x300x512": ((32, 300, 512), 0.2),
}


def _skelfast(x: torch.Tensor, p: float) -> torch.Tensor:
    with use_backend("dropout=cpp"):
        return dropout(x, p)


def _eager(x: torch.Tensor, p: float) -> torch.Tensor:
    return F.dropout(x, p, True)


def _step(fn, x: torch.Tensor, p: float, grad: torch.Tensor) -> None:  # noqa: ANN001
    fn(x, p).backward(grad)


def saved_bytes(fn, x: torch.Tensor, p: float) -> int:  # noqa: ANN001
    sizes = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        sizes.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(x, p)
    return sum(sizes)


def run_case(name: str, repeats: int = 5, with_compile: bool = True) -> dict[str, object]:
    shape, p = CASES[name]
    x = torch.randn(shape, requires_grad=True)
    grad = torch.randn(shape)
    fns = {"skelfast": _skelfast, "eager": _eager}
    if with_compile:
        fns["compiled"] = compiled(_eager)
    timings = {
        k: time_fn(lambda f=f: _step(f, x, p, grad), repeats=repeats, warmup=2) for k, f in fns.items()
    }
    nbytes = x.numel() * x.element_size()
    copy_ms = 2 * (2 * nbytes) / (copy_gbps() * 1e9) * 1e3  # two passes, each reads and writes nbytes
    row: dict[str, object] = {"case": name, "p": p}
    for k, t in timings.items():
        row[f"{k} ms"] = round(t.median_ms, 2)
    row["vs eager"] = round(timings["eager"].median_ms / timings["skelfast"].median_ms, 2)
    if with_compile:
        row["vs compiled"] = round(timings["compiled"].median_ms / timings["skelfast"].median_ms, 2)
    row["of copy"] = round(copy_ms / timings["skelfast"].median_ms, 3)
    row["saved MiB"] = round(saved_bytes(_skelfast, x, p) / 2**20, 3)
    row["eager saved MiB"] = round(saved_bytes(_eager, x, p) / 2**20, 1)
    return row


def main() -> list[dict[str, object]]:
    torch.manual_seed(0)
    rows = run_cases(CASES, run_case)
    note = (
        "forward+backward, train mode, float32; 'vs eager'/'vs compiled' > 1: skelfast is faster. "
        f"Copy bandwidth in the same run: {copy_gbps():.1f} GB/s."
    )
    print(write_results("dropout", rows, note))
    return rows


# --- pytest-benchmark cases (CI runs each once with --benchmark-disable: small shapes) ----------


def test_dropout_skelfast(benchmark):  # noqa: ANN001
    x = torch.randn(4, 16, 10, requires_grad=True)
    benchmark(_step, _skelfast, x, 0.1, torch.ones_like(x))


def test_dropout_eager(benchmark):  # noqa: ANN001
    x = torch.randn(4, 16, 10, requires_grad=True)
    benchmark(_step, _eager, x, 0.1, torch.ones_like(x))


def test_saved_bytes_counts_the_seed_against_the_mask():
    x = torch.randn(64, 32, requires_grad=True)
    assert saved_bytes(_skelfast, x, 0.3) == 8  # one int64 seed
    assert saved_bytes(_eager, x, 0.3) >= x.numel()  # a mask as large as x


if __name__ == "__main__":
    main()
