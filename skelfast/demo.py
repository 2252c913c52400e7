"""``make demo``: a short end-to-end demonstration of what skelfast has today, on this machine.

1. The graph convolution of an ST-GCN layer, forward and backward, on the C++ backend against the
   reference: agreement and speed-up.
2. One HiCLR pretraining step on the built-in synthetic data, every stage on skelfast: frame50
   normalisation, the three augmented views (one fused pass each), the quarter-width ST-GCN on
   skelfast's graph convolution, and the three-branch InfoNCE with consistency terms against a
   32768-entry memory queue; the same step on the pure-PyTorch references gives the same loss.
(Pretraining and the evaluation protocols arrive with the methods and engine issues.)
"""

from __future__ import annotations

import time

import torch

from skelfast import backends, info, reference, use_backend
from skelfast.nn import stgcn_graph
from skelfast.ops import graph_conv


def _time_ms(fn: object, repeats: int = 5) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1e3


def graph_conv_demo() -> None:
    A = stgcn_graph("ntu", "spatial")
    print(f"NTU spatial graph: A {tuple(A.shape)}, subset sums {[round(a.sum().item(), 2) for a in A]}")
    torch.manual_seed(0)
    x = torch.randn(64, 64, 50, 25, requires_grad=True)
    weight = (torch.randn(3 * 64, 64) / 8).requires_grad_()
    bias = torch.zeros(3 * 64, requires_grad=True)
    A = A.requires_grad_()

    def step(fn: object) -> tuple[torch.Tensor, ...]:
        out = fn(x, weight, bias, A)
        return (out, *torch.autograd.grad(out.square().mean(), [x, weight, bias, A]))

    ref_out = step(reference.graph_conv)
    ref_ms = _time_ms(lambda: step(reference.graph_conv))
    print(f"graph_conv N=64 C=64->64 T=50 V=25 K=3, forward+backward: reference {ref_ms:.1f} ms")
    reason = backends.cpp_reason(x.device, x.dtype, (torch.float32,))
    if reason is not None:
        print(f"  cpp backend unavailable: {reason}")
        return
    with use_backend("graph_conv=cpp"):
        out = step(graph_conv)
        cpp_ms = _time_ms(lambda: step(graph_conv))
    err = max((a - b).abs().max().item() for a, b in zip(out, ref_out, strict=True))
    print(f"  cpp backend {cpp_ms:.1f} ms ({ref_ms / cpp_ms:.1f}x), max |difference| to reference {err:.1e}")


def hiclr_step_demo(batch: int = 32) -> None:
    from skelfast.augment import HiCLR
    from skelfast.data.normalize import frame50
    from skelfast.data.synthetic import generate
    from skelfast.nn import stgcn_hiclr
    from skelfast.ops import augment, hiclr_loss

    start = time.perf_counter()
    data = generate(num_samples=batch, num_classes=10, seed=0)
    x = torch.from_numpy(frame50(data.data))  # (N, 3, 50, 25, 2)
    valid = torch.full((batch,), x.shape[2])
    print(f"\nsynthetic batch: {tuple(x.shape)} in {time.perf_counter() - start:.1f} s (frame50 form)")

    torch.manual_seed(0)
    encoder = stgcn_hiclr()
    token = torch.nn.Parameter(torch.zeros(()))  # HiCLR's learnable joint-mask token
    queue = torch.nn.functional.normalize(torch.randn(32768, 128), dim=1)
    recipes = [HiCLR(), HiCLR(strong=True), HiCLR(strong=True, mask=True)]
    generator = torch.Generator().manual_seed(0)
    params = [r.sample(valid, num_joints=25, generator=generator) for r in [HiCLR(), *recipes]]

    def step() -> torch.Tensor:
        torch.manual_seed(1)  # the same dropout masks on both backends
        key_view = augment(x, valid, params[0])
        views = [augment(x, valid, p, fill=token) for p in params[1:]]
        with torch.no_grad():
            k = torch.nn.functional.normalize(encoder(key_view), dim=1)
        q, q1, q2 = (torch.nn.functional.normalize(encoder(v), dim=1) for v in views)
        loss = hiclr_loss(q, q1, q2, k, queue, 0.07).loss
        loss.backward()
        return loss.detach()

    loss = step()
    fast_ms = _time_ms(step, repeats=2)
    with use_backend("reference"):
        ref_loss = step()
        ref_ms = _time_ms(step, repeats=2)
    print(
        f"HiCLR step (batch {batch}, 3 query views + key, queue 32768): loss {loss.item():.4f}, "
        f"{fast_ms:.0f} ms; on the references: loss {ref_loss.item():.4f}, {ref_ms:.0f} ms "
        f"({ref_ms / fast_ms:.1f}x)"
    )


def main() -> None:
    """Print the installation report, then run the demonstrations."""
    info.main()
    print()
    graph_conv_demo()
    hiclr_step_demo()
