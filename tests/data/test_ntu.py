"""NTU raw parser, converter and split rules on small files generated in the exact format."""

import json

import numpy as np
import pytest

from skelfast.data import ntu_convert, ntu_raw, storage


def _body(seed, frames, scale=1.0):
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 0.3 * scale, size=(frames, 25, 3)) + [0.1, 0.2, 3.0]).round(4)


def _write(path, xyz):
    path.write_text(ntu_raw.format_skeleton(xyz))
    return path


def test_parse_bodies_0_to_4_and_missing_joints(tmp_path):
    f = 5
    xyz = np.zeros((4, f, 25, 3))
    # frame 0: no body; frame 1: 1; frame 2: 2; frame 3: 3; frame 4: 4 bodies
    for t in range(f):
        for m in range(t):
            xyz[m, t] = _body(10 * t + m, 1)[0]
    xyz[0, 2, 7] = 0.0  # a missing joint stays zero
    got, count = ntu_raw.read_skeleton(_write(tmp_path / "S001C001P001R001A001.skeleton", xyz))
    np.testing.assert_array_equal(count, [0, 1, 2, 3, 4])
    np.testing.assert_allclose(got, xyz, atol=1e-6)
    # more than max_bodies: parsed and dropped
    got2, _ = ntu_raw.read_skeleton(tmp_path / "S001C001P001R001A001.skeleton", max_bodies=2)
    np.testing.assert_allclose(got2, xyz[:2], atol=1e-6)


@pytest.mark.parametrize("frames", [1, 37, 300])
def test_short_and_full_length_clips(tmp_path, frames):
    xyz = _body(frames, frames)[None]
    x, f = ntu_raw.read_sample(_write(tmp_path / "S001C001P001R001A001.skeleton", xyz))
    assert f == frames and x.shape == (3, 300, 25, 2)
    np.testing.assert_allclose(x[:, :frames, :, 0], xyz[0].transpose(2, 0, 1), atol=1e-6)
    assert not x[:, frames:].any() and not x[..., 1].any()


def test_crlf_and_trailing_blank_lines(tmp_path):
    xyz = _body(0, 3)[None]
    p = tmp_path / "S001C001P001R001A001.skeleton"
    p.write_bytes(ntu_raw.format_skeleton(xyz).replace("\n", "\r\n").encode() + b"\r\n\r\n")
    got, _ = ntu_raw.read_skeleton(p)
    np.testing.assert_allclose(got[0], xyz[0], atol=1e-6)


def _corrupt_cases():
    good = ntu_raw.format_skeleton(_body(1, 2)[None]).splitlines()
    # line numbers (1-based): 1 frames, 2 bodies, 3 body info, 4 joint count, 5..29 joints
    truncated = "\n".join(good[:20]) + "\n"
    nonnum = good.copy()
    nonnum[9] = "0.1 abc 3.0 " + " ".join(nonnum[9].split()[3:])
    joints = good.copy()
    joints[3] = "24"
    fields = good.copy()
    fields[6] = " ".join(fields[6].split()[:5])
    shifted = good.copy()  # 11 fields then 13: the file's field count is right, its lines are not
    shifted[6], shifted[7] = " ".join(good[6].split()[:11]), good[7] + " " + good[6].split()[11]
    dropped = ntu_raw.format_skeleton(np.stack([_body(m, 1) for m in range(5)])).splitlines()
    dropped[4 + 4 * 27] = "0.1 0.2 nan? " + " ".join(dropped[4 + 4 * 27].split()[3:])  # 5th body, joint 0
    return {
        "truncated": (truncated, 21, "file ends early"),
        "non-numeric": ("\n".join(nonnum) + "\n", 10, "non-numeric"),
        "wrong joint count": ("\n".join(joints) + "\n", 4, "24 joints, expected 25"),
        "short joint line": ("\n".join(fields) + "\n", 7, "expected 12 fields"),
        "bad frame count": ("two\n", 1, "frame count"),
        "extra data": ("\n".join(good) + "\n1\n", 58, "unexpected data"),
        "shifted field": ("\n".join(shifted) + "\n", 7, "expected 12 fields, got 11"),
        "non-numeric in a dropped body": ("\n".join(dropped) + "\n", 113, "frame 0, body 4: non-numeric"),
    }


@pytest.mark.parametrize("case", list(_corrupt_cases()))
def test_corrupt_files_name_file_and_line(tmp_path, case):
    text, line, msg = _corrupt_cases()[case]
    p = tmp_path / "S001C001P001R001A001.skeleton"
    p.write_text(text)
    with pytest.raises(ntu_raw.SkeletonFormatError, match=msg) as e:
        ntu_raw.read_skeleton(p)
    assert e.value.path == str(p) and e.value.line == line
    assert f"{p}:{line}:" in str(e.value)


@pytest.mark.parametrize("case", list(_corrupt_cases()))
def test_fast_parser_leaves_every_corrupt_file_to_the_careful_one(tmp_path, case):
    p = tmp_path / "S001C001P001R001A001.skeleton"
    p.write_text(_corrupt_cases()[case][0])
    assert ntu_raw._parse_tokens(p, 4, 25) is None


