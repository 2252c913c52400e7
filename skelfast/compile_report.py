"""``skelfast bench --compile-report``: every shipped Triton kernel configuration compiled ahead of time
for sm_80 (A100) and sm_90 (H100), with registers, spills and shared memory, beside the performance
model of ``skelfast.perf_model``. Needs no GPU: Triton's bundled ptxas and cuobjdump do the work
(see ``skelfast.aot``), so CI can run it.

Exit status: 0 when everything compiles and fits, 1 if any configuration spills registers or needs
more shared memory than its target has, 2 if any fails to compile.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any

MAX_REGISTERS = 255  # per thread on sm_80/sm_90: a kernel at the cap may spill with the next change


def _pointer_dtype(signature: dict[str, str]) -> str:
    """The element type of the first data pointer (q_ptr, x_ptr): the configuration's input dtype."""
    return next((t.lstrip("*") for t in signature.values() if t.startswith("*")), "-")


def _worker(modules: list[str]) -> int:
    """Compile every configuration of ``modules`` (run without TRITON_INTERPRET); one JSON line each."""
    import importlib

    from skelfast import aot

    for module in modules:
        try:
            specs = importlib.import_module(module).aot_specs()
        except Exception as exc:  # report the module, go on with the others
            print(json.dumps({"module": module, "error": f"{type(exc).__name__}: {exc}"}), flush=True)
            continue
        for spec in specs:
            for arch in aot.ARCHS:
                row: dict[str, Any] = {
                    "module": module,
                    "dtype": _pointer_dtype(spec.signature),
                    "arch": arch,
                }
                try:
                    report = aot.compile_kernel(
                        spec.fn, spec.signature, spec.constexprs, arch, spec.num_warps, spec.num_stages
                    )
                    row.update(report.__dict__, max_shared=aot.MAX_SHARED[arch], fits=report.fits)
                except Exception as exc:
                    name = getattr(spec.fn, "__name__", None) or spec.fn.fn.__name__
                    row.update(kernel=name, error=f"{type(exc).__name__}: {exc}")
                print(json.dumps(row), flush=True)
    return 0


def compile_all(modules: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """Compile every configuration in a subprocess without TRITON_INTERPRET (which tests set, and
    which would hand out interpreted kernels that cannot be compiled) and return one dict per
    (configuration, arch): kernel, config, dtype, arch, registers, spill_bytes, shared_bytes,
    max_shared, fits; or module/kernel and error."""
    from skelfast import aot

    modules = modules or aot.KERNEL_MODULES
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, "-m", "skelfast.compile_report", "--worker", *modules],
        capture_output=True,
        text=True,
        env=env,
    )
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not rows:
        tail = proc.stderr.strip().splitlines()[-5:]
        rows.append({"module": ",".join(modules), "error": "the compile worker failed: " + " | ".join(tail)})
    return rows


def exit_status(rows: list[dict[str, Any]]) -> int:
    """2 if any configuration failed to compile, else 1 if any spills or overflows shared memory, else 0."""
    if any("error" in r for r in rows):
        return 2
    return 0 if all(r["fits"] for r in rows) else 1


def format_compile_table(rows: list[dict[str, Any]]) -> str:
    """The compile report as a markdown table."""
    lines = [
        "Triton kernels compiled ahead of time (ptxas via triton.compile; no GPU needed).",
        "",
        "| kernel | config | dtype | arch | registers | spills (B) | shared (B) | shared % of limit | status |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r.get('kernel', r['module'])} | | {r.get('dtype', '')} | {r.get('arch', '')} "
                         f"| | | | | FAILED: {r['error']} |")  # fmt: skip
            continue
        share = 100.0 * r["shared_bytes"] / r["max_shared"]
        problems = []
        if r["spill_bytes"]:
            problems.append("SPILLS")
        if r["shared_bytes"] > r["max_shared"]:
            problems.append("SHARED MEMORY TOO LARGE")
        status = ", ".join(problems) or (
            "ok (registers at the cap)" if r["registers"] >= MAX_REGISTERS else "ok"
        )
        lines.append(
            f"| {r['kernel']} | {r['config']} | {r['dtype']} | sm_{r['arch']} | {r['registers']} | "
            f"{r['spill_bytes']} | {r['shared_bytes']} | {share:.0f}% | {status} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the compile table and the performance model; return the exit status (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="skelfast bench --compile-report", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-model", action="store_true", help="skip the performance model table")
    parser.add_argument("modules", nargs="*", help="kernel modules (default: every shipped one)")
    args = parser.parse_args(argv)
    if args.worker:
        return _worker(args.modules)
    rows = compile_all(tuple(args.modules) or None)
    print(format_compile_table(rows))
    if not args.no_model:
        from skelfast import perf_model

        print()
        print(perf_model.format_table(perf_model.model_rows()))
    status = exit_status(rows)
    if status:
        print(
            f"\ncompile report: {'a kernel failed to compile' if status == 2 else 'a kernel spills or overflows shared memory'}"
        )
    return status


if __name__ == "__main__":
    raise SystemExit(main())
