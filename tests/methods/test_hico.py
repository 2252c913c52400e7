"""HiCo pretraining: one step against a literal transcription of the official step (hico/builder.py,
losses.py, pretraining.py), the optimisation and momentum steps, the queue pointers (the official
wrap at K and the corrected one), the reference backend, a short run, the config file, the
centre-crop evaluation transform (spec/hico_hiclr.md PART 1)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from skelfast.augment.recipes import CropResizeSpatial
from skelfast.backends import use_backend
from skelfast.configs import load_config
from skelfast.data.normalize import normalize
from skelfast.data.synthetic import generate
from skelfast.methods import build_method
from skelfast.methods.hico import CentreCrop, HiCo, HiCoConfig
from skelfast.nn.hico import HiCoEncoder
from skelfast.ops import augment
from skelfast.reference.augment import augment as reference_augment
from tests.utils import assert_close

# a tiny model: hidden 16, 2 heads, 8-d projections, 16-frame clips; K = 16 with N = 2 and G = 4 makes
# the clip/part pointer wrap (N * G = 8, so the official pointer cycles 0, 8, 0, ... over 64 rows)
TINY = dict(hidden_size=16, num_head=2, feature_dim=8, frames=16, min_crop_length=16, queue_size=16)


def tiny(**overrides: object) -> HiCo:
    return HiCo(HiCoConfig(**{**TINY, **overrides})).double().train()


def batch(n: int = 2, t: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    lengths = torch.tensor([t, t - 13, t - 3, 17][:n])
    x = torch.randn(n, 3, t, 25, 2, generator=g, dtype=torch.float64)
    x = x * (torch.arange(t)[None, None, :, None, None] < lengths[:, None, None, None, None])
    return x, lengths


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def official_step(
    q_enc: HiCoEncoder,
    k_enc: HiCoEncoder,
    bank: torch.Tensor,
    ptr: list[int],
    x: torch.Tensor,
    lengths: torch.Tensor,
    seed: int,
    m: float,
    tau: float = 0.2,
    wrap_clip_at_k: bool = True,
) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor, list[int]]:
    """One step written from the official code with plain torch ops, on copies of the encoders and
    the bank ((K, D) rows here, (D, K) columns there). Returns the loss, the five level losses, the
    bank after the enqueue and the pointers; ``k_enc`` is EMA-updated in place."""
    g, big_k, d = q_enc.granularity, 16, bank.shape[1]
    # feeder: crop-resize to 64 (here 16) frames, then shear or joint corruption; query view first
    recipe = CropResizeSpatial(t_out=16, min_length=16)  # the official ratio, shear, corruption
    generator = gen(seed)
    views = []
    for _ in range(2):
        clip = reference_augment(x, lengths, recipe.sample(lengths, 25, generator))
        n, c, t, v, mm = clip.shape
        views.append(
            (
                clip.permute(0, 2, 4, 3, 1).reshape(n, t, mm * v * c),  # data.transpose(1, 3, 2, 0)
                clip.permute(0, 4, 3, 2, 1).reshape(n, mm * v, t * c),  # data.transpose(3, 2, 1, 0)
            )
        )
    qc, qp, qt, qs, qi = q_enc(*views[0])
    qc0 = F.normalize(qc, dim=2)[:, 0]
    qp0 = F.normalize(qp, dim=2)[:, 0]
    qt, qs, qi = (F.normalize(z, dim=1) for z in (qt, qs, qi))
    with torch.no_grad():
        for param_q, param_k in zip(q_enc.parameters(), k_enc.parameters(), strict=True):
            param_k.data = param_k.data * m + param_q.data * (1.0 - m)
        kc, kp, kt, ks, ki = k_enc(*views[1])
        kc, kp = F.normalize(kc, dim=2), F.normalize(kp, dim=2)
        kt, ks, ki = (F.normalize(z, dim=1) for z in (kt, ks, ki))
    gk = g * big_k
    c_queue, p_queue = bank[:gk], bank[gk : 2 * gk]
    t_queue, s_queue, i_queue = bank[2 * gk : 2 * gk + big_k], bank[-2 * big_k : -big_k], bank[-big_k:]
    n = qc0.shape[0]
    logits_c = torch.cat([torch.einsum("nc,nlc->nl", qc0, kc), qc0 @ c_queue.T], 1) / tau
    logits_p = torch.cat([torch.einsum("nc,nlc->nl", qp0, kp), qp0 @ p_queue.T], 1) / tau
    logits_t = torch.cat([(qt * ks).sum(1, keepdim=True), qt @ s_queue.T], 1) / tau  # crossed domains
    logits_s = torch.cat([(qs * kt).sum(1, keepdim=True), qs @ t_queue.T], 1) / tau
    logits_i = torch.cat([(qi * ki).sum(1, keepdim=True), qi @ i_queue.T], 1) / tau
    mask = torch.cat([torch.ones(n, g), torch.zeros(n, gk)], 1).double()
    labels = torch.zeros(n, dtype=torch.long)
    losses = [
        -torch.log((F.softmax(logits_c, dim=1) * mask).sum(1)).mean(),  # MultiPositiveInfoNCE
        -torch.log((F.softmax(logits_p, dim=1) * mask).sum(1)).mean(),
        F.cross_entropy(logits_t, labels),
        F.cross_entropy(logits_s, labels),
        F.cross_entropy(logits_i, labels),
    ]
    # _dequeue_and_enqueue
    bank = bank.clone()
    starts = [0, gk, 2 * gk, 2 * gk + big_k, 2 * gk + 2 * big_k]
    keys = [kc.reshape(n * g, d), kp.reshape(n * g, d), kt, ks, ki]
    ptr = list(ptr)
    for lvl, (start, k) in enumerate(zip(starts, keys, strict=True)):
        bank[start + ptr[lvl] : start + ptr[lvl] + k.shape[0]] = k
        ptr[lvl] = (ptr[lvl] + k.shape[0]) % (big_k if lvl >= 2 or wrap_clip_at_k else gk)
    return sum(losses), losses, bank, ptr


def sgd_step(method: HiCo, lr: float = 0.5) -> None:
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=lr)
    opt.step()
    opt.zero_grad()


@pytest.mark.parametrize(("encoder", "wrap"), [("GRU", "official"), ("Transformer", "corrected")])
def test_step_equals_official_composition(encoder, wrap):
    """Loss, five terms, query gradients, EMA key weights and queues equal the official step (the
    corrected pointer wrap: the same with the modulus G * K). The
    Transformer runs with dropout 0.1 in both encoders: the literal step, reseeded, draws the same masks
    only if the method runs both encoders in train mode, query first."""
    method = tiny(encoder=encoder, momentum=0.9, clip_queue_wrap=wrap)
    x, lengths = batch()
    method(x, lengths, gen(1)).loss.backward()  # a first step: real keys in the queues, q != k after SGD
    sgd_step(method)
    q_enc, k_enc = copy.deepcopy(method.encoder_q), copy.deepcopy(method.encoder_k)
    bank, ptr = method.queue.bank.clone(), method.queue.ptr.tolist()

    torch.manual_seed(5)
    out = method(x, lengths, gen(2))
    out.loss.backward()
    torch.manual_seed(5)
    loss, losses, bank_after, ptr_after = official_step(
        q_enc, k_enc, bank, ptr, x, lengths, 2, m=0.9, wrap_clip_at_k=wrap == "official"
    )
    loss.backward()

    # float64 throughout; the op's online logsumexp over queue chunks only reorders sums: 1e-10
    assert_close(out.loss, loss, atol=1e-10, rtol=1e-10, what="loss")
    for name, expected in zip(["clip", "part", "temporal", "spatial", "instance"], losses, strict=True):
        assert_close(out.terms[name], expected.detach(), atol=1e-10, rtol=1e-10, what=name)
    for (name, a), b in zip(method.encoder_q.named_parameters(), q_enc.parameters(), strict=True):
        assert_close(a.grad, b.grad, atol=1e-10, rtol=1e-8, what=f"grad {name}")
    # lerp vs k * m + q * (1 - m): a few ulps on values of order 1
    for (name, a), b in zip(method.encoder_k.named_parameters(), k_enc.parameters(), strict=True):
        assert_close(a, b, atol=1e-14, rtol=0, what=f"key {name}")
    assert_close(method.queue.bank, bank_after, atol=1e-12, rtol=0, what="queues")
    assert method.queue.ptr.tolist() == ptr_after


def test_sgd_step_trains_the_query_and_momentum_moves_the_key_by_one_minus_m():
    m = 0.99
    method = tiny(encoder="GRU", momentum=m)
    for a, b in zip(method.encoder_k.parameters(), method.encoder_q.parameters(), strict=True):
        assert torch.equal(a, b) and not a.requires_grad  # the key starts as a copy of the query
    x, lengths = batch()
    out = method(x, lengths, gen(1))
    out.loss.backward()
    before = [p.detach().clone() for p in method.encoder_q.parameters()]
    grads = [p.grad.clone() for p in method.encoder_q.parameters()]
    assert all(bool(g.abs().sum() > 0) for g in grads), "every query parameter gets a gradient"
    assert all(p.grad is None for p in method.encoder_k.parameters())
    lr = 0.5
    sgd_step(method, lr)
    for p, b, g in zip(method.encoder_q.parameters(), before, grads, strict=True):
        assert torch.equal(p.detach(), b - lr * g)
    key_before = [p.clone() for p in method.encoder_k.parameters()]
    method(x, lengths, gen(2))
    moved = 0.0
    for k, k0, q in zip(
        method.encoder_k.parameters(), key_before, method.encoder_q.parameters(), strict=True
    ):
        # float64: the EMA's rounding is ~1e-16 on values of order 1
        assert_close(k - k0, (1 - m) * (q.detach() - k0), atol=1e-15, rtol=0, what="EMA step")
        moved += float((k - k0).abs().sum())
    assert moved > 1e-3  # the step is not trivially zero


@pytest.mark.parametrize("wrap", ["official", "corrected"])
def test_queues_hold_the_enqueued_keys(wrap):
    """Three steps of N = 2, G = 4, K = 16: N * G = 8 clip/part keys per step; the official pointer
    wraps at K = 16 (0, 8, 0, 8), the corrected one at G * K = 64 (0, 8, 16, 24)."""
    method = tiny(encoder="GRU", clip_queue_wrap=wrap)
    x, lengths = batch()
    initial = method.queue.bank.clone()
    keys = []
    with torch.no_grad():
        for step in range(3):
            method(x, lengths, gen(step))
            # no SGD step: the key encoder equals the query encoder, so the keys are recomputable
            generator = gen(step)
            method.view(x, lengths, generator)  # the query view: the key view is drawn second
            z = [F.normalize(t, dim=-1) for t in method.encoder_k(*method.view(x, lengths, generator))]
            keys.append(z)
    bank = method.queue.bank
    clip, part = bank[:64], bank[64:128]
    temporal, spatial, instance = bank[128:144], bank[144:160], bank[160:176]
    if wrap == "official":
        clip_rows = {0: keys[2], 8: keys[1]}  # step 3 overwrote step 1
        assert torch.equal(clip[16:], initial[16:64]) and torch.equal(part[16:], initial[80:128])
        assert method.queue.ptr.tolist() == [8, 8, 6, 6, 6]
    else:
        clip_rows = {0: keys[0], 8: keys[1], 16: keys[2]}
        assert torch.equal(clip[24:], initial[24:64]) and torch.equal(part[24:], initial[88:128])
        assert method.queue.ptr.tolist() == [24, 24, 6, 6, 6]
    for row, z in clip_rows.items():
        assert torch.equal(clip[row : row + 8], z[0].reshape(8, -1))  # row n * G + g
        assert torch.equal(part[row : row + 8], z[1].reshape(8, -1))
    for step, z in enumerate(keys):
        rows = slice(2 * step, 2 * step + 2)
        assert torch.equal(temporal[rows], z[2]) and torch.equal(spatial[rows], z[3])
        assert torch.equal(instance[rows], z[4])
    assert torch.equal(temporal[6:], initial[134:144])


def test_reference_backend_gives_the_same_step():
    # Without dropout: its backends draw different streams (a seeded Philox mask against nn's
    # bernoulli_), each held to its own reference in tests/ops/test_dropout.py.
    fused = tiny(encoder="Transformer", dropout=0.0)
    reference = copy.deepcopy(fused)
    x, lengths = batch(3)
    torch.manual_seed(3)
    a = fused(x, lengths, gen(4))
    a.loss.backward()
    torch.manual_seed(3)
    with use_backend("reference"):
        b = reference(x, lengths, gen(4))
        b.loss.backward()
    # skelfast.reference.info_nce builds its logits in float32 (`.float()`), so the reference step is
    # float32-accurate while the fused one is float64: compare at float32 precision (tau = 0.2
    # scales logit errors by 5; losses ~10, gradients ~1)
    assert_close(a.loss, b.loss.double(), atol=1e-5, rtol=1e-5, what="loss")
    for name in a.terms:
        assert_close(a.terms[name], b.terms[name].double(), atol=1e-5, rtol=1e-5, what=name)
    for (name, p), q in zip(
        fused.encoder_q.named_parameters(), reference.encoder_q.parameters(), strict=True
    ):
        assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, what=f"grad {name}")
    assert torch.equal(fused.queue.bank, reference.queue.bank)


def probe_loss(method: HiCo, x: torch.Tensor, lengths: torch.Tensor) -> float:
    """The objective on the first batch of 8 against live queues: a copy of the method first enqueues the
    current keys of the other batches, so the negatives are real keys of other samples."""
    method = copy.deepcopy(method)
    with torch.no_grad():
        for b in range(1, len(x) // 8):
            method(x[8 * b : 8 * b + 8], lengths[8 * b : 8 * b + 8], gen(1000 + b))
        return float(method(x[:8], lengths[:8], gen(999)).loss)


def test_short_run_on_synthetic_data_lowers_the_loss():
    data = generate(num_samples=32, num_classes=4, max_frames=48, min_frames=24, seed=1)
    clips, _ = normalize(data.data, data.num_frame, "agcn-noz")  # HiCo's released preprocessing
    x, lengths = torch.from_numpy(clips), torch.from_numpy(data.num_frame)
    method = HiCo(HiCoConfig(**TINY, momentum=0.9)).train()  # the Transformer, float32
    before = probe_loss(method, x, lengths)
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
    for step in range(24):
        rows = slice(8 * (step % 4), 8 * (step % 4) + 8)
        out = method(x[rows], lengths[rows], gen(step))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    after = probe_loss(method, x, lengths)
    # observed: about 13.6 -> 12.9 for this seed and several other settings (chance, all logits equal,
    # is 5 * log(17) = 14.2); the margin leaves room for other summation orders
    assert after < before - 0.3, f"the loss went from {before:.3f} to {after:.3f}"


def test_config_file_builds_the_official_method():
    config = load_config("hico")
    assert config["method"] == "hico"
    cls_default = HiCoConfig()
    assert HiCoConfig.from_dict(config["model"]) == cls_default  # the file states the official defaults
    c = cls_default
    assert (c.queue_size, c.temperature, c.momentum, c.feature_dim, c.granularity) == (
        2048,
        0.2,
        0.999,
        128,
        4,
    )
    assert (c.encoder, c.clip_queue_wrap, c.frames, c.shear_amplitude) == ("Transformer", "official", 64, 1.0)
    assert (config["train"]["lr"], config["train"]["batch_size"], config["train"]["epochs"]) == (
        0.01,
        64,
        451,
    )
    assert config["train"]["milestones"] == [351]
    assert (config["eval"]["linear"]["lr"], config["eval"]["linear"]["batch_size"]) == (2.0, 1024)

    method = build_method(config["method"], config["model"])
    assert method.queue.sizes == [8192, 8192, 2048, 2048, 2048]
    assert method.queue.wrap_at == [2048] * 5  # the official quirk
    count = sum(p.numel() for p in method.encoder_q.parameters())
    assert count == sum(p.numel() for p in HiCoEncoder("Transformer").parameters())
    assert method.feature_encoder().feature_dim == 4096
    corrected = HiCoConfig(**{**TINY, "clip_queue_wrap": "corrected"})
    assert HiCo(corrected).queue.wrap_at == [64, 64, 16, 16, 16]
    assert HiCoConfig.from_dict(corrected.to_dict()) == corrected


def test_config_overrides_build_a_tiny_method_and_checkpoints_restore_it():
    overrides = [f"model.{k}={v}" for k, v in TINY.items()] + ["model.encoder=gru"]
    config = load_config("hico", overrides)
    method = build_method(config["method"], config["model"]).double()
    assert method.config.encoder == "GRU"
    x, lengths = batch()
    method(x, lengths, gen(0))
    restored = build_method(config["method"], config["model"]).double()
    restored.load_state_dict(method.state_dict())
    assert torch.equal(restored.queue.bank, method.queue.bank)
    assert restored.queue.ptr.tolist() == method.queue.ptr.tolist() == [8, 8, 2, 2, 2]
    fe_a, fe_b = method.feature_encoder(), restored.feature_encoder()
    clip = fe_a.transform(train=False)(x, lengths, gen(0))
    assert torch.equal(fe_a(clip, lengths), fe_b(clip, lengths))


def official_crop_subsequence(data: torch.Tensor, n: int, ratio: float, size: int) -> torch.Tensor:
    """The downstream feeder's test crop (one sample (C, T, V, M)), written as the official code."""
    c, _, v, m = data.shape
    start = int((1 - ratio) * n / 2)
    crop = data[:, start : n - start]
    length = crop.shape[1]
    crop = crop.permute(0, 2, 3, 1).reshape(c * v * m, length)[None, :, :, None]
    crop = F.interpolate(crop, size=(size, 1), mode="bilinear", align_corners=False)
    return crop[0, :, :, 0].reshape(c, v, m, size).permute(0, 3, 1, 2)


