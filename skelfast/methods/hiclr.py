"""HiCLR: hierarchical consistent contrastive learning with growing augmentations (Zhang, Lin & Liu,
AAAI 2023), as the official ``net/hiclr.py::forward_pretrain_wmask`` and
``processor/pretrain_hiclr.py`` run it (spec hico_hiclr.md PART 2).

One step: four independently drawn views of the batch (basic q, basic k, strong q1, strong + joint
mask q2, the mask filled with a learnable scalar token), three query-encoder passes, the momentum
update of the key encoder, the key pass, then ``skelfast.ops.hiclr_loss``:
``L = InfoNCE(q) + 0.5 (CE(sg p_q -> p_q1) + CE(sg p_q1 -> p_q2))`` over [key, queue]; from
``mining_epoch`` on, the InfoNCE of q takes AimCLR's mined positives (top-1 queue entries of q, q1
and q2). Only the basic key k is enqueued.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import record_function

from skelfast.augment.params import STREAMS, AugmentParams
from skelfast.augment.recipes import HiCLR as HiCLRRecipe
from skelfast.augment.recipes import NoAugmentation
from skelfast.methods.base import FeatureEncoder, MethodConfig, PretrainMethod, StepOutput
from skelfast.methods.moco import momentum_copy, momentum_update
from skelfast.nn.dsta import HICLR_CONFIG, DSTANet
from skelfast.nn.graph import stgcn_graph
from skelfast.nn.stgcn import STGCN
from skelfast.ops import augment, hiclr_loss, info_nce
from skelfast.queue import MemoryQueue
from skelfast.skeleton import NTU, Layout

ENCODERS = ("stgcn", "dsta")
KEY_INITS = ("independent", "copy")
BODY_POOLINGS = ("mean", "present")
GRAPH_PARTITIONS = ("official", "hop_distance")


def hop_distance_spatial_graph(layout: Layout = NTU) -> torch.Tensor:
    """(3, V, V) ST-GCN spatial partition without the max_hop = 1 quirk: the official normalised
    adjacency (self-links and bones, columns summing to 1) split by true hop distances to the centre:
    A0 self-links, A1 edges whose source j is not nearer the centre than the target i, A2 the rest.
    A[k][j, i] weights the flow from joint j to joint i, as in ``skelfast.nn.stgcn_graph``."""
    v = layout.num_joints
    neighbours: list[list[int]] = [[] for _ in range(v)]
    for a, b in layout.bones:
        neighbours[a].append(b)
        neighbours[b].append(a)
    dist = [-1] * v
    dist[layout.center] = 0
    frontier = [layout.center]
    while frontier:  # breadth-first search over the bones
        reached = []
        for w in frontier:
            for u in neighbours[w]:
                if dist[u] < 0:
                    dist[u] = dist[w] + 1
                    reached.append(u)
        frontier = reached
    if min(dist) < 0:
        raise ValueError("hop_distance_spatial_graph: the layout's bones do not connect every joint")
    total = stgcn_graph(layout, "spatial").sum(0)  # the normalised adjacency, however it was split
    d = torch.tensor(dist)
    self_links = torch.eye(v, dtype=torch.bool)
    not_nearer = (d[:, None] >= d[None, :]) & ~self_links  # [j, i]: source j at least as far out as i
    return torch.stack([total * self_links, total * not_nearer, total * ~(not_nearer | self_links)])


@dataclass
class HiCLRConfig(MethodConfig):
    """HiCLR's options; the defaults are the official NTU-60 xsub joint GCN recipe
    (``config/release/gcn_ntu60/pretext/pretext_hiclr_xsub_joint.yaml``).

    Quirk switches (official value first):
        key_init: ``"independent"``: the official ``weights_init`` runs after encoder_q was copied
            into encoder_k, so the key encoder starts from its own random draw and only meets the
            query encoder through the EMA; ``"copy"``: the key starts as an exact copy (MoCo).
        blur_normalized: False: the strong views' 15-tap Gaussian blur kernel is not divided by its
            sum (gain up to ~5x); True normalises it.
        graph_partition: ``"official"``: ST-GCN's spatial partition computed with max_hop = 1, where
            every joint not adjacent to the centre is at distance inf from it, so most edges land in
            the first neighbour subset (25 / 40 / 8 non-zeros); ``"hop_distance"``: the same
            normalised adjacency split by true hop distances to the centre (25 / 24 / 24). GCN only.
        flip_mirrors: False: the strong views' left/right flip only swaps joint indices (official);
            True also mirrors the x coordinate, so a flipped skeleton is a mirror image.
        rotation_symmetric: False: the strong views' rotation angles are non-negative, U(0, 30)
            degrees about the main axis and U(0, 1) about the others (official); True draws them in
            U(-30, 30) and U(-1, 1).
        body_pooling: ``"mean"``: the pooled features of the M bodies are averaged, the all-zero second
            body of single-person clips included (official); ``"present"``: only the bodies present
            in the clip (non-zero anywhere before augmentation) are averaged.
    Speed option (not in the official code):
        batch_query_branches: False: three query passes, each with its own BatchNorm statistics
            (official); True: one pass over the 3N query views (joint BN statistics, other dropout
            draws): faster, not the same numbers.
    """

    # encoder: "stgcn" (quarter-width ST-GCN, net/st_gcn.py) or "dsta" (DSTA-Net, net/dsta.py)
    encoder: str = "stgcn"
    stream: str = "joint"  # joint | bone | motion (computed after the augmentation, as officially)
    feature_dim: int = 128
    # ST-GCN sizes (HiCLR: 16 -> 256) and dropout
    hidden_channels: int = 16
    hidden_dim: int = 256
    dropout: float = 0.5
    # DSTA-Net: (in, out, inter, stride) per block (empty: the release config), frames, attention dropout
    dsta_blocks: tuple[tuple[int, int, int, int], ...] = ()
    num_frames: int = 50
    attention_dropout: float = 0.5
    # MoCo
    queue_size: int = 32768
    momentum: float = 0.999
    temperature: float = 0.07
    # the loss: consistency weight, and mining from this 0-based epoch on (official: 1-based
    # epochs > 150) with the top-k queue entries of each branch
    consistency_weight: float = 0.5
    mining_epoch: int = 150
    topk: int = 1
    # the q2 branch's joint mask: int(V * mask_ratio) joints per frame, the same for the whole batch
    mask_ratio: float = 0.1
    # quirks and options (see the class docstring)
    key_init: str = "independent"
    blur_normalized: bool = False
    flip_mirrors: bool = False
    rotation_symmetric: bool = False
    graph_partition: str = "official"
    body_pooling: str = "mean"
    batch_query_branches: bool = False

    def __post_init__(self) -> None:
        if self.encoder not in ENCODERS:
            raise ValueError(f"HiCLRConfig: encoder must be one of {ENCODERS}, got {self.encoder!r}")
        if self.stream not in STREAMS:
            raise ValueError(f"HiCLRConfig: stream must be one of {STREAMS}, got {self.stream!r}")
        if self.graph_partition not in GRAPH_PARTITIONS:
            raise ValueError(
                f"HiCLRConfig: graph_partition must be one of {GRAPH_PARTITIONS}, got {self.graph_partition!r}"
            )
        if self.graph_partition != "official" and self.encoder != "stgcn":
            raise ValueError(
                "HiCLRConfig: graph_partition applies to the ST-GCN encoder only (DSTA-Net has none)"
            )
        if self.body_pooling not in BODY_POOLINGS:
            raise ValueError(
                f"HiCLRConfig: body_pooling must be one of {BODY_POOLINGS}, got {self.body_pooling!r}"
            )
        if self.key_init not in KEY_INITS:
            raise ValueError(f"HiCLRConfig: key_init must be one of {KEY_INITS}, got {self.key_init!r}")
        if self.queue_size < 1 or self.feature_dim < 1:
            raise ValueError(
                f"HiCLRConfig: queue_size and feature_dim must be >= 1, got {self.queue_size}, {self.feature_dim}"
            )
        if not 0.0 <= self.momentum <= 1.0:
            raise ValueError(f"HiCLRConfig: momentum must be in [0, 1], got {self.momentum}")
        if self.temperature <= 0:
            raise ValueError(f"HiCLRConfig: temperature must be > 0, got {self.temperature}")
        if not 1 <= self.topk <= self.queue_size:
            raise ValueError(f"HiCLRConfig: topk must be in [1, queue_size], got {self.topk}")
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"HiCLRConfig: mask_ratio must be in [0, 1), got {self.mask_ratio}")
        self.dsta_blocks = tuple(tuple(int(v) for v in block) for block in self.dsta_blocks)
        for block in self.dsta_blocks:
            if len(block) != 4:
                raise ValueError(f"HiCLRConfig: a dsta_blocks entry is (in, out, inter, stride), got {block}")

    def to_dict(self) -> dict:
        """The options as plain values (``dsta_blocks`` as a list of lists, for TOML and JSON)."""
        out = super().to_dict()
        out["dsta_blocks"] = [list(block) for block in self.dsta_blocks]
        return out


def build_encoder(config: HiCLRConfig) -> STGCN | DSTANet:
    """One encoder of the config (query or key) with HiCLR's pretraining init (N(0, 0.02))."""
    if config.encoder == "stgcn":
        return STGCN(
            in_channels=3,
            hidden_channels=config.hidden_channels,
            hidden_dim=config.hidden_dim,
            num_class=config.feature_dim,
            dropout=config.dropout,
            mlp=True,
            A=hop_distance_spatial_graph() if config.graph_partition == "hop_distance" else None,
            init="normal",
        )
    return DSTANet(
        num_class=config.feature_dim,
        num_frame=config.num_frames,
        config=config.dsta_blocks or HICLR_CONFIG,
        attentiondrop=config.attention_dropout,
        mlp=True,
        init="normal",
    )


