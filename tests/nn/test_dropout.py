"""skelfast.nn.Dropout against nn.Dropout: the same distribution, identity in eval, a 1-byte mask."""

import math

import pytest
import torch
from torch import nn

from skelfast.nn.dropout import Dropout, dropout


def test_eval_mode_and_p_zero_are_the_identity():
    x = torch.randn(4, 5)
    assert Dropout(0.5).eval()(x) is x
    assert dropout(x, 0.0) is x


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_kept_elements_are_scaled_and_the_keep_rate_is_one_minus_p(p):
    torch.manual_seed(0)
    x = torch.rand(200_000) + 0.5  # no zeros, so a zero in the output is a dropped element
    y = Dropout(p).train()(x)
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / (1 - p))
    # binomial(n, 1 - p): 5 standard deviations either way
    n = x.numel()
    assert abs(kept.sum().item() - n * (1 - p)) < 5 * math.sqrt(n * p * (1 - p))


def test_p_one_drops_everything_like_nn_dropout():
    x = torch.randn(3, 4)
    torch.testing.assert_close(Dropout(1.0).train()(x), nn.Dropout(1.0).train()(x))


def test_gradient_is_the_mask_over_one_minus_p():
    torch.manual_seed(1)
    x = (torch.rand(64, 16, 50, 25) + 0.5).requires_grad_()
    y = dropout(x, 0.5)
    (g,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(g, (y != 0).float() * 2.0)


def test_autograd_saves_a_bool_mask_only():
    saved = []
    x = torch.randn(8, 16, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        dropout(x, 0.3).sum()
    assert [t.dtype for t in saved] == [torch.bool]  # nn.Dropout saves a float mask, 4 bytes per element


def test_seeded_runs_repeat_and_bad_p_is_rejected():
    x = torch.randn(1000)
    torch.manual_seed(3)
    a = dropout(x, 0.5)
    torch.manual_seed(3)
    torch.testing.assert_close(dropout(x, 0.5), a)
    for p in (-0.1, 1.5):
        with pytest.raises(ValueError, match="dropout probability must be in"):
            Dropout(p)


def test_state_dict_matches_nn_dropout():
    assert Dropout(0.5).state_dict().keys() == nn.Dropout(0.5).state_dict().keys()
