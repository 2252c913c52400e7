"""``skelfast plot`` and ``skelfast show``: the pure geometry against hand-computed values, the PCA
against an exact SVD, the files against their contents (read back as images)."""

import json
import math

import numpy as np
import pytest
import torch
from matplotlib.image import imread
from mpl_toolkits.mplot3d import proj3d
from PIL import Image, ImageSequence

from skelfast.cli import main
from skelfast.data import storage
from skelfast.skeleton import NTU
from skelfast.viz import curves, embedding, skeleton_plot
from skelfast.viz.skeleton_plot import View

SMALL = {"panel_inches": 1.0, "dpi": 40}  # tiny figures: the tests check content, not looks


def standing_person(frames: int = 4, wave: bool = False) -> np.ndarray:
    """(3, T, 25, 2) a stick person in the synthetic generator's body frame: y up, facing +z, +x is
    the person's left; every joint not set stands on the spine. Body 2 absent (zeros).
    With ``wave`` the left hand circles and the whole body walks along x, so frames differ."""
    x = np.zeros((3, frames, 25, 2))
    joints = {0: (0, 1.0, 0), 1: (0, 1.25, 0), 20: (0, 1.48, 0), 2: (0, 1.55, 0), 3: (0, 1.72, 0)}
    joints.update({4: (0.18, 1.45, 0), 8: (-0.18, 1.45, 0), 12: (0.09, 0.97, 0), 16: (-0.09, 0.97, 0)})
    joints.update({5: (0.2, 1.17, 0), 6: (0.21, 0.93, 0), 14: (0.1, 0.1, 0), 18: (-0.1, 0.1, 0)})
    for v in range(25):
        x[:, :, v, 0] = np.asarray(joints.get(v, (0, 1.25, 0)))[:, None]
    if wave:
        t = np.arange(frames)
        x[0, :, 7, 0] = 0.2 + 0.3 * np.cos(t)
        x[1, :, 7, 0] = 1.5 + 0.3 * np.sin(t)
        x[0, :, :, 0] += 0.1 * t[:, None]
    return x


def rotate_x(x: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate (3, ...) points about the x axis (y -> z for +90 degrees)."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    r = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    return np.einsum("ij,j...->i...", r, x)


# ---------------------------------------------------------------- geometry


def test_bone_segments_are_the_bone_table_pairs():
    g = np.random.default_rng(0)
    x = g.normal(size=(3, 5, 25, 2))
    x[:, 2, :, 1] = 0.0  # body 2 leaves in frame 2
    segments, present = skeleton_plot.bone_segments(torch.from_numpy(x))
    assert segments.shape == (5, 2, len(NTU.bones), 2, 3)
    for b, (child, parent) in enumerate(NTU.bones):
        np.testing.assert_array_equal(segments[:, :, b, 0], x[:, :, child, :].transpose(1, 2, 0))
        np.testing.assert_array_equal(segments[:, :, b, 1], x[:, :, parent, :].transpose(1, 2, 0))
    expected = np.ones((5, 2), dtype=bool)
    expected[2, 1] = False
    np.testing.assert_array_equal(present, expected)
    with pytest.raises(ValueError, match=r"\(3, T, V, M\)"):
        skeleton_plot.bone_segments(np.zeros((5, 25, 2)))
    with pytest.raises(ValueError, match="25 joints"):
        skeleton_plot.bone_segments(np.zeros((3, 5, 17, 2)))


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_plot_coords_put_up_on_z_without_mirroring(axis, sign):
    basis = skeleton_plot.to_plot_coords(np.eye(3), (axis, sign))  # row i: where data axis i lands
    np.testing.assert_array_equal(basis[axis], [0.0, 0.0, sign])
    assert np.linalg.det(basis) == pytest.approx(1.0)  # a rotation: left and right stay apart


def test_up_axis_finds_the_spine():
    person = standing_person()
    assert skeleton_plot.up_axis(person) == (1, 1.0)  # camera space / generator: y up
    assert skeleton_plot.up_axis(rotate_x(person, 90.0)) == (2, 1.0)  # after 2s-AGCN: z up
    assert skeleton_plot.up_axis(rotate_x(person, 180.0)) == (1, -1.0)
    assert skeleton_plot.up_axis(np.zeros((3, 4, 25, 2))) == (1, 1.0)  # nothing to go by: y


@pytest.mark.parametrize("tilt", [0.0, 90.0], ids=["y-up", "z-up"])
def test_grid_panel_shows_the_person_upright_and_from_the_front(tilt):
    person = rotate_x(standing_person(frames=3), tilt)
    fig = skeleton_plot.grid_figure([View("raw", person, 3)], frames=1, **SMALL)
    fig.canvas.draw()
    ax = fig.axes[0]
    up = skeleton_plot.up_axis(person)
    # the panel's lines are the bones, in plot coordinates (body 2 is absent: not drawn)
    drawn = [line for line in ax.get_lines() if line.get_visible()]
    assert len(drawn) == len(NTU.bones)
    for line, (child, parent) in zip(drawn, NTU.bones, strict=True):
        expected = skeleton_plot.to_plot_coords(person[:, 0, [child, parent], 0].T, up)
        np.testing.assert_allclose(np.array(line.get_data_3d()).T, expected)

    def on_screen(joint):
        p = skeleton_plot.to_plot_coords(person[:, 0, joint, 0], up)
        sx, sy, _ = proj3d.proj_transform(p[0], p[1], p[2], ax.get_proj())
        return sx, sy

    head, base, feet = on_screen(3), on_screen(0), on_screen(14)
    assert head[1] > base[1] > feet[1]  # head above spine base above the feet
    # seen from the front, the person's left shoulder (joint 4) is on the image's right
    assert on_screen(4)[0] > on_screen(8)[0]


def test_frame_indices_spread_over_the_length():
    np.testing.assert_array_equal(skeleton_plot.frame_indices(10, 4), [0, 3, 6, 9])
    np.testing.assert_array_equal(skeleton_plot.frame_indices(1, 3), [0, 0, 0])
    with pytest.raises(ValueError):
        skeleton_plot.frame_indices(0, 3)


# ---------------------------------------------------------------- files


def gif_frames(path):
    with Image.open(path) as im:
        assert im.format == "GIF" and im.size[0] > 0 and im.size[1] > 0
        return [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)]


