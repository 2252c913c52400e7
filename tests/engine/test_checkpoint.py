"""Checkpoint files: atomic writes, weights_only loads, clear errors on damaged files, config TOML,
RNG state capture."""

from __future__ import annotations

import random
import tomllib

import numpy as np
import pytest
import torch

from skelfast.configs import available, load_config
from skelfast.engine import checkpoint as ck


def _state(value: float) -> dict:
    return {"format": ck.FORMAT, "step": int(value), "method": {"w": torch.full((3, 4), value)}}


def test_save_then_load_round_trip(tmp_path):
    path = ck.save_checkpoint(_state(1.0), tmp_path / ck.LAST)
    loaded = ck.load_checkpoint(path)
    assert loaded["step"] == 1
    torch.testing.assert_close(loaded["method"]["w"], torch.full((3, 4), 1.0), rtol=0, atol=0)


def test_failure_mid_write_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    path = ck.save_checkpoint(_state(1.0), tmp_path / ck.LAST)
    before = path.read_bytes()

    def half_then_crash(obj, f):  # a writer dying half-way through the new file
        f.write(before[: len(before) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(ck.torch, "save", half_then_crash)
    with pytest.raises(OSError, match="disk full"):
        ck.save_checkpoint(_state(2.0), path)
    assert path.read_bytes() == before
    assert ck.load_checkpoint(path)["step"] == 1
    # no temporary file is left behind; the kept previous checkpoint is the same good one
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([ck.LAST, "checkpoint_last.prev.pt"])
    assert ck.load_checkpoint(ck.previous_path(path))["step"] == 1


def test_previous_checkpoint_is_kept_and_snapshots_are_independent(tmp_path):
    path = ck.save_checkpoint(_state(1.0), tmp_path / ck.LAST)
    ck.snapshot(path, tmp_path / "checkpoint_epoch0000.pt")
    ck.save_checkpoint(_state(2.0), path)
    assert ck.load_checkpoint(path)["step"] == 2
    assert ck.load_checkpoint(ck.previous_path(path))["step"] == 1
    # the snapshot was a hard link of the old file: replacing checkpoint_last left it alone
    assert ck.load_checkpoint(tmp_path / "checkpoint_epoch0000.pt")["step"] == 1


class _Arbitrary:
    pass


def test_load_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": ck.FORMAT, "payload": _Arbitrary()}, path)
    with pytest.raises(ck.CheckpointError, match="weights_only") as err:
        ck.load_checkpoint(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_damaged_file_names_the_path_and_the_previous_checkpoint(tmp_path, damage):
    path = ck.save_checkpoint(_state(1.0), tmp_path / ck.LAST)
    ck.save_checkpoint(_state(2.0), path)
    data = path.read_bytes()
    damaged = {"truncated": data[: len(data) // 2], "garbage": b"not a checkpoint" * 10, "empty": b""}[damage]
    path.write_bytes(damaged)
    with pytest.raises(ck.CheckpointError) as err:
        ck.load_checkpoint(path)
    message = str(err.value)
    assert str(path) in message and "corrupt or truncated" in message
    assert str(ck.previous_path(path)) in message


def test_foreign_file_is_not_a_skelfast_checkpoint(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(ck.CheckpointError, match="not a skelfast checkpoint"):
        ck.load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        ck.load_checkpoint(tmp_path / "nothing.pt")


@pytest.mark.parametrize("name", available())
def test_config_toml_round_trips_every_shipped_config(tmp_path, name):
    config = load_config(name)
    path = ck.save_config(config, tmp_path / "config.toml")
    assert load_config(path) == config


def test_config_toml_escapes_strings_and_keys():
    config = {
        "method": 'he said "hi"\n\\',
        "odd key": 1,
        "t": {"inf": float("inf"), "small": 1e-5, "flag": False, "nested": [[1, 2], [3]], "u": {}},
    }
    assert tomllib.loads(ck.to_toml(config)) == config
    with pytest.raises(ValueError, match="t.none"):
        ck.to_toml({"t": {"none": None}})


def test_rng_state_restores_every_generator_after_a_weights_only_round_trip(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.standard_normal()  # leaves a cached gaussian in numpy's state
    path = tmp_path / "rng.pt"
    torch.save(ck.rng_state(), path)
    expected = (torch.rand(5), np.random.standard_normal(5), random.random())
    ck.set_rng_state(torch.load(path, weights_only=True))
    again = (torch.rand(5), np.random.standard_normal(5), random.random())
    torch.testing.assert_close(again[0], expected[0], rtol=0, atol=0)
    np.testing.assert_array_equal(again[1], expected[1])
    assert again[2] == expected[2]
