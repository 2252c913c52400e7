"""The default pretraining data: the synthetic NTU-layout dataset, generated once into a cache.

``synthetic_split_dir(config["data"])`` returns a benchmark folder (``.../xsub``) of split arrays for
``SkeletonDataset.from_split``. The cache folder is ``$SKELFAST_CACHE`` (or ``~/.cache/skelfast``)
``/synthetic-<hash>/``, the hash covering every generation parameter (sample and class counts,
seed, frames, the method's ``[data] normalization``) and the source of the generator and of the
normalisations, so a changed generator never serves stale arrays. The folder is written under a
hidden temporary name and renamed into place when complete: a killed generation never leaves a
half-written dataset where a later run would find it.

``[data]`` keys read here (all optional): ``normalization`` (default ``"agcn"``), ``max_frames``
(300), ``synthetic_samples`` (6000), ``synthetic_classes`` (60), ``synthetic_seed`` (0),
``synthetic_posture_std`` (0.06) and ``synthetic_distortion`` (0.0) (the generator's nuisance
knobs, see ``synthetic.generate``), ``benchmark`` (``"xsub"`` or ``"xview"``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DEFAULTS: dict[str, Any] = {
    "normalization": "agcn",
    "max_frames": 300,
    "synthetic_samples": 6000,
    "synthetic_classes": 60,
    "synthetic_seed": 0,
    "synthetic_posture_std": 0.06,
    "synthetic_distortion": 0.0,
    "benchmark": "xsub",
}
BENCHMARKS = ("xsub", "xview")


def cache_root() -> Path:
    """``$SKELFAST_CACHE``, else ``~/.cache/skelfast``."""
    env = os.environ.get("SKELFAST_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "skelfast"


def synthetic_params(data: Mapping[str, Any] | None) -> dict[str, Any]:
    """The generation parameters a ``[data]`` table asks for (defaults filled in, checked)."""
    data = dict(data or {})
    params = {k: data.get(k, v) for k, v in DEFAULTS.items()}
    if params["benchmark"] not in BENCHMARKS:
        raise ValueError(
            f"synthetic data: benchmark must be one of {BENCHMARKS}, got {params['benchmark']!r}"
        )
    for key in ("max_frames", "synthetic_samples", "synthetic_classes"):
        if int(params[key]) < 1:
            raise ValueError(f"synthetic data: {key} must be >= 1, got {params[key]}")
    return params


def _source_digest() -> str:
    from skelfast.data import normalize, synthetic

    h = hashlib.sha256()
    for module in (synthetic, normalize):
        h.update(Path(module.__file__).read_bytes())
    return h.hexdigest()[:16]


def dataset_folder(params: Mapping[str, Any], root: Path | None = None) -> Path:
    """The cache folder (holding ``xsub/`` and ``xview/``) of one parameter set."""
    key = {k: params[k] for k in sorted(params) if k != "benchmark"}
    key["source"] = _source_digest()
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return (root or cache_root()) / f"synthetic-{digest}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale(final: Path) -> None:
    """Delete temporary folders of ``final`` left by killed generations (their process is gone)."""
    for tmp in final.parent.glob(f".{final.name}.tmp-*"):
        try:
            pid = int(tmp.name.rsplit("-", 2)[-2])
        except ValueError:
            continue
        if not _pid_alive(pid):
            shutil.rmtree(tmp, ignore_errors=True)


def synthetic_split_dir(
    data: Mapping[str, Any] | None = None, root: Path | None = None, quiet: bool = False
) -> Path:
    """The benchmark folder of the synthetic dataset ``data`` asks for, generating it if needed."""
    from skelfast.data.synthetic import write_synthetic

    params = synthetic_params(data)
    final = dataset_folder(params, root)
    if not (final / "params.json").is_file():
        final.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(final)
        tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        if not quiet:
            print(
                f"generating synthetic data ({params['synthetic_samples']} samples, "
                f"{params['synthetic_classes']} classes, {params['normalization']} normalisation) into {final}",
                file=sys.stderr,
            )
        try:
            write_synthetic(
                tmp,
                num_samples=int(params["synthetic_samples"]),
                num_classes=int(params["synthetic_classes"]),
                seed=int(params["synthetic_seed"]),
                normalization=str(params["normalization"]),
                benchmarks=BENCHMARKS,
                max_frames=int(params["max_frames"]),
                min_frames=min(32, int(params["max_frames"])),
                posture_std=float(params["synthetic_posture_std"]),
                distortion=float(params["synthetic_distortion"]),
            )
            (tmp / "params.json").write_text(json.dumps(params, indent=1, sort_keys=True))
            try:
                os.rename(tmp, final)
            except OSError:
                if not (final / "params.json").is_file():  # not another process winning the race
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final / str(params["benchmark"])
