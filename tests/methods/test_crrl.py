"""CRRL against literal compositions written here from the released code (spec/isc_crrl.md §2):
every GRU runs on each sample's valid frames alone (no packing), losses are built from explicit
logits / per-sample sums, and the momentum and queue updates are written out."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from skelfast.augment.recipes import NoAugmentation
from skelfast.backends import use_backend
from skelfast.configs import load_config
from skelfast.methods import build_method
from skelfast.methods.crrl import CRRL, CRRLConfig, CRRLFeatures
from tests.utils import assert_close

V, M = 5, 1  # a tiny skeleton: 3 * 5 * 1 = 15 coordinates per frame
# float64 compositions of the same sums in another order agree to ~1e-15 relative; 1e-10 leaves room
# for the longest chains (two GRU layers x 12 frames, a 2-layer decoder) without hiding a wrong term.
F64 = dict(atol=1e-10, rtol=1e-10)


def tiny(**options) -> CRRLConfig:
    base = dict(input_size=3 * V * M, hidden_size=4, num_layers=2, dropout=0.0, queue_size=64)
    return CRRLConfig(**{**base, **options})


def batch(n: int, t: int = 9, seed: int = 0, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """x (n, 3, t, V, M) with lengths in [1, t] (the longest is t); frames past a length hold large
    junk (real NTU arrays hold looped frames there), which no CRRL encoder may read."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, t + 1, (n,), generator=g)
    lengths[0] = t
    x = 0.5 * torch.randn(n, 3, t, V, M, generator=g, dtype=dtype)
    past = torch.arange(t)[None, :] >= lengths[:, None]
    x[past.nonzero(as_tuple=True)[0], :, past.nonzero(as_tuple=True)[1]] = 100.0
    return x, lengths


def literal_frames(x: torch.Tensor, layout: str) -> torch.Tensor:
    """(N, 3, T, V, M) -> (N, T, 3VM), one column at a time."""
    n, c, t, v, m = x.shape
    out = x.new_zeros(n, t, c * v * m)
    for b in range(m):
        for j in range(v):
            for a in range(c):
                col = (b * v + j) * c + a if layout == "body_joint_xyz" else (j * c + a) * m + b
                out[:, :, col] = x[:, a, :, j, b]
    return out


def literal_velocity(seq: torch.Tensor, lengths: torch.Tensor, kind: str) -> torch.Tensor:
    out = torch.zeros_like(seq)
    for i, n in enumerate(lengths.tolist()):
        diff = seq[i, 1:n] - seq[i, : n - 1]
        if kind == "forward":
            out[i, : n - 1] = diff  # x[t+1] - x[t], 0 at the last valid frame
        else:
            out[i, 1:n] = diff  # x[t] - x[t-1], 0 at frame 0
    return out


def per_sample_outputs(gru: torch.nn.GRU, seq: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
    """The GRU on each sample's valid frames alone: a list of (len_i, out) tensors."""
    return [gru(seq[i : i + 1, :n])[0][0] for i, n in enumerate(lengths.tolist())]


def literal_tap(gru: torch.nn.GRU, seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    return torch.stack([o.mean(0) for o in per_sample_outputs(gru, seq, lengths)])


def literal_contrast(method: CRRL, x: torch.Tensor, lengths: torch.Tensor):
    """MoCo.forward of moco_builder.py: the key update written as the official
    ``k * m + q * (1 - m)``, then logits [q.k, q.queue] / T and CrossEntropyLoss with label 0."""
    c = method.config
    seq = literal_frames(x, c.frame_layout)
    vel = literal_velocity(seq, lengths, c.velocity) * c.velocity_scale
    key_gru, key_fc = copy.deepcopy(method.key.gru), copy.deepcopy(method.key.fc)
    with torch.no_grad():
        pairs = list(zip(key_gru.parameters(), method.query.gru.parameters(), strict=True))
        if c.update_key_mlp:
            pairs += list(zip(key_fc.parameters(), method.query.fc.parameters(), strict=True))
        for pk, pq in pairs:
            pk.copy_(pk * c.momentum + pq * (1.0 - c.momentum))
    q = F.normalize(method.query.fc(literal_tap(method.query.gru, seq, lengths)), dim=1)
    with torch.no_grad():
        k = F.normalize(key_fc(literal_tap(key_gru, vel, lengths)), dim=1)
    queue = method.queue.bank.clone()  # (K, D) rows = the official (D, K) columns
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.T], dim=1) / c.temperature
    loss = F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long))
    return loss, k, key_gru, key_fc


