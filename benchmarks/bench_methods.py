"""Pretraining steps/s of each method at its official batch size: every skelfast op on its fastest
backend (fused) against every op on its pure-PyTorch reference (``use_backend("reference")``),
same weights, same batch, same random draws.

One step = the method's forward (views, momentum update, key pass, loss, enqueue) + backward +
the optimizer step of its official recipe. The batch is synthetic NTU-layout data prepared with the
method's normalisation (``[data] normalization`` of its config). Targets (issue #6): >= 1.5x for
HiCLR and ISC, >= 1.2x for HiCo and CRRL.

Besides the full step, each row times the forward alone (fused and reference, autograd on), the
reference forward under ``torch.compile(dynamic=False)`` (loss only; graph breaks such as the
recipes' ``int(valid.min())`` are allowed, so it compiles several graphs), and one
step's peak extra memory for both paths. A compile that fails or runs past
``SKELFAST_BENCH_COMPILE_LIMIT_S`` (default 180 s) or grows the process by more than
``SKELFAST_BENCH_COMPILE_MEMORY`` (default 0.6) of the memory available when it starts is reported
as "n/a (why)" in its cell (ISC's reference, whose traced graph unrolls the GRUs' 64 frames, grew
past this machine's 24 GiB and the kernel killed the whole run); ``SKELFAST_BENCH_METHOD_COMPILE=0``
skips it. Each method runs in a process of its own (``run_in_child``), and the table and
results.csv are written after each one, so a method that fails or is killed costs its own row only.

``attainable x reference`` bounds what an implementation that keeps oneDNN's convolutions can
reach: the reference step over (the method's convolutions alone on oneDNN, timed in the same turns,
+ every other FLOP of the reference step at the sgemm rate of the same turns). The rest at the sgemm
rate is more than the GRUs' recurrent products or the small matmuls reach, so the bound is generous.
skelfast itself runs the ST-GCN's and AGCN's temporal convolutions of 32 channels and more in the
frequency form (``skelfast.ops.temporal_conv``, 3-5x fewer multiplications), so its column can pass
the bound.

Run: ``python -m benchmarks.bench_methods`` (or ``make bench BENCH=methods``);
``SKELFAST_BENCH_METHODS=hiclr,isc`` picks methods (any config name in skelfast/configs, e.g.
``hiclr_transformer``, HiCLR with its DSTA-Net backbone, which runs with its method's target and is
not in the default list), ``SKELFAST_BENCH_METHOD_BATCH=16`` shrinks the batch.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import (
    ChildFailed,
    Timing,
    convolutions_alone,
    env_batch,
    peak_extra_memory,
    run_in_child,
    sgemm_probe,
    time_fn,
    time_interleaved,
    write_results,
)
from skelfast import use_backend
from skelfast.configs import load_config
from skelfast.data import normalize, synthetic
from skelfast.engine.allocator import release_free_memory
from skelfast.methods import build_method

TARGETS = {"hico": 1.2, "hiclr": 1.5, "isc": 1.5, "crrl": 1.2}


def batch_for(config: dict, batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A synthetic batch (x (B, 3, T, 25, 2), lengths (B,)) prepared as the method's data is."""
    data = synthetic.generate(num_samples=batch, num_classes=min(batch, 60), seed=seed)
    how = config.get("data", {}).get("normalization", "agcn")
    x, lengths = normalize.normalize(data.data, data.num_frame, how)
    return torch.from_numpy(x), torch.from_numpy(lengths).long()


def _trainer(name: str, config: dict) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    method = build_method(config.get("method", name), config.get("model"))
    method.set_stage(method.stages()[0])
    train = config.get("train", {})
    opt = torch.optim.SGD(
        [p for p in method.parameters() if p.requires_grad],
        lr=float(train.get("lr", 0.01)),
        momentum=float(train.get("momentum", 0.9)),
        weight_decay=float(train.get("weight_decay", 0.0)),
    )
    return method, opt


COMPILE_LIMIT_S = float(os.environ.get("SKELFAST_BENCH_COMPILE_LIMIT_S", "180"))
COMPILE_MEMORY = float(os.environ.get("SKELFAST_BENCH_COMPILE_MEMORY", "0.6"))


class CompileTimeout(Exception):
    """torch.compile of a method's reference forward ran past ``COMPILE_LIMIT_S``, or grew the
    process past its memory allowance."""


