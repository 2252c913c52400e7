"""BatchNorm with its elementwise tail: ``skelfast.ops.batch_norm_act`` (C++) against the chain the
official units run (``skelfast.reference.batch_norm_act``: F.batch_norm, dropout's two multiplies,
the residual add, ReLU) in eager mode and under torch.compile, forward+backward, train mode.

Run: ``python -m benchmarks.bench_batch_norm_act`` (or ``make bench BENCH=batch_norm_act``). Cases:
the ST-GCN unit tail (BN -> Dropout 0.5 -> + residual -> ReLU) and the BN -> ReLU head at the
quarter-width ST-GCN's activations (batch 128 x 2 bodies, 50/25/13 frames) and the standard width.
'GB/s' counts the fused op's minimum traffic (forward: x read twice, residual and mask read, y
written; backward: grad, x, y and mask read twice, dx and d residual written), against this
machine's copy bandwidth measured in the same run.
"""

from __future__ import annotations

import torch

from benchmarks.common import compiled, copy_gbps, run_cases, time_interleaved, write_results
from skelfast import reference, use_backend
from skelfast.ops import batch_norm_act

CASES = {  # name: (N, C, T, V, tail): tail = dropout + residual + ReLU, else BN -> ReLU
    "quarter 16ch T50 tail": (256, 16, 50, 25, True),
    "quarter 16ch T50 bn-relu": (256, 16, 50, 25, False),
    "quarter 64ch T13 tail": (256, 64, 13, 25, True),
    "quarter 256ch T13 tail": (256, 256, 13, 25, True),
    "standard 64ch T50 tail": (256, 64, 50, 25, True),
}


def _inputs(n: int, c: int, t: int, v: int, tail: bool) -> dict[str, object]:
    x = torch.randn(n, c, t, v, requires_grad=True)
    return {
        "x": x,
        "weight": torch.rand(c, requires_grad=True),
        "bias": torch.randn(c, requires_grad=True),
        "residual": torch.randn(n, c, t, v, requires_grad=True) if tail else None,
        "keep": torch.rand(n, c, t, v) >= 0.5 if tail else None,
        "grad": torch.randn(n, c, t, v),
    }


def _step(fn, a: dict[str, object]) -> None:  # noqa: ANN001
    running_mean, running_var = torch.zeros(a["x"].shape[1]), torch.ones(a["x"].shape[1])
    y = fn(
        a["x"], a["weight"], a["bias"], running_mean, running_var, True, 0.1, 1e-5,
        a["residual"], a["keep"], 2.0, True,
    )  # fmt: skip
    y.backward(a["grad"])


def run_case(name: str, repeats: int = 5, with_compile: bool = True) -> dict[str, object]:
    n, c, t, v, tail = CASES[name]
    a = _inputs(n, c, t, v, tail)

    def fused() -> None:
        with use_backend("batch_norm_act=cpp"):
            _step(batch_norm_act, a)

    fns = {"skelfast": fused, "eager": lambda: _step(reference.batch_norm_act, a)}
    if with_compile:
        ref_compiled = compiled(reference.batch_norm_act)
        _step(ref_compiled, a)  # compile outside the timed turns
        fns["compiled"] = lambda: _step(ref_compiled, a)
    # the columns in turns: this VM's speed drifts by tens of percent between minutes
    timings = time_interleaved(fns, repeats=repeats, warmup=1)
    elems = n * c * t * v
    tensors_moved = (6 if tail else 3) + (8 if tail else 5)  # forward + backward float passes (mask ~1/4)
    gbps = tensors_moved * 4 * elems / (timings["skelfast"].median_ms * 1e-3) / 1e9
    row: dict[str, object] = {"case": name, "shape": f"{n}x{c}x{t}x{v}"}
    for k, tm in timings.items():
        row[f"{k} ms"] = round(tm.median_ms, 2)
    row["vs eager"] = round(timings["eager"].median_ms / timings["skelfast"].median_ms, 2)
    if with_compile:
        row["vs compiled"] = round(timings["compiled"].median_ms / timings["skelfast"].median_ms, 2)
    row["GB/s"] = round(gbps, 1)
    return row


def main() -> list[dict[str, object]]:
    torch.manual_seed(0)
    rows = run_cases(CASES, run_case)
    note = (
        "forward+backward, train mode (batch statistics); 'vs eager'/'vs compiled' > 1: skelfast is faster. "
        f"Copy bandwidth in the same run: {copy_gbps():.1f} GB/s."
    )
    print(write_results("batch_norm_act", rows, note))
    return rows


# --- pytest-benchmark cases (CI runs each once with --benchmark-disable: small shapes) ----------


def test_batch_norm_act_fused(benchmark):  # noqa: ANN001
    a = _inputs(4, 16, 10, 25, True)
    benchmark(_step, batch_norm_act, a)


def test_batch_norm_act_reference(benchmark):  # noqa: ANN001
    a = _inputs(4, 16, 10, 25, True)
    benchmark(_step, reference.batch_norm_act, a)


if __name__ == "__main__":
    main()
