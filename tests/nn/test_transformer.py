"""skelfast.nn.TransformerEncoderLayer against nn.TransformerEncoderLayer: same parameters and
state_dict, the same outputs wherever no dropout is drawn, the written-out attention equal to
nn.MultiheadAttention's in float64, and dropout drawn through skelfast.ops.dropout in training."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import skelfast.nn.transformer as transformer
from skelfast import use_backend
from skelfast.nn.transformer import TransformerEncoderLayer
from tests.utils import assert_close


def pair(dropout: float = 0.1, batch_first: bool = True, norm_first: bool = False):
    torch.manual_seed(0)
    official = nn.TransformerEncoderLayer(
        16, 4, 24, dropout, batch_first=batch_first, norm_first=norm_first
    ).double()
    ours = TransformerEncoderLayer(
        16, 4, 24, dropout, batch_first=batch_first, norm_first=norm_first
    ).double()
    ours.load_state_dict(official.state_dict())
    return official, ours


def test_state_dict_is_nn_s():
    official, ours = pair()
    assert list(official.state_dict()) == list(ours.state_dict())


@pytest.mark.parametrize("norm_first", [False, True])
def test_eval_and_dropout_free_training_match_nn(norm_first):
    official, ours = pair(norm_first=norm_first)
    x = torch.randn(3, 7, 16, dtype=torch.float64)
    official.eval(), ours.eval()
    assert_close(ours(x), official(x), 1e-12, 1e-12, "eval")
    official, ours = pair(dropout=0.0, norm_first=norm_first)
    official.train(), ours.train()
    assert_close(ours(x), official(x), 1e-12, 1e-12, "train, p = 0")


def test_written_out_attention_is_nn_multihead_attention(monkeypatch):
    """With the weights' dropout replaced by the identity, the attention block is nn's (float64)."""
    official, ours = pair(dropout=0.3)
    ours.train()
    ours.dropout1 = nn.Identity()
    monkeypatch.setattr(transformer, "dropout", lambda t, p, training: t)
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    assert ours._own_attention(None, None)
    want = official.self_attn.eval()(x, x, x, need_weights=False)[0]
    assert_close(ours._sa_block(x, None, None), want, 1e-12, 1e-12, "attention block")


def test_training_draws_skelfast_dropout_and_repeats_under_a_seed():
    _, ours = pair(dropout=0.2)
    ours.train()
    x = torch.randn(4, 11, 16, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(5)
    first = ours(x)
    torch.manual_seed(5)
    assert torch.equal(ours(x), first)
    assert not torch.allclose(first, ours.eval()(x))
    ours.train()
    first.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in ours.parameters())
    assert x.grad is not None


def test_reference_dropout_backend_runs_nn_s_attention(monkeypatch):
    """The benchmarks' reference column must be PyTorch's own block, not our written-out one."""
    _, ours = pair(dropout=0.2)
    ours.train()

    def not_expected(*args: object) -> None:
        raise AssertionError("the written-out attention ran under the reference backend")

    monkeypatch.setattr(transformer, "dropout", not_expected)
    with use_backend("dropout=reference"):
        assert ours(torch.randn(2, 5, 16, dtype=torch.float64)).shape == (2, 5, 16)


def test_masked_or_sequence_first_calls_take_nn_s_block():
    _, ours = pair(dropout=0.2)
    ours.train()
    mask = torch.zeros(2, 5, dtype=torch.bool)
    assert not ours._own_attention(None, mask)
    assert not ours._own_attention(torch.zeros(5, 5), None)
    _, seq_first = pair(dropout=0.2, batch_first=False)
    assert not seq_first.train()._own_attention(None, None)
    out = ours(torch.randn(2, 5, 16, dtype=torch.float64), src_key_padding_mask=mask)
    assert out.shape == (2, 5, 16)
