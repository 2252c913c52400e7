"""The pretraining loop: official lr schedules, exact resume after a kill, NaN stops, bf16, the
synthetic-data cache, and ``skelfast pretrain`` end to end."""

from __future__ import annotations

import math
import sys
from functools import partial

import numpy as np
import pytest
import torch

from skelfast.cli import main
from skelfast.configs import available, load_config
from skelfast.data.datasets import SkeletonDataset, SkeletonLoader
from skelfast.engine import checkpoint as ck
from skelfast.engine import synthetic_data
from skelfast.engine.distributed import ShardedLoader, epoch_order
from skelfast.engine.metrics import MetricsWriter, read_metrics
from skelfast.engine.optim import LRSchedule, build_optimizer
from skelfast.engine.pretrain import PretrainError, _Run, pretrain, stage_train_config
from tests.engine import ToyConfig, ToyMethod, toy_config, write_split

# --- schedules against the official code ---------------------------------------------------------------


def moco_adjust_learning_rate(lr: float, epoch: int, schedule: list[int], epochs: int, cos: bool) -> float:
    """MoCo's main_moco.adjust_learning_rate (HiCo and ISC ship it unchanged)."""
    if cos:
        lr *= 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
    else:
        for milestone in schedule:
            lr *= 0.1 if epoch >= milestone else 1.0
    return lr


def test_hico_schedule_is_the_official_one():
    schedule = LRSchedule.from_config(load_config("hico")["train"])
    assert schedule.lr_at(350) == 0.01 and schedule.lr_at(351) == 0.01 * 0.1  # x0.1 from epoch 351
    for epoch in range(451):
        assert schedule.lr_at(epoch) == moco_adjust_learning_rate(0.01, epoch, [351], 451, cos=False)


def test_isc_ntu120_schedule_is_the_official_one():
    schedule = LRSchedule.from_config(load_config("isc_ntu120")["train"])
    for epoch in range(351):
        assert schedule.lr_at(epoch) == moco_adjust_learning_rate(0.01, epoch, [251, 351], 351, cos=False)


def test_crrl_schedule_halves_after_epochs_18_and_50():
    schedule = LRSchedule.from_config(load_config("crrl")["train"])
    # hand-computed from the spec: epochs 0-18: 0.05; 19-50: 0.025; 51-59: 0.0125 (halvings are exact)
    expected = [0.05] * 19 + [0.025] * 32 + [0.0125] * 9
    assert [schedule.lr_at(e) for e in range(60)] == expected


def test_hiclr_schedule_drops_once_the_one_based_epoch_exceeds_250():
    schedule = LRSchedule.from_config(load_config("hiclr")["train"])
    # the AimCLR processor: base_lr * 0.1 ** sum(epoch >= step) with 1-based epochs > 250
    for epoch in range(300):
        assert schedule.lr_at(epoch) == 0.1 * 0.1 ** int(epoch + 1 > 250)


def test_cosine_and_warmup_match_their_official_formulas():
    cosine = LRSchedule(lr=0.3, schedule="cosine", epochs=200)
    for epoch in range(200):
        assert cosine.lr_at(epoch) == moco_adjust_learning_rate(0.3, epoch, [], 200, cos=True)
    # the HiCLR/ST-GCN processors' warm-up: base_lr * (epoch + 1) / warm_up_epoch, then the steps
    warm = LRSchedule(lr=0.1, schedule="step", milestones=(30, 55), gamma=0.1, epochs=70, warmup_epochs=5)
    assert [warm.lr_at(e) for e in range(5)] == [0.1 * (e + 1) / 5 for e in range(5)]
    assert warm.lr_at(5) == 0.1 and warm.lr_at(29) == 0.1
    assert warm.lr_at(30) == 0.1 * 0.1 and warm.lr_at(55) == 0.1 * 0.1 * 0.1


