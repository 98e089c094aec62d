"""Coreset baselines at a byte budget: random graphs and herding (Welling, ICML 2009).

Both pick real training graphs and never exceed ``budget`` bytes.  Selection
(:func:`select_within_budget`), stratified so that no class is dropped:

1. **One graph per class.**  If the smallest graphs of all classes together exceed the budget the
   request is refused (:class:`UserError`).  Otherwise each class takes its first pick among its
   graphs that fit both its proportional share and what the remaining classes' smallest graphs
   leave free -- so every class is present.
2. **Per-class fill.**  Class ``c`` keeps picking while graphs fit its share
   ``budget * n_c / n`` (its share of the training set, as before) and the total budget (a class
   whose first graph overran its share leaves less to the others).
3. **Greedy fill.**  Bytes left over (shares are rarely filled exactly) go round-robin over the
   classes, one pick per class per round, while anything fits.

A *picker* chooses a class's next graph among those that fit a byte limit: random = the first
fitting graph of a seeded permutation; herding = the graph minimising
``|| mu_c - (s + f) / (t + 1) ||`` over the fitting graphs (``s`` = sum of the ``t`` picked
descriptors, ``mu_c`` the class mean) -- herding made budget-aware: each step is the classic
herding step restricted to graphs that still fit, one vectorised distance per step, so the cost
is (picks x class size x descriptor width), seconds on 40k graphs.  Herding runs on a model-free
graph descriptor (normalised histograms of node labels, edge labels and clipped degrees, plus
log size): the paper's baselines use GNN embeddings, which would need training on the full
data -- exactly what Mirage avoids; documented as a deviation.
"""
from __future__ import annotations

from typing import Callable, Protocol, Sequence

import torch
from torch import Tensor
from torch_geometric.data import Data

from condense.utils import UserError, make_generator
from graphs.data.graphsets import graph_nbytes
from graphs.mirage.labels import graph_labels

__all__ = ["random_subset", "herding_subset", "graph_descriptors", "select_within_budget", "class_counts",
           "RandomPicker", "HerdingPicker"]

_MAX_DEGREE = 6


class Picker(Protocol):
    def pick(self, limit: float) -> int | None:
        """Position (within the class) of the next graph with size <= ``limit``, or None; marks it taken."""


class RandomPicker:
    """Graphs of one class in a seeded random order; the first untaken one that fits."""

    def __init__(self, sizes: Tensor, gen: torch.Generator) -> None:
        self.order = torch.randperm(len(sizes), generator=gen)
        self.sizes = sizes[self.order]
        self.free = torch.ones(len(sizes), dtype=torch.bool)

    def pick(self, limit: float) -> int | None:
        ok = (self.free & (self.sizes <= limit)).nonzero()
        if ok.numel() == 0:
            return None
        j = int(ok[0])
        self.free[j] = False
        return int(self.order[j])


class HerdingPicker:
    """Budget-aware herding on the rows of ``feats`` (one class), vectorised over candidates."""

    def __init__(self, sizes: Tensor, feats: Tensor) -> None:
        self.sizes, self.feats = sizes, feats.double()
        self.mu = self.feats.mean(0)
        self.running = torch.zeros_like(self.mu)
        self.t = 0
        self.free = torch.ones(len(sizes), dtype=torch.bool)

    def pick(self, limit: float) -> int | None:
        ok = self.free & (self.sizes <= limit)
        if not bool(ok.any()):
            return None
        dist = ((self.mu - (self.running + self.feats) / (self.t + 1)) ** 2).sum(1)
        dist[~ok] = float("inf")
        j = int(dist.argmin())
        self.free[j] = False
        self.running += self.feats[j]
        self.t += 1
        return j


