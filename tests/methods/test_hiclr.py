"""HiCLR (skelfast.methods.hiclr) against a literal composition of the official loss, plus the MoCo
mechanics (momentum, queue), the mining switch, the mask token and a short convergence run."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from skelfast import use_backend
from skelfast.augment.recipes import HiCLR as HiCLRRecipe
from skelfast.configs import load_config
from skelfast.data.normalize import frame50
from skelfast.data.synthetic import generate
from skelfast.engine.evaluation.common import settings_from_dict
from skelfast.engine.evaluation.linear import LinearSettings
from skelfast.methods import build_method
from skelfast.methods.hiclr import HiCLR, HiCLRConfig, hop_distance_spatial_graph
from skelfast.methods.moco import copy_parameters
from skelfast.nn import stgcn_graph
from skelfast.ops import augment
from skelfast.skeleton import NTU
from tests.utils import assert_close

N, T, V, M = 4, 12, 25, 2
TINY = {"hidden_channels": 4, "hidden_dim": 8, "feature_dim": 8, "queue_size": 32}


def tiny(**options: object) -> HiCLR:
    return HiCLR(HiCLRConfig(**{**TINY, **options}))


def batch(dtype: torch.dtype = torch.float32, n: int = N, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    # smooth motion (cumulative steps), like skeleton coordinates in frame50 form
    x = 0.3 * torch.randn(n, 3, 1, V, M, generator=g) + 0.05 * torch.randn(n, 3, T, V, M, generator=g).cumsum(
        2
    )
    return x.to(dtype), torch.full((n,), T)


def step(method: HiCLR, x: torch.Tensor, lengths: torch.Tensor, seed: int = 7):
    torch.manual_seed(123)  # the dropout draws
    return method(x, lengths, torch.Generator().manual_seed(seed))


def literal_hiclr_loss(
    q: torch.Tensor,
    q1: torch.Tensor,
    q2: torch.Tensor,
    k: torch.Tensor,
    queue: torch.Tensor,
    tau: float,
    mining: bool,
    topk: int = 1,
    weight: float = 0.5,
) -> torch.Tensor:
    """The official processor's loss, written out from explicit (N, 1 + K) logits over [k, queue]."""
    logits = [torch.cat([(b * k).sum(1, keepdim=True), b @ queue.T], 1) / tau for b in (q, q1, q2)]
    log_p = [F.log_softmax(lg, 1) for lg in logits]
    if mining:  # AimCLR's mask: the key plus the top-k raw-cosine queue entries of each branch
        mask = torch.zeros_like(logits[0])
        mask[:, 0] = 1
        for b in (q, q1, q2):
            mask[:, 1:].scatter_(1, torch.topk(b @ queue.T, topk, dim=1).indices, 1.0)
        nce = (-(log_p[0] * mask).sum(1) / mask.sum(1)).mean()
    else:
        nce = -log_p[0][:, 0].mean()
    l1 = -(log_p[0].detach().exp() * log_p[1]).sum(1).mean()
    l2 = -(log_p[1].detach().exp() * log_p[2]).sum(1).mean()
    return nce + weight * (l1 + l2)


def replay_step(before: HiCLR, x: torch.Tensor, seed: int = 7) -> torch.Tensor:
    """The same step written out on a copy: the four recipes drawn in Feeder_triple's order from the
    same generator, three query passes, the EMA of the key encoder, the key pass, the literal loss."""
    cfg = before.config
    g = torch.Generator().manual_seed(seed)
    valid = torch.full((x.shape[0],), x.shape[2])
    recipes = [HiCLRRecipe(), HiCLRRecipe(), HiCLRRecipe(strong=True), HiCLRRecipe(strong=True, mask=True)]
    params = [r.sample(valid, V, g) for r in recipes]
    xq, xk, xq1 = (augment(x, valid, p) for p in params[:3])
    xq2 = augment(x, valid, params[3], fill=before.mask_param)
    torch.manual_seed(123)
    q, q1, q2 = (F.normalize(before.encoder_q(v), dim=1) for v in (xq, xq1, xq2))
    with torch.no_grad():
        for pk, pq in zip(before.encoder_k.parameters(), before.encoder_q.parameters(), strict=True):
            pk.copy_(cfg.momentum * pk + (1 - cfg.momentum) * pq)
        k = F.normalize(before.encoder_k(xk), dim=1)
    mining = before.epoch >= cfg.mining_epoch
    return literal_hiclr_loss(q, q1, q2, k, before.queue.bank.clone(), cfg.temperature, mining, cfg.topk)