def test_optimizer_and_schedule_reject_bad_settings():
    params = [torch.nn.Parameter(torch.zeros(2))]
    assert isinstance(build_optimizer(params, {"optimizer": "adam", "lr": 1e-3}), torch.optim.Adam)
    sgd = build_optimizer(params, load_config("hico")["train"])
    assert sgd.defaults["momentum"] == 0.9 and sgd.defaults["weight_decay"] == 1e-4
    with pytest.raises(ValueError, match="unknown optimizer 'lamb'"):
        build_optimizer(params, {"optimizer": "lamb", "lr": 0.1})
    with pytest.raises(ValueError, match="unknown lr schedule"):
        LRSchedule(lr=0.1, schedule="poly")
    with pytest.raises(ValueError, match="milestones"):
        LRSchedule(lr=0.1, milestones=(50, 10))
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['milestone'\]"):
        stage_train_config(
            {"train": {"epochs": 1, "batch_size": 2, "lr": 0.1, "milestone": [3]}}, "pretrain", ["pretrain"]
        )


@pytest.mark.parametrize("name", available())
def test_every_shipped_config_is_a_valid_training_recipe(name):
    config = load_config(name)
    # per-stage tables ([train.contrast] in CRRL's demo) are validated stage by stage
    stages = [key for key, value in config["train"].items() if isinstance(value, dict)]
    for stage in stages or ["pretrain"]:
        train = stage_train_config(config, stage, stages)
        assert LRSchedule.from_config(train).lr_at(0) == train["lr"] or train.get("warmup_epochs", 0) > 0


def test_stage_tables_override_the_shared_train_settings():
    config = {"train": {"epochs": 60, "batch_size": 32, "lr": 0.05, "reconstruct": {"lr": 0.01}}}
    stages = ["contrast", "reconstruct"]
    assert stage_train_config(config, "contrast", stages)["lr"] == 0.05
    assert stage_train_config(config, "reconstruct", stages)["lr"] == 0.01


# --- data order -----------------------------------------------------------------------------------------


def test_sharded_loader_reads_what_skeleton_loader_reads(tmp_path):
    dataset = SkeletonDataset.from_split(write_split(tmp_path, n=11))
    reference = SkeletonLoader(dataset, batch_size=4, shuffle=True, seed=5, drop_last=False)
    ours = ShardedLoader(dataset, batch_size=4, shuffle=True, seed=5, drop_last=False)
    for epoch in (0, 3):
        reference.set_epoch(epoch)
        ours.set_epoch(epoch)
        got = [idx.tolist() for *_, idx in ours]
        assert got == [idx.tolist() for *_, idx in reference]
        assert sum(got, []) == epoch_order(11, 5, epoch).tolist()
        ours.set_epoch(epoch, start_batch=2)  # a resumed epoch skips to batch 2 without reading 0 and 1
        assert [idx.tolist() for *_, idx in ours] == got[2:]


# --- resume ---------------------------------------------------------------------------------------------


