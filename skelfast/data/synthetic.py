"""Synthetic NTU-layout skeleton actions: the built-in default dataset.

Each sample is a kinematic skeleton (the 25 NTU joints, bone lengths from a template scaled per
subject) animated by forward kinematics. An action class drives a few degrees of freedom (trunk,
neck, shoulders, elbows, hips, knees, root height/turn/step) with class-specific primitives:
periodic (frequency, amplitude, relative phase), one-shot (a raise-and-lower bump) or hold (a ramp).
The last ``round(num_classes * 11 / 60)`` classes are interactions with a second person facing the
first, who does their own class-specific motion.

Nuisances that self-supervision must learn to ignore: camera view (three cameras at +45, 0, -45
degrees yaw plus jitter and pitch), body size and proportions per subject, subject posture offsets,
sequence length and speed (a monotone time warp), start phase, idle sway, sensor noise and missing
joints (zeros). Frames past a sample's length are zero, as in NTU.

Everything is drawn from ``np.random.default_rng`` with fixed seeds: the class definitions from
``class_seed`` (so differently seeded sample sets share their classes), the samples from ``seed``.
``generate`` returns the same arrays as the NTU converter (data (N, 3, T, 25, 2) float32, num_frame,
labels) plus subject and camera ids; ``write_synthetic`` writes the ``xsub`` and ``xview`` splits with
the NTU-60 rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

NUM_JOINTS = 25

# Rest pose in the body frame (metres): y up, the person faces +z, +x is the person's left.
_REST = np.zeros((NUM_JOINTS, 3))
_REST[[0, 1, 20, 2, 3]] = [[0, 1.00, 0], [0, 1.25, 0], [0, 1.48, 0], [0, 1.55, 0], [0, 1.72, 0.02]]
_LEFT = {4: (0.18, 1.45, 0), 5: (0.20, 1.17, 0), 6: (0.21, 0.93, 0.02), 7: (0.21, 0.86, 0.03),
         21: (0.21, 0.78, 0.04), 22: (0.17, 0.87, 0.06), 12: (0.09, 0.97, 0), 13: (0.10, 0.54, 0.01),
         14: (0.10, 0.10, 0), 15: (0.10, 0.04, 0.11)}  # fmt: skip
_MIRROR = {4: 8, 5: 9, 6: 10, 7: 11, 21: 23, 22: 24, 12: 16, 13: 17, 14: 18, 15: 19}
for _j, _p in _LEFT.items():
    _REST[_j] = _p
    _REST[_MIRROR[_j]] = (-_p[0], _p[1], _p[2])

# Kinematic tree rooted at spine_base (0); joints listed parents-first.
_PARENT = {1: 0, 20: 1, 2: 20, 3: 2, 4: 20, 5: 4, 6: 5, 7: 6, 21: 7, 22: 7, 8: 20, 9: 8, 10: 9, 11: 10,
           23: 11, 24: 11, 12: 0, 13: 12, 14: 13, 15: 14, 16: 0, 17: 16, 18: 17, 19: 18}  # fmt: skip
_ORDER = [1, 20, 2, 3, 4, 5, 6, 7, 21, 22, 8, 9, 10, 11, 23, 24, 12, 13, 14, 15, 16, 17, 18, 19]

# Degrees of freedom: (name, joint whose bone the rotation turns (with its subtree), unit axis, amplitude
# scale, non-negative). Signs are chosen so positive = anatomical flexion / raising.
_DOFS = (
    ("trunk_flex", 1, (1, 0, 0), 0.5, False),
    ("trunk_lateral", 1, (0, 0, 1), 0.3, False),
    ("trunk_twist", 1, (0, 1, 0), 0.5, False),
    ("neck_flex", 3, (1, 0, 0), 0.5, False),
    ("l_shoulder_flex", 5, (-1, 0, 0), 1.6, True),
    ("l_shoulder_abd", 5, (0, 0, 1), 1.4, True),
    ("l_elbow", 6, (-1, 0, 0), 1.8, True),
    ("r_shoulder_flex", 9, (-1, 0, 0), 1.6, True),
    ("r_shoulder_abd", 9, (0, 0, -1), 1.4, True),
    ("r_elbow", 10, (-1, 0, 0), 1.8, True),
    ("l_hip_flex", 13, (-1, 0, 0), 1.1, True),
    ("l_knee", 14, (1, 0, 0), 1.4, True),
    ("r_hip_flex", 17, (-1, 0, 0), 1.1, True),
    ("r_knee", 18, (1, 0, 0), 1.4, True),
    ("root_height", -1, (0, 1, 0), 0.25, False),  # metres
    ("root_yaw", -1, (0, 1, 0), 1.2, False),  # radians, whole body
    ("root_step", -1, (0, 0, 1), 0.4, False),  # metres forward
)
NUM_DOFS = len(_DOFS)
DOF_NAMES = tuple(d[0] for d in _DOFS)
_IDX = {name: i for i, name in enumerate(DOF_NAMES)}

# Groups of DOFs a class may drive together (so classes look like actions, not random joint noise).
_GROUPS = (
    ("l_shoulder_flex",), ("l_shoulder_abd",), ("l_elbow",), ("l_shoulder_flex", "l_elbow"),
    ("l_shoulder_abd", "l_elbow"), ("r_shoulder_flex",), ("r_shoulder_abd",), ("r_elbow",),
    ("r_shoulder_flex", "r_elbow"), ("r_shoulder_abd", "r_elbow"), ("l_shoulder_flex", "r_shoulder_flex"),
    ("l_shoulder_abd", "r_shoulder_abd"), ("l_elbow", "r_elbow"), ("trunk_flex",), ("trunk_flex", "neck_flex"),
    ("trunk_lateral",), ("trunk_twist",), ("neck_flex",), ("l_hip_flex", "l_knee"), ("r_hip_flex", "r_knee"),
    ("l_knee", "r_knee", "root_height"), ("l_hip_flex", "r_hip_flex", "root_step"), ("root_yaw",),
    ("trunk_flex", "l_shoulder_flex", "r_shoulder_flex"), ("l_hip_flex", "r_shoulder_flex"),
    ("r_hip_flex", "l_shoulder_flex"), ("trunk_twist", "l_shoulder_abd", "r_shoulder_abd"),
)  # fmt: skip

_KINDS = ("periodic", "oneshot", "hold")

# NTU-60 cross-subject training subjects and cross-view training cameras (spec/isc_crrl.md §0.2).
XSUB_TRAIN_SUBJECTS = (1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38)
XVIEW_TRAIN_CAMERAS = (2, 3)
_CAMERA_YAW_DEG = {1: 45.0, 2: 0.0, 3: -45.0}


@dataclass(frozen=True)
class ClassMotion:
    """What one class (one person of it) drives: per DOF a primitive with its parameters."""

    dofs: tuple[int, ...]
    kinds: tuple[str, ...]
    amps: tuple[float, ...]  # in units of the DOF's amplitude scale
    freqs: tuple[int, ...]  # cycles per action (periodic only)
    phases: tuple[float, ...]  # relative phase (periodic) or onset in [0, 0.4] (oneshot/hold)


@dataclass(frozen=True)
class SyntheticSpec:
    """The class definitions: ``motions[c]`` for person A and ``partner[c]`` (None unless interaction)."""

    num_classes: int
    motions: tuple[ClassMotion, ...]
    partner: tuple[ClassMotion | None, ...]

    @property
    def num_interaction(self) -> int:
        return sum(p is not None for p in self.partner)


def _draw_motion(rng: np.random.Generator, group: tuple[str, ...]) -> ClassMotion:
    kind = _KINDS[rng.integers(len(_KINDS))]
    freq = int(rng.integers(1, 5))
    dofs, kinds, amps, freqs, phases = [], [], [], [], []
    for name in group:
        dofs.append(_IDX[name])
        kinds.append(kind)
        amps.append(
            float(rng.choice([0.45, 0.7, 1.0])) * (1 if _DOFS[_IDX[name]][4] else rng.choice([-1, 1]))
        )
        freqs.append(freq)
        phases.append(
            float(rng.choice([0.0, np.pi])) if kind == "periodic" else float(rng.uniform(0.0, 0.35))
        )
    return ClassMotion(tuple(dofs), tuple(kinds), tuple(amps), tuple(freqs), tuple(phases))


def _signature(m: ClassMotion) -> tuple:
    return (m.dofs, m.kinds[0], m.freqs[0] if m.kinds[0] == "periodic" else 0, tuple(np.sign(m.amps)))


def make_spec(num_classes: int = 60, class_seed: int = 0) -> SyntheticSpec:
    """Draw ``num_classes`` distinct class definitions (deterministic in ``class_seed``)."""
    if not 2 <= num_classes <= 120:
        raise ValueError(f"num_classes must be in [2, 120], got {num_classes}")
    rng = np.random.default_rng([class_seed, 0x5EED])
    num_inter = round(num_classes * 11 / 60) if num_classes >= 6 else 0
    motions: list[ClassMotion] = []
    seen: set[tuple] = set()
    while len(motions) < num_classes:
        m = _draw_motion(rng, _GROUPS[rng.integers(len(_GROUPS))])
        if _signature(m) not in seen:  # distinct (joints, primitive, frequency, direction) per class
            seen.add(_signature(m))
            motions.append(m)
    partner: list[ClassMotion | None] = [None] * (num_classes - num_inter)
    partner += [_draw_motion(rng, _GROUPS[rng.integers(len(_GROUPS))]) for _ in range(num_inter)]
    return SyntheticSpec(num_classes, tuple(motions), tuple(partner))


@dataclass
class SyntheticData:
    """Arrays in the NTU layout plus the generator's bookkeeping."""

    data: np.ndarray  # float32 (N, 3, T, 25, 2)
    num_frame: np.ndarray  # int64 (N,)
    labels: np.ndarray  # int64 (N,)
    subjects: np.ndarray  # int64 (N,), 1-based
    cameras: np.ndarray  # int64 (N,), 1-based
    sample_names: list[str]


