"""Public functional ops. Each is a registered custom op with a fake kernel and an autograd formula,
checked against ``skelfast.reference``; the backend is chosen per call (see ``skelfast.backends``)."""

from skelfast.ops.augment import augment
from skelfast.ops.batch_norm_act import batch_norm_act
from skelfast.ops.dropout import dropout
from skelfast.ops.graph_conv import graph_conv
from skelfast.ops.gru import gru
from skelfast.ops.info_nce import hiclr_loss, info_nce, queue_softmax_stats
from skelfast.ops.temporal_conv import temporal_conv

__all__ = [
    "augment",
    "batch_norm_act",
    "dropout",
    "graph_conv",
    "gru",
    "hiclr_loss",
    "info_nce",
    "queue_softmax_stats",
    "temporal_conv",
]