def test_grid_png_and_gif_are_images_of_a_moving_sequence(tmp_path):
    moving = View("moving", standing_person(frames=6, wave=True), 6)
    png = skeleton_plot.draw_grid([moving, moving], tmp_path / "grid.png", frames=2, **SMALL)
    image = imread(png)
    assert image.shape[:2] == (80, 104)  # (2 rows x 1 in, 2 panels x 1 in + 0.6 in of row labels) at 40 dpi
    assert image[..., :3].std() > 0  # something was drawn

    frames = gif_frames(skeleton_plot.write_gif([moving], tmp_path / "moving.gif", frames=3, fps=5, **SMALL))
    still = View("still", standing_person(frames=6), 6)
    still_frames = gif_frames(skeleton_plot.write_gif([still], tmp_path / "still.gif", frames=3, **SMALL))
    assert len(frames) == len(still_frames) == 3
    # a still sequence's frames differ only in the title ("frame i"); a moving one's also below it
    title_rows = np.nonzero((still_frames[0] != still_frames[2]).any(axis=(1, 2)))[0]
    assert len(title_rows) and title_rows.max() < 0.45 * 40  # the GIF's title band: 0.45 in at 40 dpi
    assert (frames[0] != frames[2])[title_rows.max() + 1 :].any()


def test_absent_bodies_and_bad_views_are_handled(tmp_path):
    person = standing_person(frames=3)
    noisy = person + 0.01 * np.random.default_rng(0).normal(size=person.shape)  # noise on body 2 too
    fig = skeleton_plot.grid_figure([View("noisy", noisy, 3, bodies=(True, False))], frames=1, **SMALL)
    assert sum(line.get_visible() for line in fig.axes[0].get_lines()) == len(NTU.bones)
    with pytest.raises(ValueError, match="length 9 outside"):
        skeleton_plot.draw_grid([View("bad", person, 9)], tmp_path / "x.png")
    with pytest.raises(ValueError, match="no views"):
        skeleton_plot.write_gif([], tmp_path / "x.gif")