def _assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_killed_run_resumes_to_bit_identical_weights(tmp_path):
    data = write_split(tmp_path / "data", n=14)  # 3 batches of 4 per epoch (drop_last), 2 epochs
    config = toy_config(epochs=2, checkpoint_steps=2)
    whole = pretrain(config, data, tmp_path / "whole", method=ToyMethod, progress=False, log=lambda _: None)

    # the crash: the 5th forward raises after the key update (epoch 1, batch 1); the last checkpoint is step 4
    with pytest.raises(PretrainError, match="injected crash"):
        pretrain(
            config,
            data,
            tmp_path / "killed",
            method=partial(ToyMethod, fail_at_call=5),
            progress=False,
            log=lambda _: None,
        )
    state = ck.load_checkpoint(tmp_path / "killed" / ck.LAST)
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (4, 1, 1)
    pretrain(
        None, None, tmp_path / "killed", resume=True, method=ToyMethod, progress=False, log=lambda _: None
    )

    final_whole = ck.load_checkpoint(whole / ck.LAST)
    final_resumed = ck.load_checkpoint(tmp_path / "killed" / ck.LAST)
    assert final_resumed["step"] == final_whole["step"] == 6
    _assert_same_state(final_whole["method"], final_resumed["method"])  # exact: every weight and queue
    momenta = [s["momentum_buffer"] for s in final_whole["optimizer"]["state"].values()]
    resumed = [s["momentum_buffer"] for s in final_resumed["optimizer"]["state"].values()]
    assert all(torch.equal(x, y) for x, y in zip(momenta, resumed, strict=True))
    # the metrics read as one run: the rows after the checkpoint were dropped and redone
    rows_whole, rows_resumed = (
        read_metrics(whole / "metrics.csv"),
        read_metrics(tmp_path / "killed" / "metrics.csv"),
    )
    assert [(r["step"], r["loss"], r["lr"]) for r in rows_whole] == [
        (r["step"], r["loss"], r["lr"]) for r in rows_resumed
    ]


def test_max_steps_stop_and_resume_equal_an_uninterrupted_crrl_run(tmp_path, monkeypatch):
    """The real two-stage method (CRRL: contrast, then reconstruct + distil) at a tiny size, stopped
    inside its second stage and resumed."""
    monkeypatch.setenv("SKELFAST_CACHE", str(tmp_path / "cache"))
    config = load_config(
        "crrl",
        [
            "model.hidden_size=6", "model.queue_size=8", "train.epochs=1", "train.batch_size=4",
            "data.synthetic_samples=28", "data.synthetic_classes=3", "data.max_frames=12",
        ],
    )  # fmt: skip
    quiet = {"progress": False, "log": lambda _: None}
    whole = pretrain(config, None, tmp_path / "whole", device="cpu", **quiet)
    rows = read_metrics(whole / "metrics.csv")
    per_stage = sum(r["stage"] == "contrast" for r in rows)
    assert (
        per_stage >= 2
        and [r["stage"] for r in rows] == ["contrast"] * per_stage + ["reconstruct"] * per_stage
    )
    stop_at = per_stage + 1  # one step into the reconstruct stage
    pretrain(config, None, tmp_path / "cut", device="cpu", max_steps=stop_at, **quiet)
    assert ck.load_checkpoint(tmp_path / "cut" / ck.LAST)["stage"] == "reconstruct"
    pretrain(config, None, tmp_path / "cut", device="cpu", resume=True, **quiet)
    _assert_same_state(
        ck.load_checkpoint(whole / ck.LAST)["method"],
        ck.load_checkpoint(tmp_path / "cut" / ck.LAST)["method"],
    )
    assert {p.name for p in whole.glob("checkpoint_*epoch*.pt")} == {
        "checkpoint_contrast_epoch0000.pt",
        "checkpoint_reconstruct_epoch0000.pt",
    }


def test_loader_worker_processes_change_nothing(tmp_path):
    data = write_split(tmp_path / "data", n=12)
    quiet = {"progress": False, "log": lambda _: None, "method": ToyMethod}
    inline = pretrain(toy_config(epochs=1), data, tmp_path / "inline", **quiet)
    workers = pretrain(toy_config(epochs=1, num_workers=2), data, tmp_path / "workers", **quiet)
    _assert_same_state(
        ck.load_checkpoint(inline / ck.LAST)["method"], ck.load_checkpoint(workers / ck.LAST)["method"]
    )


def test_resume_refuses_a_changed_config_and_a_fresh_run_refuses_an_used_folder(tmp_path):
    data = write_split(tmp_path / "data", n=8)
    config = toy_config(epochs=1)
    quiet = {"progress": False, "log": lambda _: None}
    pretrain(config, data, tmp_path / "run", method=ToyMethod, max_steps=1, **quiet)
    with pytest.raises(ValueError, match=r"train.lr: 0.1 \(saved\) != 0.5"):
        pretrain(toy_config(epochs=1, lr=0.5), data, tmp_path / "run", resume=True, method=ToyMethod, **quiet)
    with pytest.raises(ValueError, match="already holds a run"):
        pretrain(config, data, tmp_path / "run", method=ToyMethod, **quiet)


