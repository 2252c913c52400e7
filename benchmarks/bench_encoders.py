"""GCN encoders: forward+backward samples/s of skelfast's encoders against the same architecture
written the official way (``skelfast.reference.encoders``: nn.Conv2d + einsum + nn.BatchNorm2d +
nn.Dropout) and against torch.compile of that, at each method's pretraining batch size.

Run: ``python -m benchmarks.bench_encoders`` (or ``make bench``). ``SKELFAST_BENCH_ENCODER_BATCH=16``
shrinks the batch for a quick look. Cases: HiCLR's quarter-width ST-GCN (batch 128, 2 bodies, 50
frames), the standard ST-GCN (same input), ISC's AGCN (batch 64, 2 bodies, 64 frames). Train mode,
all weights equal between the variants. ``sgemm fraction`` is the encoder's counted arithmetic
(FlopCounterMode over one official forward+backward) at this machine's sgemm rate over the
measured time: 1.0 would mean every FLOP ran at sgemm speed.

``attainable x official`` bounds what any implementation that keeps oneDNN's temporal convolutions
can reach: the official time over (the model's (9, 1) convolutions alone on oneDNN, forward and
backward, timed in the same turns + every other counted FLOP at the sgemm rate). oneDNN runs them at
0.75-1.0 of the sgemm rate; skelfast runs those of 32 channels and more in the frequency form
(``skelfast.ops.temporal_conv``: 3-5x fewer multiplications; ``prefers_frequency``), which is how it
passes the bound.
``temporal convs share`` is those oneDNN convolutions' time over skelfast's whole step.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import (
    bench_device,
    compiled,
    convolutions_alone,
    env_batch,
    sgemm_probe,
    time_interleaved,
    write_results,
)
from skelfast import use_backend
from skelfast.nn.agcn import AGCN
from skelfast.nn.stgcn import stgcn_hiclr, stgcn_standard
from skelfast.reference.encoders import OfficialAGCN, OfficialSTGCN

CASES = {  # name: (skelfast builder, official builder, pretraining batch, frames)
    "stgcn_hiclr_quarter": (lambda: stgcn_hiclr(), lambda: OfficialSTGCN(hidden_channels=16), 128, 50),
    "stgcn_standard": (lambda: stgcn_standard(), lambda: OfficialSTGCN(hidden_channels=64), 128, 50),
    "agcn_isc": (lambda: AGCN(), lambda: OfficialAGCN(), 64, 64),
}


def _pair(name: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    build, build_official, _, _ = CASES[name]
    model = build().train()
    official = build_official().train()
    official.load_state_dict(model.state_dict())
    return model, official


def _step(model: torch.nn.Module, x: torch.Tensor) -> None:
    model.zero_grad(set_to_none=True)
    model(x).square().mean().backward()


def counted_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        _step(model, x)
    return counter.get_total_flops()


def run_case(
    name: str, batch: int | None = None, repeats: int = 3, with_compile: bool = True
) -> dict[str, object]:
    _, _, default_batch, frames = CASES[name]
    batch = batch or default_batch
    model, official = (m.to(bench_device()) for m in _pair(name))
    x = torch.randn(batch, 3, frames, 25, 2, device=bench_device())

    def skelfast_step() -> None:
        with use_backend("graph_conv=cpp"):
            _step(model, x)

    # the official forward with autograd on (every convolution timed forward and backward); train
    # mode, so it moves BatchNorm's running statistics only, which train mode ignores
    convs_only, conv_flops = convolutions_alone(official, lambda: official(x))
    matmul, matmul_flops = sgemm_probe()
    steps = {
        "skelfast": skelfast_step,
        "official": lambda: _step(official, x),
        "temporal convs": convs_only,
        "sgemm": matmul,
    }
    if with_compile:
        official_compiled = compiled(official)
        for _ in range(2):  # compile outside the timed turns
            _step(official_compiled, x)
        steps["compiled"] = lambda: _step(official_compiled, x)
    # the columns are timed in turns, so a drifting machine moves all of them alike
    timings = time_interleaved(steps, repeats=repeats, warmup=1)
    flops = counted_flops(official, x)
    gflops = matmul_flops / (timings["sgemm"].median_ms * 1e6)  # the rate in the same minutes
    row: dict[str, object] = {
        "encoder": name,
        "batch": batch,
        "frames": frames,
        "GFLOP fwd+bwd": round(flops / 1e9, 1),
    }
    for key in ("skelfast", "official", "compiled"):
        if key in timings:
            row[f"{key} samples/s"] = round(batch / (timings[key].median_ms / 1e3), 1)
    row["x official"] = round(timings["official"].median_ms / timings["skelfast"].median_ms, 2)
    if "compiled" in timings:
        row["x compiled"] = round(timings["compiled"].median_ms / timings["skelfast"].median_ms, 2)
    row["sgemm fraction"] = round(flops / (gflops * 1e9) / (timings["skelfast"].median_ms / 1e3), 3)
    row["sgemm GFLOP/s"] = round(gflops, 1)
    conv_ms = timings["temporal convs"].median_ms
    row["temporal convs share"] = round(conv_ms / timings["skelfast"].median_ms, 2)
    row["temporal convs GFLOP/s"] = round(conv_flops / (conv_ms * 1e6), 1)
    bound_ms = conv_ms + (flops - conv_flops) / (gflops * 1e6)
    row["attainable x official"] = round(timings["official"].median_ms / bound_ms, 2)
    return row


def main() -> list[dict[str, object]]:
    batch = env_batch("SKELFAST_BENCH_ENCODER_BATCH")
    rows = []
    for name in CASES:
        row = run_case(name, batch)
        print(row, flush=True)
        rows.append(row)
    write_results(
        "encoders",
        rows,
        note="forward+backward, train mode; targets: >= 2x official, >= 1.5x compiled. 'temporal convs': "
        "the model's (9, 1) convolutions alone on oneDNN (forward + backward, timed in the same turns), "
        "their time over skelfast's step and their rate; 'attainable x official': the official time over "
        "(those convolutions + every other FLOP at the sgemm rate), the most any implementation that keeps "
        "oneDNN's temporal convolutions can reach (skelfast runs those of >= 32 channels in the frequency "
        "form: skelfast.ops.temporal_conv)",
    )
    return rows


# --- pytest-benchmark cases (CI runs them once with --benchmark-disable: small shapes) ------------


def _bench_step(benchmark, name: str) -> None:  # noqa: ANN001
    model, _ = _pair(name)
    x = torch.randn(2, 3, 8, 25, 2)
    benchmark(_step, model, x)


def test_stgcn_hiclr_quarter(benchmark):  # noqa: ANN001
    _bench_step(benchmark, "stgcn_hiclr_quarter")


def test_stgcn_standard(benchmark):  # noqa: ANN001
    _bench_step(benchmark, "stgcn_standard")


def test_agcn_isc(benchmark):  # noqa: ANN001
    _bench_step(benchmark, "agcn_isc")


def test_run_case_row_has_every_ratio():
    row = run_case("stgcn_hiclr_quarter", batch=2, repeats=1, with_compile=False)
    assert {"x official", "sgemm fraction", "skelfast samples/s"} <= set(row)


if __name__ == "__main__":
    main()
