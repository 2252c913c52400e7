"""Measurement helpers shared by the benchmark modules.

Benchmarks are not tests: they time things and report ratios measured in one run, against the
eager reference, torch.compile of it, and this machine's limits measured in the same run (sgemm
GFLOP/s for compute-bound ops, copy GB/s for memory-bound ones).
"""

from __future__ import annotations

import csv
import datetime
import functools
import math
import multiprocessing
import os
import platform
import statistics
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch

from skelfast.engine.allocator import tune_cpu_allocator

# Both sides of every comparison run under the same allocator settings, fixed here rather than by
# glibc's adaptive mmap threshold, whose history moved step times by 1.5x between runs.
ALLOCATOR = tune_cpu_allocator()

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


class ChildFailed(RuntimeError):
    """A benchmark run by ``run_in_child`` raised, or its process died before it answered."""


def _child_main(connection: object, fn: Callable[..., object], args: tuple) -> None:
    try:
        connection.send((True, fn(*args)))
    except BaseException:  # noqa: BLE001 - every failure goes back to the parent, as text
        connection.send((False, traceback.format_exc()))
    connection.close()


def run_in_child(fn: Callable[..., object], *args: object) -> object:
    """``fn(*args)`` in a fresh Python process (``spawn``), its picklable result sent back.

    Each large benchmark gets a process of its own: with the allocator pinned (``ALLOCATOR``) the
    heap never shrinks below its peak, and compile caches stay, so one process that ran the encoders
    and then HiCo's and HiCLR's steps and compiles reached 24 GiB in ISC's and the kernel killed it
    (2026-12-07 06:29). The child's output goes to this process's stdout and stderr. An exception in
    the child, or a child that dies without answering (killed by the kernel for memory: exit code
    -9), raises ``ChildFailed`` naming the call."""
    what = f"{getattr(fn, '__qualname__', fn)}{args!r}"
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child_main, args=(send, fn, args))
    child.start()
    send.close()  # the child holds the only writer: recv() sees EOF if it dies
    try:
        ok, value = receive.recv()
    except EOFError:
        child.join()
        code = child.exitcode
        why = " (SIGKILL: most likely the kernel's out-of-memory killer)" if code == -9 else ""
        raise ChildFailed(f"{what} died without a result, exit code {code}{why}") from None
    finally:
        receive.close()
    child.join()
    if not ok:
        raise ChildFailed(f"{what} raised in its child process:\n{value}")
    return value


