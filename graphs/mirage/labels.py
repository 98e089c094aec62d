"""Feature discretisation for Mirage (Section 3.1): one label per distinct feature tuple.

Computation trees are compared on labels, so node and edge features must be categorical.
Integer feature columns become one id per distinct tuple of the chosen columns (OGB molecules:
``columns=(0,)`` labels atoms by type, the official molhiv path; all columns by default).
Continuous features are an error unless ``bins`` asks for explicit binning: every non-integral
column is cut into ``bins`` quantile bins whose edges are fitted on the values given -- Mirage
passes its training graphs only, so the edges come from the training graphs (integral columns,
e.g. one-hot node labels, are kept as they are).  The paper does not discretise attributes (its
TU sets are used with node labels only); binning is our explicit option for attributed sets.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor
from torch_geometric.data import Data

from condense.utils import UserError
from graphs.data.graphsets import categorical_columns

__all__ = ["discretise", "graph_labels", "quantile_edges"]


def quantile_edges(values: Tensor, bins: int) -> Tensor:
    """``[bins - 1, d]`` inner quantile edges of each column of ``values`` (``[N, d]``)."""
    qs = torch.linspace(0, 1, int(bins) + 1, dtype=torch.float64)[1:-1]
    return torch.quantile(values.double(), qs, dim=0).view(len(qs), -1)


def _bin(values: Tensor, bins: int, columns: Sequence[int] | None = None) -> Tensor:
    """Quantile bin id per column in ``columns`` (default: the non-integral ones; edges fitted on
    ``values``); the other columns unchanged."""
    out = values.round().long()
    continuous = list(columns) if columns is not None else [
        j for j in range(values.size(1)) if not bool(torch.all(values[:, j] == values[:, j].round()))]
    if continuous:
        edges = quantile_edges(values[:, continuous], bins)
        for k, j in enumerate(continuous):
            out[:, j] = torch.bucketize(values[:, j].double(), edges[:, k].contiguous(), right=True)
    return out


def discretise(values: Tensor, *, columns: Sequence[int] | None = None, bins: int | None = None,
               bin_columns: Sequence[int] | None = None, what: str = "node") -> Tensor:
    """Integer label per row of ``values`` ([N, d]); equal rows (on ``columns``) share a label.

    ``bin_columns`` (indices after ``columns`` is applied): the columns ``bins`` cuts, default every
    non-integral one (attributes with integer values, like PROTEINS', need naming explicitly).
    """
    values = values.view(values.size(0), -1)
    if columns is not None:
        if max(columns, default=-1) >= values.size(1) or min(columns, default=0) < 0:
            raise UserError(f"{what} label columns {list(columns)} out of range for {values.size(1)} feature columns")
        values = values[:, list(columns)]
    if bins is not None:
        if int(bins) < 1:
            raise UserError(f"bins must be >= 1, got {bins}")
        values = _bin(values.float(), int(bins), bin_columns) if values.is_floating_point() else values
    coded = categorical_columns(values)
    if coded is None:
        raise UserError(
            f"{what} features are continuous; Mirage needs categorical labels (pass bins=K to bin them explicitly)"
        )
    return coded[0].view(-1)


def graph_labels(
    graphs: Sequence[Data], *, columns: Sequence[int] | None = None, bins: int | None = None,
    bin_columns: Sequence[int] | None = None,
) -> tuple[list[Tensor], list[Tensor | None]]:
    """Node and edge labels for every graph, with ids shared across all ``graphs``."""
    n_ptr = [0]
    for g in graphs:
        n_ptr.append(n_ptr[-1] + g.num_nodes)
    x = torch.cat([g.x.view(g.num_nodes, -1) for g in graphs])
    node_ids = discretise(x, columns=columns, bins=bins, bin_columns=bin_columns, what="node")
    nodes = [node_ids[n_ptr[i]:n_ptr[i + 1]] for i in range(len(graphs))]
    if any(getattr(g, "edge_attr", None) is None for g in graphs):
        return nodes, [None] * len(graphs)
    e_ptr = [0]
    for g in graphs:
        e_ptr.append(e_ptr[-1] + g.edge_index.size(1))
    ea = torch.cat([g.edge_attr.view(g.edge_index.size(1), -1) for g in graphs])
    edge_ids = discretise(ea, bins=bins, what="edge")
    return nodes, [edge_ids[e_ptr[i]:e_ptr[i + 1]] for i in range(len(graphs))]
