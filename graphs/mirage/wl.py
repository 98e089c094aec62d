r"""Fast computation-tree coding by Weisfeiler-Leman refinement over the edge list.

The L-hop unrolled computation tree of ``v`` is determined by ``v``'s label and the multiset of
``(edge label, (L-1)-hop tree of u)`` over its incoming edges ``u -> v``, which is exactly one
round of WL refinement:

.. math::
    c^{(0)}(v) = \ell(v), \qquad
    c^{(k)}(v) = \mathrm{id}\big(\ell(v),\ \{\!\{ (\ell(u, v),\ c^{(k-1)}(u)) : u \to v \}\!\}\big).

So two nodes (of any graphs) have isomorphic L-hop trees iff ``c^{(L)}`` agrees.  All nodes of
all graphs are coded at once on their disjoint union; ``id`` is an exact dictionary (no hash
collisions), so the partition equals the one of :func:`graphs.mirage.trees.canonical_code`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data

__all__ = ["wl_colours", "wl_tree_items"]


def wl_colours(edge_index: Tensor, node_label: Tensor, hops: int, edge_label: Tensor | None = None) -> Tensor:
    """Colour of every node after ``hops`` rounds (dense ids ``0..K-1`` in first-seen order)."""
    n = node_label.numel()
    src, dst = edge_index.numpy()
    own = node_label.numpy().astype(np.int64)
    el = np.zeros(src.size, np.int64) if edge_label is None else edge_label.numpy().astype(np.int64)
    colour = np.unique(own, return_inverse=True)[1].astype(np.int64)
    for _ in range(hops):
        key = el * (int(colour.max()) + 1) + colour[src]  # (edge label, neighbour colour) as one int
        order = np.lexsort((key, dst))
        counts = np.bincount(dst, minlength=n)
        groups = np.split(key[order], np.cumsum(counts)[:-1])
        table: dict[tuple, int] = {}
        colour = np.fromiter(
            (table.setdefault((int(own[v]), *groups[v].tolist()), len(table)) for v in range(n)),
            dtype=np.int64, count=n,
        )
    return torch.from_numpy(colour)


def wl_tree_items(graphs: Sequence[Data], node_labels: Sequence[Tensor], edge_labels: Sequence[Tensor | None], hops: int) -> list[Tensor]:
    """Tree item (colour after ``hops`` rounds) of every node, per graph, ids shared across graphs."""
    offsets = np.cumsum([0] + [g.num_nodes for g in graphs])
    edge_index = torch.cat([g.edge_index + int(o) for g, o in zip(graphs, offsets[:-1])], dim=1)
    label = torch.cat(list(node_labels))
    elabel = None if any(e is None for e in edge_labels) else torch.cat(list(edge_labels))
    colours = wl_colours(edge_index, label, hops, elabel)
    return [colours[offsets[i]:offsets[i + 1]] for i in range(len(graphs))]