def representation_dim(config: HiCLRConfig) -> int:
    """Width of the pooled representation the evaluation protocols read (256 officially)."""
    if config.encoder == "stgcn":
        return config.hidden_dim
    return (config.dsta_blocks or HICLR_CONFIG)[-1][1]


def mirror_flipped_samples(params: AugmentParams) -> AugmentParams:
    """The corrected left/right flip: where a sample's joints were swapped (``joint_source`` is not
    the identity) its coordinate map also mirrors x, ``matrix @ diag(-1, 1, 1)``. The mirror then
    comes before the shear instead of after it, which draws the same distribution of views (the
    shear's off-diagonal entries are symmetric about 0)."""
    identity = torch.arange(params.num_joints, device=params.joint_source.device)
    flipped = (params.joint_source != identity).any(1)
    mirror = torch.diag(
        torch.tensor([-1.0, 1.0, 1.0], dtype=params.matrix.dtype, device=params.matrix.device)
    )
    return params.replace(matrix=torch.where(flipped[:, None, None], params.matrix @ mirror, params.matrix))


def present_bodies(x: torch.Tensor) -> torch.Tensor:
    """(N, M) bool: which bodies of x (N, C, T, V, M) have a non-zero coordinate anywhere."""
    return x.detach().abs().amax(dim=(1, 2, 3)) > 0


