"""A real method under torch.distributed: two gloo processes fill the queue exactly as one process
with the combined batch (issue #6).

CRRL's contrast stage is the method whose keys depend on each sample alone once dropout is off:
no augmentation draws (its views are the clip and its velocity) and no BatchNorm, so splitting the
batch over ranks changes nothing but the floating-point summation order of the gradients.
"""

from __future__ import annotations

import os
import socket
from functools import partial
from pathlib import Path

import torch
import torch.multiprocessing as mp

from skelfast.engine import checkpoint as ck
from skelfast.engine.pretrain import pretrain
from skelfast.methods.crrl import CRRL, CRRLConfig
from tests.engine import write_split

STEPS = 2
DETERMINISTIC_CRRL = partial(CRRL, CRRLConfig(hidden_size=4, num_layers=2, dropout=0.0, queue_size=24))
CONFIG = {
    "method": "crrl",
    "model": {"hidden_size": 4, "num_layers": 2, "dropout": 0.0, "queue_size": 24},
    "data": {},
    "train": {"epochs": 1, "batch_size": 8, "drop_last": True, "lr": 0.05, "momentum": 0.9, "seed": 5},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, data: Path, out: Path) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    pretrain(CONFIG, data, out, method=DETERMINISTIC_CRRL, device="cpu", max_steps=STEPS, progress=False)


def test_two_gloo_processes_fill_crrls_queue_like_one_process(tmp_path):
    data = write_split(tmp_path / "data", n=16)
    one = pretrain(
        CONFIG,
        data,
        tmp_path / "one",
        method=DETERMINISTIC_CRRL,
        device="cpu",
        max_steps=STEPS,
        progress=False,
    )
    mp.start_processes(
        _rank_main, args=(2, _free_port(), data, tmp_path / "two"), nprocs=2, start_method="spawn"
    )
    single = ck.load_checkpoint(one / ck.LAST)["method"]
    pair = ck.load_checkpoint(tmp_path / "two" / ck.LAST)["method"]
    queue = [k for k in single if k.endswith("bank")]
    assert queue, "CRRL's state holds its queue bank"
    for key in queue:
        pointer = key.removesuffix("bank") + "ptr"
        assert torch.equal(pair[pointer], single[pointer])
        assert int(single[pointer].sum()) == 16  # two steps of 8 keys entered the 24-row ring
        # both steps' keys, in the single process's order; gradients summed over two ranks instead of
        # one batch agree to float32 rounding (~1e-7), so the keys of step 2 do too
        torch.testing.assert_close(pair[key], single[key], rtol=1e-5, atol=1e-6)
