"""PKU-MMD and pyskl round trips; the official pickled label files read without executing code."""

import json
import os
import pickle

import numpy as np
import pytest

from skelfast.data import cli, pku_mmd, pyskl, storage
from skelfast.data.safe_pickle import UnsafePickleError, safe_load


def _pku_fixture(tmp_path):
    """Two videos: 0002-L (train) with class ids 5 and 51, 0003-M (val) with class id 1."""
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
    return raw


def test_pku_round_trip_and_convert(tmp_path):
    raw = _pku_fixture(tmp_path)
    res = pku_mmd.convert_pku(tmp_path / "skeleton", tmp_path / "label", tmp_path / "cross_view.txt",
                              tmp_path / "out", normalization="none")  # fmt: skip
    assert res.sizes == {"train": 2, "val": 1} and res.class_ids is None
    data = np.load(storage.data_path(tmp_path / "out", "train"))
    names, labels = storage.load_labels(storage.label_path(tmp_path / "out", "train"))
    assert names == ["0002-L_2_12", "0002-L_20_35"] and labels.tolist() == [4, 50]
    np.testing.assert_array_equal(np.load(storage.num_frame_path(tmp_path / "out", "train")), [10, 15])
    np.testing.assert_allclose(data[1, :, :15], raw["0002-L"][:, 20:35])  # frames [start, end)
    assert not data[1, :, 15:].any()


def test_pku_inclusive_window_reads_one_based_start_to_end(tmp_path):
    # AimCLR-lineage tools slice frames[start - 1 : end]: 1-based and inclusive, one frame more than CMD's
    raw = _pku_fixture(tmp_path)
    pku_mmd.write_labels(tmp_path / "label" / "0003-M.txt", [pku_mmd.PkuAction(0, 1, 30, 1)])
    argv = ["data", "pku", *(str(tmp_path / p) for p in ("skeleton", "label", "cross_view.txt", "out")),
            "--normalization", "none", "--window", "inclusive"]  # fmt: skip
    assert cli.main(argv) == 0
    train = np.load(storage.data_path(tmp_path / "out", "train"))
    val = np.load(storage.data_path(tmp_path / "out", "val"))
    np.testing.assert_array_equal(np.load(storage.num_frame_path(tmp_path / "out", "train")), [11, 16])
    np.testing.assert_allclose(train[1, :, :16], raw["0002-L"][:, 19:35])  # class 51, frames 20..35
    np.testing.assert_allclose(val[0, :, :30], raw["0003-M"])  # frames 1..30 = the whole video
    half_open = pku_mmd.clips(tmp_path / "skeleton", tmp_path / "label")
    assert half_open[1].tolist() == [10, 15, 29]  # [start, end): 12-2, 35-20, 30-1
    # frame 0 does not exist in 1-based numbering
    pku_mmd.write_labels(tmp_path / "label" / "0003-M.txt", [pku_mmd.PkuAction(0, 0, 30, 1)])
    with pytest.raises(
        pku_mmd.PkuFormatError, match=r"0003-M.txt action 1: start frame 0 with window='inclusive'"
    ):
        pku_mmd.clips(tmp_path / "skeleton", tmp_path / "label", window="inclusive")
    with pytest.raises(ValueError, match="unknown window 'closed'"):
        pku_mmd.clips(tmp_path / "skeleton", tmp_path / "label", window="closed")


def test_pku_compact_classes_renumber_the_ids_that_occur_and_save_the_map(tmp_path):
    _pku_fixture(tmp_path)
    args = (tmp_path / "skeleton", tmp_path / "label", tmp_path / "cross_view.txt")
    res = pku_mmd.convert_pku(*args, tmp_path / "out", normalization="none", classes="compact")
    # ids 1 (val), 5 and 51 (train) occur -> labels 0, 1, 2 in increasing id order, over both parts
    assert res.class_ids == [1, 5, 51]
    assert storage.load_labels(storage.label_path(tmp_path / "out", "train"))[1].tolist() == [1, 2]
    assert storage.load_labels(storage.label_path(tmp_path / "out", "val"))[1].tolist() == [0]
    assert pku_mmd.load_class_map(tmp_path / "out" / "class_map.json") == [1, 5, 51]
    # a saved map is reused as given (here with an extra id 3 that does not occur)
    pku_mmd.save_class_map(tmp_path / "map.json", [1, 3, 5, 51])
    pku_mmd.convert_pku(*args, tmp_path / "out2", normalization="none", classes="compact",
                        class_map=tmp_path / "map.json")  # fmt: skip
    assert storage.load_labels(storage.label_path(tmp_path / "out2", "train"))[1].tolist() == [2, 3]
    pku_mmd.save_class_map(tmp_path / "short.json", [1, 5])
    with pytest.raises(
        ValueError, match=r"class id\(s\) \[51\] occur in the labels but not in the class map"
    ):
        pku_mmd.convert_pku(*args, tmp_path / "out3", classes="compact", class_map=tmp_path / "short.json")
    # converting the same folder with raw labels removes the now wrong map
    pku_mmd.convert_pku(*args, tmp_path / "out", normalization="none")
    assert not (tmp_path / "out" / "class_map.json").exists()
    assert storage.load_labels(storage.label_path(tmp_path / "out", "train"))[1].tolist() == [4, 50]
    with pytest.raises(ValueError, match="unknown classes mode 'pku2'"):
        pku_mmd.convert_pku(*args, tmp_path / "out", classes="pku2")


def test_pku_part2_like_ids_compact_to_41_classes():
    # Part II uses 41 of the 51 ids: compaction gives 0..40, keeping the order of the ids
    absent = {3, 9, 14, 20, 25, 33, 37, 42, 46, 50}  # an arbitrary 10 of 51 (the real ones are unconfirmed)
    ids = [c for c in range(1, 52) if c not in absent]
    raw = np.array([c - 1 for c in ids[::-1] + ids], dtype=np.int64)
    compact, class_ids = pku_mmd.compact_class_ids(raw)
    assert class_ids == ids and len(class_ids) == 41
    assert compact.tolist() == list(range(40, -1, -1)) + list(range(41))
    np.testing.assert_array_equal(np.asarray(class_ids)[compact] - 1, raw)  # the map inverts the renumbering


def test_cli_pku_compact(tmp_path, capsys):
    _pku_fixture(tmp_path)
    folders = [str(tmp_path / p) for p in ("skeleton", "label", "cross_view.txt", "out")]
    argv = ["data", "pku", *folders, "--normalization", "none", "--classes", "compact"]
    assert cli.main(argv) == 0
    assert "3 classes, labels 0..2 = PKU-MMD ids [1, 5, 51]" in capsys.readouterr().out
    doc = json.loads((tmp_path / "out" / "class_map.json").read_text())
    assert doc["format"] == "skelfast-class-map-1" and doc["class_ids"] == [1, 5, 51]


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
