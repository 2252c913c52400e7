"""ISC (spec/isc_crrl.md §1): the loss against a literal composition with crossed queues, the
momentum update, the queues, the sequence layout, the backends, every pairing, the configs."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from skelfast.augment.recipes import CropResizeSpatial
from skelfast.backends import use_backend
from skelfast.configs import load_config
from skelfast.data.normalize import normalize
from skelfast.data.synthetic import generate
from skelfast.methods import build_method
from skelfast.methods.isc import (
    ISC,
    CentreCropResize,
    ISCConfig,
    RandomCropResize,
    seq_input,
)
from skelfast.ops import augment
from tests.utils import assert_close

FRAMES = 16  # views of 16 frames instead of 64 keep the AGCN and GRU steps cheap


def tiny(**overrides: object) -> ISCConfig:
    """A small ISC: GRU 2 x 8 per cell, HCN with 8 channels, 8-d features, a queue of 12."""
    options = dict(
        queue_size=12, dim=8, frames=FRAMES, gru_hidden=8, gru_layers=2, hcn_channels=8, momentum=0.9
    )
    options.update(overrides)
    return ISCConfig(**options)


def batch(n: int = 4, dtype: torch.dtype = torch.float32, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Random clips (N, 3, 40, 25, 2), zero past their lengths; sample 0 has no second body."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 40, 25, 2, generator=g, dtype=dtype)
    lengths = torch.randint(12, 41, (n,), generator=g)
    past = torch.arange(40)[None, :] >= lengths[:, None]  # (N, T)
    x = x * (~past)[:, None, :, None, None]
    x[0, ..., 1] = 0.0
    return x, lengths


def perturb_queries(method: ISC, scale: float = 0.05) -> None:
    """Move the query encoders away from their keys so a momentum step changes the keys."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in method.parameters():
            if p.requires_grad:
                p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def seq_literal(v: torch.Tensor) -> torch.Tensor:
    # the official feeder: (C, T, V, M) -> (T, V, C, M) -> (T, 150), per sample
    return torch.stack([s.permute(1, 2, 0, 3).reshape(s.shape[1], -1) for s in v])


def test_loss_equals_literal_crossed_composition() -> None:
    method = ISC(tiny(pair="seq-graph")).double()
    perturb_queries(method)
    x, lengths = batch(dtype=torch.float64)
    before = copy.deepcopy(method)
    out = method(x, lengths, torch.Generator().manual_seed(7))

    # the official order, written out: two recipe draws, EMA of both keys, crossed logits
    g = torch.Generator().manual_seed(7)
    recipe = CropResizeSpatial(t_out=FRAMES, min_length=FRAMES)
    v1 = augment(x, lengths, recipe.sample(lengths, 25, g))
    v2 = augment(x, lengths, recipe.sample(lengths, 25, g))
    m, tau, k_size = 0.9, 0.07, 12
    with torch.no_grad():
        for key, query in ((before.encoder_k, before.encoder_q), (before.encoder_l, before.encoder_r)):
            for pk, pq in zip(key.parameters(), query.parameters(), strict=True):
                pk.copy_(pk * m + pq * (1 - m))
    q = F.normalize(before.encoder_q(seq_literal(v1)), dim=1)
    r = F.normalize(before.encoder_r(v1), dim=1)
    with torch.no_grad():
        k = F.normalize(before.encoder_k(seq_literal(v2)), dim=1)
        l = F.normalize(before.encoder_l(v2), dim=1)  # noqa: E741
    queue_s1, queue_s2 = before.queue.bank[:k_size], before.queue.bank[k_size:]
    logits_seq = torch.cat([(q * l).sum(1, keepdim=True), q @ queue_s2.T], 1) / tau
    logits_graph = torch.cat([(r * k).sum(1, keepdim=True), r @ queue_s1.T], 1) / tau
    labels = torch.zeros(4, dtype=torch.long)
    loss_seq, loss_graph = F.cross_entropy(logits_seq, labels), F.cross_entropy(logits_graph, labels)
    expected = loss_seq + loss_graph

    # float64 throughout: only summation order differs (chunked logsumexp vs full logits)
    assert_close(out.loss, expected, atol=1e-10, rtol=1e-10, what="loss")
    assert_close(out.terms["nce_s1"], loss_seq, atol=1e-10, rtol=1e-10, what="seq term")
    assert_close(out.terms["nce_s2"], loss_graph, atol=1e-10, rtol=1e-10, what="graph term")
    out.loss.backward()
    expected.backward()
    for name, a, b in (("q", method.encoder_q, before.encoder_q), ("r", method.encoder_r, before.encoder_r)):
        for (pname, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
            assert_close(pa.grad, pb.grad, atol=1e-10, rtol=1e-8, what=f"grad encoder_{name}.{pname}")
    # keys enqueued after the loss: k into Queue_S1 (level 0), l into Queue_S2 (level 1)
    # (the method's lerp rounds differently from the literal m * k + (1 - m) * q: 1e-12)
    assert_close(method.queue.level(0)[:4], k, atol=1e-12, rtol=0, what="Queue_S1")
    assert_close(method.queue.level(1)[:4], l, atol=1e-12, rtol=0, what="Queue_S2")
    assert torch.equal(method.queue.level(0)[4:], queue_s1[4:])


def test_intra_variant_is_plain_moco() -> None:
    """``pair="seq"``: builder_intra.MoCo, CE([q.k, q.queue] / tau) with the one queue."""
    method = ISC(tiny(pair="seq")).double()
    perturb_queries(method)
    x, lengths = batch(dtype=torch.float64)
    before = copy.deepcopy(method)
    out = method(x, lengths, torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)
    recipe = CropResizeSpatial(t_out=FRAMES, min_length=FRAMES)
    v1 = augment(x, lengths, recipe.sample(lengths, 25, g))
    v2 = augment(x, lengths, recipe.sample(lengths, 25, g))
    with torch.no_grad():
        for pk, pq in zip(before.encoder_k.parameters(), before.encoder_q.parameters(), strict=True):
            pk.copy_(pk * 0.9 + pq * 0.1)
        k = F.normalize(before.encoder_k(seq_literal(v2)), dim=1)
    q = F.normalize(before.encoder_q(seq_literal(v1)), dim=1)
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ before.queue.bank.T], 1) / 0.07
    expected = F.cross_entropy(logits, torch.zeros(4, dtype=torch.long))
    assert_close(out.loss, expected, atol=1e-10, rtol=1e-10, what="intra loss")  # float64
    assert not hasattr(method, "encoder_r") and method.queue.bank.shape == (12, 8)
    assert_close(method.queue.level(0)[:4], k, atol=1e-12, rtol=0, what="queue")