@pytest.mark.parametrize(("epoch", "topk"), [(149, 1), (150, 1), (150, 2)])
def test_loss_and_gradients_equal_literal_composition(epoch: int, topk: int) -> None:
    method = tiny(topk=topk).double()
    method.set_epoch(epoch)  # mining_epoch 150: phase 1 at 149, mining from 150
    before = copy.deepcopy(method)
    x, lengths = batch(torch.float64)
    out = step(method, x, lengths)
    expected = replay_step(before, x)
    # float64 throughout: the fused statistics and the explicit logits differ only by rounding
    assert_close(out.loss, expected, atol=1e-10, rtol=1e-10, what="loss")
    out.loss.backward()
    expected.backward()
    assert_close(
        method.mask_param.grad, before.mask_param.grad, atol=1e-10, rtol=1e-8, what="mask token grad"
    )
    for (name, p), p_ref in zip(
        method.encoder_q.named_parameters(), before.encoder_q.parameters(), strict=True
    ):
        assert_close(p.grad, p_ref.grad, atol=1e-10, rtol=1e-8, what=name)
    assert set(out.terms) == {"nce", "consistency_1", "consistency_2"}
    assert_close(
        out.loss.detach(),
        out.terms["nce"] + 0.5 * (out.terms["consistency_1"] + out.terms["consistency_2"]),
        atol=1e-12,
        rtol=0,
        what="terms",
    )


def test_mining_switches_at_the_configured_epoch() -> None:
    method = tiny(mining_epoch=3)
    x, lengths = batch()
    losses = {}
    for epoch in (2, 3):
        method.set_epoch(epoch)
        losses[epoch] = step(copy.deepcopy(method), x, lengths).terms["nce"]
    assert not tiny(mining_epoch=3).mining
    method.set_epoch(2)
    assert not method.mining
    method.set_epoch(3)
    assert method.mining
    # the mined positives' mean log-probability is not the single-key InfoNCE of the same step
    assert not torch.allclose(losses[2], losses[3])


def test_sgd_step_trains_query_encoder_and_mask_token_only() -> None:
    method = tiny()
    x, lengths = batch()
    q_before = [p.detach().clone() for p in method.encoder_q.parameters()]
    out = step(method, x, lengths)
    k_after_forward = [p.detach().clone() for p in method.encoder_k.parameters()]
    trainable = [p for p in method.parameters() if p.requires_grad]
    assert not any(p.requires_grad for p in method.encoder_k.parameters())
    opt = torch.optim.SGD(trainable, lr=0.1, momentum=0.9)
    opt.zero_grad()
    out.loss.backward()
    assert method.mask_param.grad is not None and method.mask_param.grad.abs().item() > 0
    opt.step()
    moved = [
        not torch.equal(a, b.detach()) for a, b in zip(q_before, method.encoder_q.parameters(), strict=True)
    ]
    assert sum(moved) > len(moved) // 2
    for a, b in zip(k_after_forward, method.encoder_k.parameters(), strict=True):
        assert torch.equal(a, b)  # the key encoder moves only by the EMA, inside forward


def test_momentum_update_moves_key_by_one_minus_m_of_the_difference() -> None:
    method = tiny(momentum=0.9)
    k0 = [p.detach().clone() for p in method.encoder_k.parameters()]
    q0 = [p.detach().clone() for p in method.encoder_q.parameters()]
    x, lengths = batch()
    step(method, x, lengths)
    for a, b, k in zip(k0, q0, method.encoder_k.parameters(), strict=True):
        # one lerp: k + 0.1 (q - k), equal up to one float32 rounding
        assert_close(k, a + 0.1 * (b - a), atol=1e-7, rtol=1e-6, what="EMA")


