"""Backend choice for skelfast ops: which implementation runs a call, and why.

Every public op has up to four implementations:

- ``reference``: pure PyTorch (``skelfast.reference``), the literal form, always available;
- ``torch``: a faster pure-PyTorch path where one measures faster on the CPU than the reference
  (vectorised, or chunked to bound memory);
- ``cpp``: the compiled extension ``skelfast._C`` (CPU kernels, and CUDA kernels when built with CUDA);
- ``triton``: the Triton kernels in ``skelfast.kernels`` (CUDA tensors, or CPU tensors under
  ``TRITON_INTERPRET=1``).

An op lists, per backend, a check that returns ``None`` when that backend can run a call and a
reason string when it cannot. Automatic choice takes the first backend in the op's preference
order that can run; a backend forced by name (``SKELFAST_BACKEND`` or :func:`use_backend`) that
cannot run raises :class:`BackendUnavailableError` with the reason instead of falling back.

``SKELFAST_BACKEND`` is either one name (``reference``, ``torch``, ``cpp``, ``triton``) for every op, or a
comma-separated list of ``op=name`` pairs, e.g. ``graph_conv=cpp,info_nce=reference``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Callable, Iterator, Mapping, Sequence

import torch

from skelfast._extension import once

BACKENDS = ("reference", "torch", "cpp", "triton")

# A check receives the call's tensors' device (and may look at more through a closure) and
# returns None when the backend can run, else a human-readable reason.
Check = Callable[..., "str | None"]

_forced_stack: list[str] = []


class BackendUnavailableError(RuntimeError):
    """A backend asked for by name cannot run this call; the message says why."""


def _parse_forced(spec: str) -> dict[str, str]:
    """Parse ``SKELFAST_BACKEND``-style text into ``{op or "*": backend}``."""
    out: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        op, _, name = item.rpartition("=")
        if name not in BACKENDS:
            raise ValueError(
                f"SKELFAST_BACKEND: unknown backend {name!r} in {spec!r}; expected one of {BACKENDS}"
            )
        out[op or "*"] = name
    return out


def forced_backend(op: str) -> str | None:
    """The backend forced for ``op`` by :func:`use_backend` or ``SKELFAST_BACKEND``, if any."""
    for spec in reversed(_forced_stack):
        forced = _parse_forced(spec)
        if op in forced or "*" in forced:
            return forced.get(op, forced.get("*"))
    forced = _parse_forced(os.environ.get("SKELFAST_BACKEND", ""))
    return forced.get(op, forced.get("*"))


@contextlib.contextmanager
def use_backend(spec: str) -> Iterator[None]:
    """Force a backend inside a ``with`` block: ``use_backend("reference")`` for every op, or
    ``use_backend("graph_conv=cpp")`` for one. Takes precedence over ``SKELFAST_BACKEND``."""
    _parse_forced(spec)  # validate now, not at the first op call
    _forced_stack.append(spec)
    try:
        yield
    finally:
        _forced_stack.pop()


def choose(op: str, checks: Mapping[str, Callable[[], str | None]], order: Sequence[str]) -> str:
    """Pick the backend for one call of ``op``.

    ``checks`` maps each backend the op implements to a no-argument check (``None`` = can run,
    else the reason it cannot); ``order`` is the automatic preference order.
    """
    forced = forced_backend(op)
    if forced is not None:
        if forced not in checks:
            raise BackendUnavailableError(
                f"{op}: backend {forced!r} was forced, but {op} has no {forced} implementation "
                f"(it has: {', '.join(checks)})"
            )
        reason = checks[forced]()
        if reason is not None:
            raise BackendUnavailableError(f"{op}: backend {forced!r} was forced but cannot run: {reason}")
        return forced
    for name in order:
        if name in checks and checks[name]() is None:
            return name
    raise BackendUnavailableError(f"{op}: no backend can run this call")  # reference never refuses


def constant_under_compile(fn: Callable) -> Callable:
    """``torch.compiler.assume_constant_result`` without its import of ``torch._dynamo``, which
    costs ~2.6 s at ``import skelfast``: Dynamo only reads this marker when it traces a call
    (tests/test_backends.py checks that the public decorator sets the same one)."""
    fn._dynamo_marked_constant = True  # type: ignore[attr-defined]
    return fn


# ---------------------------------------------------------------------------------------------
# Availability of each backend on this machine (cached: none of it changes inside a process).


@once
def cpp_extension_error() -> str | None:
    """Why ``skelfast._C`` could not be loaded, or ``None`` if it is loaded."""
    from skelfast import _extension

    return _extension.load_error()


def cpp_reason(device: torch.device, dtype: torch.dtype, supported: Sequence[torch.dtype]) -> str | None:
    """Whether the compiled extension can run a call on ``device`` with ``dtype``."""
    err = cpp_extension_error()
    if err is not None:
        return f"the compiled extension skelfast._C is not available ({err})"
    if device.type == "cuda":
        from skelfast import _extension

        if not _extension.built_with_cuda():
            return "skelfast._C was built without CUDA kernels (CPU-only torch at build time)"
    elif device.type != "cpu":
        return f"skelfast._C has no kernels for device type {device.type!r}"
    if dtype not in supported:
        names = ", ".join(str(d).removeprefix("torch.") for d in supported)
        return f"the cpp kernels support {names}, not {str(dtype).removeprefix('torch.')}"
    return None


def triton_interpreting() -> bool:
    """True when Triton kernels run in the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@once
def triton_import_error() -> str | None:
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed"
    try:
        import triton  # noqa: F401
    except Exception as exc:  # a broken triton install must not break skelfast
        return f"import triton failed: {exc!r}"
    return None


def triton_reason(device: torch.device) -> str | None:
    """Whether Triton kernels can run on ``device`` in this process."""
    err = triton_import_error()
    if err is not None:
        return err
    if device.type == "cuda":
        return None
    if device.type == "cpu":
        if triton_interpreting():
            return None
        return "CPU tensors run Triton kernels only under TRITON_INTERPRET=1 (the slow interpreter)"
    return f"Triton kernels do not run on device type {device.type!r}"
