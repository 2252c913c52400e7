"""benchmarks/bench_encoders.py: the temporal-convolution bound's inputs (shapes and FLOPs)."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.bench_encoders import temporal_convs
from skelfast.reference.encoders import OfficialAGCN, OfficialSTGCN


def test_temporal_convs_counts_what_it_runs():
    """The FLOPs the bound charges to oneDNN are those FlopCounterMode counts for the call it times:
    convolutions only, backward (input and weight gradients) twice the forward."""
    for model in (OfficialSTGCN(hidden_channels=4), OfficialAGCN()):
        x = torch.randn(2, 3, 8, 25, 2)
        run, flops = temporal_convs(model.train(), x)
        with FlopCounterMode(display=False) as counter:
            run()
        assert flops == counter.get_total_flops()
        # one per unit, the strided ones included; the 1x1 residual convolutions are not timed
        assert sum(m.kernel_size == (9, 1) for m in model.modules() if isinstance(m, torch.nn.Conv2d)) == 10
        counts = counter.get_flop_counts()["Global"]
        assert set(counts) == {torch.ops.aten.convolution, torch.ops.aten.convolution_backward}
        assert counts[torch.ops.aten.convolution] * 3 == flops