def test_key_encoder_init_official_independent_or_copy() -> None:
    official = tiny()
    diff = [
        not torch.equal(a, b)
        for a, b in zip(official.encoder_q.parameters(), official.encoder_k.parameters(), strict=True)
    ]
    assert any(diff)  # weights_init re-applied after the copy: a different draw
    copied = tiny(key_init="copy")
    for a, b in zip(copied.encoder_q.parameters(), copied.encoder_k.parameters(), strict=True):
        assert torch.equal(a, b)


def test_queue_holds_the_enqueued_keys_with_wrap_around() -> None:
    method = tiny(queue_size=10)
    initial = method.queue.bank.clone()
    keys = []
    method.encoder_k.register_forward_hook(lambda mod, inp, out: keys.append(F.normalize(out, dim=1)))
    x, lengths = batch()
    for s in range(3):
        step(method, x, lengths, seed=s)
    assert len(keys) == 3  # one key pass per step, basic view k only
    bank = method.queue.bank
    # steps write rows 0-3, 4-7, then 8, 9 and (wrapping) 0, 1
    assert_close(bank[2:4], keys[0][2:4], atol=0, rtol=0, what="step 1 rows 2-3")
    assert_close(bank[4:8], keys[1], atol=0, rtol=0, what="step 2")
    assert_close(bank[8:10], keys[2][:2], atol=0, rtol=0, what="step 3 before the wrap")
    assert_close(bank[0:2], keys[2][2:], atol=0, rtol=0, what="step 3 after the wrap")
    assert int(method.queue.ptr[0]) == 2
    assert not torch.equal(bank, initial)


def test_reference_backend_agrees_with_fused_path() -> None:
    # Without dropout: under the reference backend ST-GCN's mask is nn.Dropout's bernoulli_ draw, another
    # stream than the fused path's (tests/nn/test_dropout.py checks each)
    method = tiny(dropout=0.0)
    method.set_epoch(150)  # the mining phase exercises the top-1 search as well
    x, lengths = batch()
    ref = copy.deepcopy(method)
    out = step(method, x, lengths)
    with use_backend("reference"):
        out_ref = step(ref, x, lengths)
    # float32: graph convolutions, augmentation and the loss sum in other orders (about 1e-6 relative)
    assert_close(out.loss, out_ref.loss, atol=1e-4, rtol=1e-4, what="loss")
    out.loss.backward()
    out_ref.loss.backward()
    assert_close(method.mask_param.grad, ref.mask_param.grad, atol=1e-4, rtol=1e-3, what="mask grad")
    assert_close(method.queue.bank, ref.queue.bank, atol=1e-5, rtol=1e-4, what="queue")


def test_batched_query_branches_match_separate_passes_in_eval_mode() -> None:
    # with BatchNorm on running statistics and no dropout the one 3N pass is the three N passes
    separate = tiny().eval()
    batched = copy.deepcopy(separate)
    batched.config.batch_query_branches = True
    x, lengths = batch()
    a, b = step(separate, x, lengths), step(batched, x, lengths)
    assert_close(a.loss, b.loss, atol=1e-5, rtol=1e-5, what="loss")


def test_dsta_encoder_and_streams_feature_encoder() -> None:
    method = tiny(encoder="dsta", num_frames=T, dsta_blocks=[[8, 8, 4, 1], [8, 16, 4, 2]], stream="motion")
    x, lengths = batch()
    out = step(method, x, lengths)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    fe = method.feature_encoder()
    assert fe.feature_dim == 16
    fe.eval()
    view = fe.transform(train=False)(x, lengths, torch.Generator().manual_seed(0))
    motion = torch.zeros_like(x)
    motion[:, :, :-1] = x[:, :, 1:] - x[:, :, :-1]  # the official motion stream, no augmentation
    assert_close(view, motion, atol=1e-6, rtol=1e-6, what="motion view")
    assert fe(view, lengths).shape == (N, 16)


