"""CRRL (Contrast-Reconstruction Representation Learning, IEEE TIP 2022; ``Picasso-Wang/CRRL``).

Two stages, each with its own optimizer (spec/isc_crrl.md §2):

1. ``"contrast"`` (Contrastive Motion Learner): MoCo between the query BiGRU on the coordinate
   sequence X and a key BiGRU on the velocity sequence S of the same clip. Only the key's GRU is an
   EMA of the query's GRU; its projection MLP is a fixed random projection (official quirk).
   One queue of K = 64 keys, temperature 0.1. Loss ``L_c = CE([q.k, q.queue] / tau, 0)``.
2. ``"reconstruct"`` (Sequence Reconstructor + Information Fuser): a fresh student BiGRU encodes X; a
   unidirectional GRU decoder, fed the student's first-frame output (resp. last-valid-frame output)
   at every step, reconstructs X (resp. X reversed); a frozen copy of the stage-1 query GRU (the
   teacher) is distilled into the student's TAP feature through the student's MLP.
   ``L = L_fwd + L_rev + 0.1 * L_d``.

The downstream encoder is the student after stage 2 (the query encoder before). No augmentation:
every GRU reads packed variable-length sequences, so frames past a sample's length are never seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.profiler import record_function

from skelfast.augment.recipes import NoAugmentation
from skelfast.methods.base import FeatureEncoder, MethodConfig, PretrainMethod, StepOutput
from skelfast.methods.moco import copy_parameters, momentum_update
from skelfast.nn.gru import CRRLDecoder, CRRLEncoder, crrl_first_last, temporal_average
from skelfast.ops import augment, info_nce
from skelfast.queue import MemoryQueue

STAGES = ("contrast", "reconstruct")
# How (3, V, M) coordinates become one frame vector. CRRL's preprocessing is unreleased; PKU-MMD's
# text files (150 values a line: body 1 joint-major xyz, then body 2) suggest "body_joint_xyz".
# "joint_xyz_body" is ISC's interleaved layout. Only checkpoint loading depends on the choice.
FRAME_LAYOUTS = ("body_joint_xyz", "joint_xyz_body")
# The velocity the key encoder reads (its boundary is unconfirmed, spec §2.2):
# "forward": v_t = x_{t+1} - x_t, zero at the last valid frame (skelfast.ops.augment's motion stream);
# "backward": v_t = x_t - x_{t-1}, zero at frame 0.
VELOCITIES = ("forward", "backward")


@dataclass
class CRRLConfig(MethodConfig):
    """CRRL's options; the defaults are the released code's (``parse_args_for_pretrain.py``).

    Quirk switches (official behaviour first):
        update_key_mlp: False = the key MLP keeps its random initialisation and is never copied or
            updated (``if_update_key_mlp=False``); True = copied from the query MLP and EMA-updated
            with the GRU.
        teacher_dropout: True = the stage-2 teacher stays in train mode, so its inter-layer dropout
            is active while distilling (the official teacher is never put in eval mode);
            False = the teacher always runs in eval mode (deterministic targets).
    """

    input_size: int = 150  # D = 3 * V * M coordinates per frame
    hidden_size: int = 256  # per direction: features are 2 * hidden_size = 512
    num_layers: int = 2
    dropout: float = 0.2
    queue_size: int = 64
    temperature: float = 0.1
    momentum: float = 0.999
    distill_weight: float = 0.1  # lambda_ts
    reconstruct_forward: bool = True  # if_recon_forwardly
    reconstruct_reverse: bool = True  # if_recon_reversely
    update_key_mlp: bool = False
    teacher_dropout: bool = True
    velocity: str = "forward"
    # the velocity's scale in the (unreleased, unconfirmed) normalized_data: 1.0 = raw frame
    # differences, which on skeletons are an order of magnitude smaller than the coordinates
    velocity_scale: float = 1.0
    frame_layout: str = "body_joint_xyz"

    def __post_init__(self) -> None:
        if not self.velocity_scale > 0:
            raise ValueError(f"CRRLConfig: velocity_scale must be > 0, got {self.velocity_scale}")
        if self.velocity not in VELOCITIES:
            raise ValueError(f"CRRLConfig: velocity must be one of {VELOCITIES}, got {self.velocity!r}")
        if self.frame_layout not in FRAME_LAYOUTS:
            raise ValueError(
                f"CRRLConfig: frame_layout must be one of {FRAME_LAYOUTS}, got {self.frame_layout!r}"
            )
        if min(self.input_size, self.hidden_size, self.num_layers, self.queue_size) < 1:
            raise ValueError(
                "CRRLConfig: input_size, hidden_size, num_layers and queue_size must be >= 1, got "
                f"{self.input_size}, {self.hidden_size}, {self.num_layers}, {self.queue_size}"
            )
        if not 0.0 <= self.momentum <= 1.0:
            raise ValueError(f"CRRLConfig: momentum must be in [0, 1], got {self.momentum}")
        if self.temperature <= 0:
            raise ValueError(f"CRRLConfig: temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"CRRLConfig: dropout must be in [0, 1), got {self.dropout}")


def frame_vectors(x: torch.Tensor, layout: str = "body_joint_xyz") -> torch.Tensor:
    """(N, 3, T, V, M) skeletons -> (N, T, 3 * V * M) frame vectors in ``layout`` (FRAME_LAYOUTS)."""
    if x.dim() != 5 or x.shape[1] != 3:
        raise ValueError(f"CRRL: x must be (N, 3, T, V, M), got {tuple(x.shape)}")
    n, _, t, _, _ = x.shape
    if layout == "body_joint_xyz":
        x = x.permute(0, 2, 4, 3, 1)  # (N, T, M, V, C)
    elif layout == "joint_xyz_body":
        x = x.permute(0, 2, 3, 1, 4)  # (N, T, V, C, M)
    else:
        raise ValueError(f"CRRL: frame layout must be one of {FRAME_LAYOUTS}, got {layout!r}")
    return x.reshape(n, t, -1)


def valid_mask(lengths: torch.Tensor, max_len: int, device: torch.device) -> torch.Tensor:
    """(N,) lengths -> (N, max_len) bool, True at frames t < length."""
    return torch.arange(max_len, device=device)[None, :] < lengths.to(device)[:, None]


def reverse_valid(seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(N, T, D) -> each sample's valid frames in reversed order (``train_data_reverse``), zero past
    its length."""
    t = seq.shape[1]
    lengths = lengths.to(seq.device)
    index = (lengths[:, None] - 1 - torch.arange(t, device=seq.device)[None, :]).clamp(min=0)
    out = seq.gather(1, index[:, :, None].expand(-1, -1, seq.shape[2]))
    return out * valid_mask(lengths, t, seq.device)[:, :, None].to(seq.dtype)


