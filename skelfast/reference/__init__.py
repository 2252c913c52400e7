"""Pure-PyTorch references of every skelfast op: the test oracle, the benchmark baseline and the
fallback where no faster backend is available."""

from skelfast.reference.augment import augment
from skelfast.reference.batch_norm_act import batch_norm_act
from skelfast.reference.dropout import dropout
from skelfast.reference.encoders import OfficialAGCN, OfficialSTGCN
from skelfast.reference.graph_conv import graph_conv
from skelfast.reference.gru import gru
from skelfast.reference.info_nce import hiclr_loss, info_nce
from skelfast.reference.temporal_conv import temporal_conv

__all__ = [
    "OfficialAGCN",
    "OfficialSTGCN",
    "augment",
    "batch_norm_act",
    "dropout",
    "graph_conv",
    "gru",
    "hiclr_loss",
    "info_nce",
    "temporal_conv",
]
