"""ST-GCN encoder (standard and HiCLR quarter width) against the official architecture."""

import pytest
import torch

from skelfast import backends, use_backend
from skelfast.nn.stgcn import STGCN, stgcn_hiclr, stgcn_standard
from skelfast.reference.encoders import OfficialSTGCN
from tests.utils import assert_close, assert_gradients_reach_every_parameter

cpp_missing = backends.cpp_reason(torch.device("cpu"), torch.float32, (torch.float32,))
requires_cpp = pytest.mark.skipif(cpp_missing is not None, reason=str(cpp_missing))


def hand_count(h: int, hidden_dim: int = 256, num_class: int = 128, k: int = 3, v: int = 25) -> int:
    """Parameters of AimCLR/HiCLR's ST-GCN from spec/hico_hiclr.md §2.3, unit by unit.

    unit(cin -> cout, residual conv?) = graph conv 1x1 (cin -> K*cout, bias)      K*cout*cin + K*cout
                                      + BN(cout) before the temporal conv          2*cout
                                      + temporal conv (9x1, cout -> cout, bias)    9*cout^2 + cout
                                      + BN(cout) after it                          2*cout
                                      + [residual conv 1x1 (bias) + BN]            cin*cout + cout + 2*cout
    units: 3->h (no residual), h->h x3, h->2h s2 (res conv), 2h->2h x2, 2h->4h s2 (res conv), 4h->4h,
    4h->hidden_dim (res conv only when 4h != hidden_dim: quarter width 64->256 has one, the standard
    width 256->256 is an identity);
    plus data_bn over V*C = 75 channels (2*75), ten edge-importance masks (10*K*V*V), and the MLP
    head hd->hd->num_class with biases.
    """

    def unit(cin: int, cout: int, res_conv: bool) -> int:
        n = k * cout * cin + k * cout + 2 * cout + 9 * cout * cout + cout + 2 * cout
        return n + (cin * cout + cout + 2 * cout if res_conv else 0)

    units = [(3, h, False), (h, h, False), (h, h, False), (h, h, False), (h, 2 * h, True),
             (2 * h, 2 * h, False), (2 * h, 2 * h, False), (2 * h, 4 * h, True), (4 * h, 4 * h, False),
             (4 * h, hidden_dim, 4 * h != hidden_dim)]  # fmt: skip
    head = hidden_dim * hidden_dim + hidden_dim + hidden_dim * num_class + num_class
    return sum(unit(*u) for u in units) + 2 * v * 3 + 10 * k * v * v + head


def test_parameter_count_matches_official_architecture():
    # quarter width: units 2576 + 3*3200 + 11616 + 2*12544 + 45760 + 49664 + 658176 = 802480,
    # + data_bn 150 + edge importance 18750 + head 98688 = 920068
    assert hand_count(16) == 920068
    assert sum(p.numel() for p in stgcn_hiclr().parameters()) == 920068
    # standard width: the last unit is 256->256 with an identity residual
    assert sum(p.numel() for p in stgcn_standard().parameters()) == hand_count(64) == 3182100


