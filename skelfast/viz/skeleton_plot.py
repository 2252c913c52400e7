"""Skeleton sequences drawn the way people look at them: 3-D stick figures of the layout's bones.

The pipeline has three pure steps and two drawers:

1. ``bone_segments``: (3, T, V, M) coordinates -> (T, M, B, 2, 3) line segments, one per bone of the
   layout (child, parent), plus which bodies are present in each frame (an all-zero body is absent:
   NTU's missing second person and the zero frames past a sample's length).
2. ``up_axis``: which data axis points up (the spine's direction: +y for Kinect camera space, +z after
   the 2s-AGCN normalisation), and ``to_plot_coords``: a rotation (never a mirror) putting that axis
   on matplotlib's vertical z.
3. ``front_view``: the camera azimuth in front of the person (shoulders -> facing), turned a little
   for a three-quarter view so depth reads.

``grid_figure`` (``draw_grid`` writes it as a PNG) has one row per view and K frames across;
``write_gif`` animates all views side by side (matplotlib.animation.PillowWriter). ``method_views``
draws each method's augmented views of one sample with ``skelfast.augment.RECIPES`` so data and
augmentations can be checked by eye.

Figures are built on matplotlib's Agg canvas directly (no pyplot, no display).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from skelfast.skeleton import NTU, Layout

# the pair of joints whose vector is "up" (spine_base -> spine_shoulder) and "right" (left -> right shoulder)
_SPINE = (0, 20)
_SHOULDERS = (4, 8)

# which recipe each method draws its views with, in the order the official feeders draw them
METHOD_VIEWS: dict[str, tuple[tuple[str, str], ...]] = {
    "hico": (("view 1 (query)", "hico"), ("view 2 (key)", "hico")),
    "isc": (("view 1 (query)", "isc"), ("view 2 (key)", "isc")),
    "hiclr": (
        ("q (basic)", "hiclr-basic"),
        ("k (basic)", "hiclr-basic"),
        ("q1 (strong)", "hiclr-strong"),
        ("q2 (strong + mask)", "hiclr-strong-mask"),
    ),
    "crrl": (("input (no augmentation)", "crrl"),),
}


@dataclass(frozen=True)
class View:
    """One sequence to draw: a title, coordinates (3, T, V, M), its number of valid frames, and
    optionally which bodies exist (an augmented view of an absent body is noise, not a person)."""

    title: str
    x: np.ndarray
    length: int
    bodies: tuple[bool, ...] | None = None

    def present(self) -> np.ndarray:
        """(M,) bool: bodies to draw (``bodies``, else those non-zero in some valid frame)."""
        if self.bodies is not None:
            return np.asarray(self.bodies, dtype=bool)
        return np.abs(_as_numpy(self.x)[:, : self.length]).sum(axis=(0, 1, 2)) > 0


def _as_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _check_sequence(x: np.ndarray, layout: Layout) -> None:
    if x.ndim != 4 or x.shape[0] != 3:
        raise ValueError(f"a skeleton sequence must be (3, T, V, M), got shape {tuple(x.shape)}")
    if x.shape[2] != layout.num_joints:
        raise ValueError(
            f"layout {layout.name} has {layout.num_joints} joints but the sequence has V={x.shape[2]}"
        )


def bone_segments(x: torch.Tensor | np.ndarray, layout: Layout = NTU) -> tuple[np.ndarray, np.ndarray]:
    """Line segments of a sequence's bones in data coordinates.

    Args:
        x: (3, T, V, M) joint coordinates.
        layout: the joint layout whose ``bones`` (child, parent) pairs are drawn.

    Returns:
        segments (T, M, B, 2, 3) float64: ``segments[t, m, b] = (x[:, t, child_b, m], x[:, t, parent_b, m])``;
        present (T, M) bool: body m has a non-zero coordinate in frame t (else it is not drawn).
    """
    x = _as_numpy(x)
    _check_sequence(x, layout)
    pairs = np.asarray(layout.bones, dtype=np.int64).reshape(-1, 2)
    points = x.transpose(1, 3, 2, 0)  # (T, M, V, 3)
    segments = np.stack([points[:, :, pairs[:, 0]], points[:, :, pairs[:, 1]]], axis=3)
    present = np.abs(points).sum(axis=(2, 3)) > 0
    return segments, present


def up_axis(x: torch.Tensor | np.ndarray, length: int | None = None) -> tuple[int, float]:
    """(axis, sign) of the data axis the spine (spine_base -> spine_shoulder, body 0) points along,
    averaged over the valid frames; (1, +1.0) (y up) when the sequence is not NTU-shaped or empty."""
    x = _as_numpy(x)
    if x.ndim != 4 or x.shape[0] != 3 or x.shape[2] != NTU.num_joints:
        return 1, 1.0
    body = x[:, : length or x.shape[1], :, 0]
    valid = np.abs(body).sum(axis=(0, 2)) > 0
    if not valid.any():
        return 1, 1.0
    spine = (body[:, valid, _SPINE[1]] - body[:, valid, _SPINE[0]]).mean(axis=1)
    axis = int(np.argmax(np.abs(spine)))
    return axis, 1.0 if spine[axis] >= 0 else -1.0


def to_plot_coords(points: np.ndarray, up: tuple[int, float] = (1, 1.0)) -> np.ndarray:
    """Map (..., 3) data points to matplotlib's (X, Y, Z) with the ``up`` axis on Z.

    A proper rotation (determinant +1), so a left hand stays a left hand: the data axes are taken in
    cyclic order ending with ``up`` (y up: (z, x, y); z up: (x, y, z)); a downward axis (sign -1) flips
    it and the axis before it.
    """
    axis, sign = up
    if axis not in (0, 1, 2) or sign not in (1.0, -1.0):
        raise ValueError(f"up must be (axis in 0..2, sign +-1), got {up}")
    order = [(axis + 1) % 3, (axis + 2) % 3, axis]
    out = np.asarray(points, dtype=np.float64)[..., order]
    if sign < 0:
        out = out * np.array([1.0, -1.0, -1.0])
    return out


def front_view(x: torch.Tensor | np.ndarray, up: tuple[int, float], turn_deg: float = -30.0) -> float:
    """Azimuth (degrees, matplotlib's convention) of a camera in front of body 0, turned by ``turn_deg``.

    The person faces up x right (right = left shoulder -> right shoulder, averaged over the frames);
    a sequence without shoulders (not NTU-shaped, all zero) gets matplotlib's default -60.
    """
    x = _as_numpy(x)
    if x.ndim != 4 or x.shape[2] != NTU.num_joints:
        return -60.0
    body = x[:, :, :, 0]
    valid = np.abs(body).sum(axis=(0, 2)) > 0
    if not valid.any():
        return -60.0
    right = to_plot_coords((body[:, valid, _SHOULDERS[1]] - body[:, valid, _SHOULDERS[0]]).mean(axis=1), up)
    facing = np.cross([0.0, 0.0, 1.0], right)  # up x right, in the horizontal plane
    if np.hypot(facing[0], facing[1]) < 1e-9:
        return -60.0
    return math.degrees(math.atan2(facing[1], facing[0])) + turn_deg


def _limits(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre (3,) and half-width of the cube a view is drawn in (equal scaling on every axis).

    The cube spans the 1st-99th percentile of the (P, 3) points on each axis plus 15%: a stray joint
    (a missing joint's zeros moved by the normalisation, a masked joint) then falls outside the box
    (its bones are clipped away where matplotlib can, 3.10+) instead of shrinking the person to a dot.
    """
    if len(points) == 0:
        return np.zeros(3), 1.0
    lo, hi = np.percentile(points, [1.0, 99.0], axis=0)
    return (lo + hi) / 2, max(float((hi - lo).max()) / 2, 1e-3) * 1.15


def _clip_option() -> dict[str, bool]:
    """Clip lines to the axes box where matplotlib can (``axlim_clip``, 3.10+)."""
    import inspect

    from mpl_toolkits.mplot3d import Axes3D

    return {"axlim_clip": True} if "axlim_clip" in inspect.signature(Axes3D.plot).parameters else {}


class _Panel:
    """One 3-D axes drawing one view, frame by frame (lines created once, then moved)."""

    BODY_COLORS = ("tab:blue", "tab:red")

    def __init__(self, ax: object, view: View, up: tuple[int, float], azim: float, layout: Layout) -> None:
        self.ax, self.view = ax, view
        segments, present = bone_segments(view.x[:, : view.length], layout)
        self.present = present & view.present()[None, :]
        self.segments = to_plot_coords(segments, up)  # (T, M, B, 2, 3)
        shown = self.segments[self.present]  # (P, B, 2, 3) over present (frame, body) pairs
        centre, half = _limits(shown.reshape(-1, 3))
        ax.set_xlim(centre[0] - half, centre[0] + half)
        ax.set_ylim(centre[1] - half, centre[1] + half)
        ax.set_zlim(centre[2] - half, centre[2] + half)
        ax.set_box_aspect((1, 1, 1))
        ax.view_init(elev=15.0, azim=azim)
        ax.set_xticklabels([]), ax.set_yticklabels([]), ax.set_zticklabels([])
        ax.tick_params(length=0)
        num_bodies, num_bones = self.segments.shape[1], self.segments.shape[2]
        clip = _clip_option()
        self.lines = [
            [ax.plot([], [], [], color=self.BODY_COLORS[m % 2], lw=1.5, **clip)[0] for _ in range(num_bones)]
            for m in range(num_bodies)
        ]

    def show(self, t: int, label: str) -> None:
        for m, lines in enumerate(self.lines):
            for b, line in enumerate(lines):
                seg = self.segments[t, m, b]
                line.set_data_3d(seg[:, 0], seg[:, 1], seg[:, 2])
                line.set_visible(bool(self.present[t, m]))
        self.ax.set_title(label, fontsize=7)


def frame_indices(length: int, count: int) -> np.ndarray:
    """``count`` frame indices spread evenly over [0, length - 1] (first and last included)."""
    if length < 1 or count < 1:
        raise ValueError(f"need length >= 1 and count >= 1, got {length}, {count}")
    return np.round(np.linspace(0, length - 1, count)).astype(np.int64)


def _new_figure(width: float, height: float, dpi: int) -> object:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _check_views(views: Sequence[View]) -> None:
    if not views:
        raise ValueError("nothing to draw: no views given")
    for v in views:
        if not 1 <= v.length <= v.x.shape[1]:
            raise ValueError(f"view {v.title!r}: length {v.length} outside [1, T={v.x.shape[1]}]")


def grid_figure(
    views: Sequence[View],
    frames: int = 8,
    up: tuple[int, float] | None = None,
    layout: Layout = NTU,
    panel_inches: float = 1.6,
    dpi: int = 100,
) -> object:
    """A figure (Agg canvas) with one row per view and ``frames`` 3-D panels across, the frames
    evenly spread over each view's length.

    ``up`` defaults to the first view's spine direction (``up_axis``); every view shares it and the
    first view's front azimuth, so an augmentation's rotation shows as a turned figure.
    """
    _check_views(views)
    up = up or up_axis(views[0].x, views[0].length)
    azim = front_view(views[0].x[:, : views[0].length], up)
    fig = _new_figure(panel_inches * frames + 0.6, panel_inches * len(views), dpi)
    for row, view in enumerate(views):
        for col, t in enumerate(frame_indices(view.length, frames)):
            ax = fig.add_subplot(len(views), frames, row * frames + col + 1, projection="3d")
            _Panel(ax, view, up, azim, layout).show(int(t), f"frame {t}")
            if col == 0:
                ax.text2D(
                    -0.25, 0.5, view.title, transform=ax.transAxes, rotation=90, va="center", fontsize=7
                )
    fig.subplots_adjust(
        left=0.6 / (panel_inches * frames + 0.6), right=0.99, bottom=0.01, top=0.95, wspace=0.02, hspace=0.1
    )
    return fig


def draw_grid(views: Sequence[View], path: str | Path, frames: int = 8, **options: object) -> Path:
    """Write ``grid_figure(views, frames, **options)`` as a PNG at ``path``; returns the path."""
    fig = grid_figure(views, frames, **options)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def write_gif(
    views: Sequence[View],
    path: str | Path,
    frames: int = 40,
    fps: int = 10,
    up: tuple[int, float] | None = None,
    layout: Layout = NTU,
    panel_inches: float = 2.6,
    dpi: int = 80,
) -> Path:
    """An animated GIF of all views side by side; GIF frame i shows each view at the same fraction
    of its own length (views of different lengths stay in step), ``frames`` GIF frames in all."""
    from matplotlib.animation import PillowWriter

    _check_views(views)
    up = up or up_axis(views[0].x, views[0].length)
    azim = front_view(views[0].x[:, : views[0].length], up)
    fig = _new_figure(panel_inches * len(views), panel_inches, dpi)
    panels = [
        _Panel(fig.add_subplot(1, len(views), i + 1, projection="3d"), v, up, azim, layout)
        for i, v in enumerate(views)
    ]
    fig.subplots_adjust(left=0.0, right=1.0, bottom=0.0, top=1.0 - 0.45 / panel_inches, wspace=0.0)
    steps = [frame_indices(v.length, frames) for v in views]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = PillowWriter(fps=fps)
    with writer.saving(fig, str(path), dpi):
        for i in range(frames):
            for panel, view, ts in zip(panels, views, steps, strict=True):
                panel.show(int(ts[i]), f"{view.title}\nframe {ts[i]}")
            writer.grab_frame()
    return path


def method_views(
    x: torch.Tensor,
    length: int,
    method: str,
    generator: torch.Generator,
) -> list[View]:
    """The augmented views one method draws of a sample, under its recipes (``METHOD_VIEWS``).

    Args:
        x: (3, T, V, M) one sample; length: its valid frames; method: a key of ``METHOD_VIEWS``;
        generator: the CPU generator every recipe draws from (seed it for reproducible pictures).

    Returns:
        one ``View`` per view, titled ``"<method> <view>\\n[<recipe>]"``; every output frame is valid;
        the bodies drawn are those of the input (noise added to an absent body is not drawn).
    """
    from skelfast.augment import RECIPES, RecipeAugment

    if method not in METHOD_VIEWS:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(METHOD_VIEWS)} or 'all'")
    batch = torch.as_tensor(x, dtype=torch.float32)[None]
    lengths = torch.tensor([int(length)], dtype=torch.int64)
    bodies = tuple(bool(b) for b in View("raw", batch[0].numpy(), int(length)).present())
    views = []
    for title, recipe in METHOD_VIEWS[method]:
        out = RecipeAugment(RECIPES[recipe])(batch, lengths, generator)[0]
        views.append(View(f"{method} {title}\n[{recipe}]", out.numpy(), int(out.shape[1]), bodies))
    return views
