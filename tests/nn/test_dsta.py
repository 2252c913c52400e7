"""HiCLR's DSTA-Net backbone: architecture, positional encoding, gradients."""

import math

import pytest
import torch

from skelfast.nn.dsta import HICLR_CONFIG, DSTANet


def hand_count(num_class: int = 128, s: int = 3, v: int = 25) -> int:
    """Parameters of HiCLR's DSTA-Net (spec/hico_hiclr.md §2.4, release config) with the MLP head.

    block(cin, cout, inter, stride):
      in_nets 1x1 cin -> 2*S*inter (bias)                 cin*2*S*inter + 2*S*inter
      alphas (1, S, 1, 1) + attention0s (1, S, V, V)      S + S*V*V
      out_nets 1x1 S*cin -> cout + BN                     S*cin*cout + cout + 2*cout
      ff_nets 1x1 cout -> cout + BN                       cout*cout + cout + 2*cout
      out_nett (7x1) cout -> cout + BN                    7*cout*cout + cout + 2*cout
      if cin != cout or stride != 1: downs1, downs2 1x1 cin -> cout + BN, downt2 1x1 cout -> cout + BN
    stem: proj 1x1 3 -> 32 (bias) + BN(32); head Linear(256, 256) -> ReLU -> Linear(256, num_class).
    """
    total = 3 * 32 + 32 + 2 * 32 + 256 * 256 + 256 + 256 * num_class + num_class
    for cin, cout, inter, stride in HICLR_CONFIG:
        total += cin * 2 * s * inter + 2 * s * inter + s + s * v * v
        total += s * cin * cout + 3 * cout + cout * cout + 3 * cout + 7 * cout * cout + 3 * cout
        if cin != cout or stride != 1:
            total += 2 * (cin * cout + 3 * cout) + cout * cout + 3 * cout
    return total


def test_parameter_count_matches_official_architecture():
    assert sum(p.numel() for p in DSTANet().parameters()) == hand_count()


def test_shapes_odd_batch_and_length():
    model = DSTANet()
    x = torch.randn(3, 3, 11, 25, 2)  # 11 -> 6 -> 3 frames
    assert model.representation(x).shape == (3, 256)
    assert model(x).shape == (3, 128)
    with pytest.raises(ValueError, match="T <= 50"):
        model(torch.randn(1, 3, 51, 25, 2))


def test_spatial_positional_encoding_values():
    pe = DSTANet().graph_layers[2].pes.pe  # 32 channels
    assert pe.shape == (1, 32, 50, 25)
    j, t, i = 7, 13, 3  # joint, frame, frequency index
    angle = j * math.exp(-(2 * i) * math.log(10000.0) / 32)
    assert torch.isclose(pe[0, 2 * i, t, j], torch.tensor(math.sin(angle)))
    assert torch.isclose(pe[0, 2 * i + 1, t, j], torch.tensor(math.cos(angle)))


CONV_BN_PAIRS = ("out_nets", "ff_nets", "out_nett", "downs1", "downs2", "downt2")


def test_gradients_eval_and_attention_dropout():
    model = DSTANet()
    x = torch.randn(3, 3, 5, 25, 2)
    model(x).square().sum().backward()
    for name, p in model.named_parameters():
        # the biases of the convolutions a BatchNorm follows: exact zeros, it cancels them (the float64
        # comparison with the official modules below checks that theirs are rounding)
        cancelled = name.endswith(".0.bias") and any(f".{b}." in name for b in CONV_BN_PAIRS)
        if cancelled:
            assert torch.equal(p.grad, torch.zeros_like(p)), name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))  # attentiondrop 0.5 on the strided shortcut