def test_body_pooling_present_equals_official_mean_when_every_body_is_present() -> None:
    # each body encoded as its own sample is how the encoders fold bodies anyway: same BN rows, same dropout
    official = tiny().double()
    present = copy.deepcopy(official)
    present.config.body_pooling = "present"
    x, lengths = batch(torch.float64)
    a, b = step(official, x, lengths), step(present, x, lengths)
    assert_close(a.loss, b.loss, atol=1e-10, rtol=1e-10, what="loss")


def test_body_pooling_present_ignores_the_zero_second_body() -> None:
    method = tiny(body_pooling="present").double().eval()
    x, lengths = batch(torch.float64)
    x[1, ..., 1] = 0  # sample 1: a single-person clip
    features = method.feature_encoder()
    alone = method.encoder_q.representation(x[1:2, ..., :1])
    assert_close(features(x, lengths)[1:2], alone, atol=1e-12, rtol=1e-10, what="present bodies only")
    official = copy.deepcopy(method)
    official.config.body_pooling = "mean"
    with_zero = official.feature_encoder()(x, lengths)[1:2]
    # the official mean: (body 0 + the zero body's features) / 2, and a zero body has non-zero features
    zero_body = official.encoder_q.representation(torch.zeros_like(x[1:2, ..., :1]))
    assert_close(with_zero, (alone + zero_body) / 2, atol=1e-12, rtol=1e-10, what="official mean")
    assert not torch.allclose(with_zero, alone)


def test_graph_partition_by_true_hop_distance() -> None:
    official = stgcn_graph("ntu", "spatial")
    fixed = hop_distance_spatial_graph()
    # a tree: each of the 24 bones points towards the centre one way and away from it the other
    assert [int((a != 0).sum()) for a in fixed] == [25, 24, 24]
    assert [int((a != 0).sum()) for a in official] == [25, 40, 8]  # the max_hop = 1 quirk (spec §2.3)
    assert torch.equal(fixed.sum(0), official.sum(0))  # the same normalised adjacency, split otherwise
    touches_centre = torch.zeros(V, V, dtype=torch.bool)
    touches_centre[NTU.center], touches_centre[:, NTU.center] = True, True
    # the official split is right for the 8 edges at the centre (their distances are finite)
    assert torch.equal(fixed * touches_centre, official * touches_centre)
    method = tiny(graph_partition="hop_distance")
    assert torch.equal(method.encoder_q.A, fixed) and torch.equal(method.encoder_k.A, fixed)
    assert torch.isfinite(step(method, *batch()).loss)
    with pytest.raises(ValueError, match="graph_partition"):
        HiCLRConfig(encoder="dsta", graph_partition="hop_distance")


def test_flip_mirrors_adds_an_x_mirror_to_flipped_samples_only() -> None:
    n = 16
    official = tiny().view_params(n, T, V, torch.Generator().manual_seed(3))
    mirrored = tiny(flip_mirrors=True).view_params(n, T, V, torch.Generator().manual_seed(3))
    mirror = torch.diag(torch.tensor([-1.0, 1.0, 1.0]))
    for name in ("q", "k"):  # the basic views have no flip
        assert torch.equal(mirrored[name].matrix, official[name].matrix)
    for name in ("q1", "q2"):
        flipped = (official[name].joint_source != torch.arange(V)).any(1)
        assert 0 < int(flipped.sum()) < n  # p = 0.5: both kinds occur with this seed
        assert torch.equal(mirrored[name].joint_source, official[name].joint_source)
        assert torch.equal(mirrored[name].matrix[~flipped], official[name].matrix[~flipped])
        assert torch.equal(mirrored[name].matrix[flipped], official[name].matrix[flipped] @ mirror)


def test_bf16_autocast_keeps_the_loss_and_queue_in_fp32() -> None:
    # DSTA-Net (no graph_conv) under CPU autocast: the encoders return bf16, the loss and queue stay fp32
    method = tiny(encoder="dsta", num_frames=T, dsta_blocks=[[8, 8, 4, 1], [8, 16, 4, 2]])
    x, lengths = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = step(method, x, lengths)
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    assert method.queue.bank.dtype == torch.float32
    out.loss.backward()
    assert method.mask_param.grad is not None