def representation_of_present_bodies(
    encoder: STGCN | DSTANet, x: torch.Tensor, present: torch.Tensor
) -> torch.Tensor:
    """x (N, C, T, V, M) -> (N, F): each body encoded as its own one-body sample (the encoders fold
    bodies into the batch anyway, so BatchNorm sees the same rows), then averaged over the
    ``present`` (N, M) bodies only; a sample with no body present averages all of them."""
    n, c, t, v, m = x.shape
    per_body = encoder.representation(x.permute(0, 4, 1, 2, 3).reshape(n * m, c, t, v, 1)).view(n, m, -1)
    weight = present.to(per_body.dtype)
    weight = torch.where(weight.sum(1, keepdim=True) > 0, weight, torch.ones_like(weight))
    return (per_body * (weight / weight.sum(1, keepdim=True))[..., None]).sum(1)


class HiCLRFeatures(FeatureEncoder):
    """HiCLR's query encoder for the evaluation protocols: the (N, 256) representation pooled over
    time and joints and averaged over the two bodies (before the projection head). The official
    linear evaluation reads the 50-frame data without augmentation (``Feeder_single`` with shear and
    crop off), converted to the pretraining stream, for training and testing alike."""

    def __init__(
        self, module: nn.Module, feature_dim: int, recipe: object, body_pooling: str = "mean"
    ) -> None:
        super().__init__(module, feature_dim, recipe, recipe)
        self.body_pooling = body_pooling

    def features(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x (N, 3, T, V, M) already in the stream (``test_recipe``) -> (N, feature_dim)."""
        if self.body_pooling == "present":  # the transform keeps an absent body all zero
            return representation_of_present_bodies(self.module, x, present_bodies(x))
        return self.module.representation(x)


class HiCLR(PretrainMethod):
    """HiCLR pretraining (see the module docstring); ``forward(x, lengths, generator)`` is one step.

    Buffers: ``queue`` (one ``MemoryQueue`` level of ``queue_size`` keys). Parameters: ``encoder_q``,
    ``encoder_k`` (no gradient, EMA of encoder_q) and ``mask_param``, the learnable scalar that fills
    the masked joints of the q2 view (initialised to 0; it gets gradients and, in the official
    optimizer, weight decay).
    """

    name = "hiclr"
    config_class = HiCLRConfig

    def __init__(self, config: HiCLRConfig) -> None:
        super().__init__(config)
        self.config: HiCLRConfig = config
        self.mask_param = nn.Parameter(torch.zeros(1))
        self.encoder_q = build_encoder(config)
        if config.key_init == "copy":
            self.encoder_k = momentum_copy(self.encoder_q)
        else:  # weights_init re-applied after the copy: the key encoder is an independent draw
            self.encoder_k = build_encoder(config)
            for p in self.encoder_k.parameters():
                p.requires_grad_(False)
        self.queue = MemoryQueue([config.queue_size], config.feature_dim)
        # data1..data4 of Feeder_triple: basic q, basic k, strong q1, strong (+ joint mask) q2
        strong = {
            "strong": True,
            "blur_normalized": config.blur_normalized,
            "rotation_symmetric": config.rotation_symmetric,
            "stream": config.stream,
        }
        self.recipes = {
            "q": HiCLRRecipe(stream=config.stream),
            "k": HiCLRRecipe(stream=config.stream),
            "q1": HiCLRRecipe(**strong),
            "q2": HiCLRRecipe(mask=True, mask_ratio=config.mask_ratio, **strong),
        }

    @property
    def mining(self) -> bool:
        """Whether the current epoch uses nearest-neighbour mining (0-based epoch >= mining_epoch)."""
        return self.epoch >= self.config.mining_epoch

    def view_params(self, n: int, t: int, v: int, generator: torch.Generator) -> dict[str, AugmentParams]:
        """The augmentation parameters of one step's four views ``q, k, q1, q2`` for N clips of T
        frames and V joints, drawn from ``generator`` in Feeder_triple's order (on the CPU)."""
        # the official feeder shifts over all T frames of the pre-resized clip (it reads no lengths)
        valid = torch.full((n,), t, dtype=torch.int64)
        params = {name: recipe.sample(valid, v, generator) for name, recipe in self.recipes.items()}
        if self.config.flip_mirrors:
            for name in ("q1", "q2"):
                params[name] = mirror_flipped_samples(params[name])
        return params

    def _views(self, x: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        n, _, t, v, _ = x.shape
        valid = torch.full((n,), t, dtype=torch.int64, device=x.device)
        views = {}
        for name, params in self.view_params(n, t, v, generator).items():
            fill = self.mask_param if name == "q2" else None
            views[name] = augment(x, valid, params.to(x.device), fill=fill)
        return views

    def _encode(self, encoder: nn.Module, x: torch.Tensor, present: torch.Tensor | None) -> torch.Tensor:
        if present is None:  # official: the encoder's own mean over all M bodies
            return encoder(x)
        return encoder.project(representation_of_present_bodies(encoder, x, present))

    def _encode_queries(
        self, views: dict[str, torch.Tensor], present: torch.Tensor | None
    ) -> list[torch.Tensor]:
        branches = [views["q"], views["q1"], views["q2"]]
        if self.config.batch_query_branches:
            both = None if present is None else present.repeat(3, 1)
            return list(self._encode(self.encoder_q, torch.cat(branches), both).chunk(3))
        return [self._encode(self.encoder_q, b, present) for b in branches]

    def _loss(
        self, q: torch.Tensor, q1: torch.Tensor, q2: torch.Tensor, k: torch.Tensor, bank: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.config
        mine_top1 = self.mining and cfg.topk == 1
        out = hiclr_loss(
            q, q1, q2, k, bank, cfg.temperature, mining=mine_top1, consistency_weight=cfg.consistency_weight
        )
        nce, loss = out.nce, out.loss
        if self.mining and cfg.topk > 1:
            # top-k mining (not the release's top-1): the union of each branch's k nearest queue keys
            with torch.no_grad():
                mined = torch.cat([torch.topk(b @ bank.T, cfg.topk, dim=1).indices for b in (q, q1, q2)], 1)
            nce = info_nce(q, k, bank, cfg.temperature, mined=[mined]).losses[0]
            loss = nce + cfg.consistency_weight * (out.consistency_1 + out.consistency_2)
        terms = {
            "nce": nce.detach(),
            "consistency_1": out.consistency_1.detach(),
            "consistency_2": out.consistency_2.detach(),
        }
        return loss, terms

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator) -> StepOutput:
        """One training step's forward: x (N, 3, T, V, M) (frame50 data: T = 50), lengths (N,)
        (unused: the clips are pre-resized), ``generator`` (CPU) for every view's draws."""
        if x.dim() != 5 or x.shape[1] != 3:
            raise ValueError(f"HiCLR: x must be (N, 3, T, V, M), got shape {tuple(x.shape)}")
        with record_function("skelfast.hiclr.views"):
            # which bodies exist is read off the raw clip: noise and the mask token fill an absent body too
            present = present_bodies(x) if self.config.body_pooling == "present" else None
            views = self._views(x, generator)
        with record_function("skelfast.hiclr.query"):
            # features in the queue's dtype: under autocast the encoders return bf16/fp16, the loss runs in fp32
            dtype = self.queue.bank.dtype
            q, q1, q2 = (F.normalize(z.to(dtype), dim=1) for z in self._encode_queries(views, present))
        # the official order: query passes, then the momentum update and the key pass
        with record_function("skelfast.hiclr.key_update"):
            momentum_update(self.encoder_k, self.encoder_q, self.config.momentum)
        with record_function("skelfast.hiclr.key"), torch.no_grad():
            k = F.normalize(self._encode(self.encoder_k, views["k"], present).to(dtype), dim=1)
        with record_function("skelfast.hiclr.loss"):
            # a snapshot: the loss saves the bank for backward and enqueue writes it in place
            loss, terms = self._loss(q, q1, q2, k, self.queue.bank.clone())
        with record_function("skelfast.hiclr.enqueue"):
            self.queue.enqueue(k)
        return StepOutput(loss, terms)

    def feature_encoder(self) -> HiCLRFeatures:
        """The query encoder's pooled representation, on unaugmented clips of the config's stream."""
        recipe = NoAugmentation(stream=self.config.stream)
        return HiCLRFeatures(
            self.encoder_q, representation_dim(self.config), recipe, self.config.body_pooling
        )