def test_official_state_dict_layout():
    model = DSTANet()
    keys = set(model.state_dict())
    for key in ("proj.weight", "input_map.0.running_mean", "graph_layers.0.pes.pe", "graph_layers.0.atts",
                "graph_layers.2.downt2.0.weight", "graph_layers.7.attention0s", "graph_layers.7.out_nett.1.weight",
                "fc.2.bias"):  # fmt: skip
        assert key in keys, key
    assert "graph_layers.0.downs1.0.weight" not in keys  # identity shortcuts have no parameters
    sd = {"encoder_q." + k: v + 1 for k, v in model.state_dict().items()}
    model.load_official_state_dict(sd, prefix="encoder_q.")
    assert torch.equal(model.graph_layers[4].alphas, sd["encoder_q.graph_layers.4.alphas"])


def official_block_forward(self, x):  # noqa: ANN001, ANN201
    """STAttentionBlock.forward written as the official code runs it (spec/hico_hiclr.md §2.4): the q/k
    split and the two einsums, the (N, S*C, T, V) tensor, and every conv + BN as its modules."""
    n, c, t, v = x.shape
    s, ci = self.num_subset, self.inter_channels
    q, k = torch.chunk(self.in_nets(self.pes(x)).view(n, 2 * s, ci, t, v), 2, dim=1)
    att = self.atts + torch.tanh(torch.einsum("nsctu,nsctv->nsuv", q, k) / (ci * t)) * self.alphas
    att = att + self.attention0s.repeat(n, 1, 1, 1)
    y = torch.einsum("nctu,nsuv->nsctv", x, att).contiguous().view(n, s * c, t, v)
    y = self.relu((self.downs1(x) if self.has_down else x) + self.out_nets(y))
    y = self.relu((self.downs2(x) if self.has_down else x) + self.ff_nets(y))
    return self.relu(self.drop(self.downt2(y) if self.has_down else y) + self.out_nett(y))


def test_fused_form_equals_the_official_modules_float64(monkeypatch):
    # The attention runs as SubsetScores on reordered q/k pairs and graph_conv with one adjacency per
    # sample, the 1x1 convolutions as batched GEMMs (pointwise_conv) and each BatchNorm with its
    # shortcut as one bn_act; written the official way (the block above, F.conv2d, the nn.BatchNorm2d
    # module, then the add), the output and every gradient agree to float64 rounding, in train mode
    # (batch statistics), through blocks with and without the down-sampling branches.
    torch.manual_seed(0)
    model = DSTANet(attentiondrop=0.0).double().train()
    with torch.no_grad():  # non-zero convolution biases (zero at init), so where each goes shows
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d) and m.bias is not None:
                m.bias.uniform_(-0.2, 0.2)
    x = torch.randn(3, 3, 11, 25, 2, dtype=torch.float64)
    params = list(model.parameters())
    y = model(x)
    weights = torch.randn_like(y)
    grads = torch.autograd.grad((y * weights).sum(), params)

    def as_module_conv(x, weight, bias=None, stride=1):  # noqa: ANN001, ANN202
        return torch.nn.functional.conv2d(x, weight.view(weight.shape[0], -1, 1, 1), bias, stride=(stride, 1))

    def module_bn_then_add(bn, y, residual=None, bias=None):  # noqa: ANN001, ANN202
        y = y if bias is None else y + bias.view(1, -1, 1, 1)  # the convolution's bias, then the module
        return bn(y) if residual is None else residual + bn(y)

    monkeypatch.setattr("skelfast.nn.dsta.pointwise_conv", as_module_conv)
    monkeypatch.setattr("skelfast.nn.dsta.bn_act", module_bn_then_add)
    monkeypatch.setattr("skelfast.nn.dsta.STAttentionBlock.forward", official_block_forward)
    y_official = model(x)
    grads_official = torch.autograd.grad((y_official * weights).sum(), params)
    torch.testing.assert_close(y, y_official, atol=1e-12, rtol=1e-10)
    for (name, _), got, want in zip(model.named_parameters(), grads, grads_official, strict=True):
        torch.testing.assert_close(got, want, atol=1e-11, rtol=1e-9, msg=name)