def literal_reconstruct(method: CRRL, x: torch.Tensor, lengths: torch.Tensor) -> dict[str, torch.Tensor]:
    """main_teacher_student per sample: decoder fed the first / last-valid output len_i times,
    sum over frames and coordinates / len_i; teacher = the stage-1 query GRU; squared L2 / N."""
    c = method.config
    seq = literal_frames(x, c.frame_layout)
    fwd, rev, dist = [], [], []
    for i, n in enumerate(lengths.tolist()):
        clip = seq[i, :n]
        feats = method.student.gru(clip[None])[0][0]  # (n, 2H)
        for code, target, out in ((feats[0], clip, fwd), (feats[n - 1], clip.flip(0), rev)):
            recon = method.decoder.gru(code.expand(1, n, -1))[0][0]
            out.append(((recon - target) ** 2).sum() / n)
        h_t = method.query.gru(clip[None])[0][0].mean(0)  # the teacher is a copy of the query GRU
        h_s = method.student.fc(feats.mean(0))
        dist.append(((h_t - h_s) ** 2).sum())
    terms = {
        "reconstruct_forward": torch.stack(fwd).mean(),
        "reconstruct_reverse": torch.stack(rev).mean(),
        "distill": torch.stack(dist).mean(),
    }
    terms["loss"] = (
        terms["reconstruct_forward"] + terms["reconstruct_reverse"] + c.distill_weight * terms["distill"]
    )
    return terms


def generator() -> torch.Generator:
    return torch.Generator().manual_seed(1)


def trainable(method: CRRL) -> set[str]:
    return {n for n, p in method.named_parameters() if p.requires_grad}


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


# --- losses against literal compositions --------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {},
        {
            "velocity": "backward",
            "frame_layout": "joint_xyz_body",
            "update_key_mlp": True,
            "velocity_scale": 4.0,
        },
    ],
    ids=["official", "options"],
)
def test_contrast_loss_equals_literal_composition_float64(options):
    method = CRRL(tiny(**options)).double()
    x, lengths = batch(6)
    twin = copy.deepcopy(method)  # the literal composition's gradients land here
    expected, _, _, _ = literal_contrast(twin, x, lengths)
    out = method(x, lengths, generator())
    assert_close(out.loss, expected, **F64, what="L_c")
    assert_close(out.terms["nce"], expected.detach(), **F64, what="logged nce")
    # gradients reach the query encoder and MLP exactly as through the literal logits
    out.loss.backward()
    expected.backward()
    for (name, a), b in zip(method.query.named_parameters(), twin.query.parameters(), strict=True):
        assert_close(a.grad, b.grad, **F64, what=f"grad {name}")


def test_reconstruct_loss_equals_spec_formula_float64():
    method = CRRL(tiny()).double()
    method.set_stage("reconstruct")
    x, lengths = batch(5)
    expected = literal_reconstruct(method, x, lengths)
    out = method(x, lengths, generator())
    assert_close(out.loss, expected["loss"], **F64, what="L_fwd + L_rev + 0.1 L_d")
    for name in ("reconstruct_forward", "reconstruct_reverse", "distill"):
        assert_close(out.terms[name], expected[name].detach(), **F64, what=name)


def test_reconstruct_flags_drop_their_terms():
    method = CRRL(tiny(reconstruct_reverse=False, distill_weight=0.0)).double()
    method.set_stage("reconstruct")
    x, lengths = batch(4)
    expected = literal_reconstruct(method, x, lengths)
    out = method(x, lengths, generator())
    assert "reconstruct_reverse" not in out.terms
    assert_close(out.loss, expected["reconstruct_forward"], **F64, what="forward reconstruction only")


