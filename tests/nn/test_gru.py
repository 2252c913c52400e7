"""ISC's stepped "BiGRU" and CRRL's packed GRUs against literal slow forms written here."""

import pytest
import torch

from skelfast.nn.gru import CRRLDecoder, CRRLEncoder, ISCSeqEncoder, crrl_first_last
from tests.utils import assert_close

F64 = dict(atol=1e-12, rtol=1e-10)


def isc_official_stepped(model: ISCSeqEncoder, x: torch.Tensor) -> torch.Tensor:
    """skeleton-contrast ``EncoderRNN.forward`` literally: the bidirectional nn.GRU called once per
    frame with a length-1 input and the previous call's hidden state; all outputs concatenated."""
    gru = model.encoder.gru
    outputs = []
    hidden = None
    for t in range(x.shape[1]):
        if t == 0:
            out, hidden = gru(x[:, t : t + 1, :])
        else:
            out, hidden = gru(x[:, t : t + 1, :], hidden)
        outputs.append(out)
    return torch.cat(outputs, dim=1)


def test_isc_fast_sequence_equals_frame_by_frame_float64():
    model = ISCSeqEncoder(input_size=150, hidden_size=24, num_layers=3, num_class=16).double()
    x = torch.randn(3, 11, 150, dtype=torch.float64)
    slow = isc_official_stepped(model, x)
    assert_close(model.sequence(x), slow, **F64, what="every frame, both cells of the top layer")
    assert_close(model.representation(x), slow[:, -1], **F64, what="representation = last frame")
    # gradients of the fast form equal those of the stepped form
    grad = torch.randn(3, 48, dtype=torch.float64)
    params = list(model.encoder.parameters())
    fast_grads = torch.autograd.grad(model.representation(x), params, grad)
    slow_grads = torch.autograd.grad(isc_official_stepped(model, x)[:, -1], params, grad)
    for name, a, b in zip(
        [n for n, _ in model.encoder.named_parameters()], fast_grads, slow_grads, strict=True
    ):
        assert_close(a, b, **F64, what=f"grad {name}")


def test_isc_is_causal_not_bidirectional():
    """Changing the last frame must not change earlier outputs (a true BiGRU would)."""
    model = ISCSeqEncoder(input_size=150, hidden_size=8, num_layers=3)
    x = torch.randn(3, 7, 150)
    y = x.clone()
    y[:, -1] += 1
    assert torch.equal(model.sequence(x)[:, :-1], model.sequence(y)[:, :-1])


def test_isc_parameter_count_matches_official_architecture():
    # nn.GRU(150, 1024, 3, bidirectional): per direction 3*H*in + 3*H*H + 2*3*H
    #   layer 0: 2 * (3*1024*150 + 3*1024*1024 + 6*1024) = 7,225,344
    #   layers 1, 2 (input 2048): 2 * 2 * (3*1024*2048 + 3*1024*1024 + 6*1024) = 37,773,312
    # MLP head: 2048*2048 + 2048 + 2048*128 + 128 = 4,458,624
    model = ISCSeqEncoder()
    assert sum(p.numel() for p in model.parameters()) == 7_225_344 + 37_773_312 + 4_458_624


def test_isc_shapes_grads_and_eval():
    model = ISCSeqEncoder(input_size=150, hidden_size=16, num_layers=3, num_class=8)
    x = torch.randn(5, 9, 150)
    assert model.representation(x).shape == (5, 32)
    out = model(x)
    assert out.shape == (5, 8)
    out.square().sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    model.eval()
    assert torch.equal(model(x), model(x))


def test_isc_init_is_xavier_except_mlp_first_layer():
    model = ISCSeqEncoder(input_size=150, hidden_size=64, num_layers=1, num_class=32)
    w = model.encoder.gru.weight_hh_l0  # (3*64, 64): xavier bound sqrt(6 / (192 + 64))
    assert w.abs().max() <= (6 / (192 + 64)) ** 0.5 and w.abs().max() > 0.9 * (6 / (192 + 64)) ** 0.5
    assert torch.all(model.encoder.gru.bias_hh_l0.abs() <= 1 / 64**0.5)  # biases keep PyTorch's default


