"""The (9 x 1) temporal convolution: ``skelfast.ops.temporal_conv`` in the frequency form against
oneDNN's direct convolution (``F.conv2d``, what the official units and the ``"direct"`` algorithm
run), forward+backward to the input, weight and bias, at every (channels, frames, stride) the
ST-GCN (batch 128 x 2 bodies, 50 frames; standard and HiCLR's quarter width), the AGCN (64 x 2,
64 frames) and DSTA-Net units run, and at longer clips.

Run: ``python -m benchmarks.bench_temporal_conv`` (or ``make bench BENCH=temporal_conv``). This is
the measurement behind ``prefers_frequency``, the rule ``algorithm="auto"`` follows: 'auto picks'
says which form the rule gives each case, 'x direct' > 1 where the frequency form is faster.
'multiplications' is the frequency form's share of the direct one's (P / (K T_out)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmarks.common import run_cases, time_interleaved, write_results
from skelfast.ops import temporal_conv
from skelfast.ops.temporal_conv import frequency_points, output_frames, prefers_frequency

CASES = {  # name: (N * M, channels, frames in, stride, kernel)
    # HiCLR's quarter-width ST-GCN (16 to 64 channels before its last unit)
    "quarter 16ch T50": (256, 16, 50, 1, 9),
    "quarter 32ch T50 s2": (256, 32, 50, 2, 9),
    "quarter 32ch T25": (256, 32, 25, 1, 9),
    "quarter 64ch T25 s2": (256, 64, 25, 2, 9),
    "quarter 64ch T13": (256, 64, 13, 1, 9),
    "stgcn 64ch T50": (256, 64, 50, 1, 9),
    "stgcn 128ch T50 s2": (256, 128, 50, 2, 9),
    "stgcn 128ch T25": (256, 128, 25, 1, 9),
    "stgcn 256ch T25 s2": (256, 256, 25, 2, 9),
    "stgcn 256ch T13": (256, 256, 13, 1, 9),
    "agcn 64ch T64": (128, 64, 64, 1, 9),
    "agcn 128ch T64 s2": (128, 128, 64, 2, 9),
    "agcn 128ch T32": (128, 128, 32, 1, 9),
    "agcn 256ch T32 s2": (128, 256, 32, 2, 9),
    "agcn 256ch T16": (128, 256, 16, 1, 9),
    # longer clips than the methods train on (the dense transforms grow as T^2)
    "long 32ch T100": (64, 32, 100, 1, 9),
    "long 64ch T150": (64, 64, 150, 1, 9),
    "long 64ch T300": (16, 64, 300, 1, 9),
    "long 128ch T100": (64, 128, 100, 1, 9),
    "long 128ch T300": (16, 128, 300, 1, 9),
    "long 256ch T300": (16, 256, 300, 1, 9),
    # HiCLR's DSTA-Net: a (7 x 1) temporal convolution after each attention block
    "dsta 128ch T25 K7": (256, 128, 25, 1, 7),
    "dsta 256ch T25 s2 K7": (256, 256, 25, 2, 7),
    "dsta 256ch T13 K7": (256, 256, 13, 1, 7),
}


def _inputs(n: int, c: int, t: int, stride: int, kernel: int = 9) -> dict[str, torch.Tensor]:
    return {
        "x": torch.randn(n, c, t, 25, requires_grad=True),
        "weight": (torch.randn(c, c, kernel, 1) / (c * kernel) ** 0.5).requires_grad_(),
        "bias": torch.randn(c, requires_grad=True),
        "grad": torch.randn(n, c, output_frames(t, kernel, stride), 25),
    }


def run_case(name: str, repeats: int = 3) -> dict[str, object]:
    n, c, t, stride, kernel = CASES[name]
    a = _inputs(n, c, t, stride, kernel)

    def frequency() -> None:
        temporal_conv(a["x"], a["weight"], a["bias"], stride, algorithm="frequency").backward(a["grad"])

    def direct() -> None:
        F.conv2d(a["x"], a["weight"], a["bias"], stride=(stride, 1), padding=(kernel // 2, 0)).backward(
            a["grad"]
        )

    # the columns in turns: this VM's speed drifts by tens of percent between minutes
    timings = time_interleaved({"frequency": frequency, "direct": direct}, repeats=repeats, warmup=1)
    points = frequency_points(t, kernel)
    return {
        "case": name,
        "shape": f"{n}x{c}x{t}x25 s{stride}",
        "multiplications": round(points / (kernel * output_frames(t, kernel, stride)), 2),
        "frequency ms": round(timings["frequency"].median_ms, 1),
        "direct ms": round(timings["direct"].median_ms, 1),
        "x direct": round(timings["direct"].median_ms / timings["frequency"].median_ms, 2),
        "auto picks": "frequency" if prefers_frequency(c, c, t, kernel, stride) else "direct",
    }


def main() -> list[dict[str, object]]:
    torch.manual_seed(0)
    rows = run_cases(CASES, run_case)
    note = "forward+backward (input, weight, bias); 'x direct' > 1: the frequency form is faster."
    print(write_results("temporal_conv", rows, note))
    return rows


# --- pytest-benchmark cases (CI runs each once with --benchmark-disable: small shapes) ----------


def test_temporal_conv_frequency(benchmark):  # noqa: ANN001
    a = _inputs(2, 8, 13, 1)
    benchmark(
        lambda: temporal_conv(a["x"], a["weight"], a["bias"], 1, algorithm="frequency").backward(a["grad"])
    )


if __name__ == "__main__":
    main()
