"""DDP on the CPU: two gloo processes train like one process with the combined batch."""

from __future__ import annotations

import os
import socket
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from skelfast.data.datasets import SkeletonDataset
from skelfast.engine import checkpoint as ck
from skelfast.engine.distributed import DistInfo, ShardedLoader, init_distributed
from skelfast.engine.metrics import read_metrics
from skelfast.engine.pretrain import pretrain
from tests.engine import ToyConfig, ToyMethod, toy_config, write_split

# no view noise and no dropout: every sample's features then depend on that sample alone, so how the
# batch is split over processes can change nothing but the floating-point summation order
DETERMINISTIC_TOY = partial(ToyMethod, ToyConfig(noise=0.0, dropout=0.0))
STEPS = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, data: Path, out: Path, config: dict) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    pretrain(
        config, data, out, method=DETERMINISTIC_TOY, device="cpu", max_steps=STEPS, progress=False, log=print
    )


def test_ranks_read_the_halves_of_each_single_process_batch(tmp_path):
    dataset = SkeletonDataset.from_split(write_split(tmp_path, n=17))
    single = ShardedLoader(dataset, batch_size=8, seed=1, drop_last=True)
    halves = [
        ShardedLoader(dataset, batch_size=8, seed=1, rank=r, world_size=2, drop_last=True) for r in range(2)
    ]
    for loader in (single, *halves):
        loader.set_epoch(2)
    rank_batches = [[idx.tolist() for *_, idx in loader] for loader in halves]
    assert [a + b for a, b in zip(*rank_batches, strict=True)] == [idx.tolist() for *_, idx in single]
    with pytest.raises(ValueError, match="not divisible by 2 ranks"):
        ShardedLoader(dataset, batch_size=7, rank=0, world_size=2)
    with pytest.raises(ValueError, match="last batch of 1 samples"):
        ShardedLoader(dataset, batch_size=8, rank=0, world_size=2, drop_last=False)


def test_init_distributed_reads_torchrun_variables(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert init_distributed("cpu") == DistInfo()
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="MASTER_ADDR.*torchrun"):
        init_distributed("cpu")


def test_two_gloo_processes_equal_one_process_with_the_combined_batch(tmp_path):
    data = write_split(tmp_path / "data", n=16)
    config = toy_config(epochs=1, batch_size=8)  # the global batch: 4 samples per rank
    one = pretrain(
        config,
        data,
        tmp_path / "one",
        method=DETERMINISTIC_TOY,
        device="cpu",
        max_steps=STEPS,
        progress=False,
    )
    mp.start_processes(
        _rank_main, args=(2, _free_port(), data, tmp_path / "two", config), nprocs=2, start_method="spawn"
    )
    single, pair = ck.load_checkpoint(one / ck.LAST), ck.load_checkpoint(tmp_path / "two" / ck.LAST)
    assert pair["step"] == single["step"] == STEPS and pair["world_size"] == 2 and len(pair["rng"]) == 2
    # the queue after two steps holds the keys of both steps in the single process's order (step 2's
    # keys come from weights that step 1's all-reduced gradients updated); DDP sums the two halves'
    # gradients where one process sums 8 rows at once, so values agree to float32 rounding (~1e-7),
    # not bit for bit
    assert torch.equal(pair["method"]["queue.ptr"], single["method"]["queue.ptr"])
    for key, value in single["method"].items():
        torch.testing.assert_close(pair["method"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    # the first rows of the queue are the enqueued keys, not the random initial rows
    assert not torch.allclose(pair["method"]["queue.bank"][:8], ToyMethod().queue.bank[:8])
    assert [r["step"] for r in read_metrics(tmp_path / "two" / "metrics.csv")] == [
        "1",
        "2",
    ]  # rank 0 alone wrote
    assert [float(r["loss"]) for r in read_metrics(tmp_path / "two" / "metrics.csv")] == pytest.approx(
        [float(r["loss"]) for r in read_metrics(one / "metrics.csv")], rel=1e-5
    )  # the logged loss is the ranks' mean: the combined batch's loss