def test_sgd_step_trains_both_query_encoders_only() -> None:
    method = ISC(tiny(pair="seq-graph"))
    x, lengths = batch()
    trainable = {id(p) for p in method.parameters() if p.requires_grad}
    queries = {id(p) for enc in (method.encoder_q, method.encoder_r) for p in enc.parameters()}
    assert trainable == queries
    keys = [p.detach().clone() for enc in (method.encoder_k, method.encoder_l) for p in enc.parameters()]
    before = {
        name: [p.detach().clone() for p in getattr(method, name).parameters()]
        for name in ("encoder_q", "encoder_r")
    }
    out = method(x, lengths, torch.Generator().manual_seed(0))
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.5)
    out.loss.backward()
    opt.step()
    for name, old in before.items():
        params = list(getattr(method, name).parameters())
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params), name
        assert any(not torch.equal(p, o) for p, o in zip(params, old, strict=True)), f"{name} did not move"
    # the keys moved only by the momentum step (they equalled the queries, so not at all)
    new_keys = [p for enc in (method.encoder_k, method.encoder_l) for p in enc.parameters()]
    assert all(p.grad is None for p in new_keys)
    assert all(torch.equal(a, b) for a, b in zip(new_keys, keys, strict=True))


@pytest.mark.parametrize("momentum", [0.5, 0.999])
def test_momentum_step_moves_keys_by_one_minus_m_of_the_difference(momentum: float) -> None:
    method = ISC(tiny(pair="seq-image", momentum=momentum)).double()
    perturb_queries(method)
    pairs = [(method.encoder_k, method.encoder_q), (method.encoder_l, method.encoder_r)]
    old = [
        [
            (pk.detach().clone(), pq.detach().clone())
            for pk, pq in zip(k.parameters(), q.parameters(), strict=True)
        ]
        for k, q in pairs
    ]
    method(*batch(dtype=torch.float64), torch.Generator().manual_seed(0))
    for (key, _), olds in zip(pairs, old, strict=True):
        for pk, (k0, q0) in zip(key.parameters(), olds, strict=True):
            # lerp in float64: exact up to one rounding of each term
            assert_close(pk, k0 + (1 - momentum) * (q0 - k0), atol=1e-15, rtol=1e-14, what="key")
            assert not torch.equal(pk, k0)


