"""GRU over padded variable-length sequences: ``skelfast.ops.gru`` (C++) against ``nn.GRU``'s own path
(``skelfast.reference.gru``: ``torch._VF.gru`` on a packed sequence, what the official code runs),
forward alone (no autograd) and forward+backward. torch.compile has no column: Dynamo refuses
nn.GRU (``torch._dynamo.config.allow_rnn`` is experimental).

Run: ``python -m benchmarks.bench_gru`` (or ``make bench BENCH=gru``). Cases: CRRL's 2-layer BiGRU
encoder (batch 32, up to 300 frames, lengths 150..300, hidden 256), its decoder (GRU(512, 150), 2
layers), ISC's sequence cell (GRU(150, 1024), 64 frames, batch 64) and HiCo's GRU option (BiGRU
512 -> 2 x 256 over 64 frames, batch 64). 'of sgemm' is the counted GEMM arithmetic (gates of every
valid frame, 3x for forward+backward) at this machine's sgemm rate over the measured time.
"""

from __future__ import annotations

import torch

from benchmarks.common import run_cases, sgemm_gflops, time_fn, write_results
from skelfast import reference, use_backend
from skelfast.ops import gru

CASES = {  # name: (batch, frames, input, hidden, layers, bidirectional, ragged lengths)
    "CRRL encoder BiGRU 150->256 x2": (32, 300, 150, 256, 2, True, True),
    "CRRL decoder GRU 512->150 x2": (32, 300, 512, 150, 2, False, True),
    "ISC cell GRU 150->1024": (64, 64, 150, 1024, 1, False, False),
    "HiCo BiGRU 512->256": (64, 64, 512, 256, 1, True, False),
}


def _inputs(name: str, seed: int = 0) -> dict[str, object]:
    batch, frames, in_size, hidden, layers, bidirectional, ragged = CASES[name]
    torch.manual_seed(seed)
    module = torch.nn.GRU(in_size, hidden, layers, batch_first=True, bidirectional=bidirectional)
    lengths = torch.randint(frames // 2, frames + 1, (batch,)) if ragged else None
    if lengths is not None:
        lengths[0] = frames
    x = torch.randn(batch, frames, in_size, requires_grad=True)
    return {
        "x": x,
        "lengths": lengths,
        "weights": module._flat_weights,
        "layers": layers,
        "bi": bidirectional,
    }


def _forward(fn, a: dict[str, object]) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: ANN001
    return fn(a["x"], a["lengths"], a["weights"], a["layers"], a["bi"])


def _skelfast(x, lengths, weights, layers, bi):  # noqa: ANN001, ANN202
    with use_backend("gru=cpp"):
        return gru(x, lengths, weights, layers, bi)


def _reference(x, lengths, weights, layers, bi):  # noqa: ANN001, ANN202
    h0 = x.new_zeros(layers * (2 if bi else 1), x.shape[0], weights[1].shape[1])
    return reference.gru(x, lengths, h0, weights, layers, bi)


def _step(fn, a: dict[str, object]) -> None:  # noqa: ANN001
    out, h_n = _forward(fn, a)
    (out.sum() + h_n.sum()).backward()


def gemm_flops(name: str, a: dict[str, object]) -> float:
    """Forward GEMM FLOPs: per valid frame and cell, 2 * 3H * (I_layer + H)."""
    batch, frames, in_size, hidden, layers, bidirectional, _ = CASES[name]
    frames_total = float(a["lengths"].sum()) if a["lengths"] is not None else float(batch * frames)
    directions = 2 if bidirectional else 1
    total = 0.0
    for layer in range(layers):
        layer_in = in_size if layer == 0 else directions * hidden
        total += directions * 2 * 3 * hidden * (layer_in + hidden) * frames_total
    return total


def run_case(name: str, repeats: int = 3) -> dict[str, object]:
    a = _inputs(name)
    fwd, ref_fwd = (
        time_fn(lambda fn=fn: _no_grad(fn, a), repeats=repeats, warmup=1) for fn in (_skelfast, _reference)
    )
    step = time_fn(lambda: _step(_skelfast, a), repeats=repeats, warmup=1)
    ref_step = time_fn(lambda: _step(_reference, a), repeats=repeats, warmup=1)
    flops = 3 * gemm_flops(name, a)
    batch, frames, *_ = CASES[name]
    return {
        "case": name,
        "shape": f"B{batch} T{frames}" + (" ragged" if a["lengths"] is not None else ""),
        "fwd ms": round(fwd.median_ms, 1),
        "nn.GRU fwd ms": round(ref_fwd.median_ms, 1),
        "fwd vs nn.GRU": round(ref_fwd.median_ms / fwd.median_ms, 2),
        "fwd+bwd ms": round(step.median_ms, 1),
        "nn.GRU fwd+bwd ms": round(ref_step.median_ms, 1),
        "fwd+bwd vs nn.GRU": round(ref_step.median_ms / step.median_ms, 2),
        "fwd+bwd GFLOP/s": round(flops / (step.median_ms * 1e-3) / 1e9, 1),
        "of sgemm": round(flops / (step.median_ms * 1e-3) / 1e9 / sgemm_gflops(), 3),
    }


def _no_grad(fn, a: dict[str, object]) -> None:  # noqa: ANN001
    with torch.no_grad():
        _forward(fn, a)


def main() -> list[dict[str, object]]:
    rows = run_cases(CASES, run_case)
    note = (
        "'vs nn.GRU' > 1: skelfast is faster. Forward alone runs without autograd. "
        f"sgemm in the same run: {sgemm_gflops():.0f} GFLOP/s."
    )
    print(write_results("gru", rows, note))
    return rows


# --- pytest-benchmark cases (CI runs each once with --benchmark-disable: small shapes) ----------


def _small() -> dict[str, object]:
    module = torch.nn.GRU(6, 5, 2, batch_first=True, bidirectional=True)
    x = torch.randn(3, 7, 6, requires_grad=True)
    return {
        "x": x,
        "lengths": torch.tensor([7, 2, 5]),
        "weights": module._flat_weights,
        "layers": 2,
        "bi": True,
    }


def test_gru_skelfast(benchmark):  # noqa: ANN001
    benchmark(_step, _skelfast, _small())


def test_gru_reference(benchmark):  # noqa: ANN001
    benchmark(_step, _reference, _small())


def test_gemm_flops_counts_each_layer_and_direction():
    a = _inputs("CRRL encoder BiGRU 150->256 x2")
    frames = float(a["lengths"].sum())
    want = 2 * (2 * 768 * (150 + 256) + 2 * 768 * (512 + 256)) * frames
    assert gemm_flops("CRRL encoder BiGRU 150->256 x2", a) == want


if __name__ == "__main__":
    main()
