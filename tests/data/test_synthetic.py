"""The synthetic default dataset: layout, determinism, and separable-but-not-trivial classes."""

import numpy as np
import pytest

from skelfast.data import storage, synthetic


@pytest.fixture(scope="module")
def small():
    return synthetic.generate(num_samples=600, num_classes=20, seed=3)


def test_layout_and_zero_padding(small):
    d = small
    assert d.data.shape == (600, 3, 300, 25, 2) and d.data.dtype == np.float32
    assert d.num_frame.min() >= 32 and d.num_frame.max() <= 300
    assert np.bincount(d.labels, minlength=20).tolist() == [30] * 20
    for i in range(0, 600, 37):
        assert not d.data[i, :, d.num_frame[i] :].any()
        assert np.abs(d.data[i, :, : d.num_frame[i], 1, 0]).sum(0).all()  # spine_mid never missing
    spec = synthetic.make_spec(20)
    inter = np.array([p is not None for p in spec.partner])
    assert inter.sum() == round(20 * 11 / 60)
    assert all(d.data[i, ..., 1].any() == inter[d.labels[i]] for i in range(600))
    assert (d.data == 0).all(axis=1).any()  # some missing joints (all three coordinates zero)


def test_deterministic_in_seed():
    a = synthetic.generate(num_samples=64, num_classes=10, seed=7)
    b = synthetic.generate(num_samples=64, num_classes=10, seed=7)
    c = synthetic.generate(num_samples=64, num_classes=10, seed=8)
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.data, c.data)
    assert synthetic.make_spec(10, class_seed=0) == synthetic.make_spec(10, class_seed=0)
    assert synthetic.make_spec(10, class_seed=0) != synthetic.make_spec(10, class_seed=1)


def _nearest_centroid(f, y, train):
    mu, sd = f[train].mean(0), f[train].std(0) + 1e-6
    f = (f - mu) / sd
    cent = np.stack([f[train & (y == c)].mean(0) for c in range(y.max() + 1)])
    pred = ((f[~train][:, None] - cent[None]) ** 2).sum(-1).argmin(1)
    return (pred == y[~train]).mean()


def _knn1(f, y, train):
    a, b = f[train].astype(np.float64), f[~train].astype(np.float64)
    dist = (b**2).sum(1)[:, None] + (a**2).sum(1)[None] - 2 * b @ a.T
    return (y[train][dist.argmin(1)] == y[~train]).mean()


def test_classes_separable_by_oracle_not_by_raw_coordinates(small):
    d = small
    train = np.isin(d.subjects, synthetic.XSUB_TRAIN_SUBJECTS)
    oracle = _nearest_centroid(synthetic.joint_angle_features(d.data, d.num_frame), d.labels, train)
    raw = _knn1(d.data[:, :, :64].reshape(len(d.data), -1), d.labels, train)
    # measured: oracle 0.8-0.9, raw 1-NN 0.1-0.2 at 20 classes (chance 0.05)
    assert oracle > 0.7, oracle
    assert raw < 0.3, raw
    assert oracle > raw + 0.45


def test_write_synthetic_same_files_as_ntu(tmp_path):
    synth = synthetic.write_synthetic(tmp_path, num_samples=48, num_classes=6, seed=0)
    total = 0
    for part in storage.PARTS:
        data = np.load(storage.data_path(tmp_path / "xsub", part), mmap_mode="r")
        names, labels = storage.load_labels(storage.label_path(tmp_path / "xsub", part))
        nf = np.load(storage.num_frame_path(tmp_path / "xsub", part))
        assert data.shape[1:] == (3, 300, 25, 2) and len(names) == len(labels) == len(nf) == data.shape[0]
        total += data.shape[0]
    assert total == 48
    idx = synthetic.split_indices(synth.subjects, synth.cameras, "xview", "train")
    assert set(synth.cameras[idx]) <= {2, 3}


def test_distortion_is_one_linear_map_per_recording_and_changes_nothing_else():
    kw = dict(num_samples=24, num_classes=6, seed=5, max_frames=40, min_frames=32, noise_std=0.0)
    clean = synthetic.generate(**kw)
    bent = synthetic.generate(**kw, distortion=0.4)
    np.testing.assert_array_equal(clean.data, synthetic.generate(**kw, posture_std=0.06, distortion=0.0).data)
    np.testing.assert_array_equal(clean.num_frame, bent.num_frame)
    np.testing.assert_array_equal(clean.labels, bent.labels)
    np.testing.assert_array_equal(clean.data == 0, bent.data == 0)  # same dropouts and padding
    for i in range(len(clean.labels)):
        present = clean.data[i].any(axis=0)  # (T, V, M) joints that are there
        a = clean.data[i].transpose(1, 2, 3, 0)[present].astype(np.float64)  # (P, 3) camera space
        b = bent.data[i].transpose(1, 2, 3, 0)[present].astype(np.float64)
        # camera = rotation R and shift t after the distortion D: b - t = R D R^T (a - t), one affine map
        design = np.concatenate([a, np.ones((len(a), 1))], 1)
        fit, *_ = np.linalg.lstsq(design, b, rcond=None)
        np.testing.assert_allclose(design @ fit, b, atol=1e-4)  # float32 data, metres
        linear = fit[:3].T  # R D R^T: unit diagonal in the body frame, so trace 3, but not the identity
        assert abs(np.trace(linear) - 3) < 1e-3
        # D - I has off-diagonal entries in [-0.4, 0.4]: its norm, so any entry of R (D - I) R^T, is
        # at most 2 x 0.4 (Gershgorin)
        assert 0.01 < np.abs(linear - np.eye(3)).max() <= 0.8 + 1e-3