def test_queues_hold_the_enqueued_keys_with_wrap_around() -> None:
    method = ISC(tiny(pair="seq-image", queue_size=6))
    seen: dict[str, list[torch.Tensor]] = {"k": [], "l": []}
    method.encoder_k.register_forward_hook(lambda _m, _i, o: seen["k"].append(F.normalize(o, dim=1)))
    method.encoder_l.register_forward_hook(lambda _m, _i, o: seen["l"].append(F.normalize(o, dim=1)))
    initial = method.queue.bank.clone()
    x, lengths = batch()
    g = torch.Generator().manual_seed(0)
    method(x, lengths, g)
    for level, name in ((0, "k"), (1, "l")):
        queue = method.queue.level(level)
        assert torch.equal(queue[:4], seen[name][0])
        assert torch.equal(queue[4:], initial[6 * level + 4 : 6 * level + 6])
    method(x, lengths, g)
    for level, name in ((0, "k"), (1, "l")):
        queue, k1, k2 = method.queue.level(level), seen[name][0], seen[name][1]
        assert torch.equal(queue[4:6], k2[:2])  # the ring's tail ...
        assert torch.equal(queue[0:2], k2[2:4])  # ... then wraps to the front
        assert torch.equal(queue[2:4], k1[2:4])  # the previous step's keys not yet overwritten
    assert method.queue.ptr.tolist() == [2, 2]


def test_seq_input_layout_is_joint_coordinate_body() -> None:
    n, t, v, c, m = 2, 3, 25, 3, 2
    x = torch.zeros(n, c, t, v, m)
    for i, ci, ti, vi, mi in np.ndindex(n, c, t, v, m):
        x[i, ci, ti, vi, mi] = 10000 * i + 1000 * ti + 10 * vi + 3 * ci + mi + 0.5
    s = seq_input(x)
    assert s.shape == (n, t, 150)
    for i, ci, ti, vi, mi in np.ndindex(n, c, t, v, m):
        assert s[i, ti, 6 * vi + 2 * ci + mi] == x[i, ci, ti, vi, mi]
    single = x.clone()
    single[..., 1] = 0
    assert not seq_input(single)[..., 1::2].any()  # a one-person clip: every odd entry is zero
    with pytest.raises(ValueError, match="seq_input"):
        seq_input(x[0])


def test_reference_backend_agrees_with_the_fused_path() -> None:
    method = ISC(tiny(pair="seq-image"))
    perturb_queries(method)
    x, lengths = batch()
    results = []
    for backend in (None, "reference"):
        m = copy.deepcopy(method)
        torch.manual_seed(5)  # HCN's Dropout2d draws from the global generator
        if backend is None:
            out = m(x, lengths, torch.Generator().manual_seed(2))
        else:
            with use_backend(backend):
                out = m(x, lengths, torch.Generator().manual_seed(2))
        out.loss.backward()
        results.append((out, m))
    (fused, mf), (ref, mr) = results
    # float32: the fused loss sums the queue in chunks (online logsumexp), the reference in one row
    assert_close(fused.loss, ref.loss, atol=1e-5, rtol=1e-5, what="loss")
    for key in fused.terms:
        assert_close(fused.terms[key], ref.terms[key], atol=1e-5, rtol=1e-5, what=key)
    for (name, a), b in zip(mf.named_parameters(), mr.parameters(), strict=True):
        if a.grad is not None:
            assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4, what=f"grad {name}")
    # the enqueued keys come through the sequence GRU, whose fused kernel rounds its gates
    # differently (float32 exp within 2 ulp): unit-norm keys agree to a few float32 ulps
    assert_close(mf.queue.bank, mr.queue.bank, atol=1e-6, rtol=1e-5, what="queue")


@pytest.mark.parametrize(
    ("pair", "dims"),
    [
        ("seq-graph", (16, 256)),
        ("seq-image", (16, 32)),
        ("graph-image", (256, 32)),
        ("seq", (16,)),
        ("graph", (256,)),
        ("image", (32,)),
    ],
)
def test_each_pairing_runs(pair: str, dims: tuple[int, ...]) -> None:
    method = ISC(tiny(pair=pair))
    x, lengths = batch()
    out = method(x, lengths, torch.Generator().manual_seed(0))
    assert torch.isfinite(out.loss) and out.loss.requires_grad
    out.loss.backward()
    levels = len(dims)
    assert sorted(out.terms) == sorted(f"{t}_s{i + 1}" for i in range(levels) for t in ("nce", "acc"))
    assert_close(out.loss, sum(out.terms[f"nce_s{i + 1}"] for i in range(levels)), atol=1e-6, rtol=1e-6)
    assert method.queue.bank.shape == (12 * levels, 8)
    # feature dims: seq 2 x gru_hidden, graph 256, image hcn_channels * 4 * (frames / 16)^2
    for rep, dim in zip(method.reps, dims, strict=True):
        enc = ISC(tiny(pair=pair, feature=rep)).feature_encoder().eval()
        assert enc.feature_dim == dim
        view = enc.transform(train=False)(x, lengths, torch.Generator())
        assert enc(view, lengths).shape == (4, dim)


