"""MemoryQueue: ring-buffer wrap-around, HiCo's pointer quirk, checkpoints, gathered enqueue."""

import os
import random
import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch.utils._python_dispatch import TorchDispatchMode

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


def _enqueue_reading_the_buffer(mq: MemoryQueue, keys: torch.Tensor, level: int) -> None:
    """The enqueue before the host-side pointer mirror: it read the pointer back from the buffer."""
    queue = mq.level(level)
    size, wrap = mq.sizes[level], mq.wrap_at[level]
    if keys.shape[0] > size:
        skipped = keys.shape[0] - size
        keys = keys[skipped:]
        mq.ptr[level] = (mq.ptr[level] + skipped) % wrap
    n = keys.shape[0]
    ptr = int(mq.ptr[level])
    first = min(n, size - ptr)
    queue[ptr : ptr + first] = keys[:first]
    queue[: n - first] = keys[first:]
    mq.ptr[level] = (ptr + n) % wrap


def test_host_pointer_mirror_writes_where_the_buffer_pointer_did():
    # wrap-around, HiCo's wrap_at quirk and more keys than slots, on three levels in random order
    rng = random.Random(0)
    sizes, wrap_at = [7, 12, 3], [None, 5, None]
    mirrored = MemoryQueue(sizes, dim=2, wrap_at=wrap_at, generator=torch.Generator().manual_seed(0))
    old = MemoryQueue(sizes, dim=2, wrap_at=wrap_at, generator=torch.Generator().manual_seed(0))
    for step in range(40):
        level, n = rng.randrange(3), rng.randrange(1, 15)
        keys = torch.full((n, 2), float(step)) + torch.arange(n, dtype=torch.float32)[:, None] / 100
        mirrored.enqueue(keys, level)
        with torch.no_grad():
            _enqueue_reading_the_buffer(old, keys, level)
        assert torch.equal(mirrored.bank, old.bank) and torch.equal(mirrored.ptr, old.ptr), step
        assert mirrored.pointers() == old.ptr.tolist()


def test_pointer_mirror_survives_a_state_dict_round_trip():
    a = MemoryQueue([6, 3], dim=2)
    a.enqueue(torch.randn(4, 2), level=0)
    a.enqueue(torch.randn(2, 2), level=1)
    b = MemoryQueue([6, 3], dim=2)
    b.load_state_dict(a.state_dict())
    assert b.pointers() == [4, 2]
    keys = torch.randn(3, 2)
    a.enqueue(keys, level=0)
    b.enqueue(keys, level=0)  # rows 4, 5 then row 0, as the saved pointer says
    assert torch.equal(b.bank, a.bank) and b.pointers() == a.pointers() == [1, 2]
    assert torch.equal(b.ptr, torch.tensor([1, 2]))


def test_a_direct_write_to_the_pointer_buffer_is_honoured():
    # loaders (e.g. ISC's official checkpoints) may set queue.ptr in place
    mq = MemoryQueue([5], dim=1)
    mq.enqueue(torch.zeros(1, 1))
    mq.ptr[0] = 3
    mq.enqueue(torch.ones(1, 1))
    assert float(mq.bank[3, 0]) == 1.0 and mq.pointers() == [4]


class _CountScalarReads(TorchDispatchMode):
    """Counts reads of a tensor's value into Python (int(), .item(), bool(): a host sync on a GPU)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        self.reads += func is torch.ops.aten._local_scalar_dense.default
        return func(*args, **(kwargs or {}))


def test_enqueue_never_reads_the_pointer_back():
    mq = MemoryQueue([8, 4], dim=2)
    mq.enqueue(torch.zeros(3, 2), level=1)  # the mirror is in sync from construction on
    with _CountScalarReads() as mode:
        for n in (3, 6, 9):
            mq.enqueue(torch.zeros(n, 2), level=0)
            mq.enqueue(torch.zeros(n, 2), level=1)
    assert mode.reads == 0
    assert mq.pointers() == [2, 1]  # (3 + 6 + 9) % 8 and (3 + 3 + 6 + 9) % 4


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