def crrl_per_sample(encoder: CRRLEncoder, x: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """The slow form: each sequence alone, cut to its length, averaged over its frames."""
    return torch.cat([encoder.gru(x[i : i + 1, :n])[0].mean(dim=1) for i, n in enumerate(lengths)])


def test_crrl_packed_masked_average_equals_per_sample_float64():
    encoder = CRRLEncoder(input_size=150, hidden_size=16).double().eval()
    lengths = [4, 9, 1, 6, 9]  # unsorted, with a length-1 and a full-length sequence
    x = torch.randn(5, 9, 150, dtype=torch.float64)
    x[torch.arange(9) >= torch.tensor(lengths)[:, None]] = 0  # padding, as the collate produces
    assert_close(encoder.representation(x, lengths), crrl_per_sample(encoder, x, lengths), **F64, what="TAP")
    # padded frames never reach the GRU: garbage there changes nothing
    y = x.clone()
    y[torch.arange(9) >= torch.tensor(lengths)[:, None]] = 1e3
    assert torch.equal(encoder.representation(y, lengths), encoder.representation(x, lengths))
    feats = encoder.sequence(x, lengths)
    first, last = crrl_first_last(feats, lengths)
    for i, n in enumerate(lengths):
        alone = encoder.gru(x[i : i + 1, :n])[0][0]
        assert_close(first[i], alone[0], **F64, what="first frame")
        assert_close(last[i], alone[n - 1], **F64, what="last valid frame")
        assert torch.all(feats[i, n:] == 0)


def test_crrl_decoder_equals_per_sample_float64():
    decoder = CRRLDecoder(code_size=32, output_size=150).double().eval()
    code = torch.randn(3, 32, dtype=torch.float64)
    lengths = [2, 7, 5]
    out = decoder(code, lengths)
    assert out.shape == (3, 7, 150)
    for i, n in enumerate(lengths):
        alone = decoder.gru(code[i].expand(1, n, 32))[0][0]
        assert_close(out[i, :n], alone, **F64, what=f"sequence {i}")
        assert torch.all(out[i, n:] == 0)
    assert out.abs().max() < 1  # the reconstruction is a GRU hidden state, bounded by tanh


def test_crrl_parameter_counts_match_official_architecture():
    # encoder nn.GRU(150, 256, 2, bidirectional): per direction 3*H*in + 3*H*H + 6*H
    #   layer 0: 2 * (3*256*150 + 3*256*256 + 6*256) = 626,688; layer 1 (in 512): 2 * (3*256*512 + ...) = 1,182,720
    # MLP 512 -> 512 -> 512: 2 * (512*512 + 512) = 525,312
    assert sum(p.numel() for p in CRRLEncoder().parameters()) == 626_688 + 1_182_720 + 525_312
    # decoder nn.GRU(512, 150, 2): layer 0 3*150*512 + 3*150*150 + 900 = 298,800; layer 1 135,900
    assert sum(p.numel() for p in CRRLDecoder().parameters()) == 298_800 + 135_900


def test_crrl_grads_and_dropout():
    encoder, decoder = CRRLEncoder(input_size=150, hidden_size=16), CRRLDecoder(code_size=32, output_size=150)
    x = torch.randn(3, 6, 150)
    lengths = [6, 2, 4]
    feats = encoder.sequence(x, lengths)
    first, last = crrl_first_last(feats, lengths)
    loss = encoder.project(encoder.representation(x, lengths)).square().sum()
    loss = loss + decoder(first, lengths).square().sum() + decoder(last, lengths).square().sum()
    loss.backward()
    for name, p in [*encoder.named_parameters(), *decoder.named_parameters()]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    encoder.eval()
    assert torch.equal(encoder(x, lengths), encoder(x, lengths))
    encoder.train()
    assert not torch.equal(encoder(x, lengths), encoder(x, lengths))  # inter-layer dropout 0.2


def test_crrl_official_keys_and_bad_lengths():
    encoder = CRRLEncoder(input_size=150, hidden_size=16)
    student_mlp = {
        "classifier_." + k[3:]: v + 1 for k, v in encoder.state_dict().items() if k.startswith("fc.")
    }
    saved_encoder = {k: v + 1 for k, v in encoder.state_dict().items() if k.startswith("gru.")}
    encoder.load_official_state_dict(saved_encoder | student_mlp)
    assert torch.equal(encoder.fc[2].bias, student_mlp["classifier_.2.bias"])
    with pytest.raises(ValueError, match="lengths must be in"):
        encoder(torch.randn(2, 5, 150), [6, 2])
    with pytest.raises(ValueError, match="one entry per sequence"):
        encoder(torch.randn(2, 5, 150), [5])