def test_agcn_channels_scale_the_graph_encoder() -> None:
    method = ISC(tiny(pair="graph", agcn_channels=8))
    assert method.feature_encoder().feature_dim == 32  # 4 x agcn_channels
    x, lengths = batch()
    out = method(x, lengths, torch.Generator().manual_seed(0))
    out.loss.backward()
    assert torch.isfinite(out.loss)


def test_training_lowers_the_loss() -> None:
    torch.manual_seed(0)
    data = generate(num_samples=64, num_classes=8, max_frames=48, min_frames=24)
    # AGCN-normalised clips, scaled up so the tiny encoders' initial features are not all alike
    x = 5 * torch.from_numpy(normalize(data.data, data.num_frame, "agcn")[0])
    lengths = torch.from_numpy(data.num_frame)
    config = tiny(pair="seq-image", queue_size=32, gru_hidden=16, gru_layers=1, dim=16, mlp=False)
    method = ISC(config)
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.02, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    losses = []
    for step in range(30):
        b = slice(16 * (step % 4), 16 * (step % 4) + 16)
        out = method(x[b], lengths[b], g)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(float(out.loss.detach()))
    # the untrained seq and image embeddings of a clip disagree (first steps ~12-18, above the chance
    # level 2 log 33 = 7.0); 30 steps align them (last ten ~8); a 2-nat margin is far above step noise
    assert np.mean(losses[-10:]) < np.mean(losses[:5]) - 2.0, losses


def test_eval_recipes_follow_the_official_crops() -> None:
    valid = torch.arange(1, 301)
    p = CentreCropResize(0.95, 64).sample(valid, 25, torch.Generator())
    starts = [int((1 - 0.95) * n / 2) for n in range(1, 301)]  # augmentations.crop_subsequence
    assert p.start.tolist() == starts
    assert (p.length == valid - 2 * torch.tensor(starts)).all()
    assert (
        p.t_out == 64 and not p.joint_select.any() and torch.equal(p.matrix, torch.eye(3).expand(300, 3, 3))
    )
    q = RandomCropResize((0.5, 1.0), 64, 64).sample(valid, 25, torch.Generator().manual_seed(0))
    low = torch.minimum(torch.clamp(torch.floor(valid * 0.5), min=64), valid.double()).long()
    assert ((q.length >= low) & (q.length <= valid)).all()
    assert ((q.start >= 0) & (q.start + q.length <= valid)).all()


def test_feature_encoder_is_the_seq_query_representation() -> None:
    method = ISC(tiny(pair="seq-graph"))
    enc = method.feature_encoder()
    assert enc.module is method.encoder_q and enc.feature_dim == 16
    assert isinstance(enc.test_recipe, CentreCropResize) and isinstance(enc.train_recipe, RandomCropResize)
    x, lengths = batch()
    view = enc.transform(train=False)(x, lengths, torch.Generator())
    assert view.shape == (4, 3, FRAMES, 25, 2)
    assert torch.equal(enc(view, lengths), method.encoder_q.representation(seq_literal(view)))
    graph = ISC(tiny(pair="seq-graph", feature="graph"))
    assert graph.feature_encoder().module is graph.encoder_r


def test_bigru_quirk_option() -> None:
    """The official stepping feeds both cells forwards; gru_causal=False reads one cell backwards."""
    x = torch.randn(3, FRAMES, 150, dtype=torch.float64)
    for causal in (True, False):
        enc = ISC(tiny(pair="seq", gru_layers=1, gru_causal=causal)).double().encoder_q
        gru = enc.encoder.gru
        cell = torch.nn.GRU(150, 8, batch_first=True).double()
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(cell, f"{name}_l0").copy_(getattr(gru, f"{name}_l0_reverse"))
        second = cell(x if causal else x.flip(1))[0][:, -1]
        assert_close(enc.representation(x)[:, 8:], second, atol=1e-12, rtol=1e-12, what=f"causal={causal}")


