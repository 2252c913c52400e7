"""Data pipeline throughput: NTU raw conversion (files/s), synthetic generation (samples/s), and the
memory-mapped loader (samples/s, with a batched augmentation callable).

Run: ``python -m benchmarks.bench_data``. Raw files are written from synthetic actions in the exact
NTU format (1-2 bodies, 32-300 frames, ~100 on average, like NTU), then converted with the 2s-AGCN
normalisation on 1 and on all cores (forked workers, and spawned ones for comparison). The loader
reads a 2048-sample split of (3, 300, 25, 2) arrays from disk through ``np.load(mmap_mode='r')``,
batch 128; the augmentation is a stand-in of the cost class of ``skelfast.ops.augment`` (a random 3x3
per sample applied to every joint).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import write_results
from skelfast.data import datasets, ntu_convert, ntu_raw, storage, synthetic


def write_raw_files(folder: Path, n: int, seed: int = 0) -> None:
    synth = synthetic.generate(n, num_classes=60, seed=seed)
    for i in range(n):
        xyz = synth.data[i, :, : synth.num_frame[i]].transpose(3, 1, 2, 0)  # M, F, V, C
        name = f"S{1 + i % 17:03d}C{1 + i % 3:03d}P{1 + i % 40:03d}R{1 + i % 2:03d}A{1 + synth.labels[i]:03d}"
        (folder / f"{name}_{i}.skeleton").write_text(ntu_raw.format_skeleton(xyz.astype(np.float64)))


def _random_rotation(x: torch.Tensor, lengths: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    rot = torch.linalg.qr(torch.randn(x.shape[0], 3, 3, generator=gen, device=x.device))[0]
    return torch.einsum("bij,bjtvm->bitvm", rot, x)


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and its reaped children (the pool's workers)."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def bench_conversion(n_files: int = 400, rounds: int = 2) -> list[dict[str, object]]:
    """Files/s converting ``n_files`` raw files with 1 worker, all cores (forked workers, the default)
    and all cores with ``spawn`` workers (each re-imports skelfast and torch: the start-up the default
    avoids). The cases alternate for ``rounds`` rounds and the best time of each is kept, so a busy
    machine slows every case alike. The CPU column (all processes, per file) shows the overhead of
    parallelism independently of how busy the machine is: equal CPU per file means the wall time
    divides by the workers on an idle machine."""
    cores = os.cpu_count() or 1
    cases = [(1, None), (cores, None), (cores, "spawn")] if cores > 1 else [(1, None)]
    best = {case: (float("inf"), 0.0) for case in cases}
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        raw.mkdir()
        write_raw_files(raw, n_files)
        for r in range(rounds):
            for workers, start in cases:
                out = Path(tmp) / f"out{r}-{workers}-{start}"
                t0, c0 = time.perf_counter(), _cpu_seconds()
                ntu_convert.convert_ntu(
                    raw, out, "ntu60", workers=workers, progress=False, start_method=start
                )
                wall, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
                best[workers, start] = min(best[workers, start], (wall, cpu))
                shutil.rmtree(out)  # 0.3 GB per case at the default size
    rows = []
    for (workers, start), (wall, cpu) in best.items():
        how = "" if workers == 1 else f", {start or ntu_convert.default_start_method()}"
        rows.append({"case": f"ntu convert agcn, {workers} worker(s){how}", "n": n_files,
                     "seconds": round(wall, 2), "throughput": f"{n_files / wall:.1f} files/s",
                     "cpu ms/file": f"{1000 * cpu / n_files:.1f}"})  # fmt: skip
    return rows


def bench_synthetic(n: int = 2000) -> dict[str, object]:
    t0 = time.perf_counter()
    synthetic.generate(n, num_classes=60, seed=1)
    dt = time.perf_counter() - t0
    return {"case": "synthetic generate (300 frames)", "n": n, "seconds": round(dt, 2),
            "throughput": f"{n / dt:.0f} samples/s"}  # fmt: skip


def bench_loader(n: int = 2048, batch: int = 128) -> list[dict[str, object]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = np.random.default_rng(0).normal(size=(n, 3, 300, 25, 2)).astype(np.float32)
        storage.save_split(tmp, "train", data, np.full(n, 300), np.arange(n) % 60, [str(i) for i in range(n)])
        del data
        ds = datasets.SkeletonDataset.from_split(tmp, "train")
        for workers in (0, 2):
            for aug in (None, _random_rotation):
                loader = datasets.SkeletonLoader(ds, batch, seed=0, num_workers=workers, augment=aug)
                t0 = time.perf_counter()
                count = sum(x.shape[0] for x, *_ in loader)
                dt = time.perf_counter() - t0
                case = f"loader mmap, {workers} workers, augment={'rot' if aug else 'none'}"
                rows.append({"case": case, "n": count, "seconds": round(dt, 2),
                             "throughput": f"{count / dt:.0f} samples/s"})  # fmt: skip
    return rows


def main() -> list[dict[str, object]]:
    rows = bench_conversion() + [bench_synthetic()] + bench_loader()
    print(write_results("data", rows, note="Data pipeline throughput (CPU)."))
    return rows


# --- pytest-benchmark cases (CI runs each once with --benchmark-disable) ----------------------


def test_convert_small(benchmark, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    write_raw_files(raw, 4)
    benchmark(lambda: ntu_convert.convert_ntu(raw, tmp_path / "out", workers=1, progress=False))


def test_convert_small_parallel(benchmark, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    write_raw_files(raw, 4)
    benchmark(lambda: ntu_convert.convert_ntu(raw, tmp_path / "out", workers=2, progress=False))


def test_loader_small(benchmark, tmp_path):
    data = np.zeros((16, 3, 20, 25, 2), dtype=np.float32)
    storage.save_split(
        tmp_path, "train", data, np.full(16, 20), np.arange(16) % 4, [str(i) for i in range(16)]
    )
    loader = datasets.SkeletonLoader(
        datasets.SkeletonDataset.from_split(tmp_path, "train"), 8, augment=_random_rotation
    )
    benchmark(lambda: [b for b in loader])


if __name__ == "__main__":
    main()