# --- momentum, queue, stages --------------------------------------------------------------------


@pytest.mark.parametrize("update_key_mlp", [False, True], ids=["official", "ema_key_mlp"])
def test_momentum_step_moves_key_gru_by_one_minus_m(update_key_mlp):
    m = 0.9  # a visible step; the update must be exactly (1 - m) of the gap
    method = CRRL(tiny(momentum=m, update_key_mlp=update_key_mlp)).double()
    with torch.no_grad():  # as after some optimizer steps: the query has moved away from the key
        for p in method.query.parameters():
            p.add_(0.1 * torch.randn_like(p))
    q0, k0, kfc0 = snapshot(method.query), snapshot(method.key.gru), snapshot(method.key.fc)
    x, lengths = batch(4)
    method(x, lengths, generator())
    # the official k * m + q * (1 - m) and the fused lerp round differently by ~1 ulp
    for name, p in method.key.gru.named_parameters():
        expected = k0[name] * m + q0["gru." + name] * (1 - m)
        assert_close(p, expected, atol=1e-15, rtol=1e-15, what=f"key gru.{name}")
        assert not torch.equal(p, k0[name])
    for name, p in method.key.fc.named_parameters():
        if update_key_mlp:
            expected = kfc0[name] * m + q0["fc." + name] * (1 - m)
            assert_close(p, expected, atol=1e-15, rtol=1e-15, what=f"key fc.{name}")
        else:  # a fixed random projection: not a copy of the query MLP, and never updated
            assert torch.equal(p, kfc0[name]), f"key fc.{name} moved"
            assert not torch.equal(p, q0["fc." + name])