def select_within_budget(graphs: Sequence[Data], budget: float, make_picker: Callable[[Tensor, Tensor], Picker]) -> list[int]:
    """Indices (sorted) of a stratified selection within ``budget`` bytes; ``make_picker(class_idx, sizes)``."""
    if not budget > 0:
        raise UserError(f"byte budget must be positive, got {budget}")
    y = torch.tensor([int(g.y) for g in graphs])
    sizes = torch.tensor([graph_nbytes(g) for g in graphs], dtype=torch.float64)
    classes = y.unique().tolist()
    members = {c: (y == c).nonzero().view(-1) for c in classes}
    smallest = {c: float(sizes[members[c]].min()) for c in classes}
    if sum(smallest.values()) > budget:
        raise UserError(f"a budget of {budget:.0f} bytes cannot hold one graph per class: the smallest graph of each class "
                        f"takes {[int(v) for v in smallest.values()]} bytes ({int(sum(smallest.values()))} in all)")
    share = {c: budget * len(members[c]) / len(graphs) for c in classes}
    pickers = {c: make_picker(members[c], sizes[members[c]]) for c in classes}
    chosen: list[int] = []
    used = {c: 0.0 for c in classes}

    def take(c: int, limit: float) -> bool:
        j = pickers[c].pick(limit)
        if j is None:
            return False
        i = int(members[c][j])
        chosen.append(i)
        used[c] += float(sizes[i])
        return True

    reserve = sum(smallest.values())
    for c in classes:  # 1. every class gets a graph
        reserve -= smallest[c]
        take(c, min(max(share[c], smallest[c]), budget - sum(used.values()) - reserve))
    for c in classes:  # 2. fill each class's share
        while take(c, min(share[c] - used[c], budget - sum(used.values()))):
            pass
    progress = True
    while progress:  # 3. round-robin over the bytes left over
        progress = False
        for c in classes:
            progress |= take(c, budget - sum(used.values()))
    return sorted(chosen)


def class_counts(graphs: Sequence[Data], idx: Sequence[int] | None = None) -> dict[int, int]:
    """Graphs per class label (of ``graphs[idx]`` when given)."""
    ys = torch.tensor([int(graphs[i].y) for i in (range(len(graphs)) if idx is None else idx)], dtype=torch.long)
    return {int(c): int(n) for c, n in zip(*torch.unique(ys, return_counts=True))}


def random_subset(graphs: Sequence[Data], budget: float, *, seed: int = 0) -> list[int]:
    """Indices of random graphs, every class present, within ``budget`` bytes."""
    gen = make_generator(seed)
    return select_within_budget(graphs, budget, lambda idx, sizes: RandomPicker(sizes, gen))


def graph_descriptors(graphs: Sequence[Data]) -> Tensor:
    """Model-free graph vectors: label/degree histograms (normalised) and log node count, all graphs at once."""
    nodes, edges = graph_labels(graphs)
    counts = torch.tensor([g.num_nodes for g in graphs], dtype=torch.long)
    G = len(graphs)
    node_lab = torch.cat(nodes)
    node_graph = torch.repeat_interleave(torch.arange(G), counts)
    offsets = torch.cumsum(counts, 0) - counts
    dst = torch.cat([g.edge_index[1] + o for g, o in zip(graphs, offsets.tolist())])
    deg = torch.bincount(dst, minlength=int(counts.sum())).clamp(max=_MAX_DEGREE)

    def hist(values: Tensor, owner: Tensor, width: int, norm: Tensor) -> Tensor:
        h = torch.bincount(owner * width + values, minlength=G * width).view(G, width).float()
        return h / norm.clamp(min=1).float().view(-1, 1)

    parts = [hist(node_lab, node_graph, int(node_lab.max()) + 1, counts), hist(deg, node_graph, _MAX_DEGREE + 1, counts)]
    if edges[0] is not None and sum(e.numel() for e in edges) > 0:
        edge_lab = torch.cat(edges)
        e_counts = torch.tensor([e.numel() for e in edges], dtype=torch.long)
        parts.append(hist(edge_lab, torch.repeat_interleave(torch.arange(G), e_counts), int(edge_lab.max()) + 1, e_counts))
    parts.append(torch.log1p(counts.float()).view(-1, 1))
    return torch.cat(parts, 1)


def herding_subset(graphs: Sequence[Data], budget: float) -> list[int]:
    """Indices of budget-aware herding picks, every class present, within ``budget`` bytes (deterministic)."""
    feats = graph_descriptors(graphs)
    return select_within_budget(graphs, budget, lambda idx, sizes: HerdingPicker(sizes, feats[idx]))
