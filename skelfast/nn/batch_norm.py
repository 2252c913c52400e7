"""BatchNorm modules run through ``skelfast.ops.batch_norm_act`` with the tail that follows them.

The encoders keep their ``nn.BatchNorm2d`` / ``nn.Dropout`` modules (official state_dict keys,
init, ``.eval()``), and call :func:`bn_act` where the official code chains BN -> Dropout ->
residual add -> ReLU, so the chain runs as one fused op.
"""

from __future__ import annotations

import torch
from torch import nn

from skelfast.nn.dropout import keep_mask
from skelfast.ops import batch_norm_act
from skelfast.ops.dropout import runs_reference


def dropout_keep(p: float, training: bool, x: torch.Tensor) -> tuple[torch.Tensor | None, float]:
    """The (keep mask, scale) of a dropout before a fused BatchNorm tail: (None, 1.0) when it is the
    identity (eval or p = 0); each element kept with probability 1 - p and scaled by 1 / (1 - p).

    The mask is ``keep_mask``'s, unless the dropout op runs its reference (``use_backend("reference")``,
    the methods benchmark's reference column): then it is nn.Dropout's own ``bernoulli_`` draw, as
    every other reference op runs PyTorch's own computation."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return None, 1.0
    if p == 1.0:
        return torch.zeros(x.shape, dtype=torch.bool, device=x.device), 0.0
    if runs_reference(x):
        return torch.empty_like(x).bernoulli_(1.0 - p).bool(), 1.0 / (1.0 - p)
    return keep_mask(x.shape, p, x.device), 1.0 / (1.0 - p)


def bn_act(
    bn: nn.modules.batchnorm._BatchNorm,
    x: torch.Tensor,
    residual: torch.Tensor | None = None,
    keep: torch.Tensor | None = None,
    keep_scale: float = 1.0,
    relu: bool = False,
) -> torch.Tensor:
    """``relu?(bn(x) * keep * keep_scale + residual)`` with ``bn``'s parameters, buffers and mode,
    as ``bn.forward`` would use and update them (momentum, or the cumulative average when
    ``bn.momentum`` is None). x (N, C, *) -> same shape."""
    bn._check_input_dim(x)
    factor = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    batch_stats = bn.training or (bn.running_mean is None and bn.running_var is None)
    use_running = not bn.training or bn.track_running_stats
    return batch_norm_act(
        x,
        bn.weight,
        bn.bias,
        bn.running_mean if use_running else None,
        bn.running_var if use_running else None,
        batch_stats,
        factor,
        bn.eps,
        residual,
        keep,
        keep_scale,
        relu,
    )
