"""HiCo: hierarchical contrast (Dong et al., AAAI 2023), the official ``HuiGuanLab/HiCo`` pretraining.

Spec: ``spec/hico_hiclr.md`` PART 1 (§1.2 views, §1.3-1.5 encoder and heads, §1.6 the contrast,
§1.7 the recipe, §1.8 the evaluation transform, §1.10 pitfalls). One step:

1. two independent views (query, key) of the batch with the ``HiCo`` recipe (crop-resize to 64
   frames, then shear or joint corruption), each split into the time-majored and space-majored
   domains (``hico_inputs``);
2. the query encoder; the EMA update of the key encoder (before the key pass); the key encoder
   under ``no_grad``. The whole method is in train mode, so the Transformer's dropout is active in
   both encoders, as in the official code;
3. five levels in ONE ``skelfast.ops.info_nce`` call over one ``MemoryQueue`` bank: clip and part
   (the finest query granularity against all G key granularities, ``-log sum_g softmax_g``), the
   cross-domain temporal and spatial levels (temporal query vs spatial key and spatial queue, and
   vice versa), and the instance level; the loss is their sum, every weight 1;
4. N*G clip and part keys and N temporal, spatial and instance keys enter the queues.

Quirk (spec §1.6, §1.10.1): the clip and part queues hold G*K rows but their pointers wrap modulo K,
so only the first K rows are ever refreshed (``clip_queue_wrap="official"``); ``"corrected"`` wraps
at G*K and refreshes the whole queue.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import record_function

from skelfast.augment.params import STREAMS, AugmentParams
from skelfast.augment.recipes import CropResizeSpatial
from skelfast.methods.base import FeatureEncoder, MethodConfig, PretrainMethod, StepOutput
from skelfast.methods.moco import momentum_copy, momentum_update
from skelfast.nn.hico import ENCODERS, HiCoEncoder, HiCoProjections, hico_inputs
from skelfast.ops import augment
from skelfast.ops.info_nce import info_nce
from skelfast.queue import MemoryQueue

# the five levels, in the order of the bank, of the loss and of ``StepOutput.terms``
LEVELS = ("clip", "part", "temporal", "spatial", "instance")
CLIP, PART, TEMPORAL, SPATIAL, INSTANCE = range(5)
# the queue of each loss level's negatives: the domain levels are crossed (spec §1.6), the temporal
# query contrasts with the spatial queue and the spatial query with the temporal queue
NEGATIVES = (CLIP, PART, SPATIAL, TEMPORAL, INSTANCE)
CLIP_QUEUE_WRAPS = ("official", "corrected")
EVAL_TRAIN_TRANSFORMS = ("centre", "random-crop")


@dataclass(frozen=True)
class CentreCrop:
    """HiCo's evaluation transform (``crop_subsequence`` with ``l_ratio=[0.95]``, spec §1.8):
    ``start = int((1 - ratio) * n / 2)``, frames ``[start, n - start)`` resized linearly onto
    ``t_out`` frames (``F.interpolate(bilinear, align_corners=False)`` in time); no augmentation.
    Deterministic: the generator is accepted for the recipe interface and not used."""

    ratio: float = 0.95
    t_out: int = 64
    stream: str = "joint"

    def sample(self, valid: torch.Tensor, num_joints: int, generator: torch.Generator) -> AugmentParams:
        """valid (N,) frame counts -> AugmentParams of the centre crop."""
        valid = valid.to(torch.int64).cpu()
        # the official arithmetic in float64: (1 - 0.95) is 0.050000000000000044, then int() truncates
        start = torch.floor((1.0 - self.ratio) * valid.to(torch.float64) / 2.0).to(torch.int64)
        p = AugmentParams.identity(valid, num_joints, self.t_out, self.stream)
        return p.replace(start=start, length=valid - 2 * start)


@dataclass
class HiCoConfig(MethodConfig):
    """HiCo's options; the defaults are the official NTU-60 recipe (``run_pretraining.sh``,
    ``options/options_pretraining.py``, ``hico/builder.py``)."""

    # encoder (``encoder_arguments``): GRU, LSTM or Transformer (the options' default)
    encoder: str = "Transformer"
    hidden_size: int = 512
    num_head: int = 4
    num_layer: int = 1
    granularity: int = 4
    kernel_size: int = 5
    stride: int = 1
    padding: int = 2
    factor: int = 2
    dropout: float = 0.1  # nn.TransformerEncoderLayer's default; GRU/LSTM have none with one layer
    feature_dim: int = 128  # projection dim (``--hico-dim``)
    # input layout: t_input = num_bodies * num_joints * 3, s_input = frames * 3
    frames: int = 64
    num_joints: int = 25
    num_bodies: int = 2
    stream: str = "joint"  # --skeleton-representation: joint, bone or motion
    # MoCo (run_pretraining.sh: --hico-t 0.2 --hico-k 2048; --hico-m default 0.999)
    queue_size: int = 2048  # K: temporal, spatial and instance queues; clip and part hold G * K
    temperature: float = 0.2
    momentum: float = 0.999
    # views (feeder/augmentations.py, spec §1.2)
    crop_ratio: tuple[float, float] = (0.1, 1.0)
    min_crop_length: int = 64
    shear_amplitude: float = 1.0
    p_corrupt: float = 0.5
    corrupt_joints: int = 15
    # quirk (spec §1.6): clip/part pointers wrap at K ("official") or at G * K ("corrected")
    clip_queue_wrap: str = "official"
    # evaluation transform (spec §1.8): centre crop 0.95; linear-eval training uses the same since
    # 2022-12-05 ("centre"); before, a random crop U(0.5, 1) with at least 64 frames ("random-crop")
    eval_crop_ratio: float = 0.95
    eval_train_transform: str = "centre"

    def __post_init__(self) -> None:
        names = {e.lower(): e for e in ENCODERS}
        if str(self.encoder).lower() not in names:
            raise ValueError(f"HiCoConfig: encoder must be one of {ENCODERS}, got {self.encoder!r}")
        self.encoder = names[str(self.encoder).lower()]
        self.crop_ratio = tuple(float(r) for r in self.crop_ratio)
        checks = [
            (self.stream in STREAMS, f"stream must be one of {STREAMS}, got {self.stream!r}"),
            (
                self.clip_queue_wrap in CLIP_QUEUE_WRAPS,
                f"clip_queue_wrap must be one of {CLIP_QUEUE_WRAPS}, got {self.clip_queue_wrap!r}",
            ),
            (
                self.eval_train_transform in EVAL_TRAIN_TRANSFORMS,
                f"eval_train_transform must be one of {EVAL_TRAIN_TRANSFORMS}, got {self.eval_train_transform!r}",
            ),
            (self.queue_size >= 1, f"queue_size must be >= 1, got {self.queue_size}"),
            (self.temperature > 0, f"temperature must be > 0, got {self.temperature}"),
            (0.0 <= self.momentum <= 1.0, f"momentum must be in [0, 1], got {self.momentum}"),
            (0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}"),
            (self.granularity >= 1, f"granularity must be >= 1, got {self.granularity}"),
            (
                self.frames >= 1 and self.num_joints >= 1 and self.num_bodies >= 1,
                "frames, joints, bodies >= 1",
            ),
            (
                len(self.crop_ratio) == 2 and 0 < self.crop_ratio[0] <= self.crop_ratio[1],
                f"crop_ratio must be (low, high) with 0 < low <= high, got {self.crop_ratio}",
            ),
            (0 < self.eval_crop_ratio <= 1, f"eval_crop_ratio must be in (0, 1], got {self.eval_crop_ratio}"),
            (
                0 <= self.corrupt_joints <= self.num_joints,
                f"corrupt_joints must be in [0, num_joints={self.num_joints}], got {self.corrupt_joints}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"HiCoConfig: {message}")


def set_dropout(module: nn.Module, p: float) -> None:
    """Set every dropout probability inside ``module`` (nn.Dropout layers and the attention
    weights' dropout of nn.MultiheadAttention) to p."""
    for m in module.modules():
        if isinstance(m, nn.Dropout):
            m.p = p
        elif isinstance(m, nn.MultiheadAttention):
            m.dropout = p


class HiCoFeatures(FeatureEncoder):
    """HiCo's evaluation feature: vi = concat(flatten(vc), flatten(vp)), (N, 2 * G * hidden) = (N, 4096),
    from a clip already transformed by ``test_recipe`` / ``train_recipe`` (the centre crop)."""

    def features(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x (N, 3, frames, V, M) -> vi (N, feature_dim)."""
        xc, xp = hico_inputs(x)
        dtype = next(self.module.parameters()).dtype
        return self.module.representation(xc.to(dtype), xp.to(dtype))


class HiCo(PretrainMethod):
    """HiCo pretraining (see the module docstring). ``encoder_q`` is trained by SGD, ``encoder_k``
    is its EMA (a copy at the start: identical weights); ``queue`` holds the five levels
    ``[clip G*K, part G*K, temporal K, spatial K, instance K]``."""

    name = "hico"
    config_class = HiCoConfig

    def __init__(self, config: HiCoConfig | None = None) -> None:
        config = config if config is not None else HiCoConfig()
        super().__init__(config)
        c = config
        self.encoder_q = HiCoEncoder(
            c.encoder,
            t_input_size=c.num_bodies * c.num_joints * 3,
            s_input_size=c.frames * 3,
            kernel_size=c.kernel_size,
            stride=c.stride,
            padding=c.padding,
            factor=c.factor,
            hidden_size=c.hidden_size,
            num_head=c.num_head,
            num_layer=c.num_layer,
            granularity=c.granularity,
            num_class=c.feature_dim,
        )
        set_dropout(self.encoder_q, c.dropout)
        # the official code initialises both, then copies the query's weights into the key
        self.encoder_k = momentum_copy(self.encoder_q)
        g, k = c.granularity, c.queue_size
        wrap = g * k if c.clip_queue_wrap == "corrected" else k
        self.queue = MemoryQueue([g * k, g * k, k, k, k], c.feature_dim, wrap_at=[wrap, wrap, k, k, k])
        self.recipe = CropResizeSpatial(
            t_out=c.frames,
            min_length=c.min_crop_length,
            ratio=c.crop_ratio,
            shear_amplitude=c.shear_amplitude,
            p_corrupt=c.p_corrupt,
            corrupt_joints=c.corrupt_joints,
            stream=c.stream,
        )

    # --- one step ---------------------------------------------------------------------------------

    def _check_batch(self, x: torch.Tensor, lengths: torch.Tensor) -> None:
        c = self.config
        if x.dim() != 5 or x.shape[1] != 3 or x.shape[3] != c.num_joints or x.shape[4] != c.num_bodies:
            raise ValueError(
                f"HiCo: x must be (N, 3, T, V={c.num_joints}, M={c.num_bodies}), got {tuple(x.shape)}"
            )
        if tuple(lengths.shape) != (x.shape[0],):
            raise ValueError(f"HiCo: lengths must be (N,) = ({x.shape[0]},), got {tuple(lengths.shape)}")

    def view(
        self, x: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One augmented view in the encoder's two domains: xc (N, frames, M*V*3), xp (N, M*V, frames*3),
        in the encoder's dtype. Draws the view's parameters from ``generator``."""
        params = self.recipe.sample(lengths.cpu(), x.shape[3], generator).to(x.device)
        clip = augment(x, lengths, params)
        dtype = self.encoder_q.clip_proj[0].weight.dtype
        xc, xp = hico_inputs(clip)
        return xc.to(dtype), xp.to(dtype)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator) -> StepOutput:
        """One training step's forward on x (N, 3, T, V, M) with valid lengths (N,): the loss (sum of
        the five levels) and ``terms`` {clip, part, temporal, spatial, instance} (detached)."""
        self._check_batch(x, lengths)
        c = self.config
        with record_function("skelfast.hico.views"):
            q_inputs = self.view(x, lengths, generator)  # the query's view first, then the key's
            k_inputs = self.view(x, lengths, generator)
        with record_function("skelfast.hico.query"):
            q = _normalized(self.encoder_q(*q_inputs))
        with record_function("skelfast.hico.key_update"):
            momentum_update(self.encoder_k, self.encoder_q, c.momentum)
        with record_function("skelfast.hico.key"), torch.no_grad():
            k = _normalized(self.encoder_k(*k_inputs))
        with record_function("skelfast.hico.loss"):
            # a snapshot: info_nce saves the bank for backward, and enqueue writes it in place
            bank = self.queue.bank.clone()
            ranges = [self.queue.ranges[lvl] for lvl in NEGATIVES]
            queries = [q.zc[:, 0], q.zp[:, 0], q.zt, q.zs, q.zi]  # only the finest clip/part query
            positives = [k.zc, k.zp, k.zs, k.zt, k.zi]  # all G key granularities; domains crossed
            out = info_nce(
                [t.to(bank.dtype) for t in queries],  # under autocast the heads give half precision
                [t.to(bank.dtype) for t in positives],
                bank,
                c.temperature,
                queue_ranges=ranges,
            )
            loss = out.losses.sum()
        with record_function("skelfast.hico.enqueue"):
            self.queue.enqueue(k.zc.reshape(-1, k.zc.shape[-1]), CLIP)  # row n * G + g, as official
            self.queue.enqueue(k.zp.reshape(-1, k.zp.shape[-1]), PART)
            self.queue.enqueue(k.zt, TEMPORAL)
            self.queue.enqueue(k.zs, SPATIAL)
            self.queue.enqueue(k.zi, INSTANCE)
        terms = {name: value.detach() for name, value in zip(LEVELS, out.losses, strict=True)}
        return StepOutput(loss, terms)

    # --- evaluation ---------------------------------------------------------------------------------

    def feature_encoder(self) -> HiCoFeatures:
        """The query encoder's 4096-d vi, read through the centre crop 0.95 -> ``frames`` (spec §1.8)."""
        c = self.config
        test = CentreCrop(ratio=c.eval_crop_ratio, t_out=c.frames, stream=c.stream)
        train = test
        if c.eval_train_transform == "random-crop":  # the downstream feeder before 2022-12-05
            train = CropResizeSpatial(
                t_out=c.frames,
                min_length=c.min_crop_length,
                ratio=(0.5, 1.0),
                shear_amplitude=0.0,
                p_corrupt=0.0,
                stream=c.stream,
            )
        dim = 2 * c.granularity * c.hidden_size
        return HiCoFeatures(self.encoder_q, dim, test_recipe=test, train_recipe=train)


def _normalized(z: HiCoProjections) -> HiCoProjections:
    """Every projection L2-normalised along its feature dimension (the official F.normalize)."""
    return HiCoProjections(*(F.normalize(t, dim=-1) for t in z))
