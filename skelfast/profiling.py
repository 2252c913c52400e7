"""``skelfast profile``: torch.profiler traces of a method's training steps, or of one op at a
method's shapes, on synthetic data.

A method is built from its official config (``--set section.key=value`` overrides), a synthetic
batch is prepared with the config's ``[data] normalization``, and after warm-up steps N training steps
(forward, backward, optimizer step) run under ``torch.profiler`` (CPU activity, plus CUDA on a
GPU). The Chrome trace (open it in chrome://tracing or https://ui.perfetto.dev) has the ranges
``skelfast.step.{forward,backward,optimizer}``, each method's phases (``skelfast.hico.views``,
``...key_update``, ``...loss``, ...) and each op (``skelfast.graph_conv``, ``skelfast.augment``,
``skelfast.info_nce``, ``skelfast.hiclr_loss``).

Top-level imports stay light: the CLI imports this module for ``--help``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from skelfast.methods.base import PretrainMethod

METHODS = ("hico", "hiclr", "isc", "crrl")
OPS = ("graph_conv", "augment", "info_nce", "temporal_conv")


def op_range(name: str) -> contextlib.AbstractContextManager:
    """``torch.profiler.record_function(name)``, or nothing while torch.compile traces (Dynamo would
    drop the range with a warning per compiled graph)."""
    import torch

    if torch.compiler.is_compiling():
        return contextlib.nullcontext()
    return torch.profiler.record_function(name)


def profiled(name: str) -> Callable[[Callable], Callable]:
    """Decorator: run the function inside ``op_range(name)`` (the public ops use it, so a trace shows
    ``skelfast.graph_conv``, ``skelfast.info_nce``, ... around everything each call launches)."""

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def ranged(*args: Any, **kwargs: Any) -> Any:
            with op_range(name):
                return fn(*args, **kwargs)

        return ranged

    return wrap


# --- what gets profiled -----------------------------------------------------------------------


def synthetic_batch(
    config: dict[str, Any], batch_size: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, 3, T, 25, 2) float32 and lengths (B,) int64: synthetic actions normalised as the
    config's ``[data] normalization`` says (``frame50`` makes T = 50)."""
    import torch

    from skelfast.data import normalize, synthetic

    if batch_size < 1:
        raise ValueError(f"profile: --batch-size must be >= 1, got {batch_size}")
    data_cfg = config.get("data", {})
    data = synthetic.generate(
        num_samples=batch_size,
        num_classes=min(batch_size, 60),
        seed=seed,
        max_frames=int(data_cfg.get("max_frames", 300)),
    )
    x, lengths = normalize.normalize(data.data, data.num_frame, data_cfg.get("normalization", "none"))
    return torch.from_numpy(x), torch.from_numpy(lengths).long()


def default_optimizer(params: list[torch.nn.Parameter], train: dict[str, Any]) -> torch.optim.Optimizer:
    """The config's ``[train]`` optimizer (``sgd`` or ``adam``) with its learning rate and decay."""
    import torch

    lr = float(train.get("lr", 0.01))
    weight_decay = float(train.get("weight_decay", 0.0))
    if str(train.get("optimizer", "sgd")).lower() == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(
        params,
        lr=lr,
        momentum=float(train.get("momentum", 0.0)),
        weight_decay=weight_decay,
        nesterov=bool(train.get("nesterov", False)),
    )


def training_step(
    method: PretrainMethod,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    lengths: torch.Tensor,
    generator: torch.Generator,
) -> float:
    """One optimisation step (forward, backward, optimizer step) in named profiler ranges; returns the loss."""
    with op_range("skelfast.step.forward"):
        out = method(x, lengths, generator)
    with op_range("skelfast.step.backward"):
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
    with op_range("skelfast.step.optimizer"):
        optimizer.step()
    return float(out.loss.detach())


