"""Each official normalisation against a hand-computed case."""

import numpy as np
import pytest

from skelfast.data import normalize


def _posed(spine, shoulder, origin, frames=3, t_max=300):
    """(3, T, 25, 2): body 0 with joint 1 - joint 0 = spine and joint 8 - joint 4 = shoulder, moving along x."""
    x = np.zeros((3, t_max, 25, 2), dtype=np.float32)
    rng = np.random.default_rng(0)
    for t in range(frames):
        pts = rng.normal(0, 0.2, size=(25, 3)) + origin + [0.01 * t, 0, 0]
        pts[1] = pts[0] + spine
        pts[8] = pts[4] + shoulder
        x[:, t, :, 0] = pts.T
    return x


SPINE = np.array([0.3, 0.2, -0.1])  # arbitrary camera-space directions...
SHOULDER = np.cross(SPINE, [0.0, 1.0, 1.0])  # ...with the shoulders perpendicular to the spine


def test_agcn_puts_spine_on_z_and_shoulders_on_x():
    x = _posed(SPINE, SHOULDER, origin=[0.5, 0.1, 3.0])
    x[:, 1, 7, 0] = 0  # a missing joint
    out = normalize.pre_normalization(x[None])[0]
    body = out[..., 0].transpose(1, 2, 0)  # T, V, C
    np.testing.assert_allclose(body[0, 1], 0, atol=1e-6)  # centred on joint 1 of body 0
    np.testing.assert_allclose(body[0, 1] - body[0, 0], [0, 0, np.linalg.norm(SPINE)], atol=1e-5)
    np.testing.assert_allclose(body[0, 8] - body[0, 4], [np.linalg.norm(SHOULDER), 0, 0], atol=1e-5)
    np.testing.assert_array_equal(body[1, 7], 0)  # missing joints stay zero
    np.testing.assert_array_equal(body[3:6], body[0:3])  # the empty tail loops the 3 valid frames
    np.testing.assert_array_equal(body[297:300], body[0:3])
    assert not out[..., 1].any()
    # distances are preserved (a rotation after per-frame centring)
    raw = x[..., 0].transpose(1, 2, 0)
    np.testing.assert_allclose(
        np.linalg.norm(body[2, 3] - body[2, 5]), np.linalg.norm(raw[2, 3] - raw[2, 5]), rtol=1e-5
    )


def test_agcn_compacts_a_late_body_and_noz_skips_the_z_rotation():
    x = _posed(SPINE, SHOULDER, origin=[0.0, 0.0, 3.0], frames=5)
    x[:, :2, :, 0] = 0  # body 0 appears at frame 2: moved to the front
    out = normalize.pre_normalization(x[None])[0]
    assert out[:, 0, :, 0].any() and np.array_equal(out[:, 3, :, 0], out[:, 0, :, 0])
    noz = normalize.pre_normalization(x[None], align_z=False)[0][..., 0].transpose(1, 2, 0)
    sh = noz[0, 8] - noz[0, 4]
    np.testing.assert_allclose(sh / np.linalg.norm(sh), [1, 0, 0], atol=1e-5)
    spine = noz[0, 1] - noz[0, 0]
    assert abs(spine[2]) < 0.99 * np.linalg.norm(spine)  # not aligned with z


def test_rotation_matrix_formula_hand_case():
    # a quarter turn about +z: Euler-Rodrigues with the sign convention of 2s-AGCN maps x -> y
    r = normalize.rotation_matrix(np.array([0, 0, 1.0]), np.pi / 2)
    np.testing.assert_allclose(r @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    np.testing.assert_array_equal(normalize.rotation_matrix(np.zeros(3), 1.0), np.eye(3))


def test_frame50_resize_recentre_and_per_frame_rotation():
    length = 100
    x = np.zeros((3, 300, 25, 2), dtype=np.float32)
    t = np.arange(length)
    yaw = 0.01 * t  # the body turns: frame50 undoes it frame by frame
    rng = np.random.default_rng(1)
    base = rng.normal(0, 0.2, size=(25, 3))
    base[0] = [0.0, 0.0, 0.1]  # joint 0 is non-zero in every valid frame (it defines the length)
    for i in t:
        pts = base.copy()
        pts[20] = [0, 0.5, 0]
        pts[3] = [0, 0.5 + 0.001 * i, 0]  # head rises linearly in time
        pts[4], pts[8] = [-0.2, 0.45, 0], [0.2, 0.45, 0]
        c, s = np.cos(yaw[i]), np.sin(yaw[i])
        rot = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
        x[:, i, :, 0] = (pts @ rot.T + [1.0, 0.2, 3.0]).T
    out, counted = normalize.frame50_sample(x)
    assert counted == length and out.shape == (3, 50, 25, 2)
    body = out[..., 0].transpose(1, 2, 0)
    np.testing.assert_allclose(body[:, 20], 0, atol=1e-6)  # centred on its own joint 20
    sh = body[:, 8] - body[:, 4]
    np.testing.assert_allclose(sh[:, 0], 0.4, atol=1e-4)  # every frame's shoulders on +x
    # z is 0 up to the official +1e-4 in arccos(v_x / (|v| + 1e-4)): an angle error <= sqrt(2e-4 / 0.4)
    np.testing.assert_allclose(sh[:, 2], 0, atol=0.4 * np.sqrt(2e-4 / 0.4) + 1e-5)
    # cv2 INTER_LINEAR, 100 -> 50: output frame k samples input time 2k + 0.5 (linear data stays linear)
    np.testing.assert_allclose(body[:, 3, 1], 0.001 * (2 * np.arange(50) + 0.5), atol=1e-5)


def test_cv2_resize_edges_clamp():
    x = np.arange(4.0)[:, None]
    np.testing.assert_allclose(
        normalize.cv2_linear_resize_time(x, 8)[:, 0], [0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3]
    )


def test_pyskl_prenormalize_drops_empty_frames_and_aligns():
    kp = np.zeros((2, 10, 25, 3))
    x = _posed(SPINE, SHOULDER, origin=[0.2, 0.0, 2.5], frames=6, t_max=6)[..., 0].transpose(1, 2, 0)
    kp[1, 2:8] = x  # the body with more valid frames is listed second: it becomes body 0
    kp[0, 2:4] = x[:2] + 0.5
    out, t_new = normalize.pre_normalize_3d(kp)
    assert t_new == 6 and out.shape == (2, 6, 25, 3)
    np.testing.assert_allclose(out[0, 0, 1], 0, atol=1e-9)
    np.testing.assert_allclose(out[0, 0, 1] - out[0, 0, 0], [0, 0, np.linalg.norm(SPINE)], atol=1e-6)
    np.testing.assert_allclose(
        out[0, 0, 8] - out[0, 0, 4], [np.linalg.norm(SHOULDER), 0, 0], atol=1e-6
    )  # float32 input
    assert not out[1, 2:].any()  # the other body's empty frames stay zero (masked)


def test_normalize_dispatch_and_errors():
    x = _posed(SPINE, SHOULDER, origin=[0, 0, 3.0], frames=4)[None]
    nf = np.array([4])
    for name in normalize.NORMALIZATIONS:
        out, n = normalize.normalize(x, nf, name)
        assert out.dtype == np.float32 and out.shape[:2] == (1, 3) and np.isfinite(out).all()
    assert normalize.normalize(x, nf, "frame50")[0].shape[2] == 50
    with pytest.raises(ValueError, match="unknown normalization"):
        normalize.normalize(x, nf, "bogus")
    with pytest.raises(ValueError, match=r"\(N, 3, T, V, M\)"):
        normalize.pre_normalization(x[0])
