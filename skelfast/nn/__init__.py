"""Layers, graphs and the encoders of the four methods, built on skelfast ops."""

from skelfast.nn.agcn import AGCN
from skelfast.nn.dropout import Dropout
from skelfast.nn.dsta import DSTANet
from skelfast.nn.graph import agcn_graph, stgcn_graph
from skelfast.nn.graph_conv import GraphConv
from skelfast.nn.gru import CRRLDecoder, CRRLEncoder, ISCSeqEncoder
from skelfast.nn.hcn import HCN
from skelfast.nn.hico import HiCoEncoder, hico_inputs
from skelfast.nn.rnn import GRU
from skelfast.nn.stgcn import STGCN, stgcn_hiclr, stgcn_standard
from skelfast.nn.temporal_conv import TemporalConv2d
from skelfast.nn.transformer import TransformerEncoderLayer

__all__ = [
    "AGCN",
    "CRRLDecoder",
    "CRRLEncoder",
    "DSTANet",
    "Dropout",
    "GRU",
    "GraphConv",
    "HCN",
    "HiCoEncoder",
    "ISCSeqEncoder",
    "STGCN",
    "TemporalConv2d",
    "TransformerEncoderLayer",
    "agcn_graph",
    "hico_inputs",
    "stgcn_graph",
    "stgcn_hiclr",
    "stgcn_standard",
]
