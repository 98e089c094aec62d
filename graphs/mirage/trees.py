"""Explicit L-hop computation trees and their canonical codes (Mirage Section 3.1, Def. 1-2).

The computation tree of node ``v`` is the tree an L-layer message-passing GNN unrolls: ``v`` at
the root, and below every tree node at depth ``< L`` one child per incoming edge of the graph
node it stands for -- the parent included (BFS that re-adds the parent, no de-duplication).
Messages flow child -> parent, so a tree is stored with edges child -> root.

The canonical code is built bottom-up as in the official ``get_can_lab_tree``: a node's code is
its label followed by the sorted codes ``(edge label, child code)`` of its children and a
terminator.  Equal codes <=> isomorphic labelled rooted trees.  This module is the reference
path; :mod:`graphs.mirage.wl` computes the same partition without building trees.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch
from torch import Tensor
from torch_geometric.data import Data

__all__ = ["ComputationTree", "in_neighbours", "computation_tree", "canonical_code", "tree_codes", "tree_to_data"]


@dataclass(frozen=True)
class ComputationTree:
    """Tree node ``i`` stands for graph node ``nodes[i]``; its parent is ``parent[i]`` (``-1`` at the
    root, index 0) and ``edge[i]`` is the graph edge (column of ``edge_index``) carrying its message."""

    nodes: tuple[int, ...]
    parent: tuple[int, ...]
    edge: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.nodes)


def in_neighbours(edge_index: Tensor, num_nodes: int) -> list[list[tuple[int, int]]]:
    """For every node the list of ``(source node, edge id)`` of its incoming edges, in edge order."""
    adj: list[list[tuple[int, int]]] = [[] for _ in range(num_nodes)]
    for e, (s, t) in enumerate(edge_index.t().tolist()):
        adj[t].append((s, e))
    return adj


def computation_tree(adj: list[list[tuple[int, int]]], root: int, hops: int) -> ComputationTree:
    """The ``hops``-deep computation tree of ``root`` by breadth-first unrolling."""
    nodes, parent, edge = [root], [-1], [-1]
    queue = deque([(0, 0)])  # (tree index, depth)
    while queue:
        idx, depth = queue.popleft()
        if depth == hops:
            continue
        for src, e in adj[nodes[idx]]:
            nodes.append(src)
            parent.append(idx)
            edge.append(e)
            queue.append((len(nodes) - 1, depth + 1))
    return ComputationTree(tuple(nodes), tuple(parent), tuple(edge))


def canonical_code(tree: ComputationTree, node_label: Tensor, edge_label: Tensor | None = None) -> str:
    """Canonical string of a labelled rooted tree: ``label[ (edge>child) ... ]`` with sorted children."""
    labels = node_label.tolist()
    elabels = edge_label.tolist() if edge_label is not None else None
    children: list[list[int]] = [[] for _ in tree.nodes]
    for i, p in enumerate(tree.parent):
        if p >= 0:
            children[p].append(i)
    codes = [""] * len(tree)
    for i in reversed(range(len(tree))):  # BFS order: children come after parents
        parts = sorted(f"{elabels[tree.edge[c]] if elabels is not None else 0}>{codes[c]}" for c in children[i])
        codes[i] = f"{labels[tree.nodes[i]]}[{','.join(parts)}]"
    return codes[0]


def tree_codes(edge_index: Tensor, num_nodes: int, hops: int, node_label: Tensor, edge_label: Tensor | None = None) -> list[str]:
    """Canonical code of every node's computation tree in one graph (the reference decomposition)."""
    adj = in_neighbours(edge_index, num_nodes)
    return [canonical_code(computation_tree(adj, v, hops), node_label, edge_label) for v in range(num_nodes)]


def tree_to_data(graph: Data, tree: ComputationTree) -> Data:
    """The tree as a PyG graph: original node/edge features, edges child -> parent, root at index 0."""
    idx = torch.tensor(tree.nodes, dtype=torch.long)
    child = torch.arange(1, len(tree), dtype=torch.long)
    par = torch.tensor(tree.parent[1:], dtype=torch.long)
    data = Data(x=graph.x[idx], edge_index=torch.stack([child, par]), num_nodes=len(tree))
    if getattr(graph, "edge_attr", None) is not None:
        data.edge_attr = graph.edge_attr[torch.tensor(tree.edge[1:], dtype=torch.long)]
    return data
