"""Feature discretisation for Mirage (Section 3.1): one label per distinct feature tuple.

Computation trees are compared on labels, so node and edge features must be categorical.
Integer feature columns become one id per distinct tuple of the chosen columns (OGB molecules:
``columns=(0,)`` labels atoms by type, the official molhiv path; all columns by default).
Continuous features are an error unless ``bins`` asks for explicit equal-width binning.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor
from torch_geometric.data import Data

from condense.utils import UserError
from graphs.data.graphsets import categorical_columns

__all__ = ["discretise", "graph_labels"]


def _bin(values: Tensor, bins: int) -> Tensor:
    lo, hi = values.min(0).values, values.max(0).values
    width = torch.where(hi > lo, (hi - lo) / bins, torch.ones_like(hi))
    return ((values - lo) / width).floor().clamp(0, bins - 1).long()


def discretise(values: Tensor, *, columns: Sequence[int] | None = None, bins: int | None = None, what: str = "node") -> Tensor:
    """Integer label per row of ``values`` ([N, d]); equal rows (on ``columns``) share a label."""
    values = values.view(values.size(0), -1)
    if columns is not None:
        if max(columns, default=-1) >= values.size(1) or min(columns, default=0) < 0:
            raise UserError(f"{what} label columns {list(columns)} out of range for {values.size(1)} feature columns")
        values = values[:, list(columns)]
    if bins is not None:
        if int(bins) < 1:
            raise UserError(f"bins must be >= 1, got {bins}")
        values = _bin(values.float(), int(bins)) if values.is_floating_point() else values
    coded = categorical_columns(values)
    if coded is None:
        raise UserError(
            f"{what} features are continuous; Mirage needs categorical labels (pass bins=K to bin them explicitly)"
        )
    return coded[0].view(-1)


def graph_labels(
    graphs: Sequence[Data], *, columns: Sequence[int] | None = None, bins: int | None = None
) -> tuple[list[Tensor], list[Tensor | None]]:
    """Node and edge labels for every graph, with ids shared across all ``graphs``."""
    n_ptr = [0]
    for g in graphs:
        n_ptr.append(n_ptr[-1] + g.num_nodes)
    x = torch.cat([g.x.view(g.num_nodes, -1) for g in graphs])
    node_ids = discretise(x, columns=columns, bins=bins, what="node")
    nodes = [node_ids[n_ptr[i]:n_ptr[i + 1]] for i in range(len(graphs))]
    if any(getattr(g, "edge_attr", None) is None for g in graphs):
        return nodes, [None] * len(graphs)
    e_ptr = [0]
    for g in graphs:
        e_ptr.append(e_ptr[-1] + g.edge_index.size(1))
    ea = torch.cat([g.edge_attr.view(g.edge_index.size(1), -1) for g in graphs])
    edge_ids = discretise(ea, bins=bins, what="edge")
    return nodes, [edge_ids[e_ptr[i]:e_ptr[i + 1]] for i in range(len(graphs))]
