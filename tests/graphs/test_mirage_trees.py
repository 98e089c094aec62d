"""Computation trees (explicit BFS), canonical codes, and the WL fast path against them."""
from __future__ import annotations

import random

import networkx as nx
import pytest
import torch
from torch_geometric.data import Data

from graphs.mirage.trees import ComputationTree, canonical_code, computation_tree, in_neighbours, tree_codes, tree_to_data
from graphs.mirage.wl import wl_colours, wl_tree_items


def _undirected(edges: list[tuple[int, int]]) -> torch.Tensor:
    e = torch.tensor(edges, dtype=torch.long).t()
    return torch.cat([e, e.flip(0)], dim=1)


def test_path_graph_tree_readds_the_parent():
    """Path a-b-c, 2 hops from b: b -> {a, c}, a -> {b}, c -> {b}: five nodes, no de-duplication."""
    ei = _undirected([(0, 1), (1, 2)])
    tree = computation_tree(in_neighbours(ei, 3), 1, 2)
    assert sorted(tree.nodes) == [0, 1, 1, 1, 2]
    assert tree.nodes[0] == 1 and tree.parent[0] == -1
    assert sorted((tree.nodes[tree.parent[i]], tree.nodes[i]) for i in range(1, 5)) == [(0, 1), (1, 0), (1, 2), (2, 1)]
    assert len(computation_tree(in_neighbours(ei, 3), 0, 0)) == 1


def test_triangle_tree_sizes_and_tree_to_data_edges_point_to_parents():
    ei = _undirected([(0, 1), (1, 2), (2, 0)])
    tree = computation_tree(in_neighbours(ei, 3), 0, 3)
    assert len(tree) == 1 + 2 + 4 + 8
    g = Data(x=torch.arange(3).view(-1, 1), edge_index=ei, edge_attr=torch.arange(6).view(-1, 1), num_nodes=3)
    data = tree_to_data(g, tree)
    assert data.num_nodes == 15 and data.edge_index.size(1) == 14
    child, parent = data.edge_index
    assert torch.equal(child, torch.arange(1, 15)) and bool((parent < child).all())
    # the edge feature of a tree edge is the one of the graph edge child -> parent
    for c, p, a in zip(child.tolist(), parent.tolist(), data.edge_attr.view(-1).tolist()):
        s, t = ei[:, a].tolist()
        assert (s, t) == (tree.nodes[c], tree.nodes[p])


def _random_tree(rng: random.Random, n: int, labels: int) -> tuple[nx.Graph, Data]:
    g = nx.random_labeled_tree(n, seed=rng.randrange(10**6)) if n > 1 else nx.empty_graph(1)
    nl = {v: rng.randrange(labels) for v in g}
    el = {tuple(sorted(e)): rng.randrange(2) for e in g.edges}
    nx.set_node_attributes(g, nl, "label")
    nx.set_edge_attributes(g, el, "label")
    edges = [(u, v) for u, v in g.edges] + [(v, u) for u, v in g.edges]
    ei = torch.tensor(edges, dtype=torch.long).t().reshape(2, -1)
    data = Data(edge_index=ei, num_nodes=n, x=torch.tensor([nl[v] for v in range(n)]),
                edge_attr=torch.tensor([el[tuple(sorted(e))] for e in edges], dtype=torch.long))
    return g, data


def _rooted_code(data: Data, root: int) -> str:
    """Library canonical code of the labelled tree ``data`` rooted at ``root`` (plain BFS, no unrolling)."""
    adj = in_neighbours(data.edge_index, data.num_nodes)
    nodes, parent, edge, i = [root], [-1], [-1], 0
    while i < len(nodes):
        for u, e in adj[nodes[i]]:
            if parent[i] < 0 or u != nodes[parent[i]]:
                nodes.append(u)
                parent.append(i)
                edge.append(e)
        i += 1
    return canonical_code(ComputationTree(tuple(nodes), tuple(parent), tuple(edge)), data.x, data.edge_attr)


