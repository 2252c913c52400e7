"""``skelfast profile``: a toy method and a real one profiled for one step write a valid Chrome trace
with the skelfast.* ranges; the one-op mode and its errors."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import record_function

from skelfast import cli, profiling
from skelfast.augment import HiCo
from skelfast.methods.base import MethodConfig, PretrainMethod, StepOutput
from skelfast.nn import stgcn_graph
from skelfast.ops import augment, graph_conv, info_nce


class ToyMethod(PretrainMethod):
    """Views with HiCo's recipe, one graph convolution, InfoNCE against a fixed queue."""

    name = "toy"

    def __init__(self) -> None:
        super().__init__(MethodConfig())
        self.weight = nn.Parameter(0.1 * torch.randn(3 * 4, 3))
        self.register_buffer("A", stgcn_graph().clone())
        self.register_buffer("queue", F.normalize(torch.randn(16, 4), dim=1))

    def forward(self, x, lengths, generator):
        with record_function("skelfast.toy.views"):
            view = augment(x, lengths, HiCo(t_out=8, min_length=8).sample(lengths, 25, generator))
        with record_function("skelfast.toy.query"):
            feats = graph_conv(view.mean(4), self.weight, None, self.A).mean((2, 3))
            q = F.normalize(feats, dim=1)
        with record_function("skelfast.toy.loss"):
            loss = info_nce(q, q.detach().roll(1, 0), self.queue, 0.1).losses.sum()
        return StepOutput(loss, {"nce": loss.detach()})


def test_toy_method_one_step_writes_a_trace_with_the_skelfast_ranges(tmp_path):
    method = ToyMethod()
    x, lengths = torch.randn(4, 3, 12, 25, 2), torch.tensor([12, 10, 9, 12])
    before = method.weight.detach().clone()
    trace = tmp_path / "trace.json"
    prof = profiling.profile_method(method, x, lengths, steps=1, warmup=0, trace_path=str(trace))
    json.loads(trace.read_text())  # valid JSON
    names = profiling.trace_range_names(str(trace))
    expected = {"skelfast.toy.views", "skelfast.toy.query", "skelfast.toy.loss"}
    expected |= {"skelfast.augment", "skelfast.graph_conv", "skelfast.info_nce"}
    expected |= {"skelfast.step.forward", "skelfast.step.backward", "skelfast.step.optimizer"}
    assert expected <= names
    assert not torch.equal(method.weight, before)  # the optimizer stepped
    ranges = {r.name: r for r in profiling.skelfast_ranges(prof)}
    assert ranges["skelfast.graph_conv"].count == 1 and ranges["skelfast.step.forward"].count == 1
    text = profiling.summary(prof, top=5)
    assert "skelfast ranges:" in text and "skelfast.info_nce" in text


def test_real_method_through_the_cli(tmp_path, capsys):
    trace = tmp_path / "hiclr.json"
    tiny = ["model.hidden_channels=4", "model.hidden_dim=8", "model.feature_dim=8", "model.queue_size=32"]
    argv = ["profile", "--method", "hiclr", "--steps", "1", "--warmup", "0", "--batch-size", "4"]
    argv += [arg for item in tiny for arg in ("--set", item)] + ["--out", str(trace)]
    assert cli.main(argv) == 0
    names = profiling.trace_range_names(str(trace))
    assert {"skelfast.hiclr.views", "skelfast.hiclr.key_update", "skelfast.hiclr.loss"} <= names
    assert {
        "skelfast.augment",
        "skelfast.graph_conv",
        "skelfast.hiclr_loss",
        "skelfast.step.optimizer",
    } <= names
    assert "skelfast.hiclr.loss" in capsys.readouterr().out


def test_one_op_at_a_method_shapes(tmp_path):
    trace = tmp_path / "op.json"
    argv = ["profile", "--method", "isc", "--op", "info_nce", "--set", "model.queue_size=64"]
    argv += ["--batch-size", "4", "--steps", "1", "--warmup", "0", "--out", str(trace)]
    assert cli.main(argv) == 0
    assert "skelfast.info_nce" in profiling.trace_range_names(str(trace))


def test_temporal_conv_at_a_method_shapes(tmp_path):
    trace = tmp_path / "tc.json"
    tiny = ["model.hidden_channels=4", "model.hidden_dim=8", "model.feature_dim=8", "model.queue_size=32"]
    argv = ["profile", "--method", "hiclr", "--op", "temporal_conv", "--batch-size", "2", "--steps", "1"]
    argv += [arg for item in tiny for arg in ("--set", item)] + ["--warmup", "0", "--out", str(trace)]
    assert cli.main(argv) == 0
    assert "skelfast.temporal_conv" in profiling.trace_range_names(str(trace))
    with pytest.raises(ValueError, match="no \\(K x 1\\) temporal convolution"):
        cli.main(
            ["profile", "--method", "crrl", "--op", "temporal_conv", "--batch-size", "2", "--out", str(trace)]
        )


def test_bad_requests_name_the_problem(tmp_path):
    out = str(tmp_path / "t.json")
    with pytest.raises(ValueError, match="no ST-GCN graph convolution"):
        cli.main(["profile", "--method", "hico", "--op", "graph_conv", "--batch-size", "2", "--out", out])
    with pytest.raises(ValueError, match="--steps >= 1"):
        profiling.profile_calls(lambda: None, steps=0, warmup=0, device="cpu", trace_path=None)