def test_key_mlp_initialisation():
    official, option = CRRL(tiny()), CRRL(tiny(update_key_mlp=True))
    for method in (official, option):
        for a, b in zip(method.key.gru.parameters(), method.query.gru.parameters(), strict=True):
            assert torch.equal(a, b)  # the key GRU starts as a copy of the query GRU
    for a, b in zip(option.key.fc.parameters(), option.query.fc.parameters(), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(official.key.fc[0].weight, official.query.fc[0].weight)


def test_queue_holds_exactly_the_enqueued_keys_with_wraparound():
    method = CRRL(tiny(queue_size=64)).double()
    initial = method.queue.bank.clone()
    halves = [slice(0, 32), slice(32, 64), slice(0, 32)]  # batch 32 fills K = 64 in two steps
    for step, rows in enumerate(halves):
        x, lengths = batch(32, seed=10 + step)
        _, keys, _, _ = literal_contrast(method, x, lengths)
        before = method.queue.bank.clone()
        method(x, lengths, generator())
        bank = method.queue.bank
        assert_close(bank[rows], keys, **F64, what=f"step {step}: enqueued keys")
        other = slice(32, 64) if rows.start == 0 else slice(0, 32)
        assert torch.equal(bank[other], before[other]), f"step {step}: the other half changed"
        assert int(method.queue.ptr[0]) == (32 * (step + 1)) % 64
        if step == 0:
            assert torch.equal(bank[32:], initial[32:])


def test_trainable_parameters_per_stage():
    method = CRRL(tiny())
    query = {"query." + n for n, _ in method.query.named_parameters()}
    assert trainable(method) == query
    method.set_stage("reconstruct")
    student = {"student." + n for n, _ in method.student.named_parameters()}
    decoder = {"decoder." + n for n, _ in method.decoder.named_parameters()}
    assert trainable(method) == student | decoder
    assert {n for n in student if ".fc." in n}, "the student MLP (distillation head) must train"
    with pytest.raises(ValueError, match="unknown stage"):
        method.set_stage("pretrain")


@pytest.mark.parametrize("stage", ["contrast", "reconstruct"])
def test_optimizer_step_changes_only_the_stage_modules(stage):
    method = CRRL(tiny(dropout=0.2))
    x, lengths = batch(8, dtype=torch.float32)
    if stage == "reconstruct":  # the teacher is the query GRU that stage 1 trained
        with torch.no_grad():
            for p in method.query.parameters():
                p.add_(0.1 * torch.randn_like(p))
        method.set_stage("reconstruct")
        for a, b in zip(method.teacher.gru.parameters(), method.query.gru.parameters(), strict=True):
            assert torch.equal(a, b) and not a.requires_grad
    before = {
        name: snapshot(getattr(method, name)) for name in ("query", "key", "teacher", "student", "decoder")
    }
    params = [p for p in method.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=1e-4)
    optimizer.zero_grad()
    method(x, lengths, generator()).loss.backward()
    optimizer.step()
    # the key GRU starts equal to the query GRU: it moves from the step after the query has moved
    moved = {"contrast": {"query"}, "reconstruct": {"student", "decoder"}}[stage]
    for name, old in before.items():
        module = getattr(method, name)
        changed = [n for n, p in module.named_parameters() if not torch.equal(p, old[n])]
        if name in moved:
            assert changed, f"{stage}: {name} did not change"
        else:
            assert not changed, f"{stage}: {name} changed: {changed}"
            assert all(p.grad is None for p in module.parameters()), f"{stage}: {name} got gradients"


@pytest.mark.parametrize("teacher_dropout", [True, False], ids=["official", "teacher_eval"])
def test_teacher_dropout_quirk(teacher_dropout):
    method = CRRL(tiny(dropout=0.5, teacher_dropout=teacher_dropout)).double()
    method.set_stage("reconstruct")
    method.train()
    assert method.teacher.training is teacher_dropout
    assert method.student.training  # the student always trains with its dropout
    x, lengths = batch(4)
    seq = literal_frames(x, "body_joint_xyz")
    a = method.teacher.representation(seq, lengths)
    b = method.teacher.representation(seq, lengths)
    assert torch.equal(a, b) is not teacher_dropout


# --- backends, features, config -----------------------------------------------------------------


@pytest.mark.parametrize("stage", ["contrast", "reconstruct"])
def test_reference_backend_agrees_with_fused_path(stage):
    method = CRRL(tiny(queue_size=16))  # official dropout 0.2: both runs draw the same masks
    method.set_stage(stage)
    twin = copy.deepcopy(method)
    x, lengths = batch(8, dtype=torch.float32)
    torch.manual_seed(5)
    fused = method(x, lengths, generator())
    torch.manual_seed(5)
    with use_backend("reference"):
        reference = twin(x, lengths, generator())
    # float32: the chunked online-softmax InfoNCE and the full-logits reference differ by rounding only
    assert_close(fused.loss, reference.loss, atol=1e-5, rtol=1e-5, what=f"{stage} loss")
    fused.loss.backward()
    reference.loss.backward()
    for (name, a), b in zip(method.named_parameters(), twin.parameters(), strict=True):
        if a.requires_grad:
            assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4, what=f"grad {name}")
    assert_close(method.queue.bank, twin.queue.bank, atol=1e-6, rtol=0, what="queue after the step")


def test_feature_encoder_follows_the_stage_and_survives_state_dict():
    method = CRRL(tiny()).double()
    x, lengths = batch(5)
    seq = literal_frames(x, "body_joint_xyz")
    view = method.feature_encoder().transform(train=False)(x, lengths, generator())
    assert isinstance(method.feature_encoder().test_recipe, NoAugmentation)
    features = method.feature_encoder()
    assert isinstance(features, CRRLFeatures) and features.feature_dim == 8
    assert_close(features(view, lengths), literal_tap(method.query.gru, seq, lengths), **F64, what="stage 1")
    method.set_stage("reconstruct")
    expected = literal_tap(method.student.gru, seq, lengths)
    assert_close(method.feature_encoder()(view, lengths), expected, **F64, what="student after stage 2")
    fresh = CRRL(tiny()).double()
    fresh.load_state_dict(method.state_dict())
    assert fresh.stage == "reconstruct" and trainable(fresh) == trainable(method)
    assert_close(fresh.feature_encoder()(view, lengths), expected, **F64, what="reloaded")