def test_a_stray_joint_does_not_shrink_the_person():
    person = standing_person(frames=10)
    person[:, 4, 7, 0] = 50.0  # one joint of one frame far away: 1 point in 250
    ax = skeleton_plot.grid_figure([View("stray", person, 10)], frames=1, **SMALL).axes[0]
    lo, hi = ax.get_zlim()  # plot z = data y: the person spans 0.1 (ankles) to 1.72 (head)
    assert lo < 0.1 and hi > 1.72 and hi - lo < 2.5


def test_method_views_follow_each_recipe():
    x = torch.from_numpy(standing_person(frames=40, wave=True)).float()
    views = {
        m: skeleton_plot.method_views(x, 30, m, torch.Generator().manual_seed(3)) for m in ("hico", "hiclr")
    }
    again = skeleton_plot.method_views(x, 30, "hico", torch.Generator().manual_seed(3))
    assert [v.x.shape[1] for v in views["hico"]] == [64, 64]  # crop resized onto 64 frames
    np.testing.assert_array_equal(views["hico"][0].x, again[0].x)  # the seed replays the views
    assert not np.array_equal(views["hico"][0].x, views["hico"][1].x)  # two independent draws
    assert len(views["hiclr"]) == 4 and all(v.length == 30 for v in views["hiclr"])  # the shift keeps 30
    assert all(v.bodies == (True, False) for v in views["hiclr"])
    (crrl,) = skeleton_plot.method_views(x, 30, "crrl", torch.Generator())
    np.testing.assert_array_equal(crrl.x, x[:, :30].numpy())  # CRRL: no augmentation
    with pytest.raises(ValueError, match="unknown method"):
        skeleton_plot.method_views(x, 30, "simclr", torch.Generator())