def variable_length_mse(
    prediction: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor
) -> torch.Tensor:
    """CRRL's ``variable_length_mse``: (1/N) sum_i (1/len_i) sum_{t<len_i} sum_d (p - x)^2.

    prediction, target (N, T, D); lengths (N,). Frames at or past a sample's length are excluded
    (the official code relies on both tensors being zero there; the mask makes it explicit).
    """
    if prediction.shape != target.shape or prediction.dim() != 3:
        raise ValueError(
            f"variable_length_mse: prediction and target must be equal (N, T, D) shapes, got "
            f"{tuple(prediction.shape)} and {tuple(target.shape)}"
        )
    mask = valid_mask(lengths, prediction.shape[1], prediction.device)[:, :, None]
    squared = torch.where(mask, (prediction - target) ** 2, 0.0)
    return (squared.sum(dim=(1, 2)) / lengths.to(prediction)).mean()


class CRRLFeatures(FeatureEncoder):
    """CRRL's evaluation feature: the TAP (temporal average over valid frames) of a BiGRU's outputs,
    (N, 3, T, V, M), lengths (N,) -> (N, 2 * hidden_size), on the full clip (no transform)."""

    def __init__(self, encoder: CRRLEncoder, frame_layout: str) -> None:
        recipe = NoAugmentation()
        super().__init__(encoder, 2 * encoder.gru.hidden_size, test_recipe=recipe, train_recipe=recipe)
        self.frame_layout = frame_layout

    def features(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(N, 3, T, V, M), lengths (N,) -> (N, 2 * hidden_size)."""
        return self.module.representation(frame_vectors(x, self.frame_layout), lengths.cpu())


def _restore_stage(method: CRRL, _incompatible_keys: object) -> None:
    """After ``load_state_dict``: requires_grad and modes of the stage the loaded buffer names (a
    module-level function, not a lambda, so the method stays picklable)."""
    method._apply_stage(STAGES[int(method.stage_index)])


class CRRL(PretrainMethod):
    """CRRL's two pretraining stages on the MoCo core (see the module docstring).

    Modules: ``query`` (BiGRU + projection MLP), ``key`` (its momentum GRU + a fixed random MLP),
    ``queue``; ``teacher`` (a GRU, filled with the query GRU on entering stage 2, frozen),
    ``student`` (BiGRU + the distillation MLP ``student.fc``), ``decoder``. The current stage is
    the buffer ``stage_index``, so a loaded state_dict knows which encoder is the final one.
    """

    name = "crrl"
    config_class = CRRLConfig

    def __init__(self, config: CRRLConfig | None = None) -> None:
        config = config if config is not None else CRRLConfig()
        super().__init__(config)
        c = config
        encoder_args = (c.input_size, c.hidden_size, c.num_layers, c.dropout)
        self.query = CRRLEncoder(*encoder_args)
        self.key = CRRLEncoder(*encoder_args)  # its MLP keeps its own random init (official)
        copy_parameters(self.key.gru, self.query.gru)
        if c.update_key_mlp:
            copy_parameters(self.key.fc, self.query.fc)
        self.queue = MemoryQueue([c.queue_size], 2 * c.hidden_size)
        self.teacher = CRRLEncoder(*encoder_args)
        self.teacher.fc = torch.nn.Identity()  # the teacher has no head: its TAP feature is the target
        self.student = CRRLEncoder(*encoder_args)  # student.fc is the distillation MLP (Nonlinear_2layer)
        self.decoder = CRRLDecoder(2 * c.hidden_size, c.input_size, c.num_layers, c.dropout)
        self.recipe = NoAugmentation()
        self.register_buffer("stage_index", torch.zeros((), dtype=torch.long))
        self._stage = "contrast"  # mirrors stage_index without a device read per step
        self.register_load_state_dict_post_hook(_restore_stage)
        self._apply_stage("contrast")

    # --- stages -----------------------------------------------------------------------------------

    def stages(self) -> list[str]:
        """``["contrast", "reconstruct"]``, each trained with a fresh optimizer."""
        return list(STAGES)

    @property
    def stage(self) -> str:
        """The current stage (``stages()[stage_index]``)."""
        return self._stage

    def set_stage(self, stage: str) -> None:
        """Enter a stage. ``"reconstruct"`` copies the (stage-1-trained) query GRU into the teacher
        and freezes it; afterwards only the student and the decoder require grad."""
        super().set_stage(stage)
        if stage == "reconstruct":
            copy_parameters(self.teacher.gru, self.query.gru)
        self._apply_stage(stage)

    def _apply_stage(self, stage: str) -> None:
        """requires_grad exactly on what ``stage`` trains (the engine optimises those parameters)."""
        self.stage_index.fill_(STAGES.index(stage))
        self._stage = stage
        trained = (self.query,) if stage == "contrast" else (self.student, self.decoder)
        for p in self.parameters():
            p.requires_grad_(False)
        for module in trained:
            for p in module.parameters():
                p.requires_grad_(True)
        self.train(self.training)

    def train(self, mode: bool = True) -> CRRL:
        """As nn.Module.train, but with ``teacher_dropout=False`` the teacher stays in eval mode."""
        super().train(mode)
        if not self.config.teacher_dropout:
            self.teacher.eval()
        return self

    # --- inputs -----------------------------------------------------------------------------------

    def _check_inputs(self, x: torch.Tensor, lengths: torch.Tensor) -> None:
        if x.dim() != 5 or x.shape[1] != 3:
            raise ValueError(f"CRRL: x must be (N, 3, T, V, M), got {tuple(x.shape)}")
        d = x.shape[1] * x.shape[3] * x.shape[4]
        if d != self.config.input_size:
            raise ValueError(
                f"CRRL: x has 3 * V * M = {d} coordinates per frame but the model was built for "
                f"input_size={self.config.input_size}"
            )
        if tuple(lengths.shape) != (x.shape[0],):
            raise ValueError(
                f"CRRL: lengths must have shape (N,) = ({x.shape[0]},), got {tuple(lengths.shape)}"
            )

    def _coordinates(
        self, x: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator, velocity: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The views: coordinates X (N, T', D) and, if asked, velocity S (N, T', D), T' = max length."""
        params = self.recipe.sample(lengths, x.shape[3], generator).to(x.device)
        valid = lengths.to(x.device)
        coords = augment(x, valid, params)
        if not velocity:
            return frame_vectors(coords, self.config.frame_layout), None
        motion = augment(x, valid, params.replace(stream="motion"))
        if self.config.velocity == "backward":  # x_t - x_{t-1}: the forward difference one frame later
            motion = torch.cat([torch.zeros_like(motion[:, :, :1]), motion[:, :, :-1]], dim=2)
        if self.config.velocity_scale != 1.0:
            motion = motion * self.config.velocity_scale
        layout = self.config.frame_layout
        return frame_vectors(coords, layout), frame_vectors(motion, layout)

    # --- the step ---------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator) -> StepOutput:
        """One training step of the current stage: x (N, 3, T, V, M), lengths (N,) -> StepOutput."""
        self._check_inputs(x, lengths)
        lengths = lengths.to(device="cpu", dtype=torch.int64)  # pack_padded_sequence wants CPU lengths
        if self.stage == "contrast":
            return self._contrast_step(x, lengths, generator)
        return self._reconstruct_step(x, lengths, generator)

    def _contrast_step(
        self, x: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator
    ) -> StepOutput:
        c = self.config
        with record_function("skelfast.crrl.views"):
            coords, velocity = self._coordinates(x, lengths, generator, velocity=True)
        with record_function("skelfast.crrl.key_update"):
            momentum_update(self.key.gru, self.query.gru, c.momentum)
            if c.update_key_mlp:
                momentum_update(self.key.fc, self.query.fc, c.momentum)
        with record_function("skelfast.crrl.query"):
            q = F.normalize(self.query(coords, lengths).to(self.queue.bank.dtype), dim=1)  # autocast
        with torch.no_grad(), record_function("skelfast.crrl.key"):
            k = F.normalize(self.key(velocity, lengths).to(self.queue.bank.dtype), dim=1)
        with record_function("skelfast.crrl.loss"):
            # a snapshot: enqueue writes the bank in place before the engine calls backward
            loss = info_nce(q, k, self.queue.bank.clone(), c.temperature).losses[0]
        with record_function("skelfast.crrl.enqueue"):
            self.queue.enqueue(k)
        return StepOutput(loss, {"nce": loss.detach()})

    def _reconstruct_step(
        self, x: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator
    ) -> StepOutput:
        c = self.config
        with record_function("skelfast.crrl.views"):
            coords, _ = self._coordinates(x, lengths, generator, velocity=False)
            # the reconstruction targets are zero past each length, as the official padded arrays
            target = coords * valid_mask(lengths, coords.shape[1], coords.device)[:, :, None].to(coords.dtype)
        with record_function("skelfast.crrl.student"):
            features = self.student.sequence(coords, lengths)  # (N, T', 2H), zero past each length
            first, last = crrl_first_last(features, lengths)
        terms: dict[str, torch.Tensor] = {}
        loss = coords.new_zeros(())
        with record_function("skelfast.crrl.decoder"):
            if c.reconstruct_forward:
                l_fwd = variable_length_mse(self.decoder(first, lengths), target, lengths)
                loss = loss + l_fwd
                terms["reconstruct_forward"] = l_fwd.detach()
            if c.reconstruct_reverse:
                l_rev = variable_length_mse(
                    self.decoder(last, lengths), reverse_valid(target, lengths), lengths
                )
                loss = loss + l_rev
                terms["reconstruct_reverse"] = l_rev.detach()
        with torch.no_grad(), record_function("skelfast.crrl.teacher"):
            h_teacher = self.teacher.representation(coords, lengths)
        with record_function("skelfast.crrl.loss"):
            h_student = self.student.fc(temporal_average(features, lengths))
            # MSELoss(reduction="sum") / batch size: squared L2 distance, mean over the batch
            l_distill = ((h_teacher - h_student) ** 2).sum() / coords.shape[0]
            loss = loss + c.distill_weight * l_distill
        terms["distill"] = l_distill.detach()
        return StepOutput(loss, terms)

    # --- downstream -------------------------------------------------------------------------------

    def final_encoder(self) -> CRRLEncoder:
        """The student once stage 2 has begun, the query encoder before."""
        return self.student if self.stage == "reconstruct" else self.query

    def feature_encoder(self) -> CRRLFeatures:
        """The 512-d TAP feature of ``final_encoder()`` on the full clip, sharing its weights."""
        return CRRLFeatures(self.final_encoder(), self.config.frame_layout)

    def extra_repr(self) -> str:
        return f"stage={self.stage!r}"