def bench_device() -> torch.device:
    """Where the benchmarks run: ``SKELFAST_BENCH_DEVICE`` (``skelfast bench --device``), default cpu."""
    device = torch.device(os.environ.get("SKELFAST_BENCH_DEVICE", "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("SKELFAST_BENCH_DEVICE=cuda but torch sees no CUDA device")
    return device


def env_batch(name: str) -> int | None:
    """A batch-size override from the environment: unset or empty -> None (the official batch),
    else a positive integer; anything else raises naming the variable."""
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) == 0:
        raise ValueError(f"{name}={value!r}: expected a positive integer batch size, or leave it unset")
    return int(value)


def on_cuda() -> bool:
    return bench_device().type == "cuda"


@dataclass(frozen=True)
class Timing:
    """Wall time of one call in milliseconds: median and the 20th/80th percentiles."""

    median_ms: float
    q20_ms: float
    q80_ms: float

    def __str__(self) -> str:
        return f"{self.median_ms:.2f} ms [{self.q20_ms:.2f}, {self.q80_ms:.2f}]"


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _cuda_ms(fn: Callable[[], object]) -> float:
    """One call timed with CUDA events (device time between the two records)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def _wall_ms(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def time_fn(
    fn: Callable[[], object],
    repeats: int = 10,
    warmup: int = 2,
    min_time_s: float = 0.0,
    between: Callable[[], object] | None = None,
) -> Timing:
    """Median and spread of one call of ``fn()``: wall time on the CPU, CUDA events on a GPU.
    ``between`` runs after every call, untimed (e.g. ``gc.collect``)."""
    for _ in range(warmup):
        fn()
        if between is not None:
            between()
    _sync()
    one = _cuda_ms if on_cuda() else _wall_ms
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < repeats or (time.perf_counter() - start) < min_time_s:
        samples.append(one(fn))
        if between is not None:
            between()
    return _timing(samples)


def _timing(samples: Sequence[float]) -> Timing:
    q = statistics.quantiles(samples, n=5) if len(samples) >= 2 else [samples[0]] * 4
    return Timing(statistics.median(samples), q[0], q[3])


def time_interleaved(
    fns: Mapping[str, Callable[[], object]], repeats: int = 5, warmup: int = 1
) -> dict[str, Timing]:
    """``time_fn`` for the columns of one comparison, measured in turns (a, b, c, then c, b, a, ...)
    so that a machine that slows down or speeds up mid-run (this VM moves +-20% between minutes)
    shifts every column alike instead of whichever was timed last."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    _sync()
    one = _cuda_ms if on_cuda() else _wall_ms
    samples: dict[str, list[float]] = {name: [] for name in fns}
    order = list(fns)
    for round_index in range(repeats):
        for name in order if round_index % 2 == 0 else reversed(order):
            samples[name].append(one(fns[name]))
    return {name: _timing(values) for name, values in samples.items()}


@dataclass(frozen=True)
class _ConvCall:
    conv: torch.nn.Module
    inp: torch.Tensor
    grad: torch.Tensor | None  # None: forward only (the call ran without autograd recording)


def convolutions_alone(
    model: torch.nn.Module, forward: Callable[[], object]
) -> tuple[Callable[[], None], int]:
    """The convolutions of ``model`` with a kernel larger than one (ST-GCN's and AGCN's (9, 1)
    temporal convolutions, HCN's, HiCo's UDM), as one forward of ``forward()`` calls them: returns a
    call that runs each of them alone on fresh inputs of the recorded shapes (forward, and backward
    to the input and the weights where autograd recorded the real call: a key encoder's run forward
    only), and those calls' FLOPs (forward 2 * out.numel() * C_in / groups * kernel size, each
    backward product the same again). ``forward()`` runs once here, with its side effects (a
    method's queue and momentum update). The functional form runs them, without module hooks
    (FlopCounterMode adds some). These are oneDNN's convolutions in skelfast and in the official
    models alike, so their time bounds what skelfast can change."""
    convs = [
        m
        for m in model.modules()
        if isinstance(m, torch.nn.Conv1d | torch.nn.Conv2d) and math.prod(m.kernel_size) > 1
    ]
    calls: list[tuple[torch.nn.Module, torch.Size, bool, bool]] = []

    def record(conv: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        backward = torch.is_grad_enabled() and conv.weight.requires_grad
        calls.append((conv, args[0].shape, backward, backward and args[0].requires_grad))

    hooks = [conv.register_forward_pre_hook(record) for conv in convs]
    try:
        forward()
    finally:
        for hook in hooks:
            hook.remove()
    cases, flops = [], 0
    for conv, shape, backward, input_grad in calls:
        if conv.padding_mode != "zeros":
            raise ValueError(f"convolutions_alone: {conv} pads with {conv.padding_mode!r}, not zeros")
        inp = torch.randn(shape, device=conv.weight.device, requires_grad=input_grad)
        with torch.no_grad():
            out = conv(inp)
        forward_flops = 2 * out.numel() * conv.in_channels // conv.groups * math.prod(conv.kernel_size)
        flops += forward_flops * (1 + int(backward) + int(input_grad))
        cases.append(_ConvCall(conv, inp, torch.randn_like(out) if backward else None))

    def run() -> None:
        for case in cases:
            conv = case.conv
            functional = (
                torch.nn.functional.conv1d
                if isinstance(conv, torch.nn.Conv1d)
                else torch.nn.functional.conv2d
            )
            with torch.set_grad_enabled(case.grad is not None):
                out = functional(
                    case.inp, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups
                )
                if case.grad is not None:
                    wanted = [
                        t for t in (case.inp, conv.weight, conv.bias) if t is not None and t.requires_grad
                    ]
                    torch.autograd.grad(out, wanted, case.grad)

    return run, flops


def peak_extra_memory(fn: Callable[[], object]) -> int:
    """Peak bytes allocated by ``fn()`` above what was allocated before it (tensors kept alive by
    its result included). On the CPU this replays torch.profiler's allocation events; on CUDA it
    reads ``max_memory_allocated``."""
    if on_cuda():
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        result = fn()
        torch.cuda.synchronize()
        del result
        return torch.cuda.max_memory_allocated() - base
    with torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True
    ) as prof:
        result = fn()
    del result
    # Each "[memory]" record is one allocation (+bytes) or free (-bytes) of the CPU allocator.
    records = prof.profiler.kineto_results.events()
    events = sorted((e.start_ns(), e.nbytes()) for e in records if e.name() == "[memory]")
    current = peak = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak


@functools.cache
def sgemm_probe(n: int = 2048) -> tuple[Callable[[], object], float]:
    """An n x n float32 matmul on the bench device and its flop count: timed in turns with a kernel
    (``time_interleaved``), its rate is the sgemm reference of the minutes the kernel ran in."""
    a, b = torch.randn(n, n, device=bench_device()), torch.randn(n, n, device=bench_device())
    return (lambda: a @ b), 2.0 * n**3


def sgemm_gflops(n: int = 2048) -> float:
    """The bench device's float32 matrix-multiply rate (GFLOP/s): torch's BLAS on all CPU threads,
    cuBLAS on a GPU (TF32 off, as torch's default for fp32 matmul)."""
    if on_cuda():
        n = max(n, 8192)
    matmul, flops = sgemm_probe(n)
    t = time_fn(matmul, repeats=5, warmup=2)
    return flops / (t.median_ms * 1e-3) / 1e9


@functools.cache
def copy_gbps(nbytes: int = 256 * 2**20) -> float:
    """This machine's memory copy bandwidth (GB/s: bytes read + bytes written per second)."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=bench_device()).uniform_()
    dst = torch.empty_like(src)
    t = time_fn(lambda: dst.copy_(src), repeats=10, warmup=2)
    return 2 * nbytes / (t.median_ms * 1e-3) / 1e9


def compiled(fn: Callable, **kwargs: object) -> Callable:
    """``torch.compile(fn)`` (inductor), the baseline a kernel must beat besides eager."""
    return torch.compile(fn, **kwargs)


# widest first: (what the description says, the /proc/cpuinfo flag that shows it)
_VECTOR_UNITS = (("AMX", "amx_tile"), ("AVX-512", "avx512f"), ("AVX2", "avx2"))


def cpu_description(cpuinfo: str | None = None) -> str:
    """The CPU's model name, family/model numbers and widest vector unit, from /proc/cpuinfo
    (``cpuinfo``: its text, for tests): this project's VMs change CPU between sessions (an AVX2 EPYC,
    an Ice Lake and a Sapphire Rapids Xeon so far, the Xeons under the same generic model name), and
    ratios move with it, so every result row says which one measured it. Falls back to
    ``platform.processor()`` or "cpu" where there is no /proc/cpuinfo."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return platform.processor() or "cpu"
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            if fields:  # the first processor's block is enough: the cores are alike
                break
            continue
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or "cpu"
    details = []
    if "cpu family" in fields:
        details.append(f"family {fields['cpu family']} model {fields.get('model', '?')}")
    flags = set(fields.get("flags", "").split())
    details += [unit for unit, flag in _VECTOR_UNITS if flag in flags][:1]
    return f"{name} [{', '.join(details)}]" if details else name