def test_show_command_writes_png_and_gif(tmp_path, capsys):
    data = np.stack([standing_person(frames=12, wave=True)] * 2).astype(np.float32)
    storage.save_split(tmp_path / "split", "val", data, np.array([12, 10]), np.array([0, 1]), ["a", "b"])
    out = tmp_path / "show"
    args = ["show", "--data", str(tmp_path / "split"), "--part", "val", "--index", "1", "--method", "crrl"]
    assert main([*args, "--frames", "2", "--gif-frames", "2", "--out", str(out)]) == 0
    assert (
        "crrl: " + str(tmp_path / "split") + " val[1], label 1: 10 frames, up axis +y"
        in capsys.readouterr().out
    )
    assert imread(out / "sample1_crrl.png").size > 0
    with Image.open(out / "sample1_crrl.gif") as im:
        assert im.n_frames == 2
    # synthetic: CRRL's config prepares data with 2s-AGCN's normalisation, which turns the spine onto +z
    assert (
        main(
            [
                "show",
                "--synthetic",
                "--method",
                "crrl",
                "--frames",
                "1",
                "--gif-frames",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "crrl: synthetic[0] (agcn), label 0: " in printed and "frames, up axis +z" in printed
    assert imread(out / "sample0_crrl.png").size > 0
    assert main(["show", "--data", str(tmp_path / "split"), "--part", "val", "--index", "5"]) == 2
    assert "--index 5 outside the 2 samples" in capsys.readouterr().err


# ---------------------------------------------------------------- embedding


def two_clusters(n: int = 20, dim: int = 6, gap: float = 8.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    direction = torch.nn.functional.normalize(torch.randn(dim, generator=g), dim=0)
    noise = torch.randn(2 * n, dim, generator=g)
    labels = torch.arange(2 * n) % 2
    return noise + gap * labels[:, None] * direction, labels


def test_pca_matches_an_exact_svd():
    # 40-d data (more than the randomized basis' 12 columns) with principal stds 5, 3, then 1s
    g = torch.Generator().manual_seed(1)
    rotation, _ = torch.linalg.qr(torch.randn(40, 40, generator=g, dtype=torch.float64))
    stds = torch.cat([torch.tensor([5.0, 3.0]), torch.ones(38)]).double()
    features = ((torch.randn(200, 40, generator=g, dtype=torch.float64) * stds) @ rotation.T + 3.0).float()
    coords = embedding.pca_2d(features)
    centred = features.double() - features.double().mean(0)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    exact = centred @ vh[:2].T
    # same coordinates up to each axis' sign (fixed by convention, not by the SVD); the power
    # iterations leave ~(1/3)^13 relative error, the float32 output ~1e-6 on values up to ~15
    for k in range(2):
        sign = torch.sign((coords[:, k].double() * exact[:, k]).sum())
        torch.testing.assert_close(coords[:, k].double(), sign * exact[:, k], atol=1e-4, rtol=0)
    torch.testing.assert_close(embedding.pca_2d(features), coords, atol=0, rtol=0)  # reproducible
    flat = embedding.pca_2d(torch.arange(6.0)[:, None])  # one feature: PC 2 is zero
    torch.testing.assert_close(flat, torch.stack([torch.arange(6.0) - 2.5, torch.zeros(6)], 1))


def test_embedding_separates_two_clusters(tmp_path):
    features, labels = two_clusters()
    coords = embedding.embedding_plot(features, labels, tmp_path / "emb.png")
    first, second = coords[labels == 0, 0], coords[labels == 1, 0]
    # PC 1 is the cluster direction: the clusters (8 apart, unit noise) fall on either side of a gap
    assert first.max() < second.min() or second.max() < first.min()
    assert abs(float(first.mean() - second.mean())) > 6.0
    assert imread(tmp_path / "emb.png").shape[:2] == (450, 500)  # 5 x 4.5 inches at 100 dpi
    with pytest.raises(ValueError, match="2 samples"):
        embedding.pca_2d(torch.ones(1, 3))
    with pytest.raises(ValueError, match="labels"):
        embedding.embedding_plot(features, labels[:3], tmp_path / "bad.png")


def test_plot_embedding_from_a_checkpoint(tmp_path, capsys):
    from skelfast.methods import build_method

    model = {"hidden_size": 4, "num_layers": 1, "queue_size": 8}
    method = build_method("crrl", model).eval()
    run = tmp_path / "run"
    run.mkdir()
    config = {"method": "crrl", "model": model}
    torch.save(
        {"format": "skelfast-checkpoint-1", "config": config, "method": method.state_dict()},
        run / "checkpoint_last.pt",
    )
    g = np.random.default_rng(0)
    data = g.normal(size=(6, 3, 8, 25, 2)).astype(np.float32)
    storage.save_split(
        tmp_path / "split", "val", data, np.full(6, 8), np.arange(6) % 2, [str(i) for i in range(6)]
    )
    assert main(["plot", str(run), "--embedding", "--data", str(tmp_path / "split")]) == 0
    assert f"wrote {run / 'plots' / 'embedding.png'}" in capsys.readouterr().out
    assert imread(run / "plots" / "embedding.png").size > 0
    # the loaded method is the saved one: same features as the original's encoder
    from skelfast.data.datasets import SkeletonDataset

    loaded, _ = embedding.load_pretrained(run / "checkpoint_last.pt")
    dataset = SkeletonDataset.from_split(tmp_path / "split", "val")
    expected, labels = embedding.encoder_features(method.feature_encoder(), dataset, batch_size=4)
    got, _ = embedding.encoder_features(loaded.feature_encoder(), dataset, batch_size=4)
    assert got.shape == (6, 8)  # 2 directions x hidden_size 4
    torch.testing.assert_close(got, expected, atol=0, rtol=0)
    np.testing.assert_array_equal(labels.numpy(), np.arange(6) % 2)


# ---------------------------------------------------------------- curves


METRICS = """stage,epoch,step,loss,lr,samples_per_s,nce,mining,recon
pretrain,0,1,6.5,0.1,120.0,6.5,,
pretrain,0,2,nan,0.1,118.0,nan,,
pretrain,1,3,6.1,,121.5,6.1,,
pretrain,1,4,5.9,0.01,119.0,5.9,,
reconstruct,0,5,3.0,0.05,90.0,,,3.0
reconstruct,0,6,2.5,0.05,91.0,,,2.5
"""


def write_run(tmp_path, evals: bool):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text(METRICS)
    if evals:
        (run / "eval").mkdir()
        history = [{"epoch": 0, "accuracy": 0.31}, {"epoch": 1, "accuracy": 0.42}]
        report = {"protocol": "linear", "accuracy_last": 0.42, "accuracy_best": 0.42, "history": history}
        (run / "eval" / "linear.json").write_text(json.dumps(report))
        (run / "eval" / "knn.json").write_text("{not json")
        (run / "eval" / "random-init").mkdir()
        knn = {
            "protocol": "knn",
            "accuracy_last": 0.2,
            "accuracy_best": 0.2,
            "history": [{"epoch": None, "accuracy": 0.2}],
        }
        (run / "eval" / "random-init" / "knn.json").write_text(json.dumps(knn))
        semi = {"protocol": "semi", "history": [{"epoch": 0, "accuracy": None}]}
        (run / "eval" / "semi.json").write_text(json.dumps(semi))
    return run


def test_read_metrics_parses_numbers_and_gaps(tmp_path):
    run = write_run(tmp_path, evals=False)
    m = curves.read_metrics(run / "metrics.csv")
    assert m.stage == ["pretrain"] * 4 + ["reconstruct"] * 2 and m.terms == ["nce", "mining", "recon"]
    np.testing.assert_array_equal(m.columns["step"], [1, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(m.columns["loss"], [6.5, np.nan, 6.1, 5.9, 3.0, 2.5])
    np.testing.assert_array_equal(m.columns["lr"], [0.1, 0.1, np.nan, 0.01, 0.05, 0.05])
    np.testing.assert_array_equal(m.columns["recon"], [np.nan] * 4 + [3.0, 2.5])
    assert np.isnan(m.columns["mining"]).all()
    (run / "bad.csv").write_text("stage,epoch\npretrain,0\n")
    with pytest.raises(ValueError, match="no step or loss column"):
        curves.read_metrics(run / "bad.csv")


def test_plot_run_writes_every_curve_and_says_what_it_skipped(tmp_path):
    run = write_run(tmp_path, evals=True)
    report = curves.plot_run(run)
    names = sorted(p.name for p in report.written)
    assert names == ["accuracy.png", "loss.png", "lr.png", "throughput.png"]
    for path in report.written:
        assert path.parent == run / "plots" and min(imread(path).shape[:2]) > 0
    # three panels (loss, nce, recon; mining is empty) of 2 x 6.4 inches at 100 dpi
    assert imread(run / "plots" / "loss.png").shape[:2] == (600, 640)
    metric_skips = [line for line in report.skipped if line.startswith("metrics.csv")]
    assert sorted(metric_skips) == [
        "metrics.csv: 1 row(s) with NaN or missing 'loss' (or step) not drawn",
        "metrics.csv: 1 row(s) with NaN or missing 'lr' (or step) not drawn",
        "metrics.csv: 1 row(s) with NaN or missing 'nce' (or step) not drawn",  # not the reconstruct rows
        "metrics.csv: column 'mining' has no finite value, not drawn",
    ]
    assert any(line.startswith("eval/knn.json: unreadable") for line in report.skipped)
    assert "eval/semi: 1 history entr(y/ies) with NaN or missing accuracy not drawn" in report.skipped
    assert "eval/semi: no accuracy (last, best or history) to draw" in report.skipped
    assert not any("random-init" in line for line in report.skipped)  # kNN's epoch-less result is a bar
    # two panels (linear's history; bars for linear and random-init/knn) of 5.6 x 3.2 inches
    assert imread(run / "plots" / "accuracy.png").shape[:2] == (320, 1120)


def test_plot_command_without_eval_folder(tmp_path, capsys):
    run = write_run(tmp_path, evals=False)
    out = tmp_path / "pictures"
    assert main(["plot", str(run), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"skipped: no {run / 'eval'} folder: accuracy not drawn" in printed
    assert sorted(p.name for p in out.iterdir()) == ["loss.png", "lr.png", "throughput.png"]
    assert main(["plot", str(run), "--out", str(out), "--embedding", "--data", str(tmp_path)]) == 0
    assert (
        f"skipped: embedding not drawn: checkpoint not found: {run / 'checkpoint_last.pt'}"
        in capsys.readouterr().out
    )
    assert main(["plot", str(tmp_path / "missing")]) == 2
    assert "run folder not found" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["plot", str(empty)]) == 1  # nothing to draw: a failure, with the reasons printed
    assert "skipped: no " in capsys.readouterr().out
