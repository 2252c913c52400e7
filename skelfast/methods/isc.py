"""ISC, inter-skeleton contrast (skeleton-contrast, ACM MM 2021; spec/isc_crrl.md §1).

MoCo in which the positive key of a query comes from the *other* input representation of the same
clip: a sequence (``ISCSeqEncoder``, the stepped "BiGRU"), a graph (``AGCN``) or an image (``HCN``).
With representations s1, s2 there are four encoders, named as the official ``builder_inter.MoCo``:
``encoder_q`` / ``encoder_k`` (query / momentum key of s1) and ``encoder_r`` / ``encoder_l`` (of s2),
and two queues, Queue_S1 of past keys k and Queue_S2 of past keys l. The loss crosses them:

    L = CE([q.l, q.Queue_S2] / tau, 0) + CE([r.k, r.Queue_S1] / tau, 0)

Here both terms are one ``skelfast.ops.info_nce`` call with two levels over one two-level
``MemoryQueue`` (level 0 = Queue_S1, level 1 = Queue_S2): level "s1" reads the bank rows of level 1
and level "s2" those of level 0. A single representation (``pair="seq"``, ``"graph"`` or
``"image"``) is the intra-skeleton variant (``builder_intra``): plain MoCo, ``CE([q.k, q.queue]/tau)``.

One augmented view feeds both representations: view 1 (queries) and view 2 (keys) are each drawn
once with the ISC recipe (crop-resize to 64 frames, then shear or joint corruption) and formatted
as the (N, 64, 150) sequence (``seq_input``: index 6 v + 2 c + m) or kept as (N, 3, 64, 25, 2).

Faithful by default; see ``ISCConfig`` for the quirk switches. The official run wrapped the module
in ``nn.DataParallel`` on 4 GPUs, under which only replica 0's queue writes (16 of the 64 keys) may
have persisted (spec §1.8.7, unverified); that is not reproduced: keys of every rank are gathered
into the queues (``MemoryQueue.enqueue``) and the momentum update persists.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import record_function

from skelfast.augment.params import AugmentParams
from skelfast.augment.recipes import CropResizeSpatial, crop_resize_window
from skelfast.methods.base import FeatureEncoder, MethodConfig, PretrainMethod, StepOutput
from skelfast.methods.moco import momentum_copy, momentum_update
from skelfast.nn.agcn import AGCN
from skelfast.nn.gru import ISCSeqEncoder
from skelfast.nn.hcn import HCN
from skelfast.ops import augment, info_nce
from skelfast.ops.info_nce import InfoNCEOutput
from skelfast.queue import MemoryQueue

REPRESENTATIONS = ("seq", "graph", "image")
PAIRS = ("seq-graph", "seq-image", "graph-image")  # the official --skeleton-representation choices


# --- evaluation transforms (spec §1.6) --------------------------------------------------------


@dataclass(frozen=True)
class CentreCropResize:
    """ISC's test transform (``crop_subsequence`` with one ratio p): start = int((1 - p) n / 2) in
    float64 as the official Python, frames [start, n - start) resized linearly onto ``t_out``;
    deterministic (the generator is not used)."""

    ratio: float = 0.95
    t_out: int = 64
    stream: str = "joint"

    def sample(self, valid: torch.Tensor, num_joints: int, generator: torch.Generator) -> AugmentParams:
        """valid (N,) frame counts -> AugmentParams of the centre crops."""
        valid = valid.to(torch.int64).cpu()
        start = torch.floor((1.0 - self.ratio) * valid.to(torch.float64) / 2).to(torch.int64)
        p = AugmentParams.identity(valid, num_joints, self.t_out, self.stream)
        return p.replace(start=start, length=valid - 2 * start)


@dataclass(frozen=True)
class RandomCropResize:
    """ISC's linear-evaluation training transform (``crop_subsequence`` with ratio [0.5, 1]):
    scale ~ U(ratio), L = min(max(floor(n scale), min_length), n), start ~ randint[0, n - L],
    resized onto ``t_out``; no spatial augmentation."""

    ratio: tuple[float, float] = (0.5, 1.0)
    min_length: int = 64
    t_out: int = 64
    stream: str = "joint"

    def sample(self, valid: torch.Tensor, num_joints: int, generator: torch.Generator) -> AugmentParams:
        """valid (N,) frame counts -> AugmentParams of random crops."""
        start, length = crop_resize_window(valid, self.ratio, self.min_length, generator)
        p = AugmentParams.identity(valid.cpu(), num_joints, self.t_out, self.stream)
        return p.replace(start=start, length=length)


# --- input formats and encoders ---------------------------------------------------------------


def seq_input(x: torch.Tensor) -> torch.Tensor:
    """ISC's sequence representation: (N, C, T, V, M) -> (N, T, V * C * M), frame vector index
    ``v * C * M + c * M + m`` (6 v + 2 c + m for NTU): the official permute (C,T,V,M)->(T,V,C,M)
    and flatten, joint-major, then coordinate, then body."""
    if x.dim() != 5:
        raise ValueError(f"seq_input: x must be (N, C, T, V, M), got {tuple(x.shape)}")
    n, c, t, v, m = x.shape
    return x.permute(0, 2, 3, 1, 4).reshape(n, t, v * c * m)


def format_input(representation: str, x: torch.Tensor) -> torch.Tensor:
    """A view (N, C, T, V, M) as the encoder of ``representation`` reads it: (N, T, C*V*M) for
    ``seq``, unchanged for ``graph`` and ``image``."""
    return seq_input(x) if representation == "seq" else x


class BidirectionalSeqEncoder(ISCSeqEncoder):
    """The corrected sequence encoder (``gru_causal=False``): the same parameters (official keys
    load unchanged) run as a genuine bidirectional GRU over the whole clip. ``representation`` is
    the forward direction's top output at the last frame and the backward direction's at the first
    (each has read the whole clip), (N, 2 * hidden_size)."""

    def sequence(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, T, input_size) -> (N, T, 2 * hidden_size), forward then backward halves."""
        if x.dim() != 3 or x.shape[2] != self.encoder.gru.input_size:
            raise ValueError(
                f"BidirectionalSeqEncoder: x must be (N, T, {self.encoder.gru.input_size}), got {tuple(x.shape)}"
            )
        return self.encoder.gru(x)[0]

    def representation(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, T, input_size) -> (N, 2 * hidden_size)."""
        out = self.sequence(x)
        return torch.cat([out[:, -1, : self.hidden_size], out[:, 0, self.hidden_size :]], dim=1)


@dataclass
class ISCConfig(MethodConfig):
    """ISC's options; defaults are the official NTU recipe (``script_pretrain.sh``,
    ``options_pretraining.py``).

    pair: ``"seq-graph"`` (official), ``"seq-image"`` (crashes as released: ``GRU_model`` is
        undefined; here it uses the same GRU), ``"graph-image"``; a single representation
        (``"seq"``, ``"graph"``, ``"image"``) is the intra-skeleton variant (one MoCo term).
    feature: the query encoder ``feature_encoder()`` evaluates: ``"auto"`` = the first of the pair
        (the seq encoder ``encoder_q`` of the official seq-graph run, 2048-d), or ``"seq"`` /
        ``"graph"`` (256-d) / ``"image"`` (4096-d) from the pair.
    frames: length of every view (and the crop floor; official 64). Tests shrink it; the image
        encoder needs a multiple of 16.
    gru_hidden, gru_layers, hcn_channels, agcn_channels: encoder sizes (official 1024, 3, 64, 64);
        agcn_channels is the AGCN's first width (its units have 1x, 2x and 4x that many channels).
    hcn_dropout: the image encoder's three Dropout2d rates (official 0.5). On the demos' synthetic
        data the channel dropout keeps the HCN from learning (the loss of the seq-image pair stays
        near 2 ln(K + 1)); 0 lets it learn (skelfast/configs/isc_demo.toml).
    gru_causal (quirk, spec §1.3): True runs the official per-frame stepping, under which both
        "directions" read forwards; False runs a genuine bidirectional GRU (``BidirectionalSeqEncoder``).
    """

    pair: str = "seq-graph"
    queue_size: int = 16384
    temperature: float = 0.07
    momentum: float = 0.999
    dim: int = 128
    mlp: bool = True
    feature: str = "auto"
    frames: int = 64
    crop_ratio: tuple[float, float] = (0.1, 1.0)
    shear_amplitude: float = 1.0  # the spatial view: shear U(-a, a) or, with p_corrupt, joint corruption
    p_corrupt: float = 0.5
    num_joints: int = 25
    num_bodies: int = 2
    gru_hidden: int = 1024
    gru_layers: int = 3
    hcn_channels: int = 64
    hcn_dropout: float = 0.5
    agcn_channels: int = 64
    gru_causal: bool = True

    def representations(self) -> tuple[str, ...]:
        """The representation(s) trained: two for inter-skeleton, one for intra-skeleton."""
        return tuple(self.pair.split("-"))

    def validate(self) -> None:
        """Raise ValueError naming the first inconsistent option."""
        if self.pair not in PAIRS + REPRESENTATIONS:
            raise ValueError(f"ISC: pair must be one of {PAIRS + REPRESENTATIONS}, got {self.pair!r}")
        reps = self.representations()
        if self.feature != "auto" and self.feature not in reps:
            raise ValueError(f"ISC: feature={self.feature!r} is not a representation of pair={self.pair!r}")
        if self.queue_size < 1 or self.dim < 1 or self.frames < 1:
            raise ValueError(
                f"ISC: queue_size, dim and frames must be >= 1, got {self.queue_size}, {self.dim}, {self.frames}"
            )
        if not 0.0 <= self.momentum <= 1.0 or self.temperature <= 0:
            raise ValueError(
                f"ISC: need 0 <= momentum <= 1 and temperature > 0, got {self.momentum}, {self.temperature}"
            )
        if self.shear_amplitude < 0 or not 0.0 <= self.p_corrupt <= 1.0:
            raise ValueError(
                f"ISC: need shear_amplitude >= 0 and 0 <= p_corrupt <= 1, got {self.shear_amplitude}, {self.p_corrupt}"
            )
        if not 0.0 <= self.hcn_dropout < 1.0:
            raise ValueError(f"ISC: hcn_dropout must be in [0, 1), got {self.hcn_dropout}")
        if self.agcn_channels < 4:
            raise ValueError(f"ISC: agcn_channels must be >= 4, got {self.agcn_channels}")
        if "image" in reps and self.frames % 16:
            raise ValueError(f"ISC: the image encoder (HCN) needs frames divisible by 16, got {self.frames}")


def build_encoder(config: ISCConfig, representation: str) -> nn.Module:
    """A query encoder (with its projection head) of one representation, sized by ``config``."""
    c, v, m = 3, config.num_joints, config.num_bodies
    if representation == "seq":
        cls = ISCSeqEncoder if config.gru_causal else BidirectionalSeqEncoder
        return cls(c * v * m, config.gru_hidden, config.gru_layers, config.dim, config.mlp)
    if representation == "graph":
        return AGCN(
            num_class=config.dim,
            num_point=v,
            num_person=m,
            in_channels=c,
            mlp=config.mlp,
            base_channels=config.agcn_channels,
        )
    if representation == "image":
        return HCN(c, v, m, config.hcn_channels, config.frames, config.dim, config.mlp, config.hcn_dropout)
    raise ValueError(f"ISC: unknown representation {representation!r}; known: {REPRESENTATIONS}")


def _feature_dim(encoder: nn.Module) -> int:
    head = encoder.fc[0] if isinstance(encoder.fc, nn.Sequential) else encoder.fc
    return head.in_features


class ISCFeatures(FeatureEncoder):
    """One ISC query encoder for the downstream protocols: (N, 3, T, V, M) already cropped to the
    view length -> its representation before the head (seq 2 * gru_hidden, graph 256, image 4096).
    Test transform: centre crop 0.95; linear-eval training: random crop ratio U[0.5, 1]."""

    def __init__(self, encoder: nn.Module, representation: str, frames: int) -> None:
        super().__init__(
            encoder,
            _feature_dim(encoder),
            test_recipe=CentreCropResize(0.95, frames),
            train_recipe=RandomCropResize((0.5, 1.0), frames, frames),
        )
        self.representation = representation

    def features(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x (N, 3, T, V, M), lengths (N,) (unused: views are resized to full length) -> (N, F)."""
        return self.module.representation(format_input(self.representation, x))