def scaled_model(model: STGCN) -> STGCN:
    """Give BN and edge importance non-trivial values so a wrong formula shows in the output."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "edge_importance" in name:
                p.uniform_(0.5, 1.5)
        for mod in model.modules():
            if isinstance(mod, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize("hidden", [16, 64])
def test_shapes_odd_batch_and_length(hidden):
    model = STGCN(hidden_channels=hidden)
    x = torch.randn(3, 3, 17, 25, 2)
    h = model.representation(x)
    assert h.shape == (3, 256)
    assert model.project(h).shape == (3, 128)
    assert model(x).shape == (3, 128)


def test_equals_official_form_float64_and_loads_its_state_dict():
    """Same weights in the literal official module (Conv2d + einsum + BN + Dropout): same output."""
    model = scaled_model(stgcn_hiclr(init="pytorch")).double().eval()
    official = OfficialSTGCN(hidden_channels=16).double().eval()
    official.load_state_dict(model.state_dict())  # strict: the layouts are identical
    x = torch.randn(3, 3, 13, 25, 2, dtype=torch.float64)
    with use_backend("graph_conv=reference"):
        assert_close(model(x), official(x), 1e-12, 1e-10, "quarter-width ST-GCN vs official form")


def test_train_mode_equals_official_form_float64():
    """Train mode (batch statistics, the fused BN tails): output, every parameter's gradient and
    the BatchNorm running statistics equal the official module's. Dropout 0 in both, so the two
    draw no masks; the masked path is compared across backends below."""
    model = scaled_model(stgcn_hiclr(init="pytorch", dropout=0.0)).double().train()
    official = OfficialSTGCN(hidden_channels=16, dropout=0.0).double().train()
    official.load_state_dict(model.state_dict())
    x = torch.randn(3, 3, 13, 25, 2, dtype=torch.float64)
    with use_backend("graph_conv=reference"):
        out, out_official = model(x), official(x)
    assert_close(out, out_official, 1e-10, 1e-10, "train-mode forward")
    out.square().sum().backward()
    out_official.square().sum().backward()
    params_official = dict(official.named_parameters())
    for name, p in model.named_parameters():
        assert_close(p.grad, params_official[name].grad, 1e-9, 1e-8, f"grad {name}")
    buffers_official = dict(official.named_buffers())
    for name, b in model.named_buffers():
        if b.is_floating_point():
            assert_close(b, buffers_official[name], 1e-12, 1e-10, f"buffer {name}")
        else:
            assert torch.equal(b, buffers_official[name]), name


@requires_cpp
def test_fused_and_reference_batch_norm_tails_agree_with_dropout():
    """With dropout 0.5 the masks come from the same generator in both backends of batch_norm_act:
    the same seed gives the same masks, so the fused op and the step-by-step chain must agree."""
    model = scaled_model(stgcn_hiclr(init="pytorch")).double().train()
    x = torch.randn(3, 3, 13, 25, 2, dtype=torch.float64)
    outs, grads = [], []
    for backend in ("reference", "cpp"):
        model.zero_grad()
        torch.manual_seed(7)
        with use_backend(f"batch_norm_act={backend}"):
            out = model(x)
        out.square().sum().backward()
        outs.append(out.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert_close(outs[1], outs[0], 1e-10, 1e-10, "forward, fused vs step-by-step")
    for name in grads[0]:
        assert_close(grads[1][name], grads[0][name], 1e-9, 1e-8, f"grad {name}")


def test_official_key_map_for_original_stgcn_layout():
    model = stgcn_hiclr()
    # the original ST-GCN stores edge importance as a ParameterList: edge_importance.0 ... .9
    sd = {
        (f"edge_importance.{int(k[15:]) - 1}" if k.startswith("edge_importance") else k): v.clone() + 1
        for k, v in model.state_dict().items()
    }
    sd = {"module.encoder_q." + k: v for k, v in sd.items()} | {"module.encoder_q.fcn.weight": torch.zeros(1)}
    model.load_official_state_dict(sd, prefix="module.encoder_q.")
    assert torch.equal(model.edge_importance3, sd["module.encoder_q.edge_importance.2"])


def test_gradients_reach_every_parameter():
    # the temporal and residual convolution biases: exact zeros (BatchNorm cancels them)
    official = OfficialSTGCN(hidden_channels=16)
    assert_gradients_reach_every_parameter(stgcn_hiclr(), official, torch.randn(3, 3, 11, 25, 2))


def test_eval_is_deterministic_and_train_is_not():
    model = stgcn_hiclr()
    x = torch.randn(3, 3, 11, 25, 2)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))  # dropout 0.5 in units 2-10


@requires_cpp
def test_reference_and_cpp_graph_conv_backends_agree():
    model = scaled_model(stgcn_hiclr(init="pytorch")).eval()
    x = torch.randn(3, 3, 13, 25, 2)
    outs, grads = [], []
    for backend in ("reference", "cpp"):
        model.zero_grad()
        with use_backend(f"graph_conv={backend}"):
            out = model(x)
            out.square().sum().backward()
        outs.append(out.detach())
        grads.append(model.st_gcn_networks[4].gcn.conv.weight.grad.clone())
    # float32 through ten units: rounding of differently ordered sums, relative ~1e-5 at these scales
    assert_close(outs[1], outs[0], 1e-4, 1e-4, "forward, cpp vs reference")
    assert_close(grads[1], grads[0], 1e-3, 1e-3, "unit-5 graph conv weight grad, cpp vs reference")


def test_bad_input_is_rejected():
    model = stgcn_hiclr()
    with pytest.raises(ValueError, match="N, C, T, V, M"):
        model(torch.randn(2, 3, 10, 25))
    with pytest.raises(ValueError, match="C\\*V=75"):
        model(torch.randn(2, 3, 10, 20, 2))


def test_compiled_training_step_matches_eager():
    # torch.compile(fullgraph=True) of a whole training step: every fake kernel's shapes and strides
    # (graph_conv's backward on data_bn's permuted output, temporal_conv's transforms at 128 and 256
    # channels, the BatchNorm tails) must match the kernels'; float64, same dropout seed
    torch.manual_seed(0)
    model = stgcn_standard().train().double()
    x = torch.randn(2, 3, 20, 25, 2, dtype=torch.float64)
    params = list(model.parameters())
    torch.manual_seed(1)
    eager = model(x)
    eager_grads = torch.autograd.grad(eager.sum(), params)
    torch.manual_seed(1)
    compiled = torch.compile(model, fullgraph=True)(x)
    compiled_grads = torch.autograd.grad(compiled.sum(), params)
    torch.testing.assert_close(compiled, eager, atol=1e-12, rtol=1e-10)
    for got, want in zip(compiled_grads, eager_grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-11, rtol=1e-9)
