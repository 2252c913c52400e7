"""MemoryQueue: ring-buffer wrap-around, HiCo's pointer quirk, checkpoints, gathered enqueue."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from skelfast.queue import MemoryQueue


def test_wraps_around_and_keeps_the_latest_keys():
    mq = MemoryQueue([5], dim=3)
    keys = torch.arange(7 * 3, dtype=torch.float32).view(7, 3)
    mq.enqueue(keys[:3])
    mq.enqueue(keys[3:7])  # 3 + 4 = 7 > 5: rows 3, 4 then wrap to rows 0, 1
    torch.testing.assert_close(mq.level(0), torch.stack([keys[5], keys[6], keys[2], keys[3], keys[4]]))
    assert int(mq.ptr[0]) == 2


def test_more_keys_than_slots_keeps_the_last():
    mq = MemoryQueue([4], dim=2)
    keys = torch.arange(18, dtype=torch.float32).view(9, 2)
    mq.enqueue(keys)
    assert int(mq.ptr[0]) == 1  # 9 writes into 4 slots from 0
    # the ring holds keys 5..8; key 8 was written last, at slot 0
    torch.testing.assert_close(mq.level(0), torch.stack([keys[8], keys[5], keys[6], keys[7]]))


def test_levels_are_separate_rows_of_one_bank():
    mq = MemoryQueue([4, 2], dim=2)
    before = mq.level(0).clone()
    mq.enqueue(torch.ones(2, 2), level=1)
    torch.testing.assert_close(mq.level(0), before)
    torch.testing.assert_close(mq.bank[4:], torch.ones(2, 2))
    assert mq.ranges == [(0, 4), (4, 2)]


def test_initial_keys_are_unit_rows():
    mq = MemoryQueue([16, 8], dim=4, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(mq.bank.norm(dim=1), torch.ones(24))


def test_hico_pointer_quirk_only_refreshes_the_first_k_rows():
    # spec hico_hiclr.md §1.6: N=64, G=4, K=2048, 8192 rows, pointer modulo 2048: 0, 256, ..., 1792, 0
    mq = MemoryQueue([8192], dim=2, wrap_at=[2048])
    untouched = mq.bank[2048:].clone()
    seen = []
    for _ in range(9):
        seen.append(int(mq.ptr[0]))
        mq.enqueue(torch.zeros(256, 2))
    assert seen == [0, 256, 512, 768, 1024, 1280, 1536, 1792, 0]
    torch.testing.assert_close(mq.bank[2048:], untouched)
    assert bool((mq.bank[:2048] == 0).all())


def test_corrected_hico_queue_cycles_all_rows():
    mq = MemoryQueue([8192], dim=2)
    for _ in range(32):
        mq.enqueue(torch.zeros(256, 2))
    assert bool((mq.bank == 0).all()) and int(mq.ptr[0]) == 0


def test_state_dict_round_trip():
    a = MemoryQueue([6, 3], dim=2)
    a.enqueue(torch.randn(4, 2), level=0)
    b = MemoryQueue([6, 3], dim=2)
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b.bank, a.bank)
    assert b.ptr.tolist() == [4, 0]


def test_bad_input():
    with pytest.raises(ValueError, match="wrap_at"):
        MemoryQueue([4], dim=2, wrap_at=[8])
    with pytest.raises(ValueError, match="keys must be"):
        MemoryQueue([4], dim=2).enqueue(torch.zeros(2, 3))


def _gathered_enqueue_worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    mq = MemoryQueue([8], dim=2, generator=torch.Generator().manual_seed(0))
    mq.enqueue(torch.full((3, 2), float(rank + 1)))
    torch.save({"bank": mq.bank, "ptr": mq.ptr}, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow  # two processes that import torch: about 10-20 s on the CI machine
def test_enqueue_gathers_keys_of_all_ranks(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_gathered_enqueue_worker, args=(port, str(tmp_path)), nprocs=2)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    torch.testing.assert_close(r0["bank"], r1["bank"])  # every rank holds the same queue
    expected = torch.cat([torch.full((3, 2), 1.0), torch.full((3, 2), 2.0)])  # rank order
    torch.testing.assert_close(r0["bank"][:6], expected)
    assert r0["ptr"].tolist() == [6]
