"""ISC's HCN: bodies batched together equal the official per-body loop."""

import pytest
import torch
import torch.nn.functional as F

from skelfast.nn.hcn import HCN
from tests.utils import assert_close


def official_per_body(model: HCN, x: torch.Tensor) -> torch.Tensor:
    """skeleton-contrast ``HCN.forward`` up to the representation, literally: one body at a time."""
    n, c, t, v, m = x.shape
    motion = x[:, :, 1::, :, :] - x[:, :, 0:-1, :, :]
    motion = motion.permute(0, 1, 4, 2, 3).contiguous().view(n, c * m, t - 1, v)
    motion = F.interpolate(motion, size=(t, v), mode="bilinear", align_corners=False)
    motion = motion.contiguous().view(n, c, m, t, v).permute(0, 1, 3, 4, 2)
    outs = []
    for i in range(2):
        out = model.conv2(model.conv1(x[:, :, :, :, i])).permute(0, 3, 2, 1).contiguous()
        out_p = model.conv4(model.conv3(out))
        out = model.conv2m(model.conv1m(motion[:, :, :, :, i])).permute(0, 3, 2, 1).contiguous()
        out_m = model.conv4m(model.conv3m(out))
        outs.append(model.conv6(model.conv5(torch.cat((out_p, out_m), dim=1))))
    return torch.max(outs[0], outs[1]).view(n, -1)


def test_equals_official_per_body_loop_float64():
    model = HCN().double().eval()
    x = torch.randn(3, 3, 64, 25, 2, dtype=torch.float64)
    h = model.representation(x)
    assert h.shape == (3, 4096)
    assert_close(h, official_per_body(model, x), 1e-12, 1e-10, "HCN representation")


def test_parameter_count_matches_official_architecture():
    # per stream: conv1 3*64+64 = 256, conv2 (3x1) 64*64*3+64 = 12,352, conv3 25*32*9+32 = 7,232,
    #   conv4 32*64*9+64 = 18,496 -> 38,336, two streams 76,672
    # conv5 128*128*9+128 = 147,584; conv6 128*256*9+256 = 295,168
    # head: Linear(4096, 4096) 16,781,312 + Linear(4096, 128) 524,416
    expected = 76_672 + 147_584 + 295_168 + 16_781_312 + 524_416
    assert sum(p.numel() for p in HCN().parameters()) == expected == 17_825_152


@pytest.mark.parametrize("t", [64, 48])
def test_shapes_odd_batch(t):
    model = HCN(mlp=False).eval()
    h = model.representation(torch.randn(3, 3, t, 25, 2))
    assert h.shape == (3, 256 * (t // 16) * 4)


def test_gradients_eval_and_dropout():
    model = HCN(num_class=16)
    x = torch.randn(3, 3, 64, 25, 2)
    model(x).square().sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))  # Dropout2d(0.5) in conv4, conv5, conv6
    # dropout=0 (ISC's hcn_dropout option): the same weights, deterministic in train mode
    plain = HCN(num_class=16, dropout=0.0)
    plain.load_state_dict(model.state_dict())
    assert torch.equal(plain.train()(x), plain.eval()(x))


def test_init_and_bad_input():
    model = HCN()
    bound = (6 / (25 * 9 + 9 * 32)) ** 0.5  # conv3: fan_in 25*3*3, fan_out 3*3*32
    assert model.conv3[0].weight.abs().max() <= bound and torch.all(model.conv3[0].bias == 0)
    with pytest.raises(ValueError, match="M=2"):
        model(torch.randn(2, 3, 64, 25, 1))
    with pytest.raises(ValueError, match="dropout"):
        HCN(dropout=1.0)