def test_short_run_lowers_each_stage_loss():
    """Seconds of SGD on synthetic sinusoids (per-sample frequency and phases, variable lengths).

    Key momentum 0.9 instead of 0.999: with the fixed random key MLP, a 16-unit model's keys start
    nearly identical (cosine ~0.98) and stay so until the key GRU has followed the query GRU, which
    at m = 0.999 takes far longer than this test's 64 steps (the loss sits at log(K + 1)). Large
    amplitudes give the key's velocity input a spread; stage 2 reads the same clips scaled to +-0.25,
    inside the (-1, 1) range of the decoder's GRU state, as CRRL's normalised data."""
    g = torch.Generator().manual_seed(0)
    n, t = 32, 12
    lengths = torch.randint(6, t + 1, (n,), generator=g)
    time = torch.arange(t, dtype=torch.float32)[None, None, :, None, None]
    freq = 0.5 + 2.5 * torch.rand(n, 1, 1, 1, 1, generator=g)
    phase = 6.28 * torch.rand(n, 3, 1, V, M, generator=g)
    x = 3.0 * torch.sin(freq * time + phase)
    method = CRRL(tiny(hidden_size=16, queue_size=16, momentum=0.9))
    for stage, lr, epochs, scale in (("contrast", 0.01, 16, 1.0), ("reconstruct", 0.05, 8, 1 / 12)):
        method.set_stage(stage)
        params = [p for p in method.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
        losses = []
        for _epoch in range(epochs):
            for i in range(0, n, 8):
                out = method(scale * x[i : i + 8], lengths[i : i + 8], generator())
                optimizer.zero_grad()
                out.loss.backward()
                optimizer.step()
                losses.append(float(out.loss.detach()))
        first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4  # first and last epoch
        assert math.isfinite(last) and last < 0.9 * first, f"{stage}: {first:.4f} -> {last:.4f}"


def test_config_file_is_the_official_recipe():
    config = load_config("crrl")
    method = build_method(config["method"], config["model"])
    assert isinstance(method, CRRL) and method.config == CRRLConfig()
    assert method.stages() == ["contrast", "reconstruct"]
    train = config["train"]
    assert (train["batch_size"], train["lr"], train["momentum"], train["weight_decay"]) == (
        32,
        0.05,
        0.9,
        1e-4,
    )
    # official adjust_learning_rate at the start of epoch e: lr0 * 0.5 ** #{m in [18, 50] : e > m}
    for epoch in range(train["epochs"]):
        ours = train["lr"] * train["gamma"] ** sum(epoch >= m for m in train["milestones"])
        assert ours == 0.05 * 0.5 ** sum(epoch > m for m in (18, 50)), epoch
    # linear eval: adjust_learning_rate(e) after epoch e's training phase sets the lr of epoch e + 1
    linear = config["eval"]["linear"]
    for epoch in range(linear["epochs"]):
        ours = linear["lr"] * linear["gamma"] ** sum(epoch >= m for m in linear["milestones"])
        official = 0.1 * 0.5 ** sum(epoch - 1 > m for m in (15, 35, 50, 66, 75)) if epoch else 0.1
        assert ours == official, epoch


def test_bad_input_is_named():
    method = CRRL(tiny())
    x, lengths = batch(3, dtype=torch.float32)
    with pytest.raises(ValueError, match="input_size=15"):
        method(torch.zeros(3, 3, 9, 25, 2), lengths, generator())
    with pytest.raises(ValueError, match="lengths must have shape"):
        method(x, lengths[:2], generator())
    with pytest.raises(ValueError, match="velocity"):
        CRRLConfig(velocity="central")
    with pytest.raises(ValueError, match="velocity_scale must be > 0"):
        CRRLConfig(velocity_scale=0.0)
    with pytest.raises(ValueError, match="unknown option"):
        build_method("crrl", {"queue": 64})
