"""Layers and encoders built on skelfast ops."""

from skelfast.nn.graph import agcn_graph, stgcn_graph
from skelfast.nn.graph_conv import GraphConv

__all__ = ["GraphConv", "agcn_graph", "stgcn_graph"]
