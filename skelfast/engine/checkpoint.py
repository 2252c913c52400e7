"""A run's state on disk: atomic checkpoint and config writes, safe loads, RNG state capture.

A checkpoint is ``torch.save`` of a plain dict (tensors, numbers, strings, lists, dicts) so it loads
with ``torch.load(weights_only=True)``, which never executes pickled code:

    {"format": "skelfast-checkpoint-1", "config": {...}, "method": method.state_dict(),
     "stage": str, "stage_index": int, "epoch": int, "batch_in_epoch": int, "step": int,
     "optimizer": ..., "scheduler": ..., "rng": [per-rank states], "world_size": int,
     "metrics_tail": [...]}

Every file is written to a temporary name in its own folder, flushed and fsynced, then
``os.replace``d onto the final name (and the folder fsynced): a writer killed at any moment leaves
the old file or the new one, never half of one. ``save_checkpoint`` also keeps the replaced file as
``<name>.prev.pt``, the fallback when the newest file is damaged after the fact.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

FORMAT = "skelfast-checkpoint-1"
LAST = "checkpoint_last.pt"
CONFIG = "config.toml"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: corrupt, truncated, or not a skelfast checkpoint."""


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders; the replace is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(file)`` on a temporary file next to ``path``, fsync it, and move it onto ``path``.

    If ``write`` raises (or the process dies), ``path`` keeps its previous content and the temporary
    file is removed (or, after a kill, left as a hidden ``.<name>.*.tmp`` beside it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def previous_path(path: str | Path) -> Path:
    """Where ``save_checkpoint`` keeps the file it replaced: ``checkpoint_last.pt`` -> ``checkpoint_last.prev.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save_checkpoint(state: dict[str, Any], path: str | Path, keep_previous: bool = True) -> Path:
    """``torch.save(state)`` atomically; with ``keep_previous`` the replaced file becomes ``<stem>.prev.pt``.

    The previous file is hard-linked (copied where links are not supported) to its new name before
    the replace, so at every moment ``path`` holds a complete checkpoint.
    """
    path = Path(path)
    if keep_previous and path.exists():
        snapshot(path, previous_path(path))
    return atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", require_format: bool = True
) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; a damaged file raises ``CheckpointError`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError, ... by damage kind
        hint = ""
        prev = previous_path(path)
        if prev.is_file():
            hint = f"; the checkpoint before it is {prev}"
        raise CheckpointError(
            f"{path}: cannot be read as a checkpoint (corrupt or truncated file, or one holding "
            f"arbitrary Python objects, which weights_only loading refuses){hint}. Cause: {err}"
        ) from err
    if require_format and (not isinstance(state, dict) or state.get("format") != FORMAT):
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path}: not a skelfast checkpoint (format {found!r}, expected {FORMAT!r})")
    return state


# --- config files ------------------------------------------------------------------------------------


def _toml_value(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v, where) for v in value) + "]"
    raise ValueError(f"config value {where} = {value!r} has no TOML form (type {type(value).__name__})")


def _toml_key(key: str) -> str:
    bare = key and all(c.isascii() and (c.isalnum() or c in "_-") for c in key)
    return key if bare else json.dumps(key)


def to_toml(config: dict[str, Any]) -> str:
    """A TOML document for a config (nested dicts of numbers, strings, booleans and lists)."""
    lines: list[str] = []

    def table(node: dict[str, Any], path: tuple[str, ...]) -> None:
        subtables = [(key, value) for key, value in node.items() if isinstance(value, dict)]
        body = [(key, value) for key, value in node.items() if not isinstance(value, dict)]
        if path and (body or not subtables):
            lines.append(f"\n[{'.'.join(_toml_key(p) for p in path)}]")
        for key, value in body:
            lines.append(f"{_toml_key(key)} = {_toml_value(value, '.'.join((*path, key)))}")
        for key, value in subtables:
            table(value, (*path, key))

    table(config, ())
    return "\n".join(lines).lstrip("\n") + "\n"


def save_config(config: dict[str, Any], path: str | Path) -> Path:
    """Write a config as TOML (atomically); ``skelfast.configs.load_config(path)`` reads it back."""
    text = to_toml(config)
    return atomic_write(path, lambda f: f.write(text.encode()))


# --- random number generator states --------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """The global RNG states this process draws from (torch CPU, current CUDA device, numpy,
    Python ``random``), in a form ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": int(version), "internal": list(internal), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` captured (the CUDA state only where CUDA is in use)."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].cpu())


def snapshot(src: str | Path, dst: str | Path) -> Path:
    """Keep the current content of checkpoint ``src`` as ``dst`` (a hard link where the file system
    allows: later atomic replaces of ``src`` make a new file and leave ``dst`` alone)."""
    src, dst = Path(src), Path(dst)
    staging = dst.with_name(f".{dst.name}.link")
    with contextlib.suppress(FileNotFoundError):
        staging.unlink()
    try:
        os.link(src, staging)
        os.replace(staging, dst)
        _fsync_dir(dst.parent)
    except OSError:
        atomic_write(dst, lambda f: f.write(src.read_bytes()))
    return dst
