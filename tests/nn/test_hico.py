"""HiCo's hierarchical encoder: architecture, token layouts, quirks, heads."""

import pytest
import torch

from skelfast.nn.hico import HiCoEncoder, hico_inputs

# Parameters from spec/hico_hiclr.md §1.4-1.5 (d = 512, G = 4, projection 128):
#   t_embedding Linear(150, 512) + LayerNorm + Linear(512, 512): 77,312 + 1,024 + 262,656 = 340,992
#   s_embedding Linear(192, 512) + LayerNorm + Linear(512, 512): 98,816 + 1,024 + 262,656 = 362,496
#   two UDMs: depthwise Conv1d 512*5 + 512, LayerNorm 1,024: 2 * 4,096 = 8,192
#   heads: clip, part 2 * (512*512+512 + 512*128+128) = 656,640; td, sd 2 * (2048*512+512 + 65,664)
#          = 2,229,504; instance 4096*512+512 + 65,664 = 2,163,328
COMMON = 340_992 + 362_496 + 8_192 + 656_640 + 2_229_504 + 2_163_328
# one S2S encoder per domain:
#   GRU(512, 256, bidirectional): 2 * (3*256*512 + 3*256*256 + 6*256) = 1,182,720
#   LSTM(512, 256, bidirectional): 2 * (4*256*512 + 4*256*256 + 8*256) = 1,576,960
#   TransformerEncoderLayer(512, 4 heads, ff 512): in_proj 3*512*512 + 1,536, out_proj 262,656,
#   linear1 262,656, linear2 262,656, two LayerNorms 2,048 = 1,577,984
S2S = {"GRU": 1_182_720, "LSTM": 1_576_960, "Transformer": 1_577_984}


@pytest.mark.parametrize("encoder", ["GRU", "LSTM", "Transformer"])
def test_parameter_count_matches_official_architecture(encoder):
    assert sum(p.numel() for p in HiCoEncoder(encoder).parameters()) == COMMON + 2 * S2S[encoder]


def small(encoder: str = "GRU") -> HiCoEncoder:
    return HiCoEncoder(encoder, hidden_size=16, num_head=2, num_class=8)


@pytest.mark.parametrize("encoder", ["GRU", "LSTM", "Transformer"])
def test_shapes_odd_batch_and_lengths(encoder):
    model = small(encoder).eval()
    xc, xp = torch.randn(3, 13, 150), torch.randn(3, 50, 192)  # 13 -> 6 -> 3 -> 1, 50 -> 25 -> 12 -> 6
    vi = model.representation(xc, xp)
    assert vi.shape == (3, 2 * 4 * 16)
    z = model.project(vi)
    assert z.zc.shape == z.zp.shape == (3, 4, 8)
    assert z.zt.shape == z.zs.shape == z.zi.shape == (3, 8)


def test_domain_token_layouts():
    x = torch.randn(2, 3, 64, 25, 2)
    xc, xp = hico_inputs(x)
    assert xc.shape == (2, 64, 150) and xp.shape == (2, 50, 192)
    n, c, t, v, m = 1, 2, 37, 11, 1
    assert xc[n, t, (m * 25 + v) * 3 + c] == x[n, c, t, v, m]  # (body, joint, xyz) per frame
    assert xp[n, m * 25 + v, t * 3 + c] == x[n, c, t, v, m]  # one token per (body, joint)


def test_hierarchy_downsamples_embeddings_with_one_shared_udm_and_encoder():
    """Level i encodes UDM^i(embedding) with the same S2S encoder, max over tokens."""
    model = small("GRU").double().eval()
    xc, xp = torch.randn(3, 16, 150, dtype=torch.float64), torch.randn(3, 50, 192, dtype=torch.float64)
    vc, vp = model.features(xc, xp)
    enc = model.hi_encoder
    e = enc.t_embedding(xc)
    for level in range(4):
        assert torch.equal(vc[:, level], enc.t_encoder(e)[0].amax(dim=1))
        e = enc.t_downsample(e)
    assert e.shape[1] == 1  # 16 -> 8 -> 4 -> 2 -> 1 (the last one is never encoded)


def test_transformer_has_no_positional_encoding():
    """Quirk: at the finest level the Transformer + max-pool ignores token order."""
    model = small("Transformer").double().eval()
    xc, xp = torch.randn(3, 16, 150, dtype=torch.float64), torch.randn(3, 50, 192, dtype=torch.float64)
    perm = torch.randperm(50)
    vp = model.features(xc, xp)[1]
    vp_perm = model.features(xc, xp[:, perm])[1]
    torch.testing.assert_close(vp_perm[:, 0], vp[:, 0], atol=1e-12, rtol=1e-10)
    assert not torch.allclose(vp_perm[:, 1], vp[:, 1])  # the UDM convolution sees local order


def test_projection_heads_wiring():
    model = small("GRU").eval()
    xc, xp = torch.randn(3, 16, 150), torch.randn(3, 50, 192)
    vc, vp = model.features(xc, xp)
    vi = model.representation(xc, xp)
    z = model(xc, xp)
    torch.testing.assert_close(z.zc, model.clip_proj(vc))
    torch.testing.assert_close(z.zp, model.part_proj(vp))
    torch.testing.assert_close(z.zt, model.td_proj(vc.flatten(1)))
    torch.testing.assert_close(z.zs, model.sd_proj(vp.flatten(1)))
    torch.testing.assert_close(z.zi, model.instance_proj(vi))


@pytest.mark.parametrize("encoder", ["GRU", "Transformer"])
def test_gradients_and_eval_determinism(encoder):
    model = small(encoder)
    xc, xp = torch.randn(3, 16, 150), torch.randn(3, 50, 192)
    z = model(xc, xp)
    sum(t.square().sum() for t in z).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    model.eval()
    assert torch.equal(model.representation(xc, xp), model.representation(xc, xp))


def test_init_and_official_keys():
    model = small("Transformer")
    assert torch.all(model.hi_encoder.t_embedding[1].weight == 1)  # LayerNorm keeps its default
    w = model.instance_proj[0].weight  # xavier bound sqrt(6 / (128 + 16))
    assert w.abs().max() <= (6 / (128 + 16)) ** 0.5
    keys = set(model.state_dict())
    assert "hi_encoder.t_encoder.layers.0.self_attn.in_proj_weight" in keys
    assert "hi_encoder.s_downsample.conv.dw_conv.weight" in keys
    sd = {"encoder_q." + k: v + 1 for k, v in model.state_dict().items()}
    model.load_official_state_dict(sd, prefix="encoder_q.")
    assert torch.equal(model.td_proj[2].bias, sd["encoder_q.td_proj.2.bias"])
    with pytest.raises(ValueError, match="hico_inputs"):
        model(torch.randn(3, 16, 150), torch.randn(3, 50, 150))
