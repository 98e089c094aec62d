"""Embedded synthetic graph classification: small base graphs carrying class-specific motifs.

Each graph is a small random base graph (a random tree, i.e. Barabási–Albert with ``m=1``, or
BA with ``m=2``) whose nodes carry random categorical labels ``0..base_labels-1``, plus
``copies`` motifs of its class and ``distractors`` motifs of other classes, each attached to the
base by one edge; all motif nodes carry label ``base_labels``.  Motifs: house (class 0),
6-cycle (class 1), 3x3 grid (class 2).  The right answer is known: the label is the majority
motif shape, which 1-2 hops of message passing reveal (node labels alone do not: every class
uses the same labels).  Most nodes sit in motifs, so computation-tree frequencies are skewed
per class -- the regime Mirage is built for.  No files, a few ms per graph, seeded.
"""
from __future__ import annotations

import networkx as nx
import numpy as np
import torch
from torch_geometric.data import Data

from condense.utils import UserError
from graphs.data.graphsets import GraphDataset, random_split

__all__ = ["make_motif_dataset", "MOTIFS"]

MOTIFS = {
    "house": nx.house_graph,
    "cycle": lambda: nx.cycle_graph(6),
    "grid": lambda: nx.convert_node_labels_to_integers(nx.grid_2d_graph(3, 3)),
}
_BASES = {"tree": 1, "ba": 2}


def _one_graph(rng: np.random.Generator, motifs: list[nx.Graph], label: int, base: str, nodes: tuple[int, int],
               base_labels: int, copies: int, distractors: int) -> Data:
    n = int(rng.integers(nodes[0], nodes[1] + 1))
    g = nx.barabasi_albert_graph(n, _BASES[base], seed=int(rng.integers(2**31))) if n > _BASES[base] else nx.path_graph(n)
    others = [c for c in range(len(motifs)) if c != label]
    kinds = [label] * copies + [others[int(rng.integers(len(others)))] for _ in range(distractors)]
    for kind in kinds:
        start = g.number_of_nodes()
        g = nx.union(g, nx.relabel_nodes(motifs[kind], {v: v + start for v in motifs[kind].nodes}))
        g.add_edge(int(rng.integers(n)), start + int(rng.integers(motifs[kind].number_of_nodes())))
    total = g.number_of_nodes()
    labels = np.concatenate([rng.integers(0, base_labels, size=n), np.full(total - n, base_labels)])
    edges = torch.tensor(list(g.edges), dtype=torch.long).t()
    edge_index = torch.cat([edges, edges.flip(0)], dim=1)
    return Data(x=torch.from_numpy(labels).long().view(-1, 1), edge_index=edge_index,
                y=torch.tensor(label), num_nodes=total)


def make_motif_dataset(
    num_graphs: int = 400,
    *,
    num_classes: int = 2,
    base: str = "tree",
    base_nodes: tuple[int, int] = (4, 8),
    base_labels: int = 2,
    copies: int = 2,
    distractors: int = 1,
    seed: int = 0,
) -> GraphDataset:
    """Generate ``num_graphs`` labelled graphs, classes balanced, split 80/10/10 with ``seed``."""
    if base not in _BASES:
        raise UserError(f"unknown base graph {base!r} (expected one of {sorted(_BASES)})")
    if not 2 <= num_classes <= len(MOTIFS):
        raise UserError(f"num_classes must be in [2, {len(MOTIFS)}], got {num_classes}")
    if num_graphs < 10 * num_classes:
        raise UserError(f"num_graphs must be at least {10 * num_classes} for {num_classes} classes, got {num_graphs}")
    if int(copies) <= int(distractors) or int(distractors) < 0:
        raise UserError(f"need copies > distractors >= 0 so the class motif is the majority, got {copies}, {distractors}")
    if int(base_labels) < 1:
        raise UserError(f"base_labels must be >= 1, got {base_labels}")
    if not 2 <= base_nodes[0] <= base_nodes[1]:
        raise UserError(f"base_nodes must be (lo, hi) with 2 <= lo <= hi, got {base_nodes}")
    rng = np.random.default_rng(seed)
    motifs = [MOTIFS[k]() for k in list(MOTIFS)[:num_classes]]
    graphs = [_one_graph(rng, motifs, i % num_classes, base, base_nodes, base_labels, copies, distractors) for i in range(num_graphs)]
    return GraphDataset(
        name="motifs",
        graphs=graphs,
        num_classes=num_classes,
        split=random_split(num_graphs, seed),
        node_cardinalities=(base_labels + 1,),
        edge_cardinalities=None,
        info={"generator": f"{base} base {base_nodes}, {copies} class motifs + {distractors} distractors of {list(MOTIFS)[:num_classes]}", "seed": seed},
    )
