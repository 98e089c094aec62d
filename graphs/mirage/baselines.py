"""Coreset baselines at a byte budget: random graphs and herding (Welling, ICML 2009).

Both pick real training graphs class by class; class ``c`` gets the share of ``budget`` bytes
equal to its share of the training set, and graphs are added in selection order while they
fit (graphs that would overflow are skipped, so the budget is never exceeded).  Herding runs on
a model-free graph descriptor (normalised histograms of node labels, edge labels and clipped
degrees, plus log size): the paper's baselines use GNN embeddings, which would need training
on the full data -- exactly what Mirage avoids; documented as a deviation.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.utils import degree

from condense.selection import herding
from condense.utils import UserError, make_generator
from graphs.data.graphsets import graph_nbytes
from graphs.mirage.labels import graph_labels

__all__ = ["random_subset", "herding_subset", "graph_descriptors"]

_MAX_DEGREE = 6


def _fill(order: Sequence[int], sizes: Sequence[int], budget: float) -> list[int]:
    chosen, used = [], 0
    for i in order:
        if used + sizes[i] <= budget:
            chosen.append(i)
            used += sizes[i]
    return chosen


def _per_class(graphs: Sequence[Data], budget: int, rank) -> list[int]:
    if budget <= 0:
        raise UserError(f"byte budget must be positive, got {budget}")
    y = torch.tensor([int(g.y) for g in graphs])
    sizes = [graph_nbytes(g) for g in graphs]
    chosen = []
    for c in y.unique().tolist():
        idx = (y == c).nonzero().view(-1)
        order = idx[rank(idx)].tolist()
        chosen += _fill(order, sizes, budget * len(idx) / len(graphs))
    return sorted(chosen)


def random_subset(graphs: Sequence[Data], budget: int, *, seed: int = 0) -> list[int]:
    """Indices of random graphs per class within ``budget`` bytes."""
    gen = make_generator(seed)
    return _per_class(graphs, budget, lambda idx: torch.randperm(len(idx), generator=gen))


def graph_descriptors(graphs: Sequence[Data]) -> Tensor:
    """Model-free graph vectors: label/degree histograms (normalised) and log node count."""
    nodes, edges = graph_labels(graphs)
    n_lab = int(torch.cat(nodes).max()) + 1
    e_lab = int(torch.cat(edges).max()) + 1 if edges[0] is not None else 0
    rows = []
    for g, nl, el in zip(graphs, nodes, edges):
        n = max(g.num_nodes, 1)
        deg = degree(g.edge_index[1], g.num_nodes).long().clamp(max=_MAX_DEGREE)
        parts = [torch.bincount(nl, minlength=n_lab) / n, torch.bincount(deg, minlength=_MAX_DEGREE + 1) / n]
        if e_lab:
            parts.append(torch.bincount(el, minlength=e_lab) / max(el.numel(), 1))
        parts.append(torch.tensor([torch.log1p(torch.tensor(float(g.num_nodes)))]))
        rows.append(torch.cat([p.float() for p in parts]))
    return torch.stack(rows)


def herding_subset(graphs: Sequence[Data], budget: int) -> list[int]:
    """Indices of herding-selected graphs per class within ``budget`` bytes (deterministic)."""
    feats = graph_descriptors(graphs)
    return _per_class(graphs, budget, lambda idx: herding(feats[idx], len(idx)))
