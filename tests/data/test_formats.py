"""PKU-MMD and pyskl round trips; the official pickled label files read without executing code."""

import os
import pickle

import numpy as np
import pytest

from skelfast.data import pku_mmd, pyskl, storage
from skelfast.data.safe_pickle import UnsafePickleError, safe_load


def test_pku_round_trip_and_convert(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "skeleton").mkdir()
    (tmp_path / "label").mkdir()
    videos = {"0002-L": 40, "0003-M": 30}
    raw = {}
    for vid, f in videos.items():
        x = rng.normal(size=(3, f, 25, 2)).astype(np.float32).round(3)
        x[..., 1] = 0  # no second body
        raw[vid] = x
        pku_mmd.write_skeleton(tmp_path / "skeleton" / f"{vid}.txt", x)
        np.testing.assert_allclose(pku_mmd.read_skeleton(tmp_path / "skeleton" / f"{vid}.txt"), x, atol=1e-6)
    acts = [pku_mmd.PkuAction(4, 2, 12, 1), pku_mmd.PkuAction(50, 20, 35, 2)]
    pku_mmd.write_labels(tmp_path / "label" / "0002-L.txt", acts)
    pku_mmd.write_labels(tmp_path / "label" / "0003-M.txt", [pku_mmd.PkuAction(0, 0, 30, 1)])
    assert pku_mmd.read_labels(tmp_path / "label" / "0002-L.txt") == acts
    (tmp_path / "cross_view.txt").write_text(
        "Training videos:\n0002-L, 0005-L\nValidataion videos:\n0003-M\n"
    )
    sizes = pku_mmd.convert_pku(tmp_path / "skeleton", tmp_path / "label", tmp_path / "cross_view.txt",
                                tmp_path / "out", normalization="none")  # fmt: skip
    assert sizes == {"train": 2, "val": 1}
    data = np.load(storage.data_path(tmp_path / "out", "train"))
    names, labels = storage.load_labels(storage.label_path(tmp_path / "out", "train"))
    assert names == ["0002-L_2_12", "0002-L_20_35"] and labels.tolist() == [4, 50]
    np.testing.assert_array_equal(np.load(storage.num_frame_path(tmp_path / "out", "train")), [10, 15])
    np.testing.assert_allclose(data[1, :, :15], raw["0002-L"][:, 20:35])  # frames [start, end)
    assert not data[1, :, 15:].any()


def test_pku_errors_name_file_and_line(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_text(" ".join(["0"] * 150) + "\n" + " ".join(["0"] * 149) + "\n")
    with pytest.raises(pku_mmd.PkuFormatError, match=r"bad.txt:2: expected 150 values"):
        pku_mmd.read_skeleton(p)
    p.write_text("3,10,x,1\n")
    with pytest.raises(pku_mmd.PkuFormatError, match=r"bad.txt:1:"):
        pku_mmd.read_labels(p)


def test_pyskl_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    data = np.zeros((3, 3, 20, 25, 2), dtype=np.float32)
    num_frame = np.array([20, 7, 12])
    for i, f in enumerate(num_frame):
        data[i, :, :f, :, 0] = rng.normal(size=(3, f, 25))
    data[2, :, :12, :, 1] = rng.normal(size=(3, 12, 25))
    anno = pyskl.arrays_to_pyskl(data, num_frame, [0, 5, 9], ["a", "b", "c"], {"xsub_train": ["a", "c"]})
    assert anno["annotations"][1]["keypoint"].shape == (1, 7, 25, 3)
    assert anno["annotations"][2]["keypoint"].shape == (2, 12, 25, 3)
    pyskl.save_pyskl(tmp_path / "a.pkl", anno)
    back = pyskl.load_pyskl(tmp_path / "a.pkl")
    d2, nf2, lab2, names2 = pyskl.pyskl_to_arrays(back, max_frames=20)
    np.testing.assert_array_equal(d2, data)
    assert nf2.tolist() == [20, 7, 12] and lab2.tolist() == [0, 5, 9] and names2 == ["a", "b", "c"]
    d3, _, lab3, _ = pyskl.pyskl_to_arrays(back, split="xsub_train", max_frames=20)
    assert lab3.tolist() == [0, 9] and d3.shape[0] == 2


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_official_label_pickle_read_safely_and_code_refused(tmp_path):
    p = tmp_path / "train_label.pkl"
    with open(p, "wb") as f:
        pickle.dump((["S001C001P001R001A001.skeleton"], [0]), f)
    names, labels = storage.load_labels(p)
    assert names == ["S001C001P001R001A001.skeleton"] and labels.tolist() == [0]
    arr = tmp_path / "arr.pkl"
    arr.write_bytes(pickle.dumps({"k": np.arange(3, dtype=np.int64)}, protocol=2))
    np.testing.assert_array_equal(safe_load(arr)["k"], [0, 1, 2])
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(UnsafePickleError, match=r"evil.pkl: refusing to load global (posix|os)\.system"):
        storage.load_labels(evil)