class ISC(PretrainMethod):
    """Inter-skeleton contrast (see the module docstring); ``pair`` picks the representations."""

    name = "isc"
    config_class = ISCConfig

    def __init__(self, config: ISCConfig | None = None) -> None:
        config = config if config is not None else ISCConfig()
        config.validate()
        super().__init__(config)
        self.reps = config.representations()
        self.recipe = CropResizeSpatial(
            t_out=config.frames,
            min_length=config.frames,
            ratio=tuple(config.crop_ratio),
            shear_amplitude=config.shear_amplitude,
            p_corrupt=config.p_corrupt,
        )
        # official names: q/k for representation s1, r/l for s2; keys start as exact copies
        self.encoder_q = build_encoder(config, self.reps[0])
        self.encoder_k = momentum_copy(self.encoder_q)
        if len(self.reps) == 2:
            self.encoder_r = build_encoder(config, self.reps[1])
            self.encoder_l = momentum_copy(self.encoder_r)
        # level 0: Queue_S1 (past keys k), level 1: Queue_S2 (past keys l)
        self.queue = MemoryQueue([config.queue_size] * len(self.reps), config.dim)

    @property
    def inter(self) -> bool:
        """True for inter-skeleton contrast (two representations)."""
        return len(self.reps) == 2

    def _check_batch(self, x: torch.Tensor, lengths: torch.Tensor) -> None:
        cfg = self.config
        if x.dim() != 5 or x.shape[1] != 3 or x.shape[3] != cfg.num_joints or x.shape[4] != cfg.num_bodies:
            raise ValueError(
                f"ISC: x must be (N, 3, T, {cfg.num_joints}, {cfg.num_bodies}), got {tuple(x.shape)}"
            )
        if lengths.shape != (x.shape[0],) or lengths.dtype.is_floating_point:
            raise ValueError(
                f"ISC: lengths must be (N,) = ({x.shape[0]},) integers, got {tuple(lengths.shape)} {lengths.dtype}"
            )
        if x.shape[0] < 1:
            raise ValueError("ISC: a training batch needs at least 1 sample")

    def draw_view(self, x: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One ISC view of the batch: x (N, 3, T, V, M) -> (N, 3, frames, V, M) (recipe drawn on the
        CPU from ``generator``, applied with ``skelfast.ops.augment`` on x's device)."""
        params = self.recipe.sample(lengths.cpu(), x.shape[3], generator).to(x.device)
        return augment(x, lengths.to(x.device), params)

    def _embed(self, encoder: nn.Module, representation: str, view: torch.Tensor) -> torch.Tensor:
        """L2-normalised projection (N, dim) in the queue's dtype (the encoders may run under autocast)."""
        z = encoder(format_input(representation, view))
        return F.normalize(z.to(self.queue.bank.dtype), dim=1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator) -> StepOutput:
        """One step: x (N, 3, T, V, M), lengths (N,) -> StepOutput(loss, {nce_s1, acc_s1[, nce_s2,
        acc_s2]}); ``acc`` is the official contrast top-1 (the positive beats every queue entry)."""
        self._check_batch(x, lengths)
        cfg = self.config
        with record_function("skelfast.isc.views"):
            view_q = self.draw_view(x, lengths, generator)
            view_k = self.draw_view(x, lengths, generator)
        s1, s2 = self.reps[0], self.reps[-1]
        with record_function("skelfast.isc.query"):
            q = self._embed(self.encoder_q, s1, view_q)
            r = self._embed(self.encoder_r, s2, view_q) if self.inter else None
        with record_function("skelfast.isc.key_update"):
            momentum_update(self.encoder_k, self.encoder_q, cfg.momentum)
            if self.inter:
                momentum_update(self.encoder_l, self.encoder_r, cfg.momentum)
        with torch.no_grad(), record_function("skelfast.isc.key"):
            k = self._embed(self.encoder_k, s1, view_k)
            l = self._embed(self.encoder_l, s2, view_k) if self.inter else None  # noqa: E741
        with record_function("skelfast.isc.loss"):
            bank = self.queue.bank.clone()  # the op saves it for backward; enqueue writes in place
            if self.inter:  # crossed: q against l and Queue_S2, r against k and Queue_S1
                queries, positives = [q, r], [l, k]
                ranges = [self.queue.ranges[1], self.queue.ranges[0]]
            else:
                queries, positives, ranges = [q], [k], [self.queue.ranges[0]]
            out = info_nce(queries, positives, bank, cfg.temperature, queue_ranges=ranges)
            loss = out.losses.sum()
            terms = self._terms(out, queries, positives, bank, ranges)
        with record_function("skelfast.isc.enqueue"):
            self.queue.enqueue(k, level=0)
            if self.inter:
                self.queue.enqueue(l, level=1)
        return StepOutput(loss, terms)

    @staticmethod
    @torch.no_grad()
    def _terms(
        out: InfoNCEOutput,
        queries: list[torch.Tensor],
        positives: list[torch.Tensor],
        bank: torch.Tensor,
        ranges: list[tuple[int, int]],
    ) -> dict[str, torch.Tensor]:
        terms, row = {}, 0
        for i, (q, pos, (start, _)) in enumerate(zip(queries, positives, ranges, strict=True)):
            n = q.shape[0]
            nearest = bank[start + out.top1[row : row + n]]
            hit = (q * pos).sum(1) > (q * nearest).sum(1)
            terms[f"nce_s{i + 1}"] = out.losses[i].detach()
            terms[f"acc_s{i + 1}"] = hit.float().mean()
            row += n
        return terms

    def load_official_state_dict(
        self, state_dict: Mapping[str, torch.Tensor], prefix: str = "module."
    ) -> None:
        """Load a checkpoint of the official ``builder_inter.MoCo`` (or ``builder_intra.MoCo`` for a
        single representation): ``torch.load(path)["state_dict"]``, whose keys start with ``prefix``
        (``"module."`` under nn.DataParallel). Encoders load key for key; the (dim, K) column queues
        ``Queue_S1``/``Queue_S2`` (``queue``) and their pointers become the bank's (K, dim) rows."""
        names = (
            ("encoder_q", "encoder_k", "encoder_r", "encoder_l") if self.inter else ("encoder_q", "encoder_k")
        )
        for name in names:
            getattr(self, name).load_official_state_dict(state_dict, prefix=f"{prefix}{name}.")
        queues = (
            (("Queue_S1", "queue_ptr_S1"), ("Queue_S2", "queue_ptr_S2"))
            if self.inter
            else (("queue", "queue_ptr"),)
        )
        for level, (queue_key, ptr_key) in enumerate(queues):
            missing = [k for k in (prefix + queue_key, prefix + ptr_key) if k not in state_dict]
            if missing:
                raise KeyError(f"ISC.load_official_state_dict: the checkpoint has no {missing}")
            columns = state_dict[prefix + queue_key]
            target = self.queue.level(level)
            if tuple(columns.shape) != (target.shape[1], target.shape[0]):
                raise ValueError(
                    f"ISC.load_official_state_dict: {queue_key} is {tuple(columns.shape)}, expected "
                    f"(dim, K) = {(target.shape[1], target.shape[0])}"
                )
            with torch.no_grad():
                target.copy_(columns.T)
                self.queue.ptr[level] = int(state_dict[prefix + ptr_key].reshape(-1)[0])

    def query_encoder(self, representation: str) -> nn.Module:
        """The query encoder of ``representation`` (``encoder_q`` for s1, ``encoder_r`` for s2)."""
        if representation not in self.reps:
            raise ValueError(f"ISC: {representation!r} is not trained by pair={self.config.pair!r}")
        return self.encoder_q if representation == self.reps[0] else self.encoder_r

    def feature_encoder(self) -> ISCFeatures:
        """The query encoder chosen by ``config.feature`` (default: s1, the seq encoder of the
        official run), sharing this method's weights."""
        rep = self.reps[0] if self.config.feature == "auto" else self.config.feature
        return ISCFeatures(self.query_encoder(rep), rep, self.config.frames)
