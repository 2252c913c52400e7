"""Ahead-of-time compilation of Triton kernels for NVIDIA targets, with no GPU in the machine.

Triton compiles to PTX and cubin for any target with its bundled ptxas; ``cuobjdump`` (also
bundled) then reports registers, spills (local memory) and shared memory. Tests and
``skelfast bench --compile-report`` use this to prove every shipped kernel configuration builds
for sm_80 and sm_90 and fits the hardware.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass

# Largest dynamic shared memory a block may use (bytes): A100 (sm_80) 163 KiB, H100 (sm_90) 227 KiB.
MAX_SHARED = {80: 166912, 90: 232448}
ARCHS = (80, 90)


@dataclass(frozen=True)
class CompileReport:
    """What the compiler reports for one kernel configuration on one target."""

    kernel: str
    arch: int
    config: str
    registers: int
    spill_bytes: int  # LOCAL memory per thread: register spills (and local arrays)
    shared_bytes: int
    num_warps: int

    @property
    def fits(self) -> bool:
        return self.spill_bytes == 0 and self.shared_bytes <= MAX_SHARED[self.arch]


def _cuobjdump() -> str:
    import triton

    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


def compile_kernel(
    fn: object,
    signature: dict[str, str],
    constexprs: dict[str, object],
    arch: int,
    num_warps: int = 4,
    num_stages: int = 3,
) -> CompileReport:
    """Compile a ``@triton.jit`` function for ``sm_<arch>`` and read its resource usage.

    ``signature`` maps every parameter to a Triton type (``"*fp32"``, ``"i32"``, ``"fp32"``,
    ``"constexpr"``); ``constexprs`` gives the value of each constexpr parameter.
    Raises ``triton.compiler.CompilationError`` for a kernel that does not compile.
    """
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    src = ASTSource(fn=fn, signature=signature, constexprs=constexprs)
    compiled = triton.compile(
        src,
        target=GPUTarget("cuda", arch, 32),
        options={"num_warps": num_warps, "num_stages": num_stages},
    )
    name = getattr(fn, "__name__", None) or fn.fn.__name__  # JITFunction keeps the function in .fn
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.cubin")
        with open(path, "wb") as f:
            f.write(compiled.asm["cubin"])
        usage = subprocess.run(
            [_cuobjdump(), "--dump-resource-usage", path], capture_output=True, text=True, check=True
        ).stdout
    regs = int(re.search(r"REG:(\d+)", usage).group(1))
    local = int(re.search(r"LOCAL:(\d+)", usage).group(1))
    # Triton's shared memory is dynamic: the compiler's metadata has it, the cubin header does not.
    shared = int(compiled.metadata.shared)
    config = ",".join(f"{k}={v}" for k, v in sorted(constexprs.items()))
    return CompileReport(
        name, arch, f"{config},warps={num_warps},stages={num_stages}", regs, local, shared, num_warps
    )


# --- every shipped kernel configuration -------------------------------------------------------

# Each module lists its configurations as ``aot_specs() -> list[KernelSpec]``.
KERNEL_MODULES = ("skelfast.kernels.augment", "skelfast.kernels.dropout", "skelfast.kernels.info_nce")


@dataclass(frozen=True)
class KernelSpec:
    """One kernel configuration to compile ahead of time."""

    fn: object
    signature: dict[str, str]
    constexprs: dict[str, object]
    num_warps: int = 4
    num_stages: int = 3


def compile_module(module: str, archs: tuple[int, ...] = ARCHS) -> list[CompileReport]:
    """Compile every configuration that ``module.aot_specs()`` lists, for each target."""
    import importlib

    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise RuntimeError("AOT compilation needs real @triton.jit kernels: unset TRITON_INTERPRET")
    specs = importlib.import_module(module).aot_specs()
    return [
        compile_kernel(s.fn, s.signature, s.constexprs, arch, s.num_warps, s.num_stages)
        for s in specs
        for arch in archs
    ]


def compile_in_subprocess(modules: tuple[str, ...] = KERNEL_MODULES) -> subprocess.CompletedProcess:
    """Run ``python -m skelfast.aot MODULES`` without TRITON_INTERPRET (tests run interpreted)."""
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run(
        [sys.executable, "-m", "skelfast.aot", *modules], capture_output=True, text=True, env=env
    )


def main(argv: list[str] | None = None) -> int:
    """Print one JSON line per kernel configuration and target; exit 1 if any spills or
    exceeds shared memory, 2 if any fails to compile."""
    import json
    import sys

    modules = tuple(argv if argv is not None else sys.argv[1:]) or KERNEL_MODULES
    status = 0
    for module in modules:
        try:
            reports = compile_module(module)
        except Exception as exc:  # report every module, then fail
            print(json.dumps({"module": module, "error": f"{type(exc).__name__}: {exc}"}))
            status = 2
            continue
        for r in reports:
            print(json.dumps({"module": module, **r.__dict__, "fits": r.fits}))
            if not r.fits and status == 0:
                status = 1
    return status


if __name__ == "__main__":
    raise SystemExit(main())