def test_bad_options_and_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="pair"):
        ISC(tiny(pair="seq-seq"))
    with pytest.raises(ValueError, match="feature"):
        ISC(tiny(pair="seq-graph", feature="image"))
    with pytest.raises(ValueError, match="divisible by 16"):
        ISC(tiny(pair="seq-image", frames=24))
    with pytest.raises(ValueError, match="p_corrupt"):
        ISC(tiny(p_corrupt=1.5))
    with pytest.raises(ValueError, match="agcn_channels"):
        ISC(tiny(agcn_channels=2))
    with pytest.raises(ValueError, match="hcn_dropout"):
        ISC(tiny(pair="seq-image", frames=16, hcn_dropout=-0.1))
    with pytest.raises(ValueError, match="unknown option"):
        build_method("isc", {"queue": 5})
    method = ISC(tiny(pair="seq"))
    x, lengths = batch()
    with pytest.raises(ValueError, match=r"x must be \(N, 3, T, 25, 2\)"):
        method(x[..., :1], lengths, torch.Generator())
    with pytest.raises(ValueError, match="lengths"):
        method(x, lengths[:2], torch.Generator())


def test_official_configs_build() -> None:
    config = load_config("isc")
    method = build_method(config["method"], config["model"])
    assert isinstance(method, ISC)
    c = method.config
    assert (c.pair, c.queue_size, c.temperature, c.momentum, c.dim, c.mlp) == (
        "seq-graph",
        16384,
        0.07,
        0.999,
        128,
        True,
    )
    assert method.feature_encoder().feature_dim == 2048
    assert method.queue.bank.shape == (2 * 16384, 128)
    assert (config["train"]["epochs"], config["train"]["milestones"], config["train"]["lr"]) == (
        451,
        [351],
        0.01,
    )
    ntu120 = load_config("isc_ntu120")
    assert ntu120["model"] == config["model"]
    assert (ntu120["train"]["epochs"], ntu120["train"]["milestones"]) == (351, [251, 351])


def test_official_checkpoint_loads() -> None:
    source = ISC(tiny(pair="seq-graph"))
    k = source.config.queue_size
    # builder_inter.MoCo's state_dict under nn.DataParallel: module.encoder_{q,k,r,l}.*, (dim, K) queues
    official = {f"module.{key}": v for key, v in source.state_dict().items() if not key.startswith("queue.")}
    official["module.Queue_S1"] = source.queue.bank[:k].T.clone()
    official["module.Queue_S2"] = source.queue.bank[k:].T.clone()
    official["module.queue_ptr_S1"] = torch.tensor([4])
    official["module.queue_ptr_S2"] = torch.tensor([8])
    for key in (
        "encoder_q.encoder.gru.weight_hh_l1_reverse",
        "encoder_q.fc.0.weight",
        "encoder_r.l1.gcn1.PA",
    ):
        assert f"module.{key}" in official  # official parameter names (GRU.py, builder_inter, AGCN.py)
    target = ISC(tiny(pair="seq-graph"))
    target.load_official_state_dict(official)
    for (name, a), b in zip(target.state_dict().items(), source.state_dict().values(), strict=True):
        if name != "queue.ptr":
            assert torch.equal(a, b), name
    assert target.queue.ptr.tolist() == [4, 8]
    del official["module.Queue_S2"]
    with pytest.raises(KeyError, match="Queue_S2"):
        target.load_official_state_dict(official)


def test_runs_under_bf16_autocast() -> None:
    """``skelfast pretrain --amp bf16``: embeddings are cast to the queue's dtype before the loss."""
    method = ISC(tiny(pair="seq-image"))
    x, lengths = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = method(x, lengths, torch.Generator().manual_seed(0))
    out.loss.backward()
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    assert method.queue.bank.dtype == torch.float32 and torch.isfinite(method.queue.bank).all()


def test_spatial_view_options_reach_the_recipe() -> None:
    official = ISC(tiny()).recipe
    assert (official.shear_amplitude, official.p_corrupt, official.corrupt_joints) == (1.0, 0.5, 15)
    # shear only at amplitude 0.3: every view's matrix is I + S with |S| <= 0.3, no joint is corrupted
    method = ISC(tiny(shear_amplitude=0.3, p_corrupt=0.0))
    params = method.recipe.sample(torch.full((64,), 40), 25, torch.Generator().manual_seed(0))
    off_diagonal = params.matrix - torch.eye(3)
    assert not params.joint_select.any()
    assert torch.diagonal(off_diagonal, dim1=1, dim2=2).abs().max() == 0
    assert 0.2 < off_diagonal.abs().max() <= 0.3
