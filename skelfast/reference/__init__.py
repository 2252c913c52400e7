"""Pure-PyTorch references of every skelfast op: the test oracle, the benchmark baseline and the
fallback where no faster backend is available."""

from skelfast.reference.augment import augment
from skelfast.reference.graph_conv import graph_conv

__all__ = ["augment", "graph_conv"]