def test_centre_crop_equals_the_official_test_transform():
    lengths = torch.tensor([300, 101, 64, 40, 7])
    x = torch.randn(5, 3, 300, 25, 2, dtype=torch.float64)
    params = CentreCrop().sample(lengths, 25, gen(0))
    assert params.start.tolist() == [7, 2, 1, 1, 0]  # int(0.05000000000000004 * n / 2)
    out = augment(x, lengths, params)
    for i, n in enumerate(lengths.tolist()):
        expected = official_crop_subsequence(x[i], n, 0.95, 64)
        assert_close(out[i], expected, atol=1e-12, rtol=1e-12, what=f"sample {i}")  # float64 lerp


def test_feature_encoder_reads_vi_of_the_query_encoder_through_the_centre_crop():
    method = tiny(encoder="Transformer").eval()
    fe = method.feature_encoder()
    assert fe.module is method.encoder_q  # shares the weights
    assert fe.test_recipe == CentreCrop(0.95, 16, "joint") and fe.train_recipe == fe.test_recipe
    x, lengths = batch(3)
    clip = fe.transform(train=False)(x, lengths, gen(0))
    assert clip.shape == (3, 3, 16, 25, 2)
    feats = fe(clip, lengths)
    assert feats.shape == (3, fe.feature_dim) == (3, 2 * 4 * 16)
    xc = clip.permute(0, 2, 4, 3, 1).reshape(3, 16, 150)
    xp = clip.permute(0, 4, 3, 2, 1).reshape(3, 50, 48)
    vc, vp = method.encoder_q.features(xc, xp)
    assert torch.equal(feats, torch.cat([vc.flatten(1), vp.flatten(1)], 1))
    old = tiny(eval_train_transform="random-crop").feature_encoder().train_recipe
    assert old == CropResizeSpatial(
        t_out=16, min_length=16, ratio=(0.5, 1.0), shear_amplitude=0.0, p_corrupt=0.0
    )