def resident_bytes() -> int | None:
    """This process's resident memory (Linux /proc), None where it cannot be read."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def available_bytes() -> int | None:
    """The memory the kernel can give without swapping (Linux MemAvailable), None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


@contextlib.contextmanager
def _compile_limits(seconds: float, extra_bytes: int | None) -> Iterator[None]:
    """Raise :class:`CompileTimeout` in this thread once ``seconds`` have passed or the process has
    grown by more than ``extra_bytes`` (None: no memory limit): a SIGALRM every second checks both
    (no limit where the platform or thread has no such timer). Dynamo and inductor compile in
    Python, so the alarm interrupts them; it keeps repeating because the compiler catches and
    swallows some exceptions (a single alarm let one tiny-config compile run 689 s past a 3 s limit).
    The memory check turns what would be the kernel's OOM kill of the whole run into one "n/a" cell."""
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable or seconds <= 0:
        yield
        return
    armed, start = [True], time.perf_counter()
    start_rss = resident_bytes() if extra_bytes is not None else None

    def check(signum: int, frame: object) -> None:
        if not armed[0]:  # not once the block has ended: the raise would escape the cleanup below
            return
        if time.perf_counter() - start > seconds:
            raise CompileTimeout(f"compile took > {seconds:.0f} s")
        rss = resident_bytes() if start_rss is not None else None  # start_rss: None without a limit
        if rss is not None and rss - start_rss > extra_bytes:
            raise CompileTimeout(f"compile grew the process by > {extra_bytes / 2**30:.1f} GiB")

    previous = signal.signal(signal.SIGALRM, check)
    signal.setitimer(signal.ITIMER_REAL, min(1.0, seconds), 1.0)
    try:
        yield
    finally:
        armed[0] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _compiled_reference_forward(
    method: torch.nn.Module, x: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator
) -> tuple[Callable[[], object] | None, str]:
    """``torch.compile(dynamic=False)`` of the reference method's forward (loss only) and the first
    call that compiles it, under ``COMPILE_LIMIT_S``; returns (the call, "") or (None, "n/a (why)").

    The graph is traced under ``use_backend("reference")`` and only ever called under it; graph
    breaks (the generator draws, the in-place queue and momentum updates) are allowed."""
    if os.environ.get("SKELFAST_BENCH_METHOD_COMPILE", "1") == "0":
        return None, "n/a (skipped: SKELFAST_BENCH_METHOD_COMPILE=0)"

    def loss(x: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return method(x, lengths, generator).loss

    compiled_loss = torch.compile(loss, dynamic=False)

    def call() -> object:
        with use_backend("reference"):
            return compiled_loss(x, lengths, generator.manual_seed(0))

    release_free_memory()  # the fused and reference paths' freed heap, before the compiler's own
    start = time.perf_counter()
    available = available_bytes()
    try:
        with _compile_limits(COMPILE_LIMIT_S, None if available is None else int(COMPILE_MEMORY * available)):
            call()
        gc.collect()  # the first call's graph (see run_case)
    except Exception as e:  # noqa: BLE001 - any compiler failure is a result to report, not a crash
        torch._dynamo.reset()
        gc.collect()  # what the stopped compile held, before the timed turns
        cause: BaseException | None = e
        while cause is not None and not isinstance(cause, CompileTimeout):  # dynamo wraps it
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            return None, f"n/a ({cause})"
        first_line = str(e).splitlines()[0][:80] if str(e) else ""
        return None, f"n/a ({type(e).__name__}: {first_line})"
    return call, f"compiled in {time.perf_counter() - start:.0f} s"


def compiled_forward_timing(name: str, batch: int, repeats: int) -> tuple[Timing | None, str]:
    """The reference forward of method ``name`` under torch.compile, compiled and timed: (timing,
    "compiled in ... s") or (None, "n/a (why)"). ``run_case`` runs it in a process of its own: the
    compile grows the heap by up to ``COMPILE_MEMORY`` of the available memory, and with the
    allocator pinned that heap stayed for the rest of the row, where ISC's reference step under the
    memory profiler then took the process past 24 GiB (killed twice, 2026-12-07 06:29 and 07:05).
    The weights are the ones run_case's methods start from (same seed, same builder)."""
    config = load_config(name)
    x, lengths = batch_for(config, batch)
    torch.manual_seed(0)
    reference, _ = _trainer(name, config)
    call, note = _compiled_reference_forward(reference, x, lengths, torch.Generator())
    if call is None:
        return None, note
    # a collection after each compiled call, untimed: the compiled forward leaves its autograd graph
    # in a reference cycle, so without one every call's activations stayed (ISC: ~5.7 GiB a call;
    # the third call had the kernel kill the run)
    return time_fn(call, repeats=repeats, warmup=1, between=gc.collect), note


def run_case(name: str, batch: int | None = None, repeats: int = 4) -> dict[str, object]:
    """One method's row: fused against all-reference, forward only and full step (forward,
    backward, SGD), the reference forward under torch.compile, and one step's peak extra memory."""
    config = load_config(name)
    batch = batch or int(config["train"]["batch_size"])
    x, lengths = batch_for(config, batch)
    torch.manual_seed(0)
    fused, fused_opt = _trainer(name, config)
    reference = copy.deepcopy(fused)
    reference_opt = type(fused_opt)(
        [p for p in reference.parameters() if p.requires_grad], **fused_opt.defaults
    )
    generator = torch.Generator()  # re-seeded before every call: the same draws in every path

    def forward(method: torch.nn.Module) -> torch.Tensor:
        return method(x, lengths, generator.manual_seed(0)).loss

    def step(method: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
        opt.zero_grad(set_to_none=True)
        forward(method).backward()
        opt.step()

    def reference_forward() -> torch.Tensor:
        with use_backend("reference"):
            return forward(reference)

    def reference_step() -> None:
        with use_backend("reference"):
            step(reference, reference_opt)

    def peak_step_mib(method: torch.nn.Module, opt: torch.optim.Optimizer, backend: str | None) -> float:
        # gradients freed before, not inside, the measured call: their reallocation then counts
        opt.zero_grad(set_to_none=True)
        with use_backend(backend) if backend else contextlib.nullcontext():
            return peak_extra_memory(lambda: step(method, opt)) / 2**20

    # forward only: autograd on, as in training (the graph is built, then dropped); the two columns
    # of each comparison are timed in turns (time_interleaved), so a drifting machine moves both
    forward_times = time_interleaved(
        {"fused": lambda: forward(fused), "reference": reference_forward}, repeats=repeats, warmup=1
    )
    f_fused, f_ref = forward_times["fused"], forward_times["reference"]
    release_free_memory()  # the forwards' freed heap, back to the system for the compile's process
    f_compiled, compile_note = run_in_child(compiled_forward_timing, name, batch, repeats)

    # the bound: the method's convolutions alone on oneDNN and every other FLOP of the reference
    # step at the sgemm rate, all timed in the same turns as the two steps
    convolutions, conv_flops = convolutions_alone(fused, lambda: forward(fused))
    matmul, matmul_flops = sgemm_probe()
    step_times = time_interleaved(
        {
            "fused": lambda: step(fused, fused_opt),
            "reference": reference_step,
            "convolutions": convolutions,
            "sgemm": matmul,
        },
        repeats=repeats,
        warmup=1,
    )
    t_fused, t_ref = step_times["fused"], step_times["reference"]
    with FlopCounterMode(display=False) as counter:
        reference_step()
    gflops = matmul_flops / (step_times["sgemm"].median_ms * 1e6)
    t_conv = step_times["convolutions"].median_ms
    bound_ms = t_conv + (counter.get_total_flops() - conv_flops) / (gflops * 1e6)
    mem_fused = peak_step_mib(fused, fused_opt, None)
    mem_ref = peak_step_mib(reference, reference_opt, "reference")
    speedup = t_ref.median_ms / t_fused.median_ms
    return {
        "method": name,
        "batch": batch,
        "fused steps/s": round(1e3 / t_fused.median_ms, 3),
        "fused ms [q20, q80]": str(t_fused),
        "reference steps/s": round(1e3 / t_ref.median_ms, 3),
        "reference ms [q20, q80]": str(t_ref),
        "x reference": round(speedup, 3),
        "target": f">= {TARGETS[config['method']]}x",
        "met": "yes" if speedup >= TARGETS[config["method"]] else "no",
        "fwd ms [q20, q80]": str(f_fused),
        "reference fwd ms": round(f_ref.median_ms, 2),
        "fwd x reference": round(f_ref.median_ms / f_fused.median_ms, 2),
        "compiled reference fwd ms": round(f_compiled.median_ms, 2) if f_compiled else compile_note,
        "fwd x compiled": round(f_compiled.median_ms / f_fused.median_ms, 2) if f_compiled else "n/a",
        "compile": compile_note if f_compiled else "",
        "GFLOP a step": round(counter.get_total_flops() / 1e9, 1),
        "convolutions share": round(t_conv / t_fused.median_ms, 2),
        "convolutions GFLOP/s": round(conv_flops / (t_conv * 1e6), 1) if conv_flops else "n/a",
        "sgemm GFLOP/s": round(gflops, 1),
        "attainable x reference": round(t_ref.median_ms / bound_ms, 2),
        "fused peak MiB": round(mem_fused, 1),
        "reference peak MiB": round(mem_ref, 1),
        "peak vs reference": round(mem_fused / mem_ref, 3) if mem_ref > 0 else "n/a",
    }


def main() -> list[dict[str, object]]:
    names = os.environ.get("SKELFAST_BENCH_METHODS", ",".join(TARGETS)).split(",")
    batch = env_batch("SKELFAST_BENCH_METHOD_BATCH")
    rows = []
    for name in names:
        # each method in a process of its own: the one before leaves its heap at its peak (the
        # allocator is pinned) and its compile caches, and ISC's step and compile need most of the
        # 24 GiB themselves (a run of all four in one process was killed in ISC's, 2026-12-07)
        try:
            row = run_in_child(run_case, name.strip(), batch)
        except ChildFailed as error:
            print(f"methods: {name.strip()} did not finish: {error}", file=sys.stderr, flush=True)
            continue
        print(row, flush=True)
        rows.append(row)
        # after each method: a run stopped later keeps this row
        write_results("methods", rows, note=NOTE, csv_rows=[row])
    return rows


NOTE = (
    "one pretraining step (forward, backward, SGD) at the official batch size; "
    "fused = every op on its fastest backend, reference = use_backend('reference'). "
    "'fwd' columns time the forward alone (views, momentum update, key pass, loss, enqueue; "
    "autograd on); 'compiled reference fwd' is torch.compile(dynamic=False) of the reference "
    f"forward returning the loss, n/a where it failed, compiled for more than {COMPILE_LIMIT_S:.0f} s "
    f"or grew the process by more than {COMPILE_MEMORY:.0%} of the available memory (the reason is in "
    "the cell). Peak MiB: one full step's peak extra memory (gradients included). "
    "Targets apply to the full step ('x reference'). 'convolutions': the method's convolutions with "
    "a kernel larger than one alone on oneDNN (as the reference runs them; forward only where the method runs "
    "them without autograd, as in key encoders), timed in the same turns as the steps; "
    "'attainable x reference': the reference step over (those convolutions + every other FLOP "
    "of the reference step, counted by FlopCounterMode, at the sgemm rate of the same turns), the "
    "most any implementation that keeps oneDNN's convolutions can reach (skelfast runs the temporal ones "
    "of >= 128 channels in the frequency form, so it can pass it)."
)


# --- pytest-benchmark cases (CI runs them once with --benchmark-disable: tiny models) -------------

TINY = {  # options that shrink each method's encoders and queues so one step takes milliseconds
    "hico": {
        "hidden_size": 16,
        "num_head": 2,
        "feature_dim": 8,
        "frames": 16,
        "min_crop_length": 16,
        "queue_size": 16,
    },
    "hiclr": {"hidden_channels": 4, "hidden_dim": 8, "feature_dim": 8, "queue_size": 32},
    "isc": {
        "pair": "seq-image",
        "frames": 16,
        "gru_hidden": 8,
        "gru_layers": 1,
        "hcn_channels": 8,
        "queue_size": 64,
        "dim": 16,
    },
    "crrl": {"hidden_size": 4, "queue_size": 64},
}


def _tiny_step(benchmark, name: str) -> None:  # noqa: ANN001
    config = load_config(name, [f"model.{k}={v!r}".replace("'", '"') for k, v in TINY[name].items()])
    x, lengths = batch_for(config, 4)
    method, opt = _trainer(name, config)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        method(x, lengths, torch.Generator().manual_seed(0)).loss.backward()
        opt.step()

    benchmark(step)


def test_hico_step(benchmark):  # noqa: ANN001
    _tiny_step(benchmark, "hico")


def test_hiclr_step(benchmark):  # noqa: ANN001
    _tiny_step(benchmark, "hiclr")


def test_isc_step(benchmark):  # noqa: ANN001
    _tiny_step(benchmark, "isc")


def test_crrl_step(benchmark):  # noqa: ANN001
    _tiny_step(benchmark, "crrl")


if __name__ == "__main__":
    main()
