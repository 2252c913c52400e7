"""Batched skeleton augmentation on the CPU: the C++ kernel (``cpp`` backend; the vectorised
``torch`` path in its own columns) against the per-sample reference chain (the official feeders'
way), the batched eager reference, torch.compile of it, and a plain copy of the same bytes (the
frames of x the op reads + the output it writes), all timed in turns in one run.

The per-sample baseline is ``skelfast.reference.augment_numpy.apply_params``: numpy step by step
as the official feeders, including their per-sample ``F.interpolate`` (crop-resize) and
``F.conv2d`` (blur) calls, with the noise drawn per call by ``np.random.normal``.

N=256, T_in=300 -> T_out=64, V=25, M=2 for HiCo/ISC/CRRL; HiCLR runs on its own 50-frame data
(its shift keeps the length: 50 -> 50)."""

from __future__ import annotations

import numpy as np
import torch

from benchmarks.common import bench_device, compiled, on_cuda, time_fn, time_interleaved, write_results
from skelfast.augment import CRRL, ISC, AugmentParams, HiCLR, HiCo
from skelfast.ops.augment import _cpp_reason, augment_cpp, augment_torch
from skelfast.reference import augment_numpy
from skelfast.reference.augment import augment as reference
from skelfast.reference.augment import bone_parents

CPU_PATHS = {"cpp": augment_cpp, "torch": augment_torch}
CASES = {
    "hico": (HiCo(), 300, "crop"),
    "isc": (ISC(), 300, "crop"),
    "hiclr-strong-mask": (HiCLR(strong=True, mask=True), 50, "shift"),
    "crrl-motion": (CRRL(t_out=64, stream="motion"), 300, "crop"),
}


def _inputs(name: str, n: int) -> tuple:
    recipe, t_in, temporal = CASES[name]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, t_in, 25, 2, generator=g)
    valid = torch.full((n,), t_in) if t_in == 50 else torch.randint(64, t_in + 1, (n,), generator=g)
    params = recipe.sample(valid, 25, g)
    return x, valid, params, temporal


def _elements_moved(x: torch.Tensor, valid: torch.Tensor, params: AugmentParams) -> int:
    """Elements the op reads and writes: per sample, the frames its temporal taps touch (the window
    of ``length`` frames inside the valid ones, at most two taps per output frame) times C*V*M, plus
    the output. The crop recipes read 64-128 of up to 300 frames, so counting all of x would
    overstate the bytes the op moves."""
    window = torch.minimum(params.length, valid.to(params.length.device, params.length.dtype))
    frames = window.clamp(max=2 * params.t_out)
    per_frame = x.shape[1] * x.shape[3] * x.shape[4]
    return int(frames.sum()) * per_frame + x.shape[0] * params.t_out * per_frame


