"""Adjacency builders against the numbers in spec (ST-GCN spatial NTU graph, 2s-AGCN graph)."""

import pytest
import torch

from skelfast.nn import agcn_graph, stgcn_graph
from skelfast.skeleton import NTU


def test_stgcn_spatial_ntu_matches_spec():
    A = stgcn_graph("ntu", "spatial")
    assert A.shape == (3, 25, 25)
    assert A.sum().item() == pytest.approx(25.0)
    assert int((A != 0).sum()) == 73
    assert [round(a.sum().item(), 4) for a in A] == [8.95, 13.3, 2.75]
    # the max_hop=1 quirk: 25 self links, 40 "root + close", 8 "further" (spec/hico_hiclr.md §2.3)
    assert [int((a != 0).sum()) for a in A] == [25, 40, 8]
    # normalize_digraph: every column of the summed adjacency sums to 1
    torch.testing.assert_close(A.sum(0).sum(0), torch.ones(25))


def test_stgcn_uniform_and_distance():
    uniform = stgcn_graph(strategy="uniform")
    assert uniform.shape == (1, 25, 25)
    distance = stgcn_graph(strategy="distance")
    assert distance.shape == (2, 25, 25)
    torch.testing.assert_close(distance.sum(0), uniform[0])
    # hop 0 of the distance strategy is the self-loop part: 1/degree on the diagonal
    degree = torch.ones(25)
    for child, parent in NTU.bones:
        degree[child] += 1
        degree[parent] += 1
    torch.testing.assert_close(torch.diagonal(distance[0]), 1 / degree)


def test_agcn_graph_subset_sums():
    A = agcn_graph("ntu")
    assert A.shape == (3, 25, 25)
    assert [a.sum().item() for a in A] == pytest.approx([25, 24, 20])
    torch.testing.assert_close(A[0], torch.eye(25))


def test_unknown_names_are_clear_errors():
    with pytest.raises(ValueError, match="strategy"):
        stgcn_graph(strategy="nope")
    with pytest.raises(ValueError, match="layout"):
        stgcn_graph("kinetics-xyz")