def test_canonical_code_matches_networkx_isomorphism_on_random_labelled_trees():
    rng = random.Random(0)
    trees = [_random_tree(rng, rng.randint(1, 6), 2) for _ in range(60)]
    codes = [_rooted_code(d, 0) for _, d in trees]
    nm = lambda a, b: a["label"] == b["label"]  # noqa: E731
    for i in range(len(trees)):
        for j in range(i + 1, len(trees)):
            gi, gj = trees[i][0].copy(), trees[j][0].copy()
            gi.nodes[0]["label"] = (gi.nodes[0]["label"], "root")
            gj.nodes[0]["label"] = (gj.nodes[0]["label"], "root")
            iso = nx.is_isomorphic(gi, gj, node_match=nm, edge_match=nm)
            assert (codes[i] == codes[j]) == iso, (i, j)
    assert len(set(codes)) > 20  # the sample is not degenerate


def test_code_invariant_to_node_relabelling_and_child_order():
    rng = random.Random(1)
    g, data = _random_tree(rng, 7, 3)
    perm = list(range(7))
    rng.shuffle(perm)
    inv = torch.tensor(perm)
    ei = inv[data.edge_index]
    order = torch.randperm(ei.size(1), generator=torch.Generator().manual_seed(0))  # shuffle edge (child) order
    x = torch.empty_like(data.x)
    x[inv] = data.x
    permuted = Data(x=x, edge_index=ei[:, order], edge_attr=data.edge_attr[order], num_nodes=7)
    for v in range(7):
        a = canonical_code(computation_tree(in_neighbours(data.edge_index, 7), v, 3), data.x, data.edge_attr)
        b = canonical_code(computation_tree(in_neighbours(permuted.edge_index, 7), perm[v], 3), permuted.x, permuted.edge_attr)
        assert a == b


def test_code_discriminates_labels_edges_and_structure():
    ei = _undirected([(0, 1), (1, 2)])
    x = torch.tensor([0, 0, 0])
    base = tree_codes(ei, 3, 2, x)
    assert base[0] == base[2] != base[1]  # ends vs middle
    assert tree_codes(ei, 3, 2, torch.tensor([1, 0, 0]))[2] != base[2]  # label two hops away
    ea = torch.tensor([0, 1, 0, 1])  # edge (1,2) gets label 1
    with_edges = tree_codes(ei, 3, 1, x, ea)
    assert with_edges[0] != with_edges[2]


@pytest.mark.parametrize("hops", [0, 1, 2, 3])
def test_wl_partition_equals_explicit_tree_partition(hops):
    rng = random.Random(hops)
    graphs, nls, els = [], [], []
    for i in range(12):
        g = nx.gnm_random_graph(rng.randint(2, 8), rng.randint(1, 10), seed=i)
        edges = list(g.edges)
        e = torch.tensor(edges, dtype=torch.long).t().reshape(2, -1)
        ei = torch.cat([e, e.flip(0)], dim=1)
        lab = torch.tensor([rng.randrange(2) for _ in edges], dtype=torch.long)
        graphs.append(Data(edge_index=ei, num_nodes=g.number_of_nodes()))
        nls.append(torch.tensor([rng.randrange(3) for _ in g.nodes]))
        els.append(torch.cat([lab, lab]))
    explicit = [c for g, nl, el in zip(graphs, nls, els) for c in tree_codes(g.edge_index, g.num_nodes, hops, nl, el)]
    fast = torch.cat(wl_tree_items(graphs, nls, els, hops)).tolist()
    assert len(explicit) == len(fast)
    pairs = set(zip(explicit, fast))
    assert len(pairs) == len(set(explicit)) == len(set(fast))  # a bijection between the two codings


def test_wl_colours_are_dense_ids():
    ei = _undirected([(0, 1), (1, 2), (2, 3)])
    c = wl_colours(ei, torch.zeros(4, dtype=torch.long), 1)
    assert c.tolist() == [0, 1, 1, 0]