def run_case(name: str, n: int = 256, numpy_samples: int = 32) -> dict[str, object]:
    x, valid, params, temporal = _inputs(name, n)
    fill, parents = torch.tensor(0.0), bone_parents(25)
    cpu_path = "cpp" if _cpp_reason(x) is None else "torch"
    ref_compiled = compiled(lambda: reference(x, valid, params, fill, parents))
    ref_compiled()  # compile outside the timed turns
    # per-sample numpy, as the official feeders run in DataLoader workers (a subset, scaled)
    sub = params.replace(
        **{k: v[:numpy_samples] for k, v in params.tensors().items() if v.dim() and k != "frame_joint_mask"}
    )
    xs, vs = x[:numpy_samples].numpy(), valid[:numpy_samples].numpy()
    noisy = (sub.noise_std != 0).numpy()
    shape = (numpy_samples, 3, sub.t_out, 25, 2)

    def numpy_chain() -> np.ndarray:
        noise = np.zeros(shape)
        noise[noisy] = np.random.normal(size=(int(noisy.sum()), *shape[1:]))  # the feeders' draw
        return augment_numpy.apply_params(xs, vs, sub, temporal, noise)

    # a copy that reads and writes half of the elements the op reads and writes moves the same
    # number of bytes through memory
    half = _elements_moved(x, valid, params) // 2
    src, dst = torch.randn(half).to(x.dtype), torch.empty(half, dtype=x.dtype)
    # every column timed in turns: this VM's speed drifts by tens of percent between minutes
    timings = time_interleaved(
        {
            "fast": lambda: CPU_PATHS[cpu_path](x, valid, params, fill, parents),
            "vectorised": lambda: augment_torch(x, valid, params, fill, parents),
            "eager": lambda: reference(x, valid, params, fill, parents),
            "compiled": ref_compiled,
            "numpy": numpy_chain,
            "copy": lambda: dst.copy_(src),
        },
        repeats=10,
        warmup=1,
    )
    fast, vectorised, eager, comp = (timings[k] for k in ("fast", "vectorised", "eager", "compiled"))
    per_sample, copy = timings["numpy"], timings["copy"]
    rate = n / (fast.median_ms * 1e-3)
    return {
        "recipe": name,
        "shape": f"{n}x3x{x.shape[2]}x25x2 -> {params.t_out}",
        "cpu path": cpu_path,
        "cpu op samples/s": round(rate),
        "vs numpy per-sample": round(rate / (numpy_samples / (per_sample.median_ms * 1e-3)), 1),
        "vs eager reference": round(eager.median_ms / fast.median_ms, 2),
        "vs compiled reference": round(comp.median_ms / fast.median_ms, 2),
        "fraction of copy bandwidth": round(copy.median_ms / fast.median_ms, 2),
        "op ms": round(fast.median_ms, 2),
        "torch path ms": round(vectorised.median_ms, 2),
        "torch path vs eager": round(eager.median_ms / vectorised.median_ms, 2),
    }


def run_case_cuda(name: str, n: int = 256) -> dict[str, object]:
    """On a GPU: the Triton kernel (``skelfast.ops.augment``) against the eager and compiled batched
    reference and a device copy of the same bytes (the per-sample numpy chain is a CPU baseline)."""
    from skelfast.ops import augment

    x, valid, params, _ = _inputs(name, n)
    device = bench_device()
    x, valid, params = x.to(device), valid.to(device), params.to(device)
    fill, parents = torch.tensor(0.0, device=device), bone_parents(25).to(device)
    fast = time_fn(lambda: augment(x, valid, params, fill=fill), repeats=20)
    eager = time_fn(lambda: reference(x, valid, params, fill, parents), repeats=10)
    comp = time_fn(compiled(lambda: reference(x, valid, params, fill, parents)), repeats=10, warmup=2)
    half = _elements_moved(x, valid, params) // 2
    src, dst = torch.randn(half, device=device), torch.empty(half, device=device)
    copy = time_fn(lambda: dst.copy_(src), repeats=20)
    return {
        "recipe": name,
        "shape": f"{n}x3x{x.shape[2]}x25x2 -> {params.t_out}",
        "path": "triton",
        "op samples/s": round(n / (fast.median_ms * 1e-3)),
        "vs eager reference": round(eager.median_ms / fast.median_ms, 2),
        "vs compiled reference": round(comp.median_ms / fast.median_ms, 2),
        "fraction of copy bandwidth": round(copy.median_ms / fast.median_ms, 2),
        "op ms": round(fast.median_ms, 3),
    }


def main() -> list[dict]:
    rows = [(run_case_cuda if on_cuda() else run_case)(name) for name in CASES]
    note = (
        "CPU path: the C++ kernel (cpp), its ratios against the per-sample chain (numpy after the official "
        "feeders, which call F.interpolate / F.conv2d per sample), the eager and torch.compile'd batched "
        "reference, and a copy of the same bytes; the vectorised torch path in the last two columns. "
        "Noise: the shared Philox stream, drawn in the C++ kernel and in int64 tensor ops by the "
        "references and the torch path (part of the timing). Triton is GPU-only and not timed here."
    )
    write_results("augment", rows, note=note)
    return rows


def test_augment_cpu_op(benchmark):
    x, valid, params, _ = _inputs("hiclr-strong-mask", 8)
    path = CPU_PATHS["cpp" if _cpp_reason(x) is None else "torch"]
    benchmark(lambda: path(x, valid, params, torch.tensor(0.0), bone_parents(25)))


def test_augment_main_runs_small():
    row = run_case("hico", n=8, numpy_samples=2)
    assert row["cpu op samples/s"] > 0


if __name__ == "__main__":
    for r in main():
        print(r)
