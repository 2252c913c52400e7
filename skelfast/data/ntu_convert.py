"""Convert a folder of raw NTU RGB+D ``.skeleton`` files into the standard arrays (spec/isc_crrl.md
§0.2-0.3).

Output, per benchmark folder (``xsub`` and ``xview`` for NTU-60, ``xsub`` and ``xset`` for NTU-120) and
part (``train``, ``val``): ``{part}_data_joint.npy`` float32 (N, 3, 300, 25, 2), ``{part}_num_frame.npy``
(raw frame counts) and ``{part}_label.json`` (see ``skelfast.data.storage``). Samples are in sorted file
name order (the official script uses ``os.listdir`` order, which is arbitrary).

Parallel over files (a process pool). Workers are forked on Linux, so they start in milliseconds
with the parser already imported: a ``spawn`` worker would first re-import ``skelfast`` and with it
torch, seconds per worker, which made 2 workers slower than 1 on a few hundred files. Each worker
opens the cache array itself and writes its samples straight into it, so only ``(index, frame
count, error)`` travels back through the pool, in chunks of files per task.

Resumable: finished samples go to a cache folder (``<out>/.convert-cache``: a memory-mapped array
plus a done-mask saved after every chunk of ``chunk`` files), so a killed conversion restarts where it
stopped. Atomic: each benchmark folder is assembled under a temporary name and renamed into place,
so a killed conversion never leaves a half-written output.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.lib.format import open_memmap

from skelfast.data import normalize, storage
from skelfast.data.ntu_raw import NtuName, parse_name, read_sample
from skelfast.progress import Progress

# spec/isc_crrl.md §0.2
NTU60_TRAIN_SUBJECTS = (1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38)
NTU120_TRAIN_SUBJECTS = NTU60_TRAIN_SUBJECTS + (
    45, 46, 47, 49, 50, 52, 53, 54, 55, 56, 57, 58, 59, 70, 74, 78, 80, 81, 82, 83, 84, 85, 86, 89, 91,
    92, 93, 94, 95, 97, 98, 100, 103,
)  # fmt: skip
XVIEW_TRAIN_CAMERAS = (2, 3)
XSET_TRAIN_SETUPS = tuple(range(2, 33, 2))
DATASETS = {"ntu60": ("xsub", "xview"), "ntu120": ("xsub", "xset")}
CACHE_DIR = ".convert-cache"


def is_training(name: NtuName, benchmark: str) -> bool:
    """Whether a sample is in the training part of ``benchmark`` ('xsub' | 'xview' | 'xset')."""
    if benchmark == "xsub":
        # the 53-subject NTU-120 list; for NTU-60 (subjects <= 40) it equals the 20-subject list
        return name.performer in NTU120_TRAIN_SUBJECTS
    if benchmark == "xview":
        return name.camera in XVIEW_TRAIN_CAMERAS
    if benchmark == "xset":
        return name.setup in XSET_TRAIN_SETUPS
    raise ValueError(f"unknown NTU benchmark {benchmark!r}; expected 'xsub', 'xview' or 'xset'")


def read_missing_list(path: str | Path | None) -> set[str]:
    """Sample names (without extension) from ``samples_with_missing_skeletons.txt``."""
    if path is None:
        return set()
    return {
        line.strip().removesuffix(".skeleton") for line in Path(path).read_text().splitlines() if line.strip()
    }


def list_samples(raw_dir: str | Path, missing: set[str]) -> tuple[list[Path], list[str]]:
    """Sorted ``.skeleton`` files of ``raw_dir`` not on the missing list, and the names that were skipped."""
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise FileNotFoundError(f"raw skeleton folder not found: {raw_dir}")
    files, skipped = [], []
    for p in sorted(raw_dir.glob("*.skeleton")):
        parse_name(p.name)  # fail early on a stray file
        (skipped.append(p.stem) if p.stem in missing else files.append(p))
    if not files:
        raise FileNotFoundError(f"no .skeleton files to convert in {raw_dir}")
    return files, skipped


@dataclass
class ConvertResult:
    """What a conversion wrote: sizes per (benchmark, part), skipped names, output folder."""

    out_dir: Path
    sizes: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    converted_now: int = 0


class _SampleWriter:
    """Parse, select bodies, normalise one file and write it into row ``i`` of the cache array.

    Uses numpy and the parser only (no torch), so it is cheap in a worker process.
    """

    def __init__(self, data: np.ndarray, max_frames: int, bodies: str, normalization: str) -> None:
        self.data, self.max_frames, self.bodies, self.normalization = data, max_frames, bodies, normalization

    def __call__(self, job: tuple[int, str]) -> tuple[int, int, str | None]:
        i, path = job
        try:
            x, f = read_sample(path, max_frames=self.max_frames, bodies=self.bodies)
            y, nf = normalize.normalize(x[None], np.array([f]), self.normalization)
            self.data[i] = y[0]
            return i, int(nf[0]), None
        except Exception as e:  # reported with its file after the chunk; the sample stays not-done
            return i, 0, f"{type(e).__name__}: {e}"


_worker_writer: _SampleWriter | None = None  # one per pool worker, set by _init_worker


def _init_worker(data_file: str, max_frames: int, bodies: str, normalization: str) -> None:
    global _worker_writer
    _worker_writer = _SampleWriter(open_memmap(data_file, mode="r+"), max_frames, bodies, normalization)


def _convert_in_worker(job: tuple[int, str]) -> tuple[int, int, str | None]:
    assert _worker_writer is not None, "_init_worker did not run in this process"
    return _worker_writer(job)


def default_start_method() -> str:
    """'fork' on Linux (workers start at once, sharing the parent's imports); 'spawn' elsewhere, where
    fork is unavailable (Windows) or unsafe (macOS), at the cost of one ``import skelfast`` per worker."""
    return "fork" if sys.platform.startswith("linux") else "spawn"


def _open_cache(
    cache: Path, names: list[str], settings: dict, shape: tuple[int, ...]
) -> tuple[np.memmap, np.memmap, np.ndarray]:
    key = hashlib.sha256(json.dumps({"names": names, **settings}, sort_keys=True).encode()).hexdigest()
    meta = cache / "meta.json"
    if meta.exists() and json.loads(meta.read_text()).get("key") == key and (cache / "done.npy").exists():
        data = open_memmap(cache / "data.npy", mode="r+")
        frames = open_memmap(cache / "num_frame.npy", mode="r+")
        done = np.load(cache / "done.npy")
        if data.shape == shape and len(done) == len(names):
            return data, frames, done
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)
    data = open_memmap(cache / "data.npy", mode="w+", dtype=np.float32, shape=shape)
    frames = open_memmap(cache / "num_frame.npy", mode="w+", dtype=np.int64, shape=(shape[0],))
    done = np.zeros(shape[0], dtype=bool)
    storage.save_npy_atomic(cache / "done.npy", done)
    meta.write_text(json.dumps({"key": key, **settings}))
    return data, frames, done


def convert_ntu(
    raw_dir: str | Path,
    out_dir: str | Path,
    dataset: str = "ntu60",
    missing_list: str | Path | None = None,
    normalization: str = "agcn",
    bodies: str | None = None,
    workers: int | None = None,
    max_frames: int = 300,
    progress: bool = True,
    chunk: int = 512,
    keep_cache: bool = False,
    start_method: str | None = None,
) -> ConvertResult:
    """Convert ``raw_dir/*.skeleton`` into ``out_dir/<benchmark>/`` for the benchmarks of ``dataset``.

    ``normalization`` is one of ``normalize.NORMALIZATIONS``; ``bodies`` is 'energy' (default) or
    'first' (default for 'frame50', as CrosSCLR/AimCLR's converter). ``workers`` processes (default:
    all cores; 0 or 1 = in this process), started with ``start_method`` (default
    ``default_start_method()``). The done-mask is saved every ``chunk`` files.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1 file, got {chunk}")
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(DATASETS)}")
    if normalization not in normalize.NORMALIZATIONS:
        raise ValueError(f"unknown normalization {normalization!r}; choose one of {normalize.NORMALIZATIONS}")
    bodies = bodies or ("first" if normalization == "frame50" else "energy")
    out_dir = Path(out_dir)
    files, skipped = list_samples(raw_dir, read_missing_list(missing_list))
    names = [p.name for p in files]
    parsed = [parse_name(n) for n in names]
    t_out = 50 if normalization == "frame50" else max_frames
    settings = {"normalization": normalization, "bodies": bodies, "max_frames": max_frames}
    cache = out_dir / CACHE_DIR
    data, frames, done = _open_cache(cache, names, settings, (len(files), 3, t_out, 25, 2))
    todo = np.nonzero(~done)[0]
    result = ConvertResult(out_dir, skipped=skipped, converted_now=0)
    errors: list[str] = []
    workers = (os.cpu_count() or 1) if workers is None else workers
    workers = min(workers, len(todo))
    pool = None
    if workers > 1:
        ctx = multiprocessing.get_context(start_method or default_start_method())
        init_args = (str(cache / "data.npy"), max_frames, bodies, normalization)
        pool = ctx.Pool(workers, initializer=_init_worker, initargs=init_args)
    in_process = _SampleWriter(data, max_frames, bodies, normalization)
    try:
        with Progress(len(todo), f"ntu {dataset}", unit="files", enabled=progress) as bar:
            for lo in range(0, len(todo), chunk):
                jobs = [(int(i), str(files[i])) for i in todo[lo : lo + chunk]]
                # a few tasks per worker and chunk: few pool round trips, yet balanced across workers
                per_task = max(1, min(32, len(jobs) // (4 * workers))) if pool else 1
                results = (
                    pool.imap_unordered(_convert_in_worker, jobs, chunksize=per_task)
                    if pool
                    else map(in_process, jobs)
                )
                finished = []
                for i, nf, err in results:
                    bar.update(1)
                    if err is not None:
                        errors.append(f"{files[i]}: {err}")
                        continue
                    frames[i] = nf
                    finished.append(i)
                # the workers wrote through their own mappings of the same file; flushing ours syncs the
                # file's dirty pages (the page cache is shared), then the done-mask may vouch for them
                data.flush()
                frames.flush()
                done[finished] = True
                storage.save_npy_atomic(cache / "done.npy", done)
                result.converted_now += len(finished)
    except BaseException:
        if pool is not None:  # e.g. Ctrl-C: stop the workers now rather than let them finish the queue
            pool.terminate()
        raise
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    if errors:
        shown = "\n  ".join(errors[:20])
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        raise RuntimeError(
            f"{len(errors)} file(s) could not be converted (fix or add them to the missing list, then "
            f"re-run: finished samples are kept in {cache}):\n  {shown}{more}"
        )
    labels = np.array([n.label for n in parsed], dtype=np.int64)
    for bench in DATASETS[dataset]:
        train = np.array([is_training(n, bench) for n in parsed])
        partial = out_dir / f".{bench}.partial-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        for part, mask in (("train", train), ("val", ~train)):
            idx = np.nonzero(mask)[0]
            result.sizes[f"{bench}/{part}"] = len(idx)
            _write_part(partial, part, data, frames, labels, names, idx)
        _swap_in(partial, out_dir / bench)
    if not keep_cache:
        shutil.rmtree(cache, ignore_errors=True)
    return result


def _write_part(
    folder: Path,
    part: str,
    data: np.ndarray,
    frames: np.ndarray,
    labels: np.ndarray,
    names: list[str],
    idx: np.ndarray,
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    out = open_memmap(
        storage.data_path(folder, part), mode="w+", dtype=np.float32, shape=(len(idx),) + data.shape[1:]
    )
    for lo in range(0, len(idx), 1024):  # bounded memory: copy from the cache in slices
        out[lo : lo + 1024] = data[idx[lo : lo + 1024]]
    out.flush()
    del out
    storage.save_npy_atomic(storage.num_frame_path(folder, part), np.asarray(frames[idx], dtype=np.int64))
    storage.save_labels(storage.label_path(folder, part), [names[i] for i in idx], labels[idx])


def _swap_in(partial: Path, final: Path) -> None:
    """Rename the finished folder onto ``final``; an old ``final`` is moved aside first and then deleted."""
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(partial, final)
    shutil.rmtree(old, ignore_errors=True)