# --- bad steps ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("op_check", [True, False], ids=["info_nce-check", "loss-check"])
def test_nan_in_the_data_stops_cleanly_and_keeps_the_last_good_checkpoint(tmp_path, op_check):
    n, batch, seed = 12, 4, 3
    order = epoch_order(n, seed, 0).tolist()
    bad = order[2 * batch]  # a sample of batch 2 of epoch 0: steps 1 and 2 are good, step 3 is not
    data = write_split(tmp_path / "data", n=n, nan_sample=bad)
    config = toy_config(epochs=1, batch_size=batch, seed=seed, checkpoint_steps=1)
    run = tmp_path / "run"
    with pytest.raises(PretrainError) as err:
        pretrain(
            config, data, run, method=partial(ToyMethod, ToyConfig(check_finite=op_check)), progress=False
        )
    message = str(err.value)
    assert "stage 'pretrain', epoch 0, step 3 (batch 2 of the epoch)" in message
    assert f"NaN/Inf in dataset sample(s) [{bad}]" in message
    assert (" nan" in message) if not op_check else ("non-finite" in message or "NaN" in message)
    state = ck.load_checkpoint(run / ck.LAST)
    assert state["step"] == 2 and state["batch_in_epoch"] == 2
    assert all(torch.isfinite(t).all() for t in state["method"].values() if t.is_floating_point())
    assert [r["step"] for r in read_metrics(run / "metrics.csv")] == ["1", "2"]


def test_bf16_autocast_runs_on_the_cpu(tmp_path):
    data = write_split(tmp_path / "data", n=8)
    quiet = {"progress": False, "log": lambda _: None}
    fp32 = pretrain(toy_config(epochs=1), data, tmp_path / "fp32", method=ToyMethod, **quiet)
    bf16 = pretrain(toy_config(epochs=1, amp="bf16"), data, tmp_path / "bf16", method=ToyMethod, **quiet)
    loss32 = [float(r["loss"]) for r in read_metrics(fp32 / "metrics.csv")]
    loss16 = [float(r["loss"]) for r in read_metrics(bf16 / "metrics.csv")]
    # bf16 keeps 8 mantissa bits: the losses are close (a few %) but not equal, so autocast was on
    assert all(math.isfinite(v) for v in loss16)
    np.testing.assert_allclose(loss16, loss32, rtol=0.05)
    assert loss16 != loss32


# --- synthetic data cache -------------------------------------------------------------------------------


def test_synthetic_data_is_generated_once_and_never_left_half_written(tmp_path, monkeypatch):
    import skelfast.data.synthetic as synthetic

    tiny = {"synthetic_samples": 12, "synthetic_classes": 2, "max_frames": 16, "normalization": "none"}

    def killed(out_dir, *args, **kwargs):  # a generation that dies after writing part of the files
        (out_dir / "xsub").mkdir(parents=True)
        (out_dir / "xsub" / "train_data_joint.npy").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "write_synthetic", killed)
    with pytest.raises(KeyboardInterrupt):
        synthetic_data.synthetic_split_dir(tiny, root=tmp_path, quiet=True)
    assert list(tmp_path.iterdir()) == []  # neither the final folder nor the temporary one
    monkeypatch.undo()

    folder = synthetic_data.synthetic_split_dir(tiny, root=tmp_path, quiet=True)
    assert folder.name == "xsub" and (folder / "train_data_joint.npy").exists()
    stamp = (folder / "train_data_joint.npy").stat().st_mtime_ns
    assert synthetic_data.synthetic_split_dir(tiny, root=tmp_path, quiet=True) == folder
    assert (folder / "train_data_joint.npy").stat().st_mtime_ns == stamp  # reused, not regenerated
    other = synthetic_data.synthetic_split_dir({**tiny, "normalization": "agcn"}, root=tmp_path, quiet=True)
    assert other.parent != folder.parent  # the normalisation is part of the cache key
    with pytest.raises(ValueError, match="benchmark"):
        synthetic_data.synthetic_params({"benchmark": "xset"})


