"""Datasets over memory-mapped arrays, deterministic loaders, and the `data` CLI."""

import numpy as np
import torch

from skelfast.data import cli, datasets, storage


def _split(tmp_path, n=10, t=8):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(n, 3, t, 25, 2)).astype(np.float32)
    storage.save_split(
        tmp_path, "train", data, np.arange(n) % t + 1, np.arange(n) % 3, [f"s{i}" for i in range(n)]
    )
    return data


def test_dataset_is_memory_mapped_and_returns_samples(tmp_path):
    data = _split(tmp_path)
    ds = datasets.SkeletonDataset.from_split(tmp_path, "train")
    assert isinstance(ds.data, np.memmap) and len(ds) == 10 and ds.num_classes == 3
    x, length, label, idx = ds[4]
    torch.testing.assert_close(x, torch.from_numpy(data[4]))
    assert (int(length), int(label), int(idx)) == (5, 1, 4)


def test_loader_is_deterministic_per_epoch_and_applies_batch_augment(tmp_path):
    _split(tmp_path)
    ds = datasets.SkeletonDataset.from_split(tmp_path, "train")
    calls = []

    def augment(x, lengths, gen):
        calls.append(lengths.clone())
        return x + torch.rand(x.shape, generator=gen, device=x.device)

    def epoch(loader, e):
        loader.set_epoch(e)
        return [(x.clone(), idx.clone()) for x, _, _, idx in loader]

    a = datasets.SkeletonLoader(ds, batch_size=4, seed=1, augment=augment)
    b = datasets.SkeletonLoader(ds, batch_size=4, seed=1, augment=augment)
    e0a, e0b, e1 = epoch(a, 0), epoch(b, 0), epoch(a, 1)
    assert len(e0a) == 3 and len(calls) == 9
    for (xa, ia), (xb, ib) in zip(e0a, e0b, strict=True):
        torch.testing.assert_close(xa, xb)
        torch.testing.assert_close(ia, ib)
    assert not all(torch.equal(ia, i1) for (_, ia), (_, i1) in zip(e0a, e1, strict=True))
    assert sorted(torch.cat([i for _, i in e0a]).tolist()) == list(range(10))
    x0, i0 = e0a[0]
    assert not torch.equal(x0, torch.stack([ds[int(i)][0] for i in i0]))  # the augmentation ran


def test_cli_synthetic_then_dataset(tmp_path, capsys):
    assert cli.main(["data", "synthetic", str(tmp_path), "--samples", "40", "--classes", "5"]) == 0
    assert "wrote 40" in capsys.readouterr().out
    tr = datasets.SkeletonDataset.from_split(tmp_path / "xsub", "train")
    va = datasets.SkeletonDataset.from_split(tmp_path / "xview", "val")
    assert tr[0][0].shape == (3, 300, 25, 2) and len(va) > 0


def test_cli_synthetic_passes_the_harder_variants_to_the_generator(tmp_path):
    from skelfast.data import synthetic

    argv = [
        "data",
        "synthetic",
        str(tmp_path),
        "--samples",
        "24",
        "--classes",
        "3",
        "--normalization",
        "none",
    ]
    assert cli.main([*argv, "--distortion", "0.5", "--posture-std", "0.2"]) == 0
    want = synthetic.generate(24, 3, 0, posture_std=0.2, distortion=0.5)
    idx = synthetic.split_indices(want.subjects, want.cameras, "xsub", "train")
    got = np.load(tmp_path / "xsub" / "train_data_joint.npy")
    np.testing.assert_array_equal(got, want.data[idx])


def test_loader_with_a_method_recipe_runs_the_fused_augmentation(tmp_path):
    """SkeletonLoader + RecipeAugment(HiCo) gives exactly ops.augment with the batch's seeded draws."""
    from skelfast.augment import HiCo, RecipeAugment
    from skelfast.ops import augment

    _split(tmp_path)
    ds = datasets.SkeletonDataset.from_split(tmp_path, "train")
    loader = datasets.SkeletonLoader(ds, batch_size=4, seed=1, augment=RecipeAugment(HiCo()))
    loader.set_epoch(2)
    for b, (x, lengths, _, idx) in enumerate(loader):
        assert x.shape == (len(idx), 3, 64, 25, 2)
        raw = torch.stack([ds[int(i)][0] for i in idx])
        gen = torch.Generator().manual_seed(datasets._seed_of(1, 2, b, 0xA06))
        expected = augment(raw, lengths, HiCo().sample(lengths, 25, gen))
        assert torch.equal(x, expected)