def _primitive(kind: np.ndarray, tau: np.ndarray, freq: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """Primitive values (B, T) for per-sample kind codes / freqs / phases (B,) at normalised time tau (B, T)."""
    periodic = np.sin(2 * np.pi * freq[:, None] * tau + phase[:, None])
    s = np.clip((tau - phase[:, None]) / 0.6, 0.0, 1.0)
    oneshot = np.sin(np.pi * s) ** 2
    r = np.clip((tau - phase[:, None]) / 0.25, 0.0, 1.0)
    hold = r * r * (3 - 2 * r)
    return np.where(kind[:, None] == 0, periodic, np.where(kind[:, None] == 1, oneshot, hold))


def _motion_table(motions: list[ClassMotion | None]) -> dict[str, np.ndarray]:
    """Pad the per-class DOF lists into arrays (C, K) for vectorised lookup; dof -1 = unused slot."""
    k = max(len(m.dofs) for m in motions if m is not None)
    c = len(motions)
    tab = {
        "dof": np.full((c, k), -1),
        "kind": np.zeros((c, k), dtype=np.int64),
        "amp": np.zeros((c, k)),
        "freq": np.ones((c, k)),
        "phase": np.zeros((c, k)),
    }
    for i, m in enumerate(motions):
        if m is None:
            continue
        n = len(m.dofs)
        tab["dof"][i, :n] = m.dofs
        tab["kind"][i, :n] = [_KINDS.index(x) for x in m.kinds]
        tab["amp"][i, :n] = m.amps
        tab["freq"][i, :n] = m.freqs
        tab["phase"][i, :n] = m.phases
    return tab


def _dof_trajectories(
    rng: np.random.Generator, labels: np.ndarray, motions: list[ClassMotion | None], tau: np.ndarray
) -> np.ndarray:
    """DOF values (B, T, NUM_DOFS): class primitives + idle sway, before subject offsets."""
    b, t = tau.shape
    tab = _motion_table(motions)
    scale = np.array([d[3] for d in _DOFS])
    nonneg = np.array([d[4] for d in _DOFS])
    start_phase = rng.uniform(0, 2 * np.pi, size=b)  # nuisance: where in its cycle the action starts
    onset_jitter = rng.uniform(-0.08, 0.08, size=b)
    amp_jitter = rng.uniform(0.8, 1.2, size=(b, tab["dof"].shape[1]))
    out = np.zeros((b, t, NUM_DOFS))
    for k in range(tab["dof"].shape[1]):
        dof = tab["dof"][labels, k]
        used = dof >= 0
        if not used.any():
            continue
        kind = tab["kind"][labels, k]
        phase = np.where(
            kind == 0, tab["phase"][labels, k] + start_phase, tab["phase"][labels, k] + onset_jitter
        )
        v = _primitive(kind, tau, tab["freq"][labels, k], phase)
        d = np.where(used, dof, 0)
        # non-negative DOFs (elbow, knee, raising an arm) map a periodic [-1, 1] onto [0, 1]
        v = np.where((nonneg[d] & (kind == 0))[:, None], 0.5 * (v + 1), v)
        val = v * (tab["amp"][labels, k] * amp_jitter[:, k] * scale[d] * used)[:, None]
        out += val[:, :, None] * (np.arange(NUM_DOFS)[None, :] == d[:, None])[:, None, :]
    # idle sway: two slow random sinusoids per DOF, a few per cent of its range
    for _ in range(2):
        f = rng.uniform(0.2, 1.5, size=(b, 1, NUM_DOFS))
        p = rng.uniform(0, 2 * np.pi, size=(b, 1, NUM_DOFS))
        a = rng.uniform(0.0, 0.06, size=(b, 1, NUM_DOFS)) * scale
        out += a * np.sin(2 * np.pi * f * tau[:, :, None] + p)
    return out


def _axis_rotation(axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) about a fixed unit ``axis`` by ``angle`` (...) (Rodrigues)."""
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]], dtype=angle.dtype)
    s, c = np.sin(angle)[..., None, None], np.cos(angle)[..., None, None]
    return np.eye(3, dtype=angle.dtype) + s * k + (1 - c) * (k @ k)


def _forward_kinematics(dof: np.ndarray, bone_scale: np.ndarray) -> np.ndarray:
    """Joint positions (B, T, 25, 3) in the body frame from DOF values (B, T, D) and bone scales (B, 25).

    numpy rather than torch: torch's CPU sin/cos are pathologically slow on some hosts (this one).
    """
    b, t, _ = dof.shape
    local: dict[int, np.ndarray] = {}
    for i, (_, joint, axis, _, _) in enumerate(_DOFS):
        if joint < 0:
            continue
        r = _axis_rotation(np.asarray(axis, dtype=dof.dtype), dof[..., i])
        local[joint] = r if joint not in local else local[joint] @ r
    rest = _REST.astype(dof.dtype)
    glob: dict[int, np.ndarray] = {}
    pos = np.zeros((b, t, NUM_JOINTS, 3), dtype=dof.dtype)
    pos[:, :, 0] = rest[0]
    for j in _ORDER:
        p = _PARENT[j]
        g = glob.get(p)
        if j in local:
            g = local[j] if g is None else g @ local[j]
        if g is not None:
            glob[j] = g
        offset = (rest[j] - rest[p]) * bone_scale[:, None, j, None]  # (B, 1, 3)
        step = offset if g is None else (g * offset[:, :, None, :]).sum(-1)
        pos[:, :, j] = pos[:, :, p] + step
    # root: height, yaw about the vertical through spine_base, step forward
    yaw = _axis_rotation(np.array([0.0, 1.0, 0.0], dtype=dof.dtype), dof[..., _IDX["root_yaw"]])
    pos = (yaw[:, :, None] * pos[..., None, :]).sum(-1)
    pos[..., 1] += dof[..., _IDX["root_height"], None]
    pos[..., 2] += dof[..., _IDX["root_step"], None]
    return pos


def _subject_params(num_subjects: int, seed: int, posture_std: float = 0.06) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([seed, 0x5B])
    height = rng.uniform(0.82, 1.15, size=num_subjects)
    # proportions: arms, legs, trunk scaled separately around the overall height
    bone = np.repeat(height[:, None], NUM_JOINTS, axis=1)
    groups = ([4, 5, 6, 7, 21, 22, 8, 9, 10, 11, 23, 24], [12, 13, 14, 15, 16, 17, 18, 19], [1, 20, 2, 3])
    for g in groups:
        bone[:, g] *= rng.uniform(0.92, 1.08, size=(num_subjects, 1))
    posture = rng.normal(0.0, posture_std, size=(num_subjects, NUM_DOFS)) * np.array([d[3] for d in _DOFS])
    posture[:, _IDX["root_yaw"]] = 0
    return {"bone": bone, "posture": posture}


def generate(
    num_samples: int = 6000,
    num_classes: int = 60,
    seed: int = 0,
    class_seed: int = 0,
    max_frames: int = 300,
    num_subjects: int = 40,
    min_frames: int = 32,
    noise_std: float = 0.01,
    missing_prob: float = 0.2,
    view_jitter_deg: float = 30.0,
    posture_std: float = 0.06,
    distortion: float = 0.0,
    chunk: int = 1024,
) -> SyntheticData:
    """Generate ``num_samples`` actions, labels balanced over ``num_classes`` (shuffled).

    Harder variants for showing what pretraining learns: ``posture_std`` scales each subject's
    resting-posture offsets (standard deviation in units of each DOF's range), ``distortion`` > 0
    gives every recording a body-frame linear distortion I + S with off-diagonal S ~ U(-a, a) (a
    calibration/proportion nuisance of the form the methods' shear augmentation draws).

    Returns camera-space coordinates (metres; Kinect-like: y up, z away from the camera) in
    data float32 (N, 3, max_frames, 25, 2), zero past ``num_frame`` and for an absent second body.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if not 8 <= min_frames <= max_frames:
        raise ValueError(f"need 8 <= min_frames <= max_frames, got {min_frames}, {max_frames}")
    spec = make_spec(num_classes, class_seed)
    subj = _subject_params(num_subjects, seed, posture_std)
    rng = np.random.default_rng([seed, 0xDA7A])
    labels = rng.permutation(np.arange(num_samples) % num_classes).astype(np.int64)
    subjects = rng.integers(1, num_subjects + 1, size=num_samples).astype(np.int64)
    partners = rng.integers(1, num_subjects + 1, size=num_samples).astype(np.int64)
    cameras = rng.integers(1, 4, size=num_samples).astype(np.int64)
    # lengths: log-normal around 90 frames as in NTU, clipped to [min_frames, max_frames]
    lengths = np.clip(np.exp(rng.normal(np.log(90), 0.45, size=num_samples)), min_frames, max_frames)
    lengths = lengths.astype(np.int64)
    data = np.zeros((num_samples, 3, max_frames, NUM_JOINTS, 2), dtype=np.float32)
    is_inter = np.array([p is not None for p in spec.partner])
    # chunks of similar length, so each renders only up to its own longest sample
    order = np.argsort(lengths, kind="stable")
    for c, lo in enumerate(range(0, num_samples, chunk)):
        idx = order[lo : lo + chunk]
        t_chunk = int(lengths[idx].max())
        crng = np.random.default_rng([seed, 0xC4, c])
        mix = None
        if distortion > 0:  # its own stream: every other draw (camera, noise, dropouts) stays as it was
            off_diagonal = np.random.default_rng([seed, 0xD1, c]).uniform(-1, 1, size=(len(idx), 3, 3))
            mix = (np.eye(3) + distortion * off_diagonal * (1 - np.eye(3))).astype(np.float32)
        data[idx, :, :t_chunk] = _render_chunk(
            crng, spec, subj, labels[idx], subjects[idx], partners[idx], cameras[idx], lengths[idx],
            t_chunk, noise_std, missing_prob, view_jitter_deg, is_inter, mix,
        )  # fmt: skip
    names = [
        f"S{1 + (i // 1000) % 999:03d}C{cameras[i]:03d}P{subjects[i]:03d}R{1 + i % 2:03d}A{labels[i] + 1:03d}_{i:06d}"
        for i in range(num_samples)
    ]
    return SyntheticData(data, lengths, labels, subjects, cameras, names)


_KEYS = 48  # poses are computed at 48 points of normalised time and interpolated per frame


def _render_chunk(
    rng: np.random.Generator,
    spec: SyntheticSpec,
    subj: dict[str, np.ndarray],
    labels: np.ndarray,
    subjects: np.ndarray,
    partners: np.ndarray,
    cameras: np.ndarray,
    lengths: np.ndarray,
    t_len: int,
    noise_std: float,
    missing_prob: float,
    view_jitter_deg: float,
    is_inter: np.ndarray,
    mix: np.ndarray | None = None,
) -> np.ndarray:
    b = len(labels)
    tau_keys = np.broadcast_to(np.linspace(0.0, 1.0, _KEYS), (b, _KEYS))
    inter = is_inter[labels]
    keys = np.zeros((b, _KEYS, NUM_JOINTS, 3, 2), dtype=np.float32)
    for person, motions, who in ((0, list(spec.motions), subjects), (1, list(spec.partner), partners)):
        rows = np.arange(b) if person == 0 else np.nonzero(inter)[0]
        if len(rows) == 0:
            continue
        lab = labels[rows]
        dof = (
            _dof_trajectories(rng, lab, motions, tau_keys[rows]) + subj["posture"][who[rows] - 1][:, None, :]
        )
        pos = _forward_kinematics(dof.astype(np.float32), subj["bone"][who[rows] - 1].astype(np.float32))
        if person == 1:  # person B stands 0.9-1.5 m in front of A, turned to face A
            pos = pos * np.array([-1.0, 1.0, -1.0], dtype=np.float32)
            gap = np.stack(
                [rng.normal(0, 0.1, len(rows)), np.zeros(len(rows)), rng.uniform(0.9, 1.5, len(rows))], -1
            )
            pos = pos + gap.astype(np.float32)[:, None, None, :]
        keys[rows, ..., person] = pos
    # speed nuisance: a monotone time warp of normalised time over each sample's own length
    frame = np.arange(t_len)[None, :]
    u = frame / lengths[:, None]
    tau = np.clip(u + rng.uniform(-0.12, 0.12, size=(b, 1)) * np.sin(2 * np.pi * u) / np.pi, 0.0, 1.0)
    pos_k = tau * (_KEYS - 1)
    k0 = np.minimum(np.floor(pos_k).astype(np.int64), _KEYS - 2)
    w = (pos_k - k0).astype(np.float32)[:, :, None, None, None]
    rows = np.arange(b)[:, None]
    xyz = keys[rows, k0] * (1 - w) + keys[rows, k0 + 1] * w  # (B, T, V, 3, M)
    if mix is not None:  # per-recording (B, 3, 3) linear distortion in the body frame
        xyz = np.einsum("bij,btvjm->btvim", mix, xyz)
    # camera: the person faces the camera (-z) turned by its yaw + jitter, small pitch, 2.5-3.5 m away
    yaw_deg = np.array([_CAMERA_YAW_DEG[int(c)] for c in cameras]) + rng.uniform(-1, 1, b) * view_jitter_deg
    yaw = np.deg2rad(yaw_deg) + np.pi
    pitch = np.deg2rad(rng.uniform(-10, 10, size=b))
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    zero, one = np.zeros(b), np.ones(b)
    r_yaw = np.stack(
        [np.stack([cy, zero, sy], -1), np.stack([zero, one, zero], -1), np.stack([-sy, zero, cy], -1)], -2
    )
    r_pitch = np.stack(
        [np.stack([one, zero, zero], -1), np.stack([zero, cp, -sp], -1), np.stack([zero, sp, cp], -1)], -2
    )
    rot = (r_pitch @ r_yaw).astype(np.float32)
    shift = np.stack([rng.uniform(-0.5, 0.5, b), rng.uniform(-1.0, -0.6, b), rng.uniform(2.5, 3.5, b)], -1)
    pts = xyz.transpose(0, 1, 2, 4, 3).reshape(b, -1, 3)  # (B, T*V*M, 3)
    pts = pts @ rot.transpose(0, 2, 1) + shift.astype(np.float32)[:, None, :]
    pts += noise_std * rng.standard_normal(pts.shape, dtype=np.float32)
    out = np.ascontiguousarray(
        pts.reshape(b, t_len, NUM_JOINTS, 2, 3).transpose(0, 4, 1, 2, 3)
    )  # (B, 3, T, V, M)
    # missing joints: a random extremity drops out (zeros) for a stretch of frames
    drop = rng.random(b) < missing_prob
    joint = rng.choice([3, 7, 11, 15, 19, 21, 22, 23, 24], size=b)
    start = (rng.random(b) * lengths * 0.8).astype(np.int64)
    stop = start + 1 + (rng.random(b) * lengths * 0.3).astype(np.int64)
    gone_b, gone_t = np.nonzero(drop[:, None] & (frame >= start[:, None]) & (frame < stop[:, None]))
    out[gone_b, :, gone_t, joint[gone_b]] = 0.0
    out[~inter, ..., 1] = 0.0
    past_b, past_t = np.nonzero(frame >= lengths[:, None])
    out[past_b, :, past_t] = 0.0
    return out


def split_indices(subjects: np.ndarray, cameras: np.ndarray, benchmark: str, part: str) -> np.ndarray:
    """Indices of ``part`` ('train' | 'val') under ``benchmark`` ('xsub' | 'xview'), NTU-60 rules."""
    if benchmark == "xsub":
        train = np.isin(subjects, XSUB_TRAIN_SUBJECTS)
    elif benchmark == "xview":
        train = np.isin(cameras, XVIEW_TRAIN_CAMERAS)
    else:
        raise ValueError(f"unknown synthetic benchmark {benchmark!r}; expected 'xsub' or 'xview'")
    if part not in ("train", "val"):
        raise ValueError(f"unknown part {part!r}; expected 'train' or 'val'")
    return np.nonzero(train if part == "train" else ~train)[0]


def write_synthetic(
    out_dir: str | Path,
    num_samples: int = 6000,
    num_classes: int = 60,
    seed: int = 0,
    normalization: str = "agcn",
    benchmarks: tuple[str, ...] = ("xsub", "xview"),
    **kwargs: object,
) -> SyntheticData:
    """Generate and write ``<out_dir>/<benchmark>/{train,val}_{data_joint.npy,num_frame.npy,label.json}``.

    ``normalization`` is one of ``skelfast.data.normalize.NORMALIZATIONS`` ('agcn' by default: the
    same arrays the NTU converter writes).
    """
    from skelfast.data import normalize, storage

    synth = generate(num_samples, num_classes, seed, **kwargs)  # type: ignore[arg-type]
    data, num_frame = normalize.normalize(synth.data, synth.num_frame, normalization)
    for bench in benchmarks:
        for part in storage.PARTS:
            idx = split_indices(synth.subjects, synth.cameras, bench, part)
            storage.save_split(
                Path(out_dir) / bench, part, data[idx], num_frame[idx], synth.labels[idx],
                [synth.sample_names[i] for i in idx],
            )  # fmt: skip
    return synth


def joint_angle_features(data: np.ndarray, num_frame: np.ndarray, frames: int = 32) -> np.ndarray:
    """View-, size- and speed-invariant features (N, F): the "oracle" that undoes the nuisances.

    Angles between bone pairs (the articulations the classes drive) plus body height, resampled over
    each sample's own length to ``frames`` steps, then the magnitudes of their first 6 temporal
    Fourier coefficients (start-phase invariant) and the resampled series itself.
    """
    x = np.asarray(data, dtype=np.float64).transpose(0, 4, 2, 3, 1)  # (N, M, T, V, C)
    n = x.shape[0]
    pairs = [((20, 1), (1, 0)), ((20, 2), (2, 3)), ((4, 5), (20, 1)), ((4, 5), (4, 8)), ((5, 6), (4, 5)),
             ((8, 9), (20, 1)), ((8, 9), (8, 4)), ((9, 10), (8, 9)), ((12, 13), (1, 0)), ((13, 14), (12, 13)),
             ((16, 17), (1, 0)), ((17, 18), (16, 17)), ((4, 8), (12, 16))]  # fmt: skip
    feats = []
    lengths = np.clip(np.asarray(num_frame), 2, x.shape[2])
    src = (np.arange(frames)[None, :] + 0.5) / frames * lengths[:, None]
    idx = np.clip(src.astype(np.int64), 0, lengths[:, None] - 1)
    for m in range(x.shape[1]):
        body = x[np.arange(n)[:, None], m, idx]  # (N, frames, V, C)
        series = []
        for (a0, a1), (b0, b1) in pairs:
            u, v = body[:, :, a1] - body[:, :, a0], body[:, :, b1] - body[:, :, b0]
            cos = (u * v).sum(-1) / (np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1) + 1e-6)
            series.append(np.arccos(np.clip(cos, -1, 1)))
        # trunk-relative height of the spine base over the feet, and the gap to the other body
        series.append(np.linalg.norm(body[:, :, 0] - 0.5 * (body[:, :, 15] + body[:, :, 19]), axis=-1))
        other = x[np.arange(n)[:, None], 1 - m, idx]
        series.append(
            np.linalg.norm(body[:, :, 1] - other[:, :, 1], axis=-1) * (np.abs(other).sum((2, 3)) > 0)
        )
        s = np.stack(series, -1)  # (N, frames, S)
        spec = np.abs(np.fft.rfft(s - s.mean(1, keepdims=True), axis=1))[:, 1:7] / frames
        feats += [s.mean(1), s.std(1), spec.reshape(n, -1)]
    return np.concatenate(feats, axis=1)
