r"""Node classifiers on PyG layers (GCN, GraphSAGE, GAT) and the graph-free MLP student.

All models share one layer stack, as in the GLNN / FF-G2M official ``models.py``: for every layer
but the last, ``h = dropout(act(norm(layer(h))))``; the last layer outputs logits.

* **GCN** (Kipf & Welling 2017): :math:`H' = \hat D^{-1/2}(A+I)\hat D^{-1/2} H W`.
* **GraphSAGE** with the ``gcn`` aggregator used by both official codes (DGL ``SAGEConv(...,
  "gcn")``): :math:`h_i' = W\,\mathrm{mean}_{j \in N(i)\cup\{i\}} h_j + b`.
* **GAT** (Velickovic et al. 2018): ``num_heads`` concatenated heads in hidden layers (each of
  width ``hidden // num_heads``, as in the official code), one head in the output layer, dropout
  once on every layer's input (and not between layers) and ``attn_dropout`` on the attention
  coefficients.
* **MLP**: ``Linear`` layers only; ``forward(x, edge_index=None)`` ignores the graph.

Deviation: GLNN's GCN applies the activation before the (optional) norm; here norm precedes the
activation for every model. The presets for the citation graphs use ``norm="none"``, where both
orders coincide.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GATConv, GCNConv, SAGEConv
from torch_geometric.utils import add_remaining_self_loops

from condense.utils import UserError, check_probability

__all__ = ["NODE_MODELS", "NORMS", "GCN", "GraphSAGE", "GAT", "MLP", "build_node_model"]

NORMS = ("none", "batch", "layer")


def _norm(kind: str, dim: int) -> nn.Module:
    return {"batch": nn.BatchNorm1d, "layer": nn.LayerNorm}[kind](dim) if kind != "none" else nn.Identity()


class _Stack(nn.Module):
    """``num_layers`` layers with norm -> ReLU -> dropout between them (subclasses build the layers)."""

    uses_graph = True
    #: dropout after each hidden activation; GAT drops each layer's *input* instead (feat_drop)
    inter_dropout = True

    def __init__(self, layers: list[nn.Module], hidden: int, dropout: float, norm: str) -> None:
        if norm not in NORMS:
            raise UserError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norms = nn.ModuleList(_norm(norm, hidden) for _ in layers[:-1])
        self.dropout = check_probability("dropout", dropout)

    def _layer(self, layer: nn.Module, h: Tensor, edge_index: Tensor | None) -> Tensor:
        return layer(h, edge_index)

    def _prepare(self, edge_index: Tensor | None, num_nodes: int) -> Tensor | None:
        return edge_index

    def forward(self, x: Tensor, edge_index: Tensor | None = None) -> Tensor:
        if self.uses_graph and edge_index is None:
            raise UserError(f"{type(self).__name__} needs edge_index")
        edge_index = self._prepare(edge_index, x.size(0))
        h = x
        for i, layer in enumerate(self.layers):
            h = self._layer(layer, h, edge_index)
            if i < len(self.layers) - 1:
                h = F.relu(self.norms[i](h))
                if self.inter_dropout:
                    h = F.dropout(h, self.dropout, self.training)
        return h


def _dims(in_dim: int, hidden: int, out_dim: int, num_layers: int) -> list[tuple[int, int]]:
    if num_layers < 1:
        raise UserError(f"num_layers must be >= 1, got {num_layers}")
    sizes = [in_dim] + [hidden] * (num_layers - 1) + [out_dim]
    return list(zip(sizes[:-1], sizes[1:]))


class MLP(_Stack):
    """Graph-free student: ``Linear`` stack; ``edge_index`` is accepted and ignored."""

    uses_graph = False

    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_layers: int = 2, dropout: float = 0.0, norm: str = "none") -> None:
        super().__init__([nn.Linear(a, b) for a, b in _dims(in_dim, hidden, out_dim, num_layers)], hidden, dropout, norm)

    def _layer(self, layer: nn.Module, h: Tensor, edge_index: Tensor | None) -> Tensor:
        return layer(h)


class GCN(_Stack):
    """GCN with symmetric normalisation and self-loops (``GCNConv``)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_layers: int = 2, dropout: float = 0.5, norm: str = "none") -> None:
        super().__init__([GCNConv(a, b) for a, b in _dims(in_dim, hidden, out_dim, num_layers)], hidden, dropout, norm)


