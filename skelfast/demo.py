"""``make demo``: a short end-to-end demonstration of what skelfast has today, on this machine.

It builds the NTU graph, runs an ST-GCN-sized graph convolution forward and backward on every
available backend, checks that they agree with the reference, and prints the speed-up.
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


def main() -> None:
    """Print the installation report, then run the demonstrations."""
    info.main()
    print()
    graph_conv_demo()
