"""Pretraining steps/s of each method at its official batch size: every skelfast op on its fastest
backend (fused) against every op on its pure-PyTorch reference (``use_backend("reference")``),
same weights, same batch, same random draws.

One step = the method's forward (views, momentum update, key pass, loss, enqueue) + backward +
the optimizer step of its official recipe. The batch is synthetic NTU-layout data prepared with the
method's normalisation (``[data] normalization`` of its config). Targets (issue #6): >= 1.5x for
HiCLR and ISC, >= 1.2x for HiCo and CRRL.

Run: ``python -m benchmarks.bench_methods`` (or ``make bench BENCH=methods``);
``SKELFAST_BENCH_METHODS=hiclr,isc`` picks methods, ``SKELFAST_BENCH_METHOD_BATCH=16`` shrinks the batch.
"""

from __future__ import annotations

import copy
import os

import torch

from benchmarks.common import time_fn, write_results
from skelfast import use_backend
from skelfast.configs import load_config
from skelfast.data import normalize, synthetic
from skelfast.methods import build_method

TARGETS = {"hico": 1.2, "hiclr": 1.5, "isc": 1.5, "crrl": 1.2}


def batch_for(config: dict, batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A synthetic batch (x (B, 3, T, 25, 2), lengths (B,)) prepared as the method's data is."""
    data = synthetic.generate(num_samples=batch, num_classes=min(batch, 60), seed=seed)
    how = config.get("data", {}).get("normalization", "agcn")
    x, lengths = normalize.normalize(data.data, data.num_frame, how)
    return torch.from_numpy(x), torch.from_numpy(lengths).long()


def _trainer(name: str, config: dict) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    method = build_method(name, config.get("model"))
    method.set_stage(method.stages()[0])
    train = config.get("train", {})
    opt = torch.optim.SGD(
        [p for p in method.parameters() if p.requires_grad],
        lr=float(train.get("lr", 0.01)),
        momentum=float(train.get("momentum", 0.9)),
        weight_decay=float(train.get("weight_decay", 0.0)),
    )
    return method, opt


def run_case(name: str, batch: int | None = None, repeats: int = 3) -> dict[str, object]:
    config = load_config(name)
    batch = batch or int(config["train"]["batch_size"])
    x, lengths = batch_for(config, batch)
    torch.manual_seed(0)
    fused, fused_opt = _trainer(name, config)
    reference = copy.deepcopy(fused)
    reference_opt = type(fused_opt)(
        [p for p in reference.parameters() if p.requires_grad], **fused_opt.defaults
    )

    def step(method: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
        opt.zero_grad(set_to_none=True)
        out = method(x, lengths, torch.Generator().manual_seed(0))
        out.loss.backward()
        opt.step()

    def reference_step() -> None:
        with use_backend("reference"):
            step(reference, reference_opt)

    t_fused = time_fn(lambda: step(fused, fused_opt), repeats=repeats, warmup=1)
    t_ref = time_fn(reference_step, repeats=repeats, warmup=1)
    speedup = t_ref.median_ms / t_fused.median_ms
    return {
        "method": name,
        "batch": batch,
        "fused steps/s": round(1e3 / t_fused.median_ms, 3),
        "fused ms [q20, q80]": str(t_fused),
        "reference steps/s": round(1e3 / t_ref.median_ms, 3),
        "reference ms [q20, q80]": str(t_ref),
        "x reference": round(speedup, 2),
        "target": f">= {TARGETS[name]}x",
        "met": "yes" if speedup >= TARGETS[name] else "no",
    }


def main() -> list[dict[str, object]]:
    names = os.environ.get("SKELFAST_BENCH_METHODS", ",".join(TARGETS)).split(",")
    batch = int(os.environ.get("SKELFAST_BENCH_METHOD_BATCH", "0")) or None
    rows = []
    for name in names:
        row = run_case(name.strip(), batch)
        print(row, flush=True)
        rows.append(row)
    write_results(
        "methods",
        rows,
        note="one pretraining step (forward, backward, SGD) at the official batch size; "
        "fused = every op on its fastest backend, reference = use_backend('reference')",
    )
    return rows


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
