"""Adjacency builders of the official models: ST-GCN's ``Graph`` and 2s-AGCN's ``Graph``.

Both return float32 tensors of shape (K, V, V) where ``A[k, v, w]`` weights the flow from joint
``v`` to joint ``w`` (the einsum ``nkctv,kvw->nctw`` of ST-GCN).
"""

from __future__ import annotations

import numpy as np
import torch

from skelfast.skeleton import Layout, get_layout

_INF = np.inf


def _hop_distance(num_node: int, edges: list[tuple[int, int]], max_hop: int) -> np.ndarray:
    """ST-GCN's ``get_hop_distance``: hop count up to ``max_hop``, ``inf`` beyond."""
    adjacency = np.zeros((num_node, num_node))
    for i, j in edges:
        adjacency[j, i] = 1
        adjacency[i, j] = 1
    hop_dis = np.zeros((num_node, num_node)) + _INF
    transfer = [np.linalg.matrix_power(adjacency, d) for d in range(max_hop + 1)]
    arrive = np.stack(transfer) > 0
    for d in range(max_hop, -1, -1):
        hop_dis[arrive[d]] = d
    return hop_dis


def _normalize_digraph(adjacency: np.ndarray) -> np.ndarray:
    """``A @ D^-1`` with D the column sums (every non-empty column then sums to 1)."""
    col_sum = adjacency.sum(0)
    inv = np.where(col_sum > 0, 1.0 / np.where(col_sum > 0, col_sum, 1.0), 0.0)
    return adjacency @ np.diag(inv)


def stgcn_graph(
    layout: str | Layout = "ntu",
    strategy: str = "spatial",
    max_hop: int = 1,
    dilation: int = 1,
) -> torch.Tensor:
    """ST-GCN's ``Graph(layout, strategy, max_hop, dilation).A``, as the official code builds it.

    strategy ``uniform`` gives (1, V, V), ``distance`` gives (max_hop + 1, V, V) and ``spatial``
    gives (3, V, V). With the default ``max_hop=1`` the spatial partition degenerates exactly as in
    the official code (spec/hico_hiclr.md §2.3): joints not adjacent to the centre are at distance
    inf from it, so most edges land in the "root + close" subset; for NTU the subsets hold 25, 40
    and 8 non-zeros.
    """
    layout = get_layout(layout) if isinstance(layout, str) else layout
    num_node = layout.num_joints
    edges = [(i, i) for i in range(num_node)] + list(layout.bones)
    hop_dis = _hop_distance(num_node, edges, max_hop)
    valid_hop = range(0, max_hop + 1, dilation)
    adjacency = np.zeros((num_node, num_node))
    for hop in valid_hop:
        adjacency[hop_dis == hop] = 1
    normalized = _normalize_digraph(adjacency)

    if strategy == "uniform":
        out = normalized[None]
    elif strategy == "distance":
        out = np.zeros((len(valid_hop), num_node, num_node))
        for i, hop in enumerate(valid_hop):
            out[i][hop_dis == hop] = normalized[hop_dis == hop]
    elif strategy == "spatial":
        subsets = []
        center_dis = hop_dis[:, layout.center]
        for hop in valid_hop:
            root = np.zeros((num_node, num_node))
            close = np.zeros((num_node, num_node))
            further = np.zeros((num_node, num_node))
            for i in range(num_node):
                for j in range(num_node):
                    if hop_dis[j, i] == hop:
                        # `==` between two inf distances is True: the max_hop=1 quirk
                        if center_dis[j] == center_dis[i]:
                            root[j, i] = normalized[j, i]
                        elif center_dis[j] > center_dis[i]:
                            close[j, i] = normalized[j, i]
                        else:
                            further[j, i] = normalized[j, i]
            if hop == 0:
                subsets.append(root)
            else:
                subsets.append(root + close)
                subsets.append(further)
        out = np.stack(subsets)
    else:
        raise ValueError(f"unknown ST-GCN strategy {strategy!r}; expected uniform, distance or spatial")
    return torch.tensor(out, dtype=torch.float32)


def agcn_graph(layout: str | Layout = "ntu") -> torch.Tensor:
    """2s-AGCN's spatial graph (ISC's graph encoder): identity, inward and outward, shape (3, V, V).

    Edge (i, j) of the inward list sets ``A[j, i] = 1``; inward and outward are each column
    normalised. For NTU the subset sums are 25, 24 and 20.
    """
    layout = get_layout(layout) if isinstance(layout, str) else layout
    num_node = layout.num_joints

    def edge2mat(edges: list[tuple[int, int]]) -> np.ndarray:
        mat = np.zeros((num_node, num_node))
        for i, j in edges:
            mat[j, i] = 1
        return mat

    inward = list(layout.bones)
    outward = [(j, i) for i, j in inward]
    identity = edge2mat([(i, i) for i in range(num_node)])
    out = np.stack([identity, _normalize_digraph(edge2mat(inward)), _normalize_digraph(edge2mat(outward))])
    return torch.tensor(out, dtype=torch.float32)