def _activities(device: str) -> list:
    import torch

    activities = [torch.profiler.ProfilerActivity.CPU]
    if device == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    return activities


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def profile_calls(
    fn: Callable[[], object], steps: int, warmup: int, device: str, trace_path: str | None
) -> torch.profiler.profile:
    """Run ``fn`` ``warmup`` times unprofiled, then ``steps`` times under torch.profiler; write the
    Chrome trace to ``trace_path`` (if given) and return the profiler for ``summary``."""
    import torch

    if steps < 1 or warmup < 0:
        raise ValueError(f"profile: need --steps >= 1 and --warmup >= 0, got {steps} and {warmup}")
    for _ in range(warmup):
        fn()
    _sync(device)
    with torch.profiler.profile(activities=_activities(device), record_shapes=True) as prof:
        for _ in range(steps):
            fn()
        _sync(device)
    if trace_path:
        prof.export_chrome_trace(trace_path)
    return prof


def profile_method(
    method: PretrainMethod,
    x: torch.Tensor,
    lengths: torch.Tensor,
    optimizer: torch.optim.Optimizer | None = None,
    steps: int = 3,
    warmup: int = 1,
    device: str = "cpu",
    trace_path: str | None = None,
    seed: int = 0,
) -> torch.profiler.profile:
    """Profile ``steps`` training steps of a built method on the batch (x, lengths) after ``warmup``
    steps; the default optimizer is plain SGD (lr 0.01) over the trainable parameters."""
    import torch

    method = method.to(device).train()
    x, lengths = x.to(device), lengths.to(device)
    params = [p for p in method.parameters() if p.requires_grad]
    optimizer = optimizer or default_optimizer(params, {})
    generator = torch.Generator().manual_seed(seed)
    return profile_calls(
        lambda: training_step(method, optimizer, x, lengths, generator), steps, warmup, device, trace_path
    )


# --- one op at a method's shapes --------------------------------------------------------------


def _op_call(op: str, method: str, config: dict[str, Any], batch: int, device: str) -> Callable[[], object]:
    """A forward+backward closure of one skelfast op at the shapes ``method`` runs it with."""
    import torch
    import torch.nn.functional as F

    from skelfast import ops

    model = config.get("model", {})
    g = torch.Generator().manual_seed(0)
    if op == "graph_conv":
        if method != "hiclr":
            raise ValueError(
                f"profile --op graph_conv: {method} has no ST-GCN graph convolution; use --method hiclr"
            )
        from skelfast.nn import stgcn_graph

        c = int(model.get("hidden_channels", 16))
        t = int(model.get("num_frames", 50))
        x = torch.randn(batch, c, t, 25, generator=g).to(device).requires_grad_()
        weight = (torch.randn(3 * c, c, generator=g) / c**0.5).to(device).requires_grad_()
        bias = torch.zeros(3 * c, device=device, requires_grad=True)
        A = stgcn_graph().clone().to(device).requires_grad_()
        inputs = [x, weight, bias, A]
        return lambda: torch.autograd.grad(ops.graph_conv(*inputs).square().sum(), inputs)
    if op == "augment":
        from skelfast.augment import CRRL, ISC, HiCLR, HiCo

        recipes = {"hico": (HiCo(), 300), "isc": (ISC(), 300), "hiclr": (HiCLR(strong=True, mask=True), 50)}
        recipes["crrl"] = (CRRL(t_out=64, stream="motion"), 300)
        recipe, t_in = recipes[method]
        x = torch.randn(batch, 3, t_in, 25, 2, generator=g)
        valid = (
            torch.full((batch,), t_in) if t_in == 50 else torch.randint(64, t_in + 1, (batch,), generator=g)
        )
        params = recipe.sample(valid, 25, g).to(device)
        x, valid = x.to(device), valid.to(device)
        return lambda: ops.augment(x, valid, params)
    if op == "temporal_conv":
        return _temporal_conv_calls(method, config, batch, device)
    if op != "info_nce":
        raise ValueError(f"profile: unknown --op {op!r}; choose one of {OPS}")
    k = int(model.get("queue_size", 16384))
    tau = float(model.get("temperature", 0.07))
    if method == "crrl":  # the bidirectional GRU's features: 2 x hidden_size
        d = 2 * int(model.get("hidden_size", 256))
    else:
        d = int(model.get("feature_dim", model.get("dim", 128)))

    def unit(*shape: int, grad: bool = False) -> torch.Tensor:
        return F.normalize(torch.randn(*shape, generator=g), dim=-1).to(device).requires_grad_(grad)

    if method == "hiclr":
        branches, key, queue = [unit(batch, d, grad=True) for _ in range(3)], unit(batch, d), unit(k, d)
        return lambda: torch.autograd.grad(ops.hiclr_loss(*branches, key, queue, tau).loss, branches)
    if method == "hico":
        gr = int(model.get("granularity", 4))
        sizes = [gr * k, gr * k, k, k, k]
        queries = [unit(batch, d, grad=True) for _ in sizes]
        positives = [unit(batch, gr, d), unit(batch, gr, d), unit(batch, d), unit(batch, d), unit(batch, d)]
        bank = unit(sum(sizes), d)
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        ranges = list(zip(starts, sizes, strict=True))
        return lambda: torch.autograd.grad(
            ops.info_nce(queries, positives, bank, tau, queue_ranges=ranges).losses.sum(), queries
        )
    levels = 2 if method == "isc" else 1  # ISC: two crossed levels; CRRL: one MoCo level
    queries = [unit(batch, d, grad=True) for _ in range(levels)]
    positives = [unit(batch, d) for _ in range(levels)]
    bank = unit(levels * k, d)
    ranges = [(i * k, k) for i in range(levels)]
    return lambda: torch.autograd.grad(
        ops.info_nce(queries, positives, bank, tau, queue_ranges=ranges).losses.sum(), queries
    )


