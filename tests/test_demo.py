"""`skelfast demo`: pretrain on synthetic data, then kNN and linear against random init."""

from __future__ import annotations

import argparse
import json

import pytest

from skelfast import demo
from skelfast.configs import available, config_path, load_config

TINY_CRRL = [  # the crrl demo recipe shrunk to seconds: 3 classes, a 4-unit GRU, one epoch per stage
    "model.hidden_size=4",
    "data.synthetic_samples=60",
    "data.synthetic_classes=3",
    "data.max_frames=40",
    "train.batch_size=8",
    "train.contrast.epochs=1",
    "train.reconstruct.epochs=1",
    "eval.linear.epochs=2",
    "eval.linear.batch_size=8",
]


# Quirk and choice switches a demo recipe departs on; each must be argued, with the runs that
# measured it, in the recipe's header (crrl: with the released fixed random key MLP every key is
# nearly the same vector and stage 1 learns nothing; hiclr: the independent key encoder's first
# step; isc: the seq-graph pair stalls where seq-image learns).
DEMO_CORRECTIONS = {"crrl": {"update_key_mlp"}, "hiclr": {"key_init"}, "isc": {"pair"}}


def test_every_method_has_a_demo_recipe_built_on_its_official_config():
    for method in demo.DEMO_METHODS:
        assert f"{method}_demo" in available()
        config, official = load_config(f"{method}_demo"), load_config(method)
        assert config["method"] == official["method"] == method
        header = "".join(
            line for line in config_path(f"{method}_demo").read_text().splitlines() if line.startswith("#")
        )
        corrections = DEMO_CORRECTIONS.get(method, set())
        # the recipe changes sizes, not the method: every quirk switch the official config sets is
        # kept, but for the corrections listed above, which its header must name
        for key, value in official["model"].items():
            if isinstance(value, str) or isinstance(value, bool):
                kept = config["model"].get(key, value) == value
                assert kept != (key in corrections), (method, key)
                assert kept or key in header, (method, key, "a correction the header does not name")


def test_demo_pretrains_and_evaluates_against_random_init(tmp_path, monkeypatch):
    monkeypatch.setenv("SKELFAST_CACHE", str(tmp_path / "cache"))
    rows = demo.run_demo("crrl", tmp_path / "run", TINY_CRRL, progress=False)
    assert {(r["encoder"], r["protocol"]) for r in rows} == {
        (e, p) for e in ("pretrained", "random init") for p in ("knn", "linear")
    }
    for row in rows:
        assert 0.0 <= row["accuracy"] <= 100.0
    for sub in ("eval", "eval/random-init"):
        for protocol in ("knn", "linear"):
            report = json.loads((tmp_path / "run" / sub / f"{protocol}.json").read_text())
            acc = next(
                r["accuracy"]
                for r in rows
                if r["protocol"] == protocol and (r["encoder"] == "pretrained") == (sub == "eval")
            )
            assert report["accuracy_official"] == pytest.approx(acc)


@pytest.mark.slow  # about 4 minutes on the 2-core CI machine: 640 HiCo steps and four evaluations
def test_short_hico_demo_beats_random_init_on_knn(tmp_path, monkeypatch):
    """The demo recipe (60-class synthetic set) cut from 60 epochs to 20: pretraining must already
    lift kNN above the same encoder at random init. Measured on this machine (1 thread): +9.3 kNN
    points at 20 epochs, +12.5 at 30 and +19.9 at the recipe's 60; the bound of 5 leaves room for
    the float differences between thread counts that change a 640-step trajectory."""
    monkeypatch.setenv("SKELFAST_CACHE", str(tmp_path / "cache"))
    overrides = ["train.epochs=20", "train.milestones=[16]"]
    rows = demo.run_demo("hico", tmp_path / "run", overrides, progress=False)
    knn = {r["encoder"]: r["accuracy"] for r in rows if r["protocol"] == "knn"}
    assert knn["pretrained"] >= knn["random init"] + 5.0, knn


def test_summary_reports_gains_and_the_target():
    rows = [
        {"method": "m", "encoder": e, "protocol": p, "accuracy": a, "pretrain minutes": 1.0}
        for e, p, a in [
            ("pretrained", "knn", 70.0),
            ("random init", "knn", 50.0),
            ("pretrained", "linear", 60.0),
            ("random init", "linear", 50.0),
        ]
    ]
    (line,) = demo._summary(rows)
    assert line["knn gain"] == 20.0 and line["linear gain"] == 10.0
    assert line["target (gain >= 15) met"] == "no"  # linear misses it


def test_pretrain_minutes_sum_the_steps_of_every_stage(tmp_path):
    # CRRL-like: 64 clips a step at 32 clips/s (2 s) then 16 at 8/s (2 s): the whole run is 4 s
    (tmp_path / "metrics.csv").write_text(
        "stage,epoch,step,loss,lr,samples_per_s\ncontrast,0,1,4.1,0.05,32\nreconstruct,0,2,9.0,0.05,8\n"
    )
    config = {"train": {"epochs": 1, "lr": 0.05, "batch_size": 64, "reconstruct": {"batch_size": 16}}}
    assert demo.pretrain_minutes(tmp_path, config) == pytest.approx(4 / 60)


def test_write_results_outside_a_checkout_fails_before_any_pretraining(tmp_path, monkeypatch):
    from skelfast import checkout

    monkeypatch.setattr(checkout, "ROOT", tmp_path)
    monkeypatch.setattr(demo, "run_demo", lambda *a, **k: pytest.fail("pretrained before the check"))
    args = argparse.Namespace(method="crrl", out=None, set=[], write_results=True)
    with pytest.raises(checkout.NotACheckoutError, match="has no benchmarks/"):
        demo.main(args)