def _valid_texts():
    xyz = np.zeros((5, 6, 25, 3))
    for t in range(6):  # 0, 1, 2, 3, 4, 5 bodies (the 5th is parsed and dropped)
        for m in range(t):
            xyz[m, t] = _body(10 * t + m, 1)[0]
    xyz[1, 3, 4] = 0.0  # a missing joint
    text = ntu_raw.format_skeleton(xyz)
    lines = text.splitlines()
    spaced = "\n\n".join(" \t".join(line.split(" ")) for line in lines) + "\n\n\n"
    return {
        "plain": text.encode(),
        "crlf": text.replace("\n", "\r\n").encode(),
        "tabs and blank lines": spaced.encode(),
        "zero frames": b"0\n",
        "no bodies": b"2\n0\n0\n",
    }


@pytest.mark.parametrize("case", list(_valid_texts()))
def test_fast_parser_equals_the_careful_one(tmp_path, case):
    p = tmp_path / "S001C001P001R001A001.skeleton"
    p.write_bytes(_valid_texts()[case])
    for max_bodies in (4, 2):
        fast = ntu_raw._parse_tokens(p, max_bodies, 25)
        assert fast is not None, "the fast parser gave up on a valid file"
        careful = ntu_raw._parse_lines(p, max_bodies, 25)
        np.testing.assert_array_equal(fast[0], careful[0])
        np.testing.assert_array_equal(fast[1], careful[1])


def test_body_selection_by_energy():
    xyz = np.zeros((4, 6, 25, 3))
    xyz[0] = _body(0, 6, scale=0.1)  # calm
    xyz[2] = _body(2, 6, scale=2.0)  # most energetic
    xyz[3, :1] = [0.5, 0.5, 3.0]  # one frame, all joints at one point: energy 0, ties with empty slot 1
    sel = ntu_raw.select_bodies(xyz, 2, "energy")
    np.testing.assert_array_equal(sel[0], xyz[2])
    np.testing.assert_array_equal(sel[1], xyz[0])
    np.testing.assert_array_equal(ntu_raw.select_bodies(xyz, 2, "first"), xyz[:2])
    assert ntu_raw.body_energy(xyz[1]) == 0.0 and ntu_raw.body_energy(xyz[3]) == 0.0


def test_split_rules_match_the_subject_camera_setup_lists():
    name = ntu_raw.parse_name("S017C003P020R002A060.skeleton")
    assert (name.setup, name.camera, name.performer, name.replication, name.label) == (17, 3, 20, 2, 59)
    train_subjects = [
        p for p in range(1, 107) if ntu_convert.is_training(ntu_raw.NtuName(1, 1, p, 1, 1), "xsub")
    ]
    assert train_subjects[:20] == [1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38]
    assert len(train_subjects) == 53 and train_subjects[-1] == 103
    assert [c for c in (1, 2, 3) if ntu_convert.is_training(ntu_raw.NtuName(1, c, 1, 1, 1), "xview")] == [
        2,
        3,
    ]
    setups = [s for s in range(1, 33) if ntu_convert.is_training(ntu_raw.NtuName(s, 1, 1, 1, 1), "xset")]
    assert setups == list(range(2, 33, 2))
    with pytest.raises(ValueError, match="not an NTU"):
        ntu_raw.parse_name("foo.skeleton")