def _temporal_conv_calls(
    method: str, config: dict[str, Any], batch: int, device: str
) -> Callable[[], object]:
    """Forward+backward of each distinct (K x 1) temporal convolution of the method's encoders, at
    the input one forward pass of the method on a synthetic batch hands it (recorded by hooks)."""
    import torch

    from skelfast.methods import build_method
    from skelfast.nn import TemporalConv2d

    built = build_method(method, config.get("model"))
    built.set_stage(built.stages()[0])
    convs = [m for m in built.modules() if isinstance(m, TemporalConv2d)]
    if not convs:
        raise ValueError(
            f"profile --op temporal_conv: {method} has no (K x 1) temporal convolution; use --method hiclr or isc"
        )
    seen: dict[tuple, tuple[torch.nn.Module, torch.Tensor]] = {}

    def record(conv: torch.nn.Module, args: tuple) -> None:
        key = (tuple(args[0].shape), tuple(conv.weight.shape), conv.stride)
        seen.setdefault(key, (conv, args[0].detach()))

    hooks = [conv.register_forward_pre_hook(record) for conv in convs]
    x, lengths = synthetic_batch(config, batch)
    with torch.no_grad():
        built(x, lengths, torch.Generator().manual_seed(0))
    for hook in hooks:
        hook.remove()
    calls = [(conv.to(device), inp.to(device).requires_grad_()) for conv, inp in seen.values()]

    def run() -> None:
        for conv, inp in calls:
            torch.autograd.grad(conv(inp).square().sum(), [inp, conv.weight])

    return run


# --- reading the profile ----------------------------------------------------------------------


@dataclass(frozen=True)
class RangeTime:
    """A ``skelfast.*`` range: how often it ran and its inclusive CPU (and device) time."""

    name: str
    count: int
    cpu_us: float
    device_us: float