class GraphSAGE(_Stack):
    """GraphSAGE, ``gcn`` aggregator: mean over the neighbourhood including the node itself."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_layers: int = 2, dropout: float = 0.5, norm: str = "none") -> None:
        layers = [SAGEConv(a, b, aggr="mean", root_weight=False) for a, b in _dims(in_dim, hidden, out_dim, num_layers)]
        super().__init__(layers, hidden, dropout, norm)

    def _prepare(self, edge_index: Tensor | None, num_nodes: int) -> Tensor | None:
        return add_remaining_self_loops(edge_index, num_nodes=num_nodes)[0]


class GAT(_Stack):
    """GAT: ``num_heads`` heads of width ``hidden // num_heads`` per hidden layer, 1 output head.

    Dropout once per layer, on its input (DGL ``GATConv(feat_drop=dropout)`` in the GLNN/FF-G2M
    code), not also after the activation as the other stacks do.
    """

    inter_dropout = False

    def __init__(
        self,
        in_dim: int,
        hidden: int,
        out_dim: int,
        num_layers: int = 2,
        dropout: float = 0.6,
        norm: str = "none",
        num_heads: int = 4,
        attn_dropout: float = 0.3,
    ) -> None:
        if num_layers < 2:
            raise UserError("GAT needs num_layers >= 2 (as in the official code)")
        if num_heads < 1 or hidden % num_heads:
            raise UserError(f"hidden ({hidden}) must be a positive multiple of num_heads ({num_heads})")
        attn = check_probability("attn_dropout", attn_dropout)
        per_head = hidden // num_heads
        layers = [GATConv(in_dim, per_head, heads=num_heads, dropout=attn)]
        layers += [GATConv(hidden, per_head, heads=num_heads, dropout=attn) for _ in range(num_layers - 2)]
        layers.append(GATConv(hidden, out_dim, heads=1, concat=False, dropout=attn))
        super().__init__(layers, hidden, dropout, norm)

    def _layer(self, layer: nn.Module, h: Tensor, edge_index: Tensor | None) -> Tensor:
        # DGL's GATConv(feat_drop=dropout) drops every layer's input, including the raw features.
        return layer(F.dropout(h, self.dropout, self.training), edge_index)


NODE_MODELS = {"gcn": GCN, "sage": GraphSAGE, "gat": GAT, "mlp": MLP}


def build_node_model(
    name: str,
    in_dim: int,
    out_dim: int,
    *,
    hidden: int = 128,
    num_layers: int = 2,
    dropout: float = 0.5,
    norm: str = "none",
    num_heads: int = 4,
    attn_dropout: float = 0.3,
) -> nn.Module:
    """Construct ``gcn | sage | gat | mlp`` by name (GAT-only arguments are ignored by the others)."""
    key = str(name).lower()
    if key not in NODE_MODELS:
        raise UserError(f"unknown node model {name!r} (expected one of {', '.join(NODE_MODELS)})")
    for arg, value in (("in_dim", in_dim), ("out_dim", out_dim), ("hidden", hidden)):
        if int(value) < 1:
            raise UserError(f"{arg} must be >= 1, got {value}")
    kwargs = dict(num_layers=num_layers, dropout=dropout, norm=norm)
    if key == "gat":
        kwargs.update(num_heads=num_heads, attn_dropout=attn_dropout)
    return NODE_MODELS[key](in_dim, hidden, out_dim, **kwargs)
