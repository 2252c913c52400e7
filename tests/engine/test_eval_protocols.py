"""The evaluation protocols: kNN, retrieval, linear, fine-tuning, semi-supervised subsets, reports, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from skelfast.augment.recipes import NoAugmentation, RandomAffine
from skelfast.engine.evaluation import (
    FinetuneSettings,
    LinearSettings,
    balanced_subset,
    evaluate,
    finetune,
    knn_predict,
    linear_eval,
    retrieval_metrics,
)
from skelfast.engine.evaluation.common import summarise_history
from skelfast.engine.evaluation.features import LabelledSubset
from skelfast.engine.evaluation.retrieval import average_precisions
from skelfast.engine.evaluation.semi import random_subset
from skelfast.methods.base import FeatureEncoder

T, V, M = 8, 25, 2


class ClusterSkeletons(Dataset):
    """Hand-made separable clips: class c moves joint c+1 to +1 m along x (and joint 0 to c / 10
    along y), plus N(0, 0.05^2) noise everywhere; a fixed 8-frame length."""

    def __init__(self, num_per_class: int, num_classes: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(num_classes).repeat_interleave(num_per_class)
        n = len(self.labels)
        self.x = 0.05 * torch.randn(n, 3, T, V, M, generator=g)
        self.x[torch.arange(n), 0, :, self.labels + 1, 0] += 1.0
        self.x[torch.arange(n), 1, :, 0, 0] += self.labels[:, None].float() / 10

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        return self.x[i], torch.tensor(T), self.labels[i], torch.tensor(i)


class PooledJoints(FeatureEncoder):
    """A tiny FeatureEncoder: mean over valid frames and bodies of each joint's xyz (75 numbers),
    then Linear -> BatchNorm -> ReLU. Records its train/eval mode at every call."""

    def __init__(self, feature_dim: int = 16, train_recipe: object | None = None) -> None:
        module = nn.Sequential(nn.Linear(3 * V, feature_dim), nn.BatchNorm1d(feature_dim), nn.ReLU())
        super().__init__(module, feature_dim, NoAugmentation(), train_recipe)
        self.modes: list[bool] = []
        self.samples_seen = 0

    def features(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        self.samples_seen += x.shape[0]
        valid = (torch.arange(x.shape[2]) < lengths[:, None]).float()  # (N, T)
        pooled = (x * valid[:, None, :, None, None]).sum(2) / lengths[:, None, None, None]
        return self.module(pooled.mean(-1).flatten(1))


def state_copy(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


# --- kNN -----------------------------------------------------------------------------------------


def test_knn_k1_is_cosine_not_euclidean():
    gallery = torch.tensor([[10.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1])
    query = torch.tensor([[1.0, 0.5]])
    # cosine: 0.894 to [10, 0] vs 0.447 to [0, 1]; Euclidean would pick [0, 1] (1.12 vs 9.01)
    assert knn_predict(gallery, labels, query, k=1).tolist() == [0]


def test_knn_k1_ties_go_to_the_first_gallery_item_across_chunks():
    gallery = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [2.0, 0.0]])
    labels = torch.tensor([5, 1, 6, 2])
    query = torch.tensor([[3.0, 0.0]])  # items 1 and 3 both have cosine 1
    for chunk in (1, 2, 3, 4):
        assert knn_predict(gallery, labels, query, k=1, gallery_chunk=chunk).tolist() == [1]


def test_knn_weighted_vote_by_hand():
    # one class-0 item at cosine 1.0, two class-1 items at cosine 0.9: a plain vote says 1, InstDisc's
    # weights say 0 because exp(1 / 0.07) = 4.2 * exp(0.9 / 0.07) > 2 * exp(0.9 / 0.07)
    c = 0.9
    gallery = torch.tensor([[1.0, 0.0], [c, math.sqrt(1 - c * c)], [c, -math.sqrt(1 - c * c)], [-1.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 0])
    query = torch.tensor([[1.0, 0.0]])
    assert knn_predict(gallery, labels, query, k=3, weighting="uniform").tolist() == [1]
    assert knn_predict(gallery, labels, query, k=3, weighting="exp", temperature=0.07).tolist() == [0]


@pytest.mark.parametrize("weighting", ["exp", "uniform"])
def test_knn_k20_matches_a_python_loop_and_is_chunk_invariant(weighting):
    g = torch.Generator().manual_seed(0)
    gallery, queries = torch.randn(60, 5, generator=g), torch.randn(13, 5, generator=g)
    labels = torch.randint(0, 4, (60,), generator=g)
    expected = []
    for q in queries:
        sims = [float(torch.dot(q, x) / (q.norm() * x.norm())) for x in gallery]
        top = sorted(range(60), key=lambda i: -sims[i])[:20]
        votes = [0.0] * 4
        for i in top:
            votes[int(labels[i])] += math.exp(sims[i] / 0.07) if weighting == "exp" else 1.0
        expected.append(max(range(4), key=lambda c: (votes[c], -c)))  # ties: the lowest class (sklearn)
    for qc, gc in ((1024, 16384), (4, 7), (1, 1)):
        pred = knn_predict(
            gallery, labels, queries, k=20, weighting=weighting, query_chunk=qc, gallery_chunk=gc
        )
        assert pred.tolist() == expected


def test_knn_rejects_bad_input():
    gallery, labels = torch.randn(5, 3), torch.zeros(5, dtype=torch.long)
    with pytest.raises(ValueError, match="k must be in"):
        knn_predict(gallery, labels, torch.randn(2, 3), k=6)
    with pytest.raises(ValueError, match="same F"):
        knn_predict(gallery, labels, torch.randn(2, 4))
    with pytest.raises(ValueError, match="NaN"):
        knn_predict(gallery, labels, torch.full((1, 3), float("nan")))


# --- retrieval -----------------------------------------------------------------------------------


def test_retrieval_map_by_hand_on_five_items():
    # gallery at angles 0, 20, 40, 60, 80 degrees from the query direction, stored out of order
    angles = torch.tensor([40.0, 0.0, 80.0, 20.0, 60.0])
    rad = torch.deg2rad(angles)
    gallery = torch.stack([torch.cos(rad), torch.sin(rad)], dim=1)
    labels = torch.tensor([0, 0, 0, 1, 1])  # ranked by angle: 0 (A), 20 (B), 40 (A), 60 (B), 80 (A)
    queries = torch.tensor([[1.0, 0.0], [2.0, 0.0], [1.0, 0.0]])
    query_labels = torch.tensor([0, 1, 7])  # class 7 has no gallery item
    ap = average_precisions(gallery, labels, queries, query_labels)
    # A at ranks 1, 3, 5: (1/1 + 2/3 + 3/5) / 3; B at ranks 2, 4: (1/2 + 2/4) / 2
    assert ap[0].item() == pytest.approx((1 + 2 / 3 + 3 / 5) / 3, abs=1e-12)
    assert ap[1].item() == pytest.approx(0.5, abs=1e-12)
    assert math.isnan(ap[2].item())
    m = retrieval_metrics(gallery, labels, queries, query_labels, query_chunk=2)
    assert m["mAP"] == pytest.approx(100 * ((1 + 2 / 3 + 3 / 5) / 3 + 0.5) / 2, abs=1e-9)
    assert m["top1"] == pytest.approx(100 / 3)  # only the class-0 query's nearest item matches
    assert m["queries_without_match"] == 1


# --- semi-supervised subsets ---------------------------------------------------------------------


def test_balanced_subset_counts_and_seed():
    labels = np.repeat(np.arange(5), [50, 30, 7, 1, 25])
    rng = np.random.default_rng(1)
    labels = labels[rng.permutation(len(labels))]
    for percent, expected in ((10, [5, 3, 1, 1, 2]), (1, [1, 1, 1, 1, 1])):
        # 10 %: round(5.0, 3.0, 0.7, 0.1 -> at least 1, 2.5 -> 2: Python rounds halves to even)
        idx = balanced_subset(labels, percent, seed=3)
        assert np.bincount(labels[idx], minlength=5).tolist() == expected
        assert len(set(idx.tolist())) == len(idx)
        assert np.array_equal(idx, balanced_subset(labels, percent, seed=3))
    assert not np.array_equal(balanced_subset(labels, 10, seed=3), balanced_subset(labels, 10, seed=4))
    with pytest.raises(ValueError, match="percent"):
        balanced_subset(labels, 0)
    # the class-blind option: round(0.1 * 113) = 11 distinct samples, the same for the same seed
    idx = random_subset(len(labels), 10, seed=3)
    assert len(np.unique(idx)) == 11 and np.array_equal(idx, random_subset(len(labels), 10, seed=3))


def test_semi_saves_its_subset_and_uses_full_length_epochs(tmp_path):
    train, test = ClusterSkeletons(10, 4, seed=0), ClusterSkeletons(3, 4, seed=1)
    records = evaluate(
        "semi",
        PooledJoints(),
        train,
        test,
        {"percents": [10], "mode": "linear", "epochs": 1, "batch_size": 8, "subset_seed": 5},
        tmp_path,
        progress=False,
    )
    saved = json.loads((tmp_path / "semi_10_indices.json").read_text())
    expected = balanced_subset(train.labels.numpy(), 10, seed=5)
    assert saved["indices"] == expected.tolist() and saved["per_class"] == {str(c): 1 for c in range(4)}
    record = records["semi_10"]
    assert record["metrics"]["labelled_samples"] == 4 and record["metrics"]["full_epoch_iterations"]
    assert (tmp_path / "semi_10.json").is_file()


# --- linear evaluation ---------------------------------------------------------------------------


def test_linear_eval_learns_a_separable_task_and_keeps_the_encoder_frozen(tmp_path):
    torch.manual_seed(0)
    train, test = ClusterSkeletons(16, 4, seed=0), ClusterSkeletons(8, 4, seed=1)
    encoder = PooledJoints(feature_dim=32)
    before = state_copy(encoder)
    settings = LinearSettings(epochs=30, batch_size=16, lr=2.0, milestones=(20,), eval_every=10)
    result = linear_eval(encoder, train, test, settings, progress=False)
    # the classes differ by a 1 m offset of one joint (0.5 m after the mean over bodies) against
    # 0.05 m noise (0.05 / sqrt(16) after pooling the frames): separable by a wide margin through a
    # random 32-wide ReLU projection, so a linear head that trains at all reaches (nearly) 100 %
    # (it does at lr 2.0 for 30 epochs, the scale HiCo's lr 2.0 is for); 90 % against a chance of
    # 25 % leaves room for a few errors, and an untrained head (1/3 of the epochs) stays below it
    assert result.accuracy_best >= 90.0
    assert [row["epoch"] for row in result.history] == [10, 20, 30]
    assert result.accuracy_last == result.history[-1]["accuracy"]
    assert result.accuracy_best == max(row["accuracy"] for row in result.history)
    assert result.history[result.best_epoch // 10 - 1]["accuracy"] == result.accuracy_best
    assert result.history[0]["lr"] == 2.0 and result.history[-1]["lr"] == pytest.approx(0.2)
    # frozen: in eval mode at every call, weights and BatchNorm statistics untouched
    assert encoder.modes and not any(encoder.modes)
    after = encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert encoder.training  # the caller's mode is restored
    assert result.metrics["features_cached"] == {"train": True, "test": True}


def test_linear_eval_cached_and_uncached_agree():
    train, test = ClusterSkeletons(6, 3, seed=0), ClusterSkeletons(4, 3, seed=1)
    encoder = PooledJoints()
    runs = [
        linear_eval(
            encoder, train, test, LinearSettings(epochs=3, batch_size=5, cache_features=c), progress=False
        )
        for c in (True, False)
    ]
    assert runs[0].metrics["features_cached"]["train"] and not runs[1].metrics["features_cached"]["train"]
    for a, b in zip(runs[0].history, runs[1].history, strict=True):
        assert a["accuracy"] == b["accuracy"]
        # same batches in the same order; only float summation order in the encoder may differ
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)


def test_linear_eval_on_a_cycling_subset_encodes_each_sample_once():
    train, test = ClusterSkeletons(5, 3, seed=0), ClusterSkeletons(2, 3, seed=1)
    subset = LabelledSubset(train, np.array([0, 5, 10, 11]), length=len(train))  # HiCLR's 15-long epochs
    encoder, runs = PooledJoints(), []
    for cache in (True, False):
        encoder.samples_seen = 0
        settings = LinearSettings(epochs=2, batch_size=4, cache_features=cache)
        runs.append(linear_eval(encoder, subset, test, settings, progress=False))
        # cached: the 4 distinct clips and the 6 test clips once; not: 15 clips per epoch, the test per epoch
        assert encoder.samples_seen == (4 + 6 if cache else 2 * (15 + 6))
    for a, b in zip(runs[0].history, runs[1].history, strict=True):
        assert a["accuracy"] == b["accuracy"] and a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)


def test_linear_eval_does_not_cache_a_random_train_transform():
    train, test = ClusterSkeletons(4, 2, seed=0), ClusterSkeletons(2, 2, seed=1)
    encoder = PooledJoints(train_recipe=RandomAffine())
    result = linear_eval(encoder, train, test, LinearSettings(epochs=1, batch_size=4), progress=False)
    assert result.metrics["features_cached"] == {"train": False, "test": True}


def test_best_and_last_bookkeeping():
    history = [
        {"epoch": 5, "accuracy": 40.0},
        {"epoch": 10, "accuracy": 60.0},
        {"epoch": 15, "accuracy": 60.0},
    ]
    history.append({"epoch": 20, "accuracy": 55.0})
    result = summarise_history("linear", history, "best")
    assert (result.accuracy_last, result.accuracy_best, result.best_epoch) == (55.0, 60.0, 10)
    assert result.accuracy_official == 60.0
    assert summarise_history("linear", history, "last").accuracy_official == 55.0


# --- fine-tuning ---------------------------------------------------------------------------------


def test_finetune_trains_a_copy_of_the_encoder():
    train, test = ClusterSkeletons(8, 3, seed=0), ClusterSkeletons(4, 3, seed=1)
    encoder = PooledJoints()
    before = state_copy(encoder)
    settings = FinetuneSettings(epochs=2, batch_size=8, warmup_epochs=1, milestones=(1,), encoder_lr=0.01)
    result = finetune(encoder, train, test, settings, progress=False)
    tuned = result.model.encoder.state_dict()
    weight = "module.0.weight"
    assert not torch.equal(tuned[weight], before[weight])  # the encoder itself was trained
    assert True in result.model.encoder.modes  # in train mode while training (dropout active)
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())  # caller's untouched
    # warm-up then the step: classifier lr 0.1 * 1/1 at epoch 0, 0.1 * 0.1 at epoch 1
    assert [row["lr"] for row in result.history] == [pytest.approx(0.1), pytest.approx(0.01)]


# --- reports and settings ------------------------------------------------------------------------


def test_report_json_has_the_fields_and_config_aliases(tmp_path):
    train, test = ClusterSkeletons(6, 3, seed=0), ClusterSkeletons(3, 3, seed=1)
    settings = {"epochs": 2, "batch_size": 6, "eval_interval": 1, "fc_init_std": 0.02, "reports": "best"}
    evaluate(
        "linear",
        PooledJoints(),
        train,
        test,
        settings,
        tmp_path,
        progress=False,
        encoder_info={"method": "toy"},
    )
    record = json.loads((tmp_path / "linear.json").read_text())
    for key in ("protocol", "accuracy_last", "accuracy_best", "best_epoch", "official_reports", "history"):
        assert key in record
    assert record["official_reports"] == "best" and record["settings"]["init_std"] == 0.02
    assert record["settings"]["eval_every"] == 1 and len(record["history"]) == 2
    assert record["dataset"]["train_samples"] == 18 and record["encoder"] == {"method": "toy"}
    gallery = ClusterSkeletons(7, 3, seed=2)  # 21 items: enough for the weighted 20-NN
    knn = evaluate(
        "knn", PooledJoints(), gallery, test, {"k": 1, "metric": "cosine"}, tmp_path, progress=False
    )
    assert set(knn["knn"]["metrics"]) == {"k1", "k20_weighted"}
    with pytest.raises(ValueError, match="unknown setting"):
        evaluate("linear", PooledJoints(), train, test, {"lrr": 0.1}, progress=False)


# --- CLI -----------------------------------------------------------------------------------------


def test_cli_knn_random_init_end_to_end(tmp_path, capsys):
    from skelfast.cli import main
    from skelfast.data.synthetic import write_synthetic

    write_synthetic(tmp_path / "data", num_samples=40, num_classes=4, seed=0, benchmarks=("xsub",))
    out = tmp_path / "eval"
    argv = ["eval", "knn", "--random-init", "--method", "crrl", "--data", str(tmp_path / "data" / "xsub")]
    argv += ["--out", str(out), "--device", "cpu", "--quiet"]
    argv += ["--set", "model.hidden_size=8", "--set", "eval.knn.weighted_ks=[3]"]
    assert main(argv) == 0, capsys.readouterr().err
    record = json.loads((out / "knn.json").read_text())
    assert record["encoder"]["random_init"] and record["encoder"]["method"] == "crrl"
    assert record["dataset"]["train_dir"] == str(tmp_path / "data" / "xsub")
    assert 0.0 <= record["accuracy_last"] <= 100.0 and set(record["metrics"]) == {"k1", "k3_weighted"}
    assert "knn" in capsys.readouterr().out


def test_cli_reports_bad_arguments(tmp_path, capsys):
    from skelfast.cli import main

    assert main(["eval", "knn", "--method", "hico"]) == 2
    assert "--random-init" in capsys.readouterr().err
    assert main(["eval", "linear", "--run", str(tmp_path)]) == 2
    assert "checkpoint_last.pt" in capsys.readouterr().err


def test_cli_loads_a_run_checkpoint(tmp_path, capsys):
    """``eval retrieval --run RUN`` evaluates the checkpoint's weights: its mAP (a continuous number,
    so a different model cannot match it by chance) equals the Python API's on the method the
    checkpoint was saved from; ``--random-init`` beside it builds a fresh model of the same config."""
    from skelfast.cli import main
    from skelfast.data.datasets import SkeletonDataset
    from skelfast.data.synthetic import write_synthetic
    from skelfast.engine.checkpoint import FORMAT, LAST, save_checkpoint
    from skelfast.methods import build_method

    write_synthetic(tmp_path / "data", num_samples=40, num_classes=4, seed=0, benchmarks=("xsub",))
    data = tmp_path / "data" / "xsub"
    config = {"method": "crrl", "model": {"hidden_size": 8}, "eval": {"retrieval": {"query_chunk": 5}}}
    torch.manual_seed(123)
    method = build_method("crrl", config["model"])
    run = tmp_path / "run"
    state = {"format": FORMAT, "config": config, "method": method.state_dict(), "epoch": 2, "step": 7}
    save_checkpoint({**state, "stage": "reconstruct"}, run / LAST)
    train, test = SkeletonDataset.from_split(data, "train"), SkeletonDataset.from_split(data, "val")
    expected = evaluate("retrieval", method.feature_encoder(), train, test, progress=False)["retrieval"]
    assert (
        main(["eval", "retrieval", "--run", str(run), "--data", str(data), "--device", "cpu", "--quiet"]) == 0
    )
    record = json.loads((run / "eval" / "retrieval.json").read_text())
    assert record["metrics"]["mAP"] == pytest.approx(expected["metrics"]["mAP"], rel=1e-6)
    assert record["encoder"]["checkpoint"] == str(run / LAST) and record["encoder"]["step"] == 7
    assert record["settings"]["query_chunk"] == 5  # the checkpoint config's [eval.retrieval]
    argv = ["eval", "retrieval", "--run", str(run), "--random-init", "--data", str(data), "--quiet"]
    assert main(argv) == 0
    baseline = json.loads((run / "eval" / "random-init" / "retrieval.json").read_text())
    assert baseline["encoder"]["random_init"]
    assert baseline["metrics"]["mAP"] != pytest.approx(record["metrics"]["mAP"], rel=1e-6)
    capsys.readouterr()
