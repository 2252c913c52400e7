"""ISC's AGCN (2s-AGCN joint stream) against the official per-subset form."""

import pytest
import torch

from skelfast.nn.agcn import AGCN
from skelfast.reference.encoders import OfficialAGCN
from tests.utils import assert_close, assert_gradients_reach_every_parameter


def hand_count(num_class: int = 128, k: int = 3, v: int = 25, m: int = 2, b: int = 64) -> int:
    """Parameters of skeleton-contrast's AGCN (spec/isc_crrl.md §1.3) with the ``--mlp`` head.

    unit(cin -> cout): PA (K*V*V)
      + conv_a, conv_b: K each, 1x1 cin -> cout/4 with bias       2*K*(cin*cout/4 + cout/4)
      + conv_d: K of 1x1 cin -> cout with bias                     K*(cin*cout + cout)
      + down (only if cin != cout): 1x1 conv + BN                  cin*cout + cout + 2*cout
      + gcn output BN                                              2*cout
      + tcn1: conv 9x1 cout -> cout + BN                           9*cout^2 + cout + 2*cout
      + residual unit_tcn (kernel 1, only if cin != cout or stride 2): cin*cout + cout + 2*cout
    units 3->64 (no residual), 64 x3, 64->128 s2, 128 x2, 128->256 s2, 256 x2;
    plus data_bn over M*V*C = 150 channels (2*150) and the head 256->256->num_class.
    """

    def unit(cin: int, cout: int, res_conv: bool) -> int:
        n = k * v * v + 2 * k * (cin * cout // 4 + cout // 4) + k * (cin * cout + cout) + 2 * cout
        n += 9 * cout * cout + cout + 2 * cout
        if cin != cout:
            n += cin * cout + cout + 2 * cout
        if res_conv:
            n += cin * cout + cout + 2 * cout
        return n

    units = [(3, b, False), (b, b, False), (b, b, False), (b, b, False), (b, 2 * b, True),
             (2 * b, 2 * b, False), (2 * b, 2 * b, False), (2 * b, 4 * b, True), (4 * b, 4 * b, False),
             (4 * b, 4 * b, False)]  # fmt: skip
    f = 4 * b  # the representation
    return sum(unit(*u) for u in units) + 2 * m * v * 3 + f * f + f + f * num_class + num_class


def test_parameter_count_matches_official_architecture():
    assert sum(p.numel() for p in AGCN().parameters()) == hand_count() == 3552778


def test_scaled_widths():
    """base_channels scales every unit (units of b, 2b, 4b channels; a 4b-d representation)."""
    model = AGCN(num_class=32, base_channels=16)
    assert sum(p.numel() for p in model.parameters()) == hand_count(num_class=32, b=16)
    x = torch.randn(2, 3, 9, 25, 2)
    assert model.representation(x).shape == (2, 64)
    assert model(x).shape == (2, 32)
    with pytest.raises(ValueError, match="base_channels must be >= 4"):
        AGCN(base_channels=2)


def test_shapes_odd_batch_and_length():
    model = AGCN()
    x = torch.randn(3, 3, 11, 25, 2)
    h = model.representation(x)
    assert h.shape == (3, 256)
    assert model(x).shape == (3, 128)


def randomise(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial BN, PA, gcn-BN gamma (the official init puts it at 1e-6, which would hide the
    whole graph branch in a comparison) and convolution biases (zero at init, which would hide where
    each is added or cancelled)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("PA"):
                p.uniform_(-0.05, 0.05)
        for mod in model.modules():
            if isinstance(mod, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
            elif isinstance(mod, torch.nn.Conv2d):
                mod.bias.uniform_(-0.2, 0.2)
    return model


@pytest.mark.parametrize("train", [False, True])
def test_equals_official_per_subset_form_float64(train):
    """The batched form (subsets stacked, 1x1 convs as GEMMs) equals the official per-subset
    matmul-then-conv, values and every parameter's gradient, in eval and in train mode (batch
    statistics). float64, so any difference beyond rounding is a wrong formula."""
    model = randomise(AGCN()).double().train(train)
    official = OfficialAGCN().double().train(train)
    official.load_state_dict(model.state_dict())  # strict: the layouts are identical
    x = torch.randn(3, 3, 7, 25, 2, dtype=torch.float64)
    y, y_official = model(x), official(x)
    assert_close(y, y_official, 1e-10, 1e-9, "AGCN vs official form")
    weights = torch.randn_like(y)
    (y * weights).sum().backward()
    (y_official * weights).sum().backward()
    official_params = dict(official.named_parameters())
    for name, param in model.named_parameters():
        assert_close(param.grad, official_params[name].grad, 1e-9, 1e-8, f"AGCN grad {name}")
    buffers = dict(model.named_buffers())  # the running statistics (they take the biases BN cancels)
    for name, official_buffer in official.named_buffers():
        assert_close(buffers[name].double(), official_buffer.double(), 1e-12, 1e-10, f"AGCN buffer {name}")


def test_official_checkpoint_prefix():
    model = AGCN()
    sd = {"module.encoder_r." + k: v + 1 for k, v in model.state_dict().items()}
    sd["module.encoder_q.encoder.gru.weight_ih_l0"] = torch.zeros(1)  # another encoder: ignored
    model.load_official_state_dict(sd, prefix="module.encoder_r.")
    assert torch.equal(model.l3.gcn1.PA, sd["module.encoder_r.l3.gcn1.PA"])


def test_initialisation_quirks():
    model = AGCN()
    assert torch.all(model.l1.gcn1.PA == 1e-6)
    assert torch.all(model.l5.gcn1.bn.weight == 1e-6)
    assert torch.all(model.l5.gcn1.down[1].weight == 1)


def test_gradients_reach_every_parameter():
    # the conv_d, down, tcn and residual convolution biases: exact zeros (BatchNorm cancels them)
    assert_gradients_reach_every_parameter(randomise(AGCN()), OfficialAGCN(), torch.randn(3, 3, 5, 25, 2))


def test_eval_is_deterministic():
    model = AGCN().eval()
    x = torch.randn(3, 3, 9, 25, 2)
    assert torch.equal(model(x), model(x))


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="C\\*V\\*M=150"):
        AGCN()(torch.randn(2, 3, 10, 25, 1))


def test_compiled_training_step_matches_eager():
    # torch.compile(fullgraph=True) of a training step: the attention scores' autograd.Function takes
    # its compile branch (Dynamo rejects the strided out= of its eager backward); float64
    torch.manual_seed(0)
    model = randomise(AGCN()).double().train()
    x = torch.randn(2, 3, 9, 25, 2, dtype=torch.float64)
    params = list(model.parameters())
    eager = model(x)
    weights = torch.randn_like(eager)
    eager_grads = torch.autograd.grad((eager * weights).sum(), params)
    compiled = torch.compile(model, fullgraph=True)(x)
    compiled_grads = torch.autograd.grad((compiled * weights).sum(), params)
    assert_close(compiled, eager, 1e-12, 1e-10, "compiled AGCN")
    for (name, _), got, want in zip(model.named_parameters(), compiled_grads, eager_grads, strict=True):
        assert_close(got, want, 1e-11, 1e-9, f"compiled AGCN grad {name}")