# --- the command ----------------------------------------------------------------------------------------


def test_cli_pretrain_max_steps_writes_the_run_folder(tmp_path, monkeypatch, capsys):
    """``skelfast pretrain`` through the command's entry point (in this process: a subprocess would
    add the interpreter's start-up and torch's import to the test's time)."""
    monkeypatch.setenv("SKELFAST_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    args = [
        "pretrain", "--method", "crrl", "--out", str(run), "--max-steps", "2", "--batch-size", "4",
        "--device", "cpu", "--quiet", "--set", "model.hidden_size=6", "--set", "data.synthetic_samples=16",
        "--set", "data.synthetic_classes=2", "--set", "data.max_frames=12",
    ]  # fmt: skip
    assert main(args) == 0
    assert capsys.readouterr().out.strip() == str(run)
    config = load_config(run / "config.toml")
    assert (
        config["method"] == "crrl"
        and config["model"]["hidden_size"] == 6
        and config["train"]["batch_size"] == 4
    )
    assert config["train"]["lr"] == 0.05  # the official value where nothing overrode it
    batches = len(SkeletonDataset.from_split(config["data"]["path"])) // 4  # drop_last
    state = ck.load_checkpoint(run / ck.LAST)
    assert state["step"] == 2 and state["stage"] == "contrast"
    assert state["epoch"] * batches + state["batch_in_epoch"] == 2
    rows = read_metrics(run / "metrics.csv")
    assert [r["step"] for r in rows] == ["1", "2"] and all(math.isfinite(float(r["loss"])) for r in rows)
    assert list(rows[0])[:6] == ["stage", "epoch", "step", "loss", "lr", "samples_per_s"]

    # --resume continues it with the saved config; a bad override is a one-line error, not a traceback
    assert main([*args[:5], "--max-steps", "3", "--resume", "--quiet", "--device", "cpu"]) == 0
    assert ck.load_checkpoint(run / ck.LAST)["step"] == 3
    capsys.readouterr()
    assert main([*args[:3], "--set", "train.optimizer=lamb", "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "unknown optimizer 'lamb'" in capsys.readouterr().err


def test_cli_method_names_match_the_registry():
    from skelfast.engine.pretrain_cli import METHOD_NAMES
    from skelfast.methods import METHODS

    assert sorted(METHOD_NAMES) == sorted(METHODS)


# --- metrics --------------------------------------------------------------------------------------------


def test_metrics_widen_for_new_terms_drop_redone_rows_and_feed_tensorboard(tmp_path, monkeypatch):
    import types

    scalars = []

    class FakeWriter:  # stands in for tensorboard's SummaryWriter (not a dependency)
        def __init__(self, log_dir):
            self.log_dir = log_dir

        def add_scalar(self, tag, value, step):
            scalars.append((tag, value, step))

        def close(self):
            pass

    monkeypatch.setitem(
        sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter)
    )
    base = {"stage": "contrast", "epoch": 0, "lr": 0.05, "samples_per_s": 10.0}
    writer = MetricsWriter(tmp_path)
    writer.write({**base, "step": 1, "loss": 2.5, "nce": 2.5})
    writer.write({**base, "stage": "reconstruct", "step": 2, "loss": 1.5, "distill": 0.5})
    writer.write({**base, "step": 3, "loss": 1.0, "nce": 1.0})
    writer.close()
    rows = read_metrics(tmp_path / "metrics.csv")
    assert list(rows[0]) == ["stage", "epoch", "step", "loss", "lr", "samples_per_s", "nce", "distill"]
    assert [(r["step"], r["nce"], r["distill"]) for r in rows] == [
        ("1", "2.5", ""),
        ("2", "", "0.5"),
        ("3", "1", ""),
    ]
    assert ("train/loss", 1.5, 2) in scalars and ("train/distill", 0.5, 2) in scalars

    resumed = MetricsWriter(tmp_path, resume_step=1, tensorboard=False)  # steps 2 and 3 are redone
    resumed.write({**base, "step": 2, "loss": 9.0, "nce": 9.0})
    resumed.close()
    assert [(r["step"], r["loss"]) for r in read_metrics(tmp_path / "metrics.csv")] == [
        ("1", "2.5"),
        ("2", "9"),
    ]
    before = (tmp_path / "metrics.csv").read_text()
    MetricsWriter(tmp_path, enabled=False).write({**base, "step": 3, "loss": 0.0})  # rank > 0: writes nothing
    assert (tmp_path / "metrics.csv").read_text() == before
    with pytest.raises(ValueError, match=r"lacks \['lr'\]"):
        MetricsWriter(tmp_path / "new").write(
            {"stage": "s", "epoch": 0, "step": 1, "loss": 1.0, "samples_per_s": 1}
        )


def test_epoch_summary_counts_epochs_from_one_like_the_progress_bar():
    line = _Run._epoch_line("hico", "pretrain", 0, 60, [1.0, 3.0], 0.02, 2.0, 100)
    assert line == "hico pretrain epoch 1/60: mean loss 2.0000, lr 0.02, 2.00 steps/s, ETA 0:00:50"


def test_resuming_a_finished_run_says_so_instead_of_drawing_an_empty_bar(tmp_path, capsys):
    data = write_split(tmp_path / "data", n=8)
    pretrain(
        toy_config(epochs=1), data, tmp_path / "run", method=ToyMethod, progress=False, log=lambda _: None
    )
    before = ck.load_checkpoint(tmp_path / "run" / ck.LAST)["step"]
    lines: list[str] = []
    pretrain(None, None, tmp_path / "run", resume=True, method=ToyMethod, progress=True, log=lines.append)
    assert ck.load_checkpoint(tmp_path / "run" / ck.LAST)["step"] == before  # nothing retrained
    assert any("already trained (1/1 epochs)" in line for line in lines)
    assert "0/0" not in capsys.readouterr().err


def test_clip_grad_norm_bounds_the_first_sgd_step(tmp_path):
    """Plain SGD (no momentum, no weight decay): one step moves the trainable parameters by exactly
    lr * clip_grad_norm when the gradient is longer than the bound, and by more without it."""
    data = write_split(tmp_path / "data", n=8)
    quiet = {"progress": False, "log": lambda _: None}

    def moved(run: str, **train: object) -> float:
        built = {}

        def build(*args: object, **kwargs: object) -> ToyMethod:
            method = ToyMethod(*args, **kwargs)
            built["init"] = {k: v.detach().clone() for k, v in method.named_parameters() if v.requires_grad}
            return method

        config = toy_config(epochs=1, momentum=0.0, weight_decay=0.0, lr=0.1, **train)
        pretrain(config, data, tmp_path / run, method=build, max_steps=1, **quiet)
        after = ck.load_checkpoint(tmp_path / run / ck.LAST)["method"]
        return math.sqrt(sum(float((after[k] - v).pow(2).sum()) for k, v in built["init"].items()))

    assert moved("clipped", clip_grad_norm=0.05) == pytest.approx(0.1 * 0.05, rel=1e-3)
    assert moved("free") > 0.1 * 0.05 * 2  # the bound was active
    with pytest.raises(ValueError, match="clip_grad_norm must be > 0"):
        stage_train_config(toy_config(clip_grad_norm=0), "pretrain", ["pretrain"])