def machine() -> dict[str, str]:
    """Who measured: machine, versions and date, stored with every result row."""
    if on_cuda():
        device = torch.cuda.get_device_name(bench_device())
    else:
        device = f"{cpu_description()} ({torch.get_num_threads()} threads)"
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M"),
        "device": device,
        "torch": torch.__version__,
    }


def run_cases(
    cases: Iterable[object], run_case: Callable[[object], dict[str, object]]
) -> list[dict[str, object]]:
    """``run_case(case)`` for each case, each row printed as it is measured; returns the rows."""
    rows = []
    for case in cases:
        row = run_case(case)
        print(row, flush=True)
        rows.append(row)
    return rows


def markdown_table(rows: Sequence[dict[str, object]]) -> str:
    """Rows (dicts with the same keys) as a markdown table."""
    if not rows:
        return ""
    keys = list(rows[0])

    def fmt(v: object) -> str:
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r.get(k, "")) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def write_results(
    name: str,
    rows: Sequence[dict[str, object]],
    note: str = "",
    csv_rows: Sequence[dict[str, object]] | None = None,
) -> str:
    """Write ``results/<name>.md`` (a table of ``rows``, with the machine line) and append
    ``csv_rows`` (default: ``rows``; a benchmark that writes after each case passes the new one) to
    ``results/results.csv``; returns the markdown."""
    os.makedirs(RESULTS_DIR, exist_ok=True)
    info = machine()
    header = (
        f"Measured {info['date']} UTC on {info['device']}, torch {info['torch']}; allocator: {ALLOCATOR}."
    )
    text = "\n\n".join(filter(None, [header, note, markdown_table(rows)])) + "\n"
    with open(os.path.join(RESULTS_DIR, f"{name}.md"), "w") as f:
        f.write(text)
    path = os.path.join(RESULTS_DIR, "results.csv")
    new = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(["date", "device", "torch", "benchmark", "case", "metric", "value"])
        for row in rows if csv_rows is None else csv_rows:
            case = row.get("case", "")
            for key, value in row.items():
                if key != "case":
                    writer.writerow([info["date"], info["device"], info["torch"], name, case, key, value])
    return text
