"""``python -m skelfast info``: versions, and which backends are built and available, and why not."""

from __future__ import annotations

import importlib.metadata
import platform
import shutil

import torch

from skelfast import _extension, backends


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def report() -> list[tuple[str, str]]:
    """(name, status) rows describing this installation."""
    import skelfast

    rows = [
        ("skelfast", skelfast.__version__),
        ("python", platform.python_version()),
        ("torch", torch.__version__),
        ("triton", _version("triton")),
        ("numpy", _version("numpy")),
        ("cpu threads", str(torch.get_num_threads())),
        ("cuda device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"),
        ("nvcc", shutil.which("nvcc") or "not found (the CUDA compile checks are skipped)"),
    ]
    err = _extension.load_error()
    rows.append(("backend cpp (CPU)", "available" if err is None else f"unavailable: {err}"))
    if err is not None:
        cuda = "unavailable: the extension is not loaded"
    elif _extension.built_with_cuda():
        cuda = "built" + ("" if torch.cuda.is_available() else ", but no CUDA device is visible")
    else:
        cuda = "not built: the installed torch has no CUDA (torch.version.cuda is None)"
    rows.append(("backend cpp (CUDA)", cuda))
    gpu = backends.triton_reason(torch.device("cuda"))
    rows.append(
        (
            "backend triton (CUDA)",
            "available"
            if gpu is None and torch.cuda.is_available()
            else f"unavailable: {gpu or 'no CUDA device'}",
        )
    )
    cpu = backends.triton_reason(torch.device("cpu"))
    rows.append(("backend triton (interpreter)", "available" if cpu is None else f"unavailable: {cpu}"))
    rows.append(("backend reference", "available (pure PyTorch, every device)"))
    forced = backends.forced_backend("*")
    rows.append(("SKELFAST_BACKEND", forced or "not set (automatic choice per call)"))
    return rows


def main() -> None:
    rows = report()
    width = max(len(name) for name, _ in rows)
    for name, status in rows:
        print(f"{name:<{width}}  {status}")