def _fixture(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    specs = {  # name -> (frames, bodies)
        "S001C001P001R001A001": (4, 1),  # xsub train (P001), xview val (C001)
        "S001C002P003R001A002": (3, 2),  # xsub val, xview train
        "S002C003P002R002A003": (2, 1),  # xsub train, xview train
        "S001C001P003R001A004": (2, 1),  # on the missing list
    }
    arrays = {}
    for k, (name, (f, b)) in enumerate(specs.items()):
        xyz = np.zeros((b, f, 25, 3))
        for m in range(b):
            xyz[m] = np.arange(f * 75).reshape(f, 25, 3) * 0.01 * (m + 1) + k + 1
        arrays[name] = xyz
        _write(raw / f"{name}.skeleton", xyz)
    missing = tmp_path / "missing.txt"
    missing.write_text("S001C001P003R001A004\n")
    return raw, missing, arrays


def test_converter_arrays_match_literal_expectation(tmp_path):
    raw, missing, arrays = _fixture(tmp_path)
    out = tmp_path / "out"
    res = ntu_convert.convert_ntu(raw, out, "ntu60", missing, normalization="none", workers=1, progress=False)
    assert res.skipped == ["S001C001P003R001A004"]
    assert res.sizes == {"xsub/train": 2, "xsub/val": 1, "xview/train": 2, "xview/val": 1}
    data = np.load(storage.data_path(out / "xsub", "train"))
    assert data.shape == (2, 3, 300, 25, 2) and data.dtype == np.float32
    # sample S001C001P001R001A001: frame 1, joint 2, body 0 = (arange index 75 + 6 + c) * 0.01 + 1
    np.testing.assert_allclose(data[0, :, 1, 2, 0], [1.81, 1.82, 1.83], rtol=1e-6)
    assert not data[0, :, 4:].any() and not data[0, ..., 1].any()
    # the two-body sample: the body with twice the spread (energy) comes first
    val = np.load(storage.data_path(out / "xsub", "val"))
    np.testing.assert_allclose(val[0, :, 0, 0, 0], [2.0, 2.02, 2.04], rtol=1e-6)
    np.testing.assert_allclose(val[0, :, 0, 0, 1], [2.0, 2.01, 2.02], rtol=1e-6)
    np.testing.assert_array_equal(np.load(storage.num_frame_path(out / "xsub", "train")), [4, 2])
    lab = json.loads(storage.label_path(out / "xview", "train").read_text())
    assert lab == {
        "sample_names": ["S001C002P003R001A002.skeleton", "S002C003P002R002A003.skeleton"],
        "labels": [1, 2],
    }
    assert not (out / ntu_convert.CACHE_DIR).exists()


def test_converter_resumes_and_reports_corrupt_files(tmp_path):
    raw, missing, _ = _fixture(tmp_path)
    bad = raw / "S003C001P001R001A005.skeleton"
    bad.write_text("3\n1\n")
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match=r"S003C001P001R001A005\.skeleton.*file ends early"):
        ntu_convert.convert_ntu(raw, out, "ntu60", missing, workers=1, progress=False)
    assert not (out / "xsub").exists()  # nothing half-written
    done = np.load(out / ntu_convert.CACHE_DIR / "done.npy")
    assert done.sum() == 3 and not done[3]  # sorted order: the corrupt file is the last
    _write(bad, _body(5, 3)[None])
    res = ntu_convert.convert_ntu(raw, out, "ntu60", missing, workers=1, progress=False)
    assert res.converted_now == 1 and res.sizes["xsub/train"] == 3


@pytest.mark.parametrize("start_method", [None, "spawn"])  # the default (fork on Linux) and macOS/Windows'
def test_converter_in_parallel_matches_serial(tmp_path, start_method):
    raw, missing, _ = _fixture(tmp_path)
    ntu_convert.convert_ntu(raw, tmp_path / "a", "ntu120", missing, workers=1, progress=False)
    ntu_convert.convert_ntu(
        raw, tmp_path / "b", "ntu120", missing, workers=2, progress=False, start_method=start_method
    )
    for part in ("train", "val"):
        a = np.load(storage.data_path(tmp_path / "a" / "xset", part))
        b = np.load(storage.data_path(tmp_path / "b" / "xset", part))
        np.testing.assert_array_equal(a, b)


def test_parallel_workers_write_the_cache_report_errors_and_resume(tmp_path):
    # the workers write samples into the cache array themselves; an error in a worker leaves its
    # sample not-done, and the re-run converts only that one, in parallel again
    raw, missing, _ = _fixture(tmp_path)
    bad = raw / "S003C001P001R001A005.skeleton"
    bad.write_text("3\n1\n")
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match=r"S003C001P001R001A005\.skeleton.*file ends early"):
        ntu_convert.convert_ntu(raw, out, "ntu60", missing, normalization="none", workers=2, progress=False)
    assert not (out / "xsub").exists()
    done = np.load(out / ntu_convert.CACHE_DIR / "done.npy")
    assert done.tolist() == [True, True, True, False]
    _write(bad, _body(5, 3)[None])
    res = ntu_convert.convert_ntu(raw, out, "ntu60", missing, normalization="none", workers=2, progress=False)
    assert res.converted_now == 1
    serial = tmp_path / "serial"
    ntu_convert.convert_ntu(raw, serial, "ntu60", missing, normalization="none", workers=1, progress=False)
    for bench in ("xsub", "xview"):
        for part in ("train", "val"):
            np.testing.assert_array_equal(
                np.load(storage.data_path(out / bench, part)),
                np.load(storage.data_path(serial / bench, part)),
            )
            np.testing.assert_array_equal(
                np.load(storage.num_frame_path(out / bench, part)),
                np.load(storage.num_frame_path(serial / bench, part)),
            )
    # the converted sample really is the fixed file's content (literal check, body 0 frame 0 joint 0)
    data = np.load(storage.data_path(out / "xsub", "train"))
    names, _ = storage.load_labels(storage.label_path(out / "xsub", "train"))
    k = names.index("S003C001P001R001A005.skeleton")
    np.testing.assert_allclose(data[k, :, 0, 0, 0], _body(5, 3)[0, 0], atol=1e-4)


def test_chunk_must_be_positive(tmp_path):
    raw, missing, _ = _fixture(tmp_path)
    with pytest.raises(ValueError, match="chunk must be >= 1"):
        ntu_convert.convert_ntu(raw, tmp_path / "out", missing_list=missing, chunk=0, progress=False)