def test_bad_input_and_options_are_rejected():
    method = tiny()
    x, lengths = batch()
    with pytest.raises(ValueError, match="V=25"):
        method(x[:, :, :, :20], lengths, gen(0))
    with pytest.raises(ValueError, match="lengths"):
        method(x, lengths[:1], gen(0))
    with pytest.raises(ValueError, match="encoder"):
        HiCoConfig(encoder="CNN")
    with pytest.raises(ValueError, match="clip_queue_wrap"):
        HiCoConfig(clip_queue_wrap="sometimes")
    with pytest.raises(ValueError, match="unknown option"):
        HiCoConfig.from_dict({"queue": 5})


def test_autocast_step_runs_in_the_queue_precision():
    """Under bfloat16 autocast the heads give bf16 features; the loss reads them against the float32
    queues. bf16 keeps ~3 significant digits, so the loss agrees with float32 to a few percent."""
    method = HiCo(HiCoConfig(**TINY, encoder="GRU")).train()
    twin = copy.deepcopy(method)
    x, lengths = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = method(x.float(), lengths, gen(0))
    out.loss.backward()
    expected = twin(x.float(), lengths, gen(0)).loss
    assert out.loss.dtype == torch.float32 and method.queue.bank.dtype == torch.float32
    assert_close(out.loss.detach(), expected.detach(), atol=0.05, rtol=0.05, what="bf16 loss")


def test_dropout_option_reaches_both_encoders():
    default, off = tiny(), tiny(dropout=0.0)
    for method, p in ((default, 0.1), (off, 0.0)):
        for encoder in (method.encoder_q, method.encoder_k):
            rates = [m.p for m in encoder.modules() if isinstance(m, torch.nn.Dropout)]
            rates += [m.dropout for m in encoder.modules() if isinstance(m, torch.nn.MultiheadAttention)]
            # per domain (t_encoder, s_encoder): attention weights, feed-forward, two residual branches
            assert len(rates) == 8 and set(rates) == {p}
    x, lengths = batch()

    def loss(method: HiCo, seed: int) -> torch.Tensor:
        torch.manual_seed(seed)  # dropout draws from the global generator
        return copy.deepcopy(method)(x, lengths, gen(0)).loss

    assert torch.equal(loss(off, 1), loss(off, 2))
    assert not torch.equal(loss(default, 1), loss(default, 2))