def skelfast_ranges(prof: torch.profiler.profile) -> list[RangeTime]:
    """Every ``skelfast.*`` record_function range of the profile, by total CPU time."""
    rows = []
    for e in prof.key_averages():
        if e.key.startswith("skelfast."):
            device_us = float(getattr(e, "device_time_total", 0.0) or 0.0)
            rows.append(RangeTime(e.key, int(e.count), float(e.cpu_time_total), device_us))
    return sorted(rows, key=lambda r: -r.cpu_us)


def summary(prof: torch.profiler.profile, device: str = "cpu", top: int = 15) -> str:
    """The top ops by self time and the skelfast.* ranges, as text."""
    sort = "self_device_time_total" if device == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=top, max_name_column_width=48)
    lines = [
        f"Top {top} ops by self {'device' if device == 'cuda' else 'CPU'} time:",
        table,
        "skelfast ranges:",
    ]
    lines.append(
        f"  {'range':<40} {'calls':>6} {'CPU ms':>10}" + (f" {'device ms':>10}" if device == "cuda" else "")
    )
    for r in skelfast_ranges(prof):
        extra = f" {r.device_us / 1e3:>10.2f}" if device == "cuda" else ""
        lines.append(f"  {r.name:<40} {r.count:>6} {r.cpu_us / 1e3:>10.2f}{extra}")
    return "\n".join(lines)


def trace_range_names(path: str) -> set[str]:
    """Names of the ``skelfast.*`` events in a Chrome trace file (checks that a trace is usable)."""
    with open(path) as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    return {
        e["name"] for e in events if isinstance(e, dict) and str(e.get("name", "")).startswith("skelfast.")
    }


# --- command line -----------------------------------------------------------------------------


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add ``skelfast profile`` to the ``skelfast`` command."""
    p = subparsers.add_parser(
        "profile",
        help="torch.profiler trace of a method's training steps (or one op at its shapes) on synthetic data",
        description=__doc__.split("\n\n")[1],
    )
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--config", help="config name or TOML path (default: the method's official config)")
    p.add_argument(
        "--op", choices=OPS, help="profile this op alone at the method's shapes (forward+backward)"
    )
    p.add_argument("--steps", type=int, default=3, help="profiled steps (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="unprofiled steps first (default 1)")
    p.add_argument("--batch-size", type=int, help="default: the config's [train] batch_size")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument(
        "--stage", help="training stage to profile (CRRL: contrast or reconstruct; default: the first)"
    )
    p.add_argument("--out", default="trace.json", help="Chrome trace file (default trace.json)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--top", type=int, default=15, help="ops listed by self time (default 15)")


def run(args: argparse.Namespace) -> int:
    """Build, profile, write the trace, print the summary; returns the exit status."""
    import torch

    from skelfast.configs import load_config
    from skelfast.methods import build_method

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("skelfast profile: --device cuda, but torch sees no CUDA device")
    config = load_config(args.config or args.method, args.overrides)
    if config["method"] != args.method:
        raise SystemExit(f"skelfast profile: the config is for {config['method']!r}, not {args.method!r}")
    batch = int(args.batch_size or config.get("train", {}).get("batch_size", 16))
    if args.op:
        fn = _op_call(args.op, args.method, config, batch, args.device)
        prof = profile_calls(fn, args.steps, args.warmup, args.device, args.out)
        what = f"{args.op} at {args.method}'s shapes (batch {batch})"
    else:
        method = build_method(args.method, config.get("model"))
        method.set_stage(args.stage or method.stages()[0])
        x, lengths = synthetic_batch(config, batch)
        params = [p for p in method.parameters() if p.requires_grad]
        optimizer = default_optimizer(params, config.get("train", {}))
        prof = profile_method(method, x, lengths, optimizer, args.steps, args.warmup, args.device, args.out)
        what = f"{args.method} training steps (batch {batch}, {x.shape[2]} input frames)"
    print(f"Profiled {args.steps} step(s) of {what} on {args.device}; Chrome trace: {args.out}")
    print(summary(prof, args.device, args.top))
    return 0
