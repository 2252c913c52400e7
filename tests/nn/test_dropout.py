"""skelfast.nn.Dropout against nn.Dropout: the same distribution, identity in eval, nothing saved
but a seed; and keep_mask, the masks of the fused BatchNorm tails. (The op's own tests, its masks bit
for bit against the Philox reference, are in tests/ops/test_dropout.py.)"""

import math

import pytest
import torch
from torch import nn

from skelfast.nn.dropout import Dropout, dropout, keep_mask


def test_eval_mode_and_p_zero_are_the_identity():
    x = torch.randn(4, 5)
    assert Dropout(0.5).eval()(x) is x
    assert dropout(x, 0.0) is x


@pytest.mark.parametrize("p", [0.1, 0.25, 0.5, 0.8])
def test_kept_elements_are_scaled_and_the_keep_rate_is_one_minus_p(p):
    torch.manual_seed(0)
    x = torch.rand(200_000) + 0.5  # no zeros, so a zero in the output is a dropped element
    y = Dropout(p).train()(x)
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / (1 - p))
    # binomial(n, 1 - p): 5 standard deviations either way
    n = x.numel()
    assert abs(kept.sum().item() - n * (1 - p)) < 5 * math.sqrt(n * p * (1 - p))


@pytest.mark.parametrize("p", [0.25, 0.5])
@pytest.mark.parametrize("source", ["philox", "random_"])
def test_every_byte_of_a_draw_keeps_at_rate_one_minus_p(p, source, monkeypatch):
    """The byte paths read four mask bytes from each Philox word (the C++ kernel, on the CPU) or
    eight from each 64-bit ``random_`` draw (elsewhere): each byte lane (element index mod 8, the top
    byte included) must be uniform on its own, or some elements would drop at another rate. 2^20
    elements a lane, 5 binomial standard deviations."""
    if source == "random_":  # what a CUDA tensor, or a CPU without the extension, takes
        monkeypatch.setattr("skelfast.nn.dropout.keep_mask_cpp", lambda *args: None)
    torch.manual_seed(0)
    lanes = keep_mask(torch.Size([2**20, 8]), p, torch.device("cpu"))
    n = lanes.shape[0]
    for lane in range(8):
        kept = lanes[:, lane].sum().item()
        assert abs(kept - n * (1 - p)) < 5 * math.sqrt(n * p * (1 - p)), (lane, kept / n)
    # and neighbouring bytes are independent: P(both kept) = (1 - p)^2
    both = (lanes[:, 0] & lanes[:, 7]).sum().item()
    q = (1 - p) ** 2
    assert abs(both - n * q) < 5 * math.sqrt(n * q * (1 - q))


def test_p_one_drops_everything_like_nn_dropout():
    x = torch.randn(3, 4)
    torch.testing.assert_close(Dropout(1.0).train()(x), nn.Dropout(1.0).train()(x))


def test_gradient_is_the_mask_over_one_minus_p():
    torch.manual_seed(1)
    x = (torch.rand(64, 16, 50, 25) + 0.5).requires_grad_()
    y = dropout(x, 0.5)
    (g,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(g, (y != 0).float() * 2.0)


def test_autograd_saves_only_the_seed():
    saved = []
    x = torch.randn(8, 16, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        dropout(x, 0.3).sum()
    # nn.Dropout saves a float mask, 4 bytes per element; the seeded kernel regenerates its mask
    assert [(t.dtype, t.numel()) for t in saved] == [(torch.int64, 1)]


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_keep_mask_rate_is_one_minus_p(p):
    torch.manual_seed(2)
    n = 1_000_000
    kept = keep_mask(torch.Size([n]), p, torch.device("cpu")).sum().item()
    assert abs(kept - n * (1 - p)) < 5 * math.sqrt(n * p * (1 - p))


def test_seeded_runs_repeat_and_bad_p_is_rejected():
    x = torch.randn(1000)
    torch.manual_seed(3)
    a = dropout(x, 0.5)
    torch.manual_seed(3)
    torch.testing.assert_close(dropout(x, 0.5), a)
    for p in (-0.1, 1.5):
        with pytest.raises(ValueError, match="dropout probability"):  # nn.Dropout's own check
            Dropout(p)


def test_state_dict_matches_nn_dropout():
    assert Dropout(0.5).state_dict().keys() == nn.Dropout(0.5).state_dict().keys()
    assert isinstance(Dropout(0.5), nn.Dropout)  # code that finds dropout layers by type still does


def test_fused_tails_draw_nn_dropouts_mask_under_the_reference_backend():
    """The methods benchmark's reference column must draw ST-GCN's dropout as nn.Dropout does."""
    from skelfast import use_backend
    from skelfast.nn.batch_norm import dropout_keep

    x = torch.randn(4, 8, 5, 3)
    with use_backend("dropout=reference"):
        torch.manual_seed(6)
        keep, scale = dropout_keep(0.5, True, x)
    torch.manual_seed(6)
    assert torch.equal(keep, torch.empty_like(x).bernoulli_(0.5).bool()) and scale == 2.0
    torch.manual_seed(6)
    fused, _ = dropout_keep(0.5, True, x)
    torch.manual_seed(6)
    assert torch.equal(fused, keep_mask(x.shape, 0.5, x.device))