def test_official_configs_build() -> None:
    config = load_config("hiclr")
    method = build_method(config["method"], config.get("model"))
    cfg = method.config
    assert (cfg.queue_size, cfg.temperature, cfg.momentum, cfg.feature_dim) == (32768, 0.07, 0.999, 128)
    assert (cfg.mining_epoch, cfg.topk, cfg.mask_ratio, cfg.consistency_weight) == (150, 1, 0.1, 0.5)
    assert cfg.to_dict() == HiCLRConfig().to_dict()  # the file states the official defaults
    assert method.queue.bank.shape == (32768, 128)
    assert method.feature_encoder().feature_dim == 256
    x, lengths = batch(n=2)
    out = step(method, x, lengths)  # the full quarter-width ST-GCN runs one step
    assert torch.isfinite(out.loss)
    assert config["train"]["weight_decay"] == 1e-4 and config["train"]["milestones"] == [250]
    linear = settings_from_dict(LinearSettings, config["eval"]["linear"], "linear")
    assert (linear.lr, linear.milestones, linear.init_std, linear.eval_every) == (3.0, (80,), 0.02, 5)
    dsta = load_config("hiclr_transformer")
    assert build_method(dsta["method"], dsta["model"]).config.encoder == "dsta"
    assert dsta["train"]["weight_decay"] == 5e-4
    pku = load_config("hiclr_pku2")
    assert build_method(pku["method"], pku["model"]).config.mining_epoch == 750
    assert (pku["train"]["epochs"], pku["train"]["milestones"]) == (1500, [1250])


def test_bad_options_are_rejected() -> None:
    with pytest.raises(ValueError, match="encoder"):
        HiCLRConfig(encoder="gru")
    with pytest.raises(ValueError, match="key_init"):
        HiCLRConfig(key_init="same")
    with pytest.raises(ValueError, match="unknown option"):
        build_method("hiclr", {"queue": 10})
    with pytest.raises(ValueError, match=r"\(N, 3, T, V, M\)"):
        tiny()(torch.zeros(2, 3, T, V), torch.full((2,), T), torch.Generator())


def test_short_run_lowers_the_loss() -> None:
    data = generate(num_samples=32, num_classes=4, seed=0, max_frames=100)
    x = torch.from_numpy(frame50(data.data))[:, :, ::4]  # 13 frames: a fast tiny run
    lengths = torch.full((8,), x.shape[2])
    torch.manual_seed(0)
    # 8-key queue = the previous batch of 8: the negatives are always other samples
    method = tiny(
        hidden_channels=8, hidden_dim=32, feature_dim=16, queue_size=8, momentum=0.9, key_init="copy"
    )
    # PyTorch's default init instead of N(0, 0.02): with a 16-d head the official init leaves |z| ~ 0.01,
    # so the first SGD step (gradients ~ 1 / (tau |z|)) blows up the last bias and collapses every feature
    for module in method.encoder_q.modules():
        if module is not method.encoder_q and hasattr(module, "reset_parameters"):
            module.reset_parameters()
    copy_parameters(method.encoder_k, method.encoder_q)
    with (
        torch.no_grad()
    ):  # fill the queue with real keys first: a random queue makes step 0 artificially easy
        method(x[24:], lengths, torch.Generator().manual_seed(100))
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.03, momentum=0.9)
    losses = []
    for s in range(9):
        out = method(x[8 * (s % 4) : 8 * (s % 4) + 8], lengths, torch.Generator().manual_seed(s))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    # near-collapsed start (about 2 log 9 = 4.39); a few steps separate the samples. (Much longer runs of
    # this 8-key, m = 0.9 toy drift back towards 2 log 9; the official 32768 keys and m = 0.999 do not.)
    assert sum(losses[5:9]) / 4 < 0.85 * sum(losses[:2]) / 2, losses


def test_rotation_symmetric_reaches_the_strong_views_only():
    method = tiny(rotation_symmetric=True)
    assert [method.recipes[v].rotation_symmetric for v in ("q", "k", "q1", "q2")] == [
        False,
        False,
        True,
        True,
    ]
    assert not any(r.rotation_symmetric for r in tiny().recipes.values())
