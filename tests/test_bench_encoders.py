"""benchmarks/common.py ``convolutions_alone``: the shapes and FLOPs behind the encoder and method
benchmarks' bound on what skelfast can change (oneDNN's convolutions run alike on both sides)."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import convolutions_alone
from skelfast.reference.encoders import OfficialAGCN, OfficialSTGCN


def _counted(run) -> dict:  # noqa: ANN001
    with FlopCounterMode(display=False) as counter:
        run()
    return counter.get_flop_counts()["Global"]


def test_convolutions_alone_counts_what_it_runs():
    """Its FLOPs are those FlopCounterMode counts for the call it times: convolutions only, each
    backward product (input, weights) as many as the forward; one call per unit's (9, 1)
    convolution, the strided ones included, the 1x1 ones (residuals) not."""
    x = torch.randn(2, 3, 8, 25, 2)
    for model in (OfficialSTGCN(hidden_channels=4), OfficialAGCN()):
        run, flops = convolutions_alone(model.train(), lambda m=model: m(x))
        counts = _counted(run)
        assert set(counts) == {torch.ops.aten.convolution, torch.ops.aten.convolution_backward}
        assert sum(counts.values()) == flops
        assert counts[torch.ops.aten.convolution] * 3 == flops
        assert sum(m.kernel_size == (9, 1) for m in model.modules() if isinstance(m, torch.nn.Conv2d)) == 10


def test_convolutions_alone_runs_forward_only_what_ran_without_autograd():
    """A key encoder's convolutions (under no_grad in the method) are timed forward only; a first
    layer fed data that needs no gradient gets none for its input."""
    query, key = torch.nn.Conv1d(3, 4, 5, padding=2), torch.nn.Conv1d(3, 4, 5, padding=2)
    model = torch.nn.ModuleDict({"query": query, "key": key})
    x = torch.randn(2, 3, 10)

    def forward() -> None:
        query(x)
        with torch.no_grad():
            key(x)

    run, flops = convolutions_alone(model, forward)
    per_call = 2 * 2 * 4 * 10 * 3 * 5  # 2 * out.numel() * C_in * kernel
    # query: forward + weight gradient (x needs none); key: forward only
    assert flops == per_call * 2 + per_call
    assert sum(_counted(run).values()) == flops
